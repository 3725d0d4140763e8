package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
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
