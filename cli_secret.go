package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/worker"
)

func (a *app) secretCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Manage encrypted secrets (global, per pack, per action)"}
	var pack, action string
	var force bool
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
			if !force {
				if err := requireSecretScope(ctx, pool, ref); err != nil {
					return err
				}
			}
			value, err := a.readSecretValue(ref.Name)
			if err != nil {
				return err
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
	set.Flags().BoolVar(&force, "force", false, "store the secret even though its pack or action is not registered (yet)")
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
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Scope, s.ScopeRef, tableTime(s.Updated))
				}
			})
		}),
	}
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Re-encrypt every secret from ATTUNE_SECRETS_KEY to ATTUNE_NEW_SECRETS_KEY, in one transaction",
		Args:  cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			old, err := key()
			if err != nil {
				return err
			}
			raw := envValue(a.environ, "ATTUNE_NEW_SECRETS_KEY")
			if raw == "" {
				return usageError{errors.New("ATTUNE_NEW_SECRETS_KEY is not set; set it to the new key, base64 of 32 random bytes (head -c32 /dev/urandom | base64)")}
			}
			next, err := worker.DecodeSecretsKey(raw)
			if err != nil {
				return usageError{fmt.Errorf("ATTUNE_NEW_SECRETS_KEY %w", err)}
			}
			r, err := jobs.RotateSecretsKey(ctx, pool, old, next)
			if err != nil {
				return err
			}
			return a.print(r, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "re-encrypted %s and the sealed secret parameters of %s from key %s to key %s; restart every replica with ATTUNE_SECRETS_KEY set to the new key\n",
					pluralCount(r.Secrets, "secret"), pluralCount(r.Parameters, "execution"), r.OldKeyID, r.NewKeyID)
			})
		}),
	}
	cmd.AddCommand(set, list, del, rotate)
	return cmd
}

// pluralCount is "1 secret", "2 secrets".
func pluralCount(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// envValue is the value of name in environ, "" when unset.
func envValue(environ []string, name string) string {
	for _, kv := range slices.Backward(environ) {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

func scopeSuffix(r jobs.SecretRef) string {
	if r.ScopeRef == "" {
		return ""
	}
	return " for " + r.ScopeRef
}

// requireSecretScope refuses a secret for a pack or action that is not
// registered: no execution would ever see it, and a typo'd scope would fail
// silently at run time.
func requireSecretScope(ctx context.Context, pool *pgxpool.Pool, ref jobs.SecretRef) error {
	table, list := "", ""
	switch ref.Scope {
	case jobs.ScopePack:
		table, list = "attune.pack", "attune pack list"
	case jobs.ScopeAction:
		table, list = "attune.action", "attune action list"
	default:
		return nil
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table+" WHERE ref = $1)", ref.ScopeRef).Scan(&exists); err != nil {
		return fmt.Errorf("error looking up %s %q: %w", ref.Scope, ref.ScopeRef, err)
	}
	if !exists {
		return exitError{1, fmt.Sprintf("no %s %q is registered (%s shows them); register it first, or pass --force to store the secret anyway", ref.Scope, ref.ScopeRef, list)}
	}
	return nil
}

// readSecretValue reads the value from stdin: at a terminal without echo
// (after a prompt, so nobody waits on a silent attune), else all of stdin.
func (a *app) readSecretValue(name string) ([]byte, error) {
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(a.stderr, "value of secret %s (not echoed): ", name)
		value, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return nil, fmt.Errorf("error reading the value from the terminal: %w", err)
		}
		return value, nil
	}
	value, err := io.ReadAll(io.LimitReader(a.stdin, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("error reading the value from stdin: %w", err)
	}
	return value, nil
}
