package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker"
)

func (a *app) workerCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Short: "Inspect workers (replicas)"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List workers: status, heartbeat age, capabilities, running executions", Args: cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			type row struct {
				Name         string          `json:"name"`
				Hostname     string          `json:"hostname"`
				Pid          int             `json:"pid"`
				Status       string          `json:"status"`
				Capabilities json.RawMessage `json:"capabilities"`
				StartedAt    time.Time       `json:"started_at"`
				HeartbeatAt  time.Time       `json:"heartbeat_at"`
				HeartbeatAge float64         `json:"heartbeat_age_seconds"`
				Running      int             `json:"running"`
			}
			list, err := queryAll[row](ctx, pool, `SELECT w.name, w.hostname, w.pid, w.status, w.capabilities, w.started_at, w.heartbeat_at,
				extract(epoch FROM now() - w.heartbeat_at)::float8,
				(SELECT count(*) FROM attune.execution e WHERE e.worker = w.name AND e.status IN ('running', 'canceling'))::int
				FROM attune.worker w ORDER BY w.status, w.name`)
			if err != nil {
				return err
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tSTATUS\tHEARTBEAT\tRUNNING\tCAPABILITIES")
				for _, r := range list {
					fmt.Fprintf(w, "%s\t%s\t%s ago\t%d\t%s\n", r.Name, r.Status,
						(time.Duration(r.HeartbeatAge * float64(time.Second))).Round(100*time.Millisecond), r.Running, r.Capabilities)
				}
			})
		}),
	})
	return cmd
}

// listCommand is a read-only table over one query.
func (a *app) listCommand(use, short, sql string, headers []string, withLimit bool) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			args := []any{}
			if withLimit {
				if limit < 1 || limit > 10000 {
					return usageError{fmt.Errorf("--limit %d is invalid: use 1 to 10000", limit)}
				}
				args = append(args, limit)
			}
			rows, err := pool.Query(ctx, sql, args...)
			if err != nil {
				return err
			}
			list, err := pgx.CollectRows(rows, pgx.RowToMap)
			if err != nil {
				return err
			}
			if list == nil {
				list = []map[string]any{}
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, strings.ToUpper(strings.Join(headers, "\t")))
				for _, r := range list {
					cells := make([]string, len(headers))
					for i, h := range headers {
						cells[i] = cell(r[h])
					}
					fmt.Fprintln(w, strings.Join(cells, "\t"))
				}
			})
		}),
	}
	if withLimit {
		cmd.Flags().IntVar(&limit, "limit", 50, "at most this many")
	}
	return cmd
}

func cell(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case time.Time:
		return t.Local().Format("2006-01-02 15:04:05")
	case string:
		return truncate(t, 60)
	case []any, map[string]any:
		b, _ := json.Marshal(t)
		return truncate(string(b), 60)
	}
	return fmt.Sprint(v)
}

func (a *app) sensorCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "sensor", Short: "Inspect sensors"}
	cmd.AddCommand(a.listCommand("list", "List sensors, with the replica running each",
		`SELECT s.ref, s.enabled, s.trigger_types, s.runner_type, s.entry_point,
			coalesce(st.worker, '') AS worker, coalesce(st.status, 'stopped') AS status
		FROM attune.sensor s LEFT JOIN attune.sensor_state st ON st.sensor_ref = s.ref ORDER BY s.ref`,
		[]string{"ref", "enabled", "trigger_types", "status", "worker", "entry_point"}, false))
	return cmd
}

func (a *app) triggerCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "trigger", Short: "Inspect triggers"}
	cmd.AddCommand(a.listCommand("list", "List triggers",
		`SELECT ref, pack_ref, description, parameters FROM attune.trigger ORDER BY ref`,
		[]string{"ref", "pack_ref", "description"}, false))
	return cmd
}

func (a *app) eventCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "event", Short: "Inspect events"}
	cmd.AddCommand(a.listCommand("list", "List events, newest first",
		`SELECT id, trigger_ref, sensor_ref, payload, created_at FROM attune.event ORDER BY id DESC LIMIT $1`,
		[]string{"id", "trigger_ref", "sensor_ref", "created_at", "payload"}, true))
	return cmd
}

func (a *app) ruleCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "rule", Short: "List, enable and disable rules"}
	cmd.AddCommand(a.listCommand("list", "List rules",
		`SELECT id, ref, enabled, trigger_ref, trigger_params, action_ref, conditions, action_params FROM attune.rule ORDER BY ref`,
		[]string{"ref", "enabled", "trigger_ref", "trigger_params", "action_ref"}, false))
	for _, enable := range []bool{true, false} {
		verb := map[bool]string{true: "enable", false: "disable"}[enable]
		cmd.AddCommand(&cobra.Command{
			Use: verb + " REF", Short: strings.ToUpper(verb[:1]) + verb[1:] + " a rule; running sensors learn it at once", Args: cobra.ExactArgs(1),
			RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
				var changed bool
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					var was bool
					if err := tx.QueryRow(ctx, "SELECT enabled FROM attune.rule WHERE ref = $1 FOR UPDATE", args[0]).Scan(&was); err != nil {
						if err == pgx.ErrNoRows {
							return fmt.Errorf("unknown rule %q; attune rule list shows the registered rules", args[0])
						}
						return err
					}
					if was == enable {
						return nil
					}
					changed = true
					if _, err := tx.Exec(ctx, "UPDATE attune.rule SET enabled = $2, updated = now() WHERE ref = $1", args[0], enable); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", packs.RuleChannel, args[0])
					return err
				})
				if err != nil {
					return err
				}
				state := map[bool]string{true: "enabled", false: "disabled"}[enable]
				return a.print(map[string]any{"ref": args[0], "enabled": enable, "changed": changed}, func(w *tabwriter.Writer) {
					if changed {
						fmt.Fprintf(w, "rule %s %s\n", args[0], state)
					} else {
						fmt.Fprintf(w, "rule %s was already %s\n", args[0], state)
					}
				})
			}),
		})
	}
	return cmd
}

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
