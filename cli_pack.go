package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/packs"
)

func (a *app) packCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "pack", Short: "Check, register, list and remove packs"}
	cmd.AddCommand(a.packRemoveCommand())
	cmd.AddCommand(&cobra.Command{
		Use:   "check PATH",
		Short: "Validate a pack (or a directory of packs) without a database",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, problems := loadPath(cmd.Context(), args[0])
			if err := interrupted(cmd.Context(), "pack check interrupted before every file was read"); err != nil {
				return err
			}
			if a.json {
				return a.checkJSON(args[0], ps, problems)
			}
			if len(ps) == 0 && len(problems) == 1 {
				return exitError{1, problems[0].Error()} // e.g. no such directory: one line says it
			}
			a.reportProblems(problems)
			if packs.HasErrors(problems) {
				return exitError{1, fmt.Sprintf("%s has %d error(s); fix them and run attune pack check again", args[0], countErrors(problems))}
			}
			if len(ps) == 0 {
				return exitError{1, fmt.Sprintf("no pack found in %s: a pack is a directory holding a pack.yaml; give its path, or the directory of packs", args[0])}
			}
			for _, p := range ps {
				fmt.Fprintf(a.stdout, "pack %s: %d actions, %d sensors, %d triggers, %d rules: OK\n", p.Ref, len(p.Actions), len(p.Sensors), len(p.Triggers), len(p.Rules))
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "register [PATH]",
		Short: "Load one pack, or every pack in ATTUNE_PACKS_DIR, into the database",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := a.cfg.PacksDir
			if len(args) == 1 {
				path = args[0]
			}
			// Read the disk first: a wrong path needs no database to say so.
			ps, problems := loadPath(cmd.Context(), path)
			if err := interrupted(cmd.Context(), "pack register interrupted while reading the packs; nothing was registered"); err != nil {
				return err
			}
			if len(ps) == 0 {
				return a.registerLoaded(cmd.Context(), nil, path, ps, problems)
			}
			pool, err := a.db(cmd.Context())
			if err != nil {
				return err
			}
			defer pool.Close()
			return a.registerLoaded(cmd.Context(), pool, path, ps, problems)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List registered packs",
		Args:  cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			type row struct {
				Ref         string `json:"ref"`
				Label       string `json:"label"`
				Version     string `json:"version"`
				Actions     int    `json:"actions"`
				Description string `json:"description"`
			}
			list, err := queryAll[row](ctx, pool, `SELECT p.ref, p.label, p.version,
				(SELECT count(*) FROM attune.action a WHERE a.pack_ref = p.ref AND a.enabled)::int, p.description
				FROM attune.pack p ORDER BY p.ref`)
			if err != nil {
				return err
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "REF\tVERSION\tACTIONS\tLABEL")
				for _, r := range list {
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", r.Ref, r.Version, r.Actions, r.Label)
				}
			})
		}),
	})
	return cmd
}

// loadPath loads PATH as one pack when it holds a pack.yaml, else as a
// directory of packs. It stops early when ctx is done (SIGINT, SIGTERM).
func loadPath(ctx context.Context, path string) ([]*packs.Pack, []packs.Problem) {
	if _, err := os.Stat(filepath.Join(path, "pack.yaml")); err == nil {
		p, problems := packs.LoadContext(ctx, path)
		if p == nil {
			return nil, problems
		}
		return []*packs.Pack{p}, problems
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, []packs.Problem{{File: path, Msg: "no such directory; give a pack's directory or the directory of packs (ATTUNE_PACKS_DIR)"}}
	}
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		return nil, []packs.Problem{{File: path, Msg: "not a pack directory (no pack.yaml) nor a directory of packs"}}
	}
	return packs.LoadAllContext(ctx, path)
}

// interrupted is the error msg when ctx stopped the loading: what was
// loaded is incomplete, so it is neither reported as checked nor written.
func interrupted(ctx context.Context, msg string) error {
	if ctx.Err() == nil {
		return nil
	}
	return exitError{1, msg}
}

func (a *app) reportProblems(problems []packs.Problem) {
	for _, p := range problems {
		fmt.Fprintln(a.stderr, p.Error())
	}
}

func countErrors(ps []packs.Problem) int {
	n := 0
	for _, p := range ps {
		if !p.Warning {
			n++
		}
	}
	return n
}

// register loads and registers packs; a pack with load errors is skipped
// (others still register) and the command fails at the end.
func (a *app) register(ctx context.Context, pool *pgxpool.Pool, path string) error {
	ps, problems := loadPath(ctx, path)
	if err := interrupted(ctx, "interrupted while reading the packs; nothing was registered"); err != nil {
		return err
	}
	return a.registerLoaded(ctx, pool, path, ps, problems)
}

// registerLoaded registers packs loaded from path and prints what became of
// each; pool may be nil when none loaded. packs.RegisterPool decides which
// packs to write and in what order; this only reports.
func (a *app) registerLoaded(ctx context.Context, pool *pgxpool.Pool, path string, ps []*packs.Pack, problems []packs.Problem) error {
	if len(ps) == 0 && len(problems) == 1 {
		return exitError{1, problems[0].Error()} // e.g. no such directory: one line says it
	}
	a.reportProblems(problems)
	if len(ps) == 0 && len(problems) == 0 {
		return exitError{1, fmt.Sprintf("no pack found in %s: a pack is a directory holding a pack.yaml; give its path or set ATTUNE_PACKS_DIR to the directory of packs", path)}
	}
	var results packs.Results
	if len(ps) > 0 {
		results = packs.RegisterPool(ctx, pool, ps, problems)
	}
	registered := []*packs.RegisterResult{}
	failed := 0
	for _, r := range results {
		var loadErr *packs.LoadError
		switch {
		case r.Err == nil:
			registered = append(registered, r)
			continue
		case errors.As(r.Err, &loadErr):
			fmt.Fprintf(a.stderr, "pack %s not registered: fix the errors above\n", r.Name())
		default:
			fmt.Fprintf(a.stderr, "pack %s not registered: %s\n", r.Name(), oneLine(r.Err))
		}
		failed++
	}
	if err := a.print(registered, func(w *tabwriter.Writer) {
		for _, r := range registered {
			fmt.Fprintf(w, "registered pack %s: %d actions, %d sensors, %d triggers, %d rules\n", r.Pack, r.Actions, r.Sensors, r.Triggers, r.Rules)
			for _, d := range r.DisabledActions {
				fmt.Fprintf(w, "  disabled action %s (gone from disk)\n", d)
			}
			for _, k := range r.KeptRules {
				state, verb := "disabled", "disable"
				if k.Enabled {
					state, verb = "enabled", "enable"
				}
				fmt.Fprintf(w, "  rule %s stays %s (set by attune rule %s; its YAML says enabled: %t)\n", k.Ref, state, verb, !k.Enabled)
			}
		}
	}); err != nil {
		return err
	}
	if len(ps) == 0 {
		return exitError{1, fmt.Sprintf("nothing registered from %s: fix the errors above", path)}
	}
	if failed > 0 {
		return exitError{1, fmt.Sprintf("%d pack(s) not registered", failed)}
	}
	return nil
}

// checkJSON prints pack check's findings for machines: the packs that
// loaded and every problem with file, line and severity.
func (a *app) checkJSON(path string, ps []*packs.Pack, problems []packs.Problem) error {
	type problem struct {
		File    string `json:"file"`
		Line    int    `json:"line,omitempty"`
		Message string `json:"message"`
		Warning bool   `json:"warning"`
	}
	type summary struct {
		Ref      string `json:"ref"`
		Actions  int    `json:"actions"`
		Sensors  int    `json:"sensors"`
		Triggers int    `json:"triggers"`
		Rules    int    `json:"rules"`
	}
	out := struct {
		OK       bool      `json:"ok"`
		Packs    []summary `json:"packs"`
		Problems []problem `json:"problems"`
	}{OK: !packs.HasErrors(problems) && len(ps) > 0, Packs: []summary{}, Problems: []problem{}}
	for _, p := range ps {
		out.Packs = append(out.Packs, summary{p.Ref, len(p.Actions), len(p.Sensors), len(p.Triggers), len(p.Rules)})
	}
	for _, p := range problems {
		out.Problems = append(out.Problems, problem{p.File, p.Line, p.Msg, p.Warning})
	}
	if err := a.print(out, nil); err != nil {
		return err
	}
	if !out.OK {
		return exitError{1, fmt.Sprintf("%s: %d error(s), %d pack(s) loaded", path, countErrors(problems), len(ps))}
	}
	return nil
}
