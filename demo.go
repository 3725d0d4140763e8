package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker"
	"github.com/attune-system/attune/worker/process"
)

// builtBinaries are the pack binaries built from Go source in this
// repository: output path and package, relative to the module root.
var builtBinaries = [][2]string{
	{"packs/examples/actions/hello", "./packs/examples/actions/hello_src"},
	{"packs/core/sensors/attune-core-timer-sensor", "./packs/core/sensors/timer"},
}

// demoStep is one showcase execution and the status it should end with.
type demoStep struct {
	what   string
	action string
	params map[string]any
	want   string
}

var demoSteps = []demoStep{
	{"native Go binary, JSON result", "examples.hello", map[string]any{"name": "attune", "count": 2}, jobs.StatusCompleted},
	{"shell script, text output", "examples.echo", map[string]any{"message": "hello from a shell action"}, jobs.StatusCompleted},
	{"failing action (exit 2)", "examples.fail", nil, jobs.StatusFailed},
	{"timed-out action (2 s limit)", "examples.sleep", nil, jobs.StatusTimeout},
}

func (a *app) demoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Showcase on a fresh machine: database, packs, a worker and a few executions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			start := time.Now()
			// The showcase is the table; routine logs (sensor started, ...)
			// would bury it. ATTUNE_LOG_LEVEL still wins when set.
			if !hasVar(a.environ, "ATTUNE_LOG_LEVEL") {
				quiet := a.cfg
				quiet.LogLevel = "warn"
				a.log = newLogger(quiet, a.stderr)
			}
			say := func(format string, args ...any) { fmt.Fprintf(a.stdout, "==> "+format+"\n", args...) }

			say("database %s", redactURL(a.cfg.DatabaseURL))
			pool, err := a.installDB(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()

			if err := buildMissing(ctx, a.cfg.PacksDir, say); err != nil {
				return err
			}
			say("registering packs from %s", a.cfg.PacksDir)
			if err := a.register(ctx, pool, a.cfg.PacksDir); err != nil {
				return err
			}

			cfg := a.cfg
			cfg.KillGrace = min(cfg.KillGrace, time.Second)
			srv, err := worker.NewServer(cfg, pool, a.log)
			if err != nil {
				return err
			}
			if err := srv.Start(ctx); err != nil {
				return err
			}
			defer srv.Stop(context.WithoutCancel(ctx)) //nolint:errcheck
			say("worker %s started (runtimes %s)", cfg.WorkerName, strings.Join(srv.Runtimes().Names(), ", "))

			ids := make([]int64, len(demoSteps))
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				for i, s := range demoSteps {
					id, err := jobs.Enqueue(ctx, tx, s.action, s.params, nil)
					if err != nil {
						return fmt.Errorf("enqueue %s: %w", s.action, err)
					}
					ids[i] = id
				}
				return nil
			})
			if err != nil {
				return err
			}
			say("enqueued %d executions; waiting for them", len(ids))

			results, err := waitAll(ctx, pool, ids, 60*time.Second)
			if err != nil {
				return err
			}
			var wrong []string
			type demoRow struct {
				e          *jobs.Execution
				what, want string
			}
			var rows []demoRow
			for i, e := range results {
				rows = append(rows, demoRow{e, demoSteps[i].what, demoSteps[i].want})
			}

			say("enabling rule %s: the timer sensor fires it every second", demoRule)
			ticks, err := runDemoRule(ctx, pool, demoRule, 2, 20*time.Second)
			if err != nil {
				wrong = append(wrong, err.Error())
			}
			for _, e := range ticks {
				rows = append(rows, demoRow{e, "timer rule → shell action", jobs.StatusCompleted})
			}

			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\nID\tACTION\tSHOWS\tSTATUS\tEXIT\tTOOK\tRESULT / ERROR")
			for _, r := range rows {
				e := r.e
				detail := strings.TrimSpace(deref(e.Error))
				if len(e.Result) > 0 {
					detail = string(e.Result)
				} else if detail == "" {
					detail = strings.TrimSpace(deref(e.Stdout))
				}
				exit, took := "", ""
				if e.ExitCode != nil {
					exit = fmt.Sprint(*e.ExitCode)
				}
				if e.StartedAt != nil && e.FinishedAt != nil {
					took = e.FinishedAt.Sub(*e.StartedAt).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.ActionRef, r.what, e.Status, exit, took, truncate(detail, 70))
				if e.Status != r.want {
					wrong = append(wrong, fmt.Sprintf("%s (%s) ended %s, expected %s", e.ActionRef, r.what, e.Status, r.want))
				}
			}
			tw.Flush()
			fmt.Fprintf(a.stdout, "\ndemo finished in %s. Next: go run . execution show %d; or start a worker with go run . serve\n"+
				"and, from another terminal, go run . action execute examples.hello --param name=you --watch\n",
				time.Since(start).Round(10*time.Millisecond), ids[0])
			if len(wrong) > 0 {
				return errors.New("demo went wrong: " + strings.Join(wrong, "; "))
			}
			return nil
		},
	}
}

// demoRule is the example rule the demo enables for a few seconds: the core
// timer sensor fires it every second and it runs examples.echo.
const demoRule = "examples.every_second"

// runDemoRule enables rule ref as `attune rule enable` does, waits until n
// of its executions have finished, and disables it again, whatever happened.
func runDemoRule(ctx context.Context, pool *pgxpool.Pool, ref string, n int, limit time.Duration) ([]*jobs.Execution, error) {
	var after int64
	if err := pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM attune.execution").Scan(&after); err != nil {
		return nil, err
	}
	if err := setRuleEnabled(ctx, pool, ref, true); err != nil {
		return nil, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = setRuleEnabled(ctx, pool, ref, false)
	}()
	deadline := time.Now().Add(limit)
	var ids []int64
	for len(ids) < n {
		rows, err := pool.Query(ctx, "SELECT id FROM attune.execution WHERE rule_ref = $1 AND id > $2 ORDER BY id LIMIT $3", ref, after, n)
		if err != nil {
			return nil, err
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return nil, err
		}
		if len(ids) >= n {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rule %s fired %d of %d times in %s; is the timer sensor running? (attune sensor list)", ref, len(ids), n, limit)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return waitAll(ctx, pool, ids, max(time.Until(deadline), 0)+5*time.Second)
}

// setRuleEnabled enables or disables a rule and tells the sensor
// supervisors, as `attune rule enable|disable` does.
func setRuleEnabled(ctx context.Context, pool *pgxpool.Pool, ref string, enabled bool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := packs.SetRuleEnabled(ctx, tx, ref, enabled)
		if errors.Is(err, packs.ErrUnknownRule) {
			return fmt.Errorf("rule %s is not registered; run the demo from the repository, or set ATTUNE_PACKS_DIR to its packs directory", ref)
		}
		return err
	})
}

// buildMissing builds the pack binaries that come as Go source, when they
// are not built yet. It needs the go command, as `go run . demo` has.
func buildMissing(ctx context.Context, packsDir string, say func(string, ...any)) error {
	root, err := filepath.Abs(filepath.Dir(filepath.Clean(packsDir)))
	if err != nil {
		return err
	}
	for _, b := range builtBinaries {
		out := filepath.Join(root, b[0])
		if _, err := os.Stat(out); err == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, strings.TrimPrefix(b[1], "./"))); err != nil {
			continue // not this repository's packs
		}
		say("building %s", b[0])
		var msg string
		goBin, err := exec.LookPath("go")
		if err == nil {
			// -C: the build runs in the module root, not in its work directory.
			msg, err = process.Output(ctx, process.Spec{Path: goBin, Args: []string{"build", "-C", root, "-o", out, b[1]}, Env: os.Environ()})
		}
		if err != nil {
			return fmt.Errorf("building %s failed (%w): %s; build it by hand with go build -o %s %s", b[0], err, strings.TrimSpace(msg), b[0], b[1])
		}
	}
	return nil
}

// waitAll waits until every execution has finished, for at most limit.
func waitAll(ctx context.Context, pool *pgxpool.Pool, ids []int64, limit time.Duration) ([]*jobs.Execution, error) {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, err := jobs.Wait(wctx, pool, ids...)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("executions still unfinished after %s; is a worker running? (attune worker list)", limit)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.Index(u[i+3:], "@"); j >= 0 {
			if k := strings.Index(u[i+3:i+3+j], ":"); k >= 0 {
				return u[:i+3+k+1] + "***" + u[i+3+j:]
			}
		}
	}
	return u
}

func hasVar(environ []string, name string) bool {
	for _, kv := range environ {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}
