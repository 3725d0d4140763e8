package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
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
			// Flag syntax first: a malformed command line needs no database.
			if _, err := parseParams(params, paramsJSON, nil); err != nil {
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
			decl, err := actionParams(ctx, pool, args[0])
			if err != nil {
				return err
			}
			p, err := parseParams(params, paramsJSON, decl)
			if err != nil {
				return usageError{err}
			}
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
	cmd.Flags().StringArrayVar(&params, "param", nil, "parameter k=v, v converted by k's declared type (array: a,b or JSON; object: JSON)")
	cmd.Flags().StringVar(&paramsJSON, "params-json", "", "all parameters as one JSON object")
	cmd.Flags().BoolVar(&watch, "watch", false, "wait for the outcome; exit 0 only when completed")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "execution timeout (overrides the action's), e.g. 30s")
	return cmd
}

// parseParams merges --params-json and --param k=v flags. decl, when the
// action is known, converts each v by its declared type (packs.Param
// ParseText); an undeclared k is left for Enqueue to refuse, naming the
// declared ones.
func parseParams(kvs []string, raw string, decl packs.Params) (map[string]any, error) {
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
		parsed, err := decl[k].ParseText(k, v) // undeclared: no type, JSON or text
		if err != nil {
			return nil, err
		}
		p[k] = parsed
	}
	return p, nil
}

// actionParams returns the declared parameters of action ref, or nil when
// no such action is registered (Enqueue then says so).
func actionParams(ctx context.Context, pool *pgxpool.Pool, ref string) (packs.Params, error) {
	var decl packs.Params
	err := pool.QueryRow(ctx, "SELECT parameters FROM attune.action WHERE ref = $1", ref).Scan(&decl)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("error reading the parameters of action %s: %w", ref, err)
	}
	return decl, nil
}

// atEOF reports whether dec has nothing but white space left.
func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}
