package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
)

func (a *app) eventCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "event", Short: "Inspect events"}
	cmd.AddCommand(a.listCommand("list", "List events, newest first",
		`SELECT id, trigger_ref, sensor_ref, payload, created_at FROM attune.event ORDER BY id DESC LIMIT $1`,
		[]string{"id", "trigger_ref", "sensor_ref", "created_at", "payload"}, true))
	cmd.AddCommand(a.eventShowCommand())
	return cmd
}

// eventInfo is what event show prints: the event and what each rule on its
// trigger did with it.
type eventInfo struct {
	ID         int64           `json:"id"`
	TriggerRef string          `json:"trigger_ref"`
	SensorRef  *string         `json:"sensor_ref"`
	Payload    json.RawMessage `json:"payload"`
	CreatedAt  time.Time       `json:"created_at"`
	Rules      []struct {
		Rule        string `json:"rule"`
		ExecutionID int64  `json:"execution_id,omitempty"`
		Skipped     string `json:"skipped,omitempty"`
		NotMatched  bool   `json:"not_matched,omitempty"`
	} `json:"rules"`
}

func (a *app) eventShowCommand() *cobra.Command {
	return &cobra.Command{
		Use: "show ID", Aliases: []string{"get"}, Short: "Show an event: its payload, and which rules fired, were skipped (and why) or did not match",
		Args: cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return usageError{fmt.Errorf("%q is not an event id; ids are positive whole numbers (attune event list)", args[0])}
			}
			var ev eventInfo
			var rules []byte
			err = pool.QueryRow(ctx, `SELECT id, trigger_ref, sensor_ref, payload, created_at, rules FROM attune.event WHERE id = $1`, id).
				Scan(&ev.ID, &ev.TriggerRef, &ev.SensorRef, &ev.Payload, &ev.CreatedAt, &rules)
			if errors.Is(err, pgx.ErrNoRows) {
				return exitError{1, fmt.Sprintf("event not found: %d (attune event list shows recent ones)", id)}
			}
			if err != nil {
				return fmt.Errorf("error reading event %d: %w", id, err)
			}
			if err := json.Unmarshal(rules, &ev.Rules); err != nil {
				return fmt.Errorf("error reading what event %d's rules did: %w", id, err)
			}
			return a.print(ev, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "id\t%d\n", ev.ID)
				fmt.Fprintf(w, "trigger\t%s\n", ev.TriggerRef)
				if ev.SensorRef != nil {
					fmt.Fprintf(w, "sensor\t%s\n", *ev.SensorRef)
				}
				fmt.Fprintf(w, "created\t%s\n", tableTime(ev.CreatedAt))
				fmt.Fprintf(w, "payload\t%s\n", ev.Payload)
				if len(ev.Rules) == 0 {
					fmt.Fprintln(w, "rules\tnone was enabled on its trigger")
					return
				}
				fmt.Fprintln(w, "\nRULE\tOUTCOME")
				for _, r := range ev.Rules {
					switch {
					case r.ExecutionID != 0:
						fmt.Fprintf(w, "%s\tfired: execution %d (attune execution show %d)\n", r.Rule, r.ExecutionID, r.ExecutionID)
					case r.Skipped != "":
						fmt.Fprintf(w, "%s\tskipped: %s\n", r.Rule, r.Skipped)
					default:
						fmt.Fprintf(w, "%s\tconditions not met\n", r.Rule)
					}
				}
			})
		}),
	}
}
