package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/worker"
)

func (a *app) pruneCommand() *cobra.Command {
	var dry bool
	var limit int
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete finished executions past their retention (ATTUNE_RETENTION, or the action's retention:) and old events",
		Long: `Delete finished executions older than their action's retention (or
ATTUNE_RETENTION, 720h by default; 0 keeps everything), and events older than
ATTUNE_RETENTION that no execution names. Running and queued executions are
never removed. Replicas do this every 10 minutes, one at a time; prune does it
now. --dry-run lists what would go instead.`,
		Args: cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			if limit < 1 || limit > 10000 {
				return usageError{fmt.Errorf("--limit %d is invalid: use 1 to 10000", limit)}
			}
			if dry {
				cands, res, err := worker.PruneDry(ctx, pool, a.cfg.Retention, limit)
				if err != nil {
					return err
				}
				out := struct {
					worker.PruneResult
					DryRun   bool                    `json:"dry_run"`
					Examples []worker.PruneCandidate `json:"executions_listed"`
				}{res, true, cands}
				return a.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "would delete %d executions and %d events\n", res.Executions, res.Events)
					if len(cands) > 0 {
						fmt.Fprintln(w, "ID\tACTION\tSTATUS\tFINISHED")
					}
					for _, c := range cands {
						fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", c.ID, c.ActionRef, c.Status, c.FinishedAt.Format(time.RFC3339))
					}
					if res.Executions > len(cands) {
						fmt.Fprintf(w, "(%d more not listed; --limit lists more)\n", res.Executions-len(cands))
					}
				})
			}
			res, ok, err := worker.Prune(ctx, pool, a.cfg.Retention, a.log)
			if err != nil {
				return err
			}
			if !ok {
				return exitError{1, "another replica is pruning now; try again when it is done"}
			}
			return a.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "deleted %d executions and %d events\n", res.Executions, res.Events)
			})
		}),
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "list what would be deleted, delete nothing")
	cmd.Flags().IntVar(&limit, "limit", 50, "with --dry-run, list at most this many executions")
	return cmd
}
