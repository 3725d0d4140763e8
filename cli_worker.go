package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/attune-system/attune/jobs"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
)

func (a *app) workerCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Short: "Inspect workers (replicas)"}
	var all bool
	list := &cobra.Command{
		Use: "list", Short: "List active workers and those inactive for less than a day", Args: cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			list, err := jobs.ListWorkers(ctx, pool, all)
			if err != nil {
				return err
			}
			var hidden int
			if !all {
				if err := pool.QueryRow(ctx, `SELECT count(*) FROM attune.worker
					WHERE status <> 'active' AND heartbeat_at <= now() - interval '24 hours'`).Scan(&hidden); err != nil {
					return fmt.Errorf("error counting older workers: %w", err)
				}
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tSTATUS\tHEARTBEAT\tRUNNING\tCAPABILITIES")
				for _, r := range list {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", r.Name, r.Status, ago(r.HeartbeatAgeSeconds), r.Running, r.Capabilities)
				}
				if hidden > 0 {
					fmt.Fprintf(w, "(%d workers inactive for over 24 h not shown; --all lists them)\n", hidden)
				}
			})
		}),
	}
	list.Flags().BoolVar(&all, "all", false, "also workers inactive for over 24 h")
	cmd.AddCommand(list)
	return cmd
}
