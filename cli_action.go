package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker"
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
	cmd.AddCommand(list, a.showActionCommand(), a.executeCommand())
	return cmd
}

// actionInfo is what action show prints: the definition as registered.
type actionInfo struct {
	Ref               string          `json:"ref"`
	Pack              string          `json:"pack"`
	Description       string          `json:"description"`
	Enabled           bool            `json:"enabled"`
	RunnerType        string          `json:"runner_type"`
	EntryPoint        string          `json:"entry_point"`
	Path              string          `json:"path"`
	TimeoutSeconds    *int            `json:"timeout_seconds"`
	ParameterDelivery string          `json:"parameter_delivery"`
	ParameterFormat   string          `json:"parameter_format"`
	OutputFormat      string          `json:"output_format"`
	MaxRetries        int             `json:"max_retries"`
	Parameters        packs.Params    `json:"parameters"`
	ResultSchema      json.RawMessage `json:"result_schema"`
}

func (a *app) showActionCommand() *cobra.Command {
	return &cobra.Command{
		Use: "show REF", Aliases: []string{"get"}, Short: "Show an action: runner, entry point, timeout, delivery and every parameter",
		Args: cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			var ai actionInfo
			err := pool.QueryRow(ctx, `SELECT ref, pack_ref, description, enabled, runner_type, entry_point, path, timeout_seconds,
				parameter_delivery, parameter_format, output_format, max_retries, parameters, result_schema
				FROM attune.action WHERE ref = $1`, args[0]).Scan(&ai.Ref, &ai.Pack, &ai.Description, &ai.Enabled, &ai.RunnerType,
				&ai.EntryPoint, &ai.Path, &ai.TimeoutSeconds, &ai.ParameterDelivery, &ai.ParameterFormat, &ai.OutputFormat,
				&ai.MaxRetries, &ai.Parameters, &ai.ResultSchema)
			if errors.Is(err, pgx.ErrNoRows) {
				return exitError{1, fmt.Sprintf("unknown action %q; attune action list shows the registered actions", args[0])}
			}
			if err != nil {
				return fmt.Errorf("error reading action %s: %w", args[0], err)
			}
			return a.print(ai, func(w *tabwriter.Writer) { printAction(w, ai) })
		}),
	}
}

func printAction(w *tabwriter.Writer, ai actionInfo) {
	timeout := "ATTUNE_DEFAULT_TIMEOUT"
	if ai.TimeoutSeconds != nil {
		timeout = (time.Duration(*ai.TimeoutSeconds) * time.Second).String()
	}
	enabled := "yes"
	if !ai.Enabled {
		enabled = "no (attune.enqueue refuses it)"
	}
	for _, kv := range [][2]string{
		{"ref", ai.Ref}, {"pack", ai.Pack}, {"description", ai.Description}, {"enabled", enabled},
		{"runner", ai.RunnerType}, {"entry point", ai.EntryPoint + " (" + ai.Path + ")"}, {"timeout", timeout},
		{"parameters via", ai.ParameterDelivery + " (" + ai.ParameterFormat + ")"}, {"output", ai.OutputFormat},
		{"retries", fmt.Sprint(ai.MaxRetries)},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", kv[0], kv[1])
	}
	if len(ai.ResultSchema) > 0 && string(ai.ResultSchema) != "null" {
		fmt.Fprintf(w, "result schema:\t%s\n", ai.ResultSchema)
	}
	if len(ai.Parameters) == 0 {
		fmt.Fprintln(w, "parameters:\tnone")
		return
	}
	fmt.Fprintln(w, "\nPARAMETER\tTYPE\tREQUIRED\tDEFAULT\tALLOWED\tSECRET\tDESCRIPTION")
	for _, name := range slices.Sorted(maps.Keys(ai.Parameters)) {
		p := ai.Parameters[name]
		var allowed []string
		if len(p.Enum) > 0 {
			vals := make([]string, len(p.Enum))
			for i, v := range p.Enum {
				vals[i] = cell(v)
			}
			allowed = append(allowed, "one of "+strings.Join(vals, ", "))
		}
		if p.Minimum != nil {
			allowed = append(allowed, fmt.Sprintf(">= %g", *p.Minimum))
		}
		if p.Maximum != nil {
			allowed = append(allowed, fmt.Sprintf("<= %g", *p.Maximum))
		}
		def := "-"
		if p.Default != nil {
			def = cell(p.Default)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, p.Type, yesNo(p.Required), def,
			orDash(strings.Join(allowed, ", ")), yesNo(p.Secret), orDash(p.Description))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) executeCommand() *cobra.Command {
	var (
		params     []string
		paramsJSON string
		watch      bool
		timeout    time.Duration
		delay      time.Duration
		at         string
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
			scheduled, err := scheduleFlags(cmd, delay, at)
			if err != nil {
				return usageError{err}
			}
			opts.ScheduledAt = scheduled
			opts.Priority, _ = cmd.Flags().GetInt("priority")
			opts.MaxAttempts, _ = cmd.Flags().GetInt("max-attempts")
			for _, name := range []string{"priority", "max-attempts"} {
				if v, _ := cmd.Flags().GetInt(name); cmd.Flags().Changed(name) && v < 1 {
					return usageError{fmt.Errorf("--%s %d is invalid: use a whole number of at least 1", name, v)}
				}
			}
			// With the key, secret parameters are sealed before they are
			// stored; without it they wait in clear, as from SQL.
			if a.cfg.SecretsKey != "" {
				if opts.SecretsKey, err = worker.DecodeSecretsKey(a.cfg.SecretsKey); err != nil {
					return fmt.Errorf("ATTUNE_SECRETS_KEY %w", err)
				}
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
	cmd.Flags().Int("priority", 0, "1 (first) to 4 (last); default 1")
	cmd.Flags().DurationVar(&delay, "delay", 0, "start no sooner than this from now, e.g. 10m")
	cmd.Flags().StringVar(&at, "at", "", "start no sooner than this time (RFC 3339, e.g. 2026-12-24T18:00:00Z)")
	cmd.Flags().Int("max-attempts", 0, "attempts in all, overriding the action's max_retries + 1")
	return cmd
}

// scheduleFlags turns --delay or --at into the execution's scheduled_at.
func scheduleFlags(cmd *cobra.Command, delay time.Duration, at string) (time.Time, error) {
	switch {
	case cmd.Flags().Changed("delay") && cmd.Flags().Changed("at"):
		return time.Time{}, errors.New("give --delay or --at, not both")
	case cmd.Flags().Changed("delay"):
		if delay <= 0 {
			return time.Time{}, fmt.Errorf("--delay %s is invalid: use a positive duration such as 10m", delay)
		}
		return time.Now().Add(delay), nil
	case cmd.Flags().Changed("at"):
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return time.Time{}, fmt.Errorf("--at %q is invalid: use RFC 3339 such as 2026-12-24T18:00:00Z or 2026-12-24T18:00:00+01:00", at)
		}
		return t, nil
	}
	return time.Time{}, nil
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
