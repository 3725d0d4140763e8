package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/packs"
)

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
