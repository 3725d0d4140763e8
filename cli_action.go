package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
)

func (a *app) actionCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "action", Short: "List and execute actions"}
	var pack string
	list := &cobra.Command{
		Use:   "list",
		Short: "List registered actions",
		Args:  cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			type row struct {
				Ref         string          `json:"ref"`
				Pack        string          `json:"pack"`
				Runner      string          `json:"runner_type"`
				Enabled     bool            `json:"enabled"`
				Parameters  json.RawMessage `json:"parameters"`
				Description string          `json:"description"`
			}
			list, err := queryAll[row](ctx, pool, `SELECT ref, pack_ref, runner_type, enabled, parameters, description
				FROM attune.action WHERE $1 = '' OR pack_ref = $1 ORDER BY ref`, pack)
			if err != nil {
				return err
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "REF\tRUNNER\tENABLED\tDESCRIPTION")
				for _, r := range list {
					fmt.Fprintf(w, "%s\t%s\t%t\t%s\n", r.Ref, r.Runner, r.Enabled, r.Description)
				}
			})
		}),
	}
	list.Flags().StringVar(&pack, "pack", "", "only this pack's actions")
	cmd.AddCommand(list, a.executeCommand())
	return cmd
}

func (a *app) executeCommand() *cobra.Command {
	var (
		params     []string
		paramsJSON string
		watch      bool
		timeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "execute REF",
		Short: "Enqueue an execution of an action",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseParams(params, paramsJSON)
			if err != nil {
				return usageError{err}
			}
			var opts jobs.Options
			if cmd.Flags().Changed("timeout") {
				if timeout < time.Second || timeout%time.Second != 0 {
					return usageError{fmt.Errorf("--timeout %s is invalid: use whole seconds of at least 1s, such as 30s or 5m", timeout)}
				}
				opts.TimeoutSeconds = int(timeout / time.Second)
			}
			ctx := cmd.Context()
			pool, err := a.db(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			var id int64
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				id, err = jobs.Enqueue(ctx, tx, args[0], p, &opts)
				return err
			})
			if err != nil {
				return err
			}
			if !watch {
				return a.print(map[string]any{"id": id, "action_ref": args[0], "status": jobs.StatusRequested}, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "execution %d of %s requested (attune execution show %d)\n", id, args[0], id)
				})
			}
			return a.watch(ctx, pool, id)
		},
	}
	cmd.Flags().StringArrayVar(&params, "param", nil, "parameter k=v; v parses as JSON when it can (n=3 is a number, s=hi a string)")
	cmd.Flags().StringVar(&paramsJSON, "params-json", "", "all parameters as one JSON object")
	cmd.Flags().BoolVar(&watch, "watch", false, "wait for the outcome; exit 0 only when completed")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "execution timeout (overrides the action's), e.g. 30s")
	return cmd
}

// parseParams merges --params-json and --param k=v flags.
func parseParams(kvs []string, raw string) (map[string]any, error) {
	p := map[string]any{}
	if raw != "" {
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("--params-json is not valid JSON: %w", err)
		}
		if !atEOF(dec) {
			return nil, fmt.Errorf("--params-json holds more than one JSON value; give one object such as '{\"name\": \"x\"}'")
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("--params-json must be a JSON object such as '{\"name\": \"x\"}'")
		}
		p = obj
	}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--param %q is not key=value; write --param name=value", kv)
		}
		var parsed any
		dec := json.NewDecoder(strings.NewReader(v))
		dec.UseNumber()
		if err := dec.Decode(&parsed); err != nil || !atEOF(dec) {
			parsed = v
		}
		p[k] = parsed
	}
	return p, nil
}

// atEOF reports whether dec has nothing but white space left.
func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}
