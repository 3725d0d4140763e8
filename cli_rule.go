package main

import (
	"context"
	"errors"
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
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
					changed, err = packs.SetRuleEnabled(ctx, tx, args[0], enable)
					return err
				})
				if errors.Is(err, packs.ErrUnknownRule) {
					return fmt.Errorf("%w; attune rule list shows the registered rules", err)
				}
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
