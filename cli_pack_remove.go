package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/packs"
)

func (a *app) packRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove REF",
		Short: "Remove a registered pack: its actions, sensors, triggers and rules (executions and events stay)",
		Args:  cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			var r *packs.Removed
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
				r, err = packs.Remove(ctx, tx, args[0])
				return err
			})
			switch {
			case errors.Is(err, packs.ErrUnknownPack):
				return exitError{1, fmt.Sprintf("no pack %q is registered; attune pack list shows them", args[0])}
			case errors.Is(err, packs.ErrPackBusy):
				return exitError{1, err.Error()}
			case err != nil:
				return err
			}
			return a.print(r, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "removed pack %s: %d actions, %d sensors, %d triggers, %d rules (its files stay on disk; pack register would add it again)\n",
					r.Pack, r.Actions, r.Sensors, r.Triggers, r.Rules)
			})
		}),
	}
}
