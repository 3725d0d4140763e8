package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/worker"
)

func (a *app) secretCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Manage encrypted secrets (global, per pack, per action)"}
	var pack, action string
	key := func() ([]byte, error) {
		if a.cfg.SecretsKey == "" {
			return nil, jobs.ErrNoSecretsKey
		}
		return worker.DecodeSecretsKey(a.cfg.SecretsKey)
	}
	set := &cobra.Command{
		Use: "set NAME", Short: "Store a secret; the value is read from stdin", Args: cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			ref, err := jobs.NewSecretRef(args[0], pack, action)
			if err != nil {
				return usageError{err}
			}
			k, err := key()
			if err != nil {
				return err
			}
			if f, ok := a.stdin.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
				// Otherwise a person at a terminal sees attune wait, silently.
				fmt.Fprintf(a.stderr, "value of secret %s (end with Ctrl-D):\n", ref.Name)
			}
			value, err := io.ReadAll(io.LimitReader(a.stdin, 1<<20+1))
			if err != nil {
				return fmt.Errorf("error reading the value from stdin: %w", err)
			}
			if len(value) > 1<<20 {
				return fmt.Errorf("secret value is over 1 MiB; store a smaller value")
			}
			value = []byte(strings.TrimSuffix(strings.TrimSuffix(string(value), "\n"), "\r"))
			if len(value) == 0 {
				return usageError{fmt.Errorf("no value on stdin; pipe it in: printf %%s \"$VALUE\" | attune secret set %s", args[0])}
			}
			if err := jobs.SetSecret(ctx, pool, k, ref, value); err != nil {
				return err
			}
			return a.print(ref, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "secret %s stored (%s scope%s)\n", ref.Name, ref.Scope, strings.TrimPrefix(scopeSuffix(ref), " for"))
			})
		}),
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a secret", Args: cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			ref, err := jobs.NewSecretRef(args[0], pack, action)
			if err != nil {
				return usageError{err}
			}
			ok, err := jobs.DeleteSecret(ctx, pool, ref)
			if err != nil {
				return err
			}
			if !ok {
				return exitError{1, fmt.Sprintf("no %s secret %s%s; attune secret list shows them", ref.Scope, ref.Name, scopeSuffix(ref))}
			}
			return a.print(ref, func(w *tabwriter.Writer) { fmt.Fprintf(w, "secret %s deleted\n", ref.Name) })
		}),
	}
	for _, c := range []*cobra.Command{set, del} {
		c.Flags().StringVar(&pack, "pack", "", "scope the secret to this pack")
		c.Flags().StringVar(&action, "action", "", "scope the secret to this action (pack.name)")
	}
	list := &cobra.Command{
		Use: "list", Short: "List secrets (never their values)", Args: cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			list, err := jobs.ListSecrets(ctx, pool)
			if err != nil {
				return err
			}
			if list == nil {
				list = []jobs.SecretInfo{}
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tSCOPE\tSCOPE_REF\tUPDATED")
				for _, s := range list {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Scope, s.ScopeRef, s.Updated.Local().Format(time.RFC3339))
				}
			})
		}),
	}
	cmd.AddCommand(set, list, del)
	return cmd
}

func scopeSuffix(r jobs.SecretRef) string {
	if r.ScopeRef == "" {
		return ""
	}
	return " for " + r.ScopeRef
}
