package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
)

// watch waits until an execution finishes, printing the outcome. On a
// terminal it shows the status and elapsed time while it waits.
func (a *app) watch(ctx context.Context, pool *pgxpool.Pool, id int64) error {
	tty := false
	if f, ok := a.stderr.(*os.File); ok && !a.json {
		tty = isatty.IsTerminal(f.Fd())
	}
	start := time.Now()
	hinted := false
	progress := func(es []*jobs.Execution) error {
		e := es[0]
		if jobs.Finished(e.Status) {
			return nil
		}
		if tty {
			fmt.Fprintf(a.stderr, "\rexecution %d %s… %s", id, e.Status, time.Since(start).Round(100*time.Millisecond))
		}
		if !hinted && e.Status == jobs.StatusRequested && time.Since(start) > 5*time.Second {
			hinted = true
			var active int
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM attune.worker WHERE status = 'active'").Scan(&active); err == nil && active == 0 {
				fmt.Fprintf(a.stderr, "\rexecution %d is waiting, but no worker is active: start one with attune serve (attune worker list)\n", id)
			}
		}
		return nil
	}
	es, err := jobs.WaitWith(ctx, pool, jobs.WaitOptions{Progress: progress}, id)
	if err != nil {
		if ctx.Err() != nil {
			if es == nil {
				return fmt.Errorf("stopped watching execution %d: %w", id, ctx.Err())
			}
			return fmt.Errorf("stopped watching execution %d (still %s): %w", id, es[0].Status, ctx.Err())
		}
		return err
	}
	e := es[0]
	if tty {
		fmt.Fprint(a.stderr, "\r\033[K")
	}
	if err := a.showExecution(e); err != nil {
		return err
	}
	if e.Status != jobs.StatusCompleted {
		return exitError{1, fmt.Sprintf("execution %d %s", id, e.Status)}
	}
	return nil
}

func (a *app) showExecution(e *jobs.Execution) error {
	return a.print(e, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "id\t%d\n", e.ID)
		fmt.Fprintf(w, "action\t%s\n", e.ActionRef)
		fmt.Fprintf(w, "status\t%s\n", e.Status)
		fmt.Fprintf(w, "parameters\t%s\n", e.Parameters)
		if e.RuleRef != nil {
			fmt.Fprintf(w, "rule\t%s (event %d)\n", *e.RuleRef, deref(e.EventID))
		}
		fmt.Fprintf(w, "attempt\t%d of %d\n", e.Attempt, e.MaxAttempts)
		if e.Worker != nil {
			fmt.Fprintf(w, "worker\t%s\n", *e.Worker)
		}
		fmt.Fprintf(w, "created\t%s\n", e.CreatedAt.Format(time.RFC3339Nano))
		if e.StartedAt != nil {
			fmt.Fprintf(w, "started\t%s\n", e.StartedAt.Format(time.RFC3339Nano))
		}
		if e.FinishedAt != nil {
			fmt.Fprintf(w, "finished\t%s", e.FinishedAt.Format(time.RFC3339Nano))
			if e.StartedAt != nil {
				fmt.Fprintf(w, " (took %s)", e.FinishedAt.Sub(*e.StartedAt).Round(time.Millisecond))
			}
			fmt.Fprintln(w)
		}
		if e.WaitingReason != nil {
			fmt.Fprintf(w, "waiting\t%s\n", strings.TrimPrefix(*e.WaitingReason, "waiting: "))
		}
		if e.NextAttemptAt != nil {
			fmt.Fprintf(w, "next attempt\t%s\n", e.NextAttemptAt.Format(time.RFC3339Nano))
		}
		if e.ExitCode != nil {
			fmt.Fprintf(w, "exit code\t%d\n", *e.ExitCode)
		}
		if e.Error != nil {
			fmt.Fprintf(w, "error\t%s\n", *e.Error)
		}
		if len(e.Result) > 0 {
			fmt.Fprintf(w, "result\t%s\n", e.Result)
		}
		w.Flush()
		for _, s := range []struct {
			name      string
			text      *string
			truncated bool
		}{{"stdout", e.Stdout, e.StdoutTruncated}, {"stderr", e.Stderr, e.StderrTruncated}} {
			if s.text == nil || *s.text == "" {
				continue
			}
			note := ""
			if s.truncated {
				note = " (truncated at ATTUNE_MAX_" + strings.ToUpper(s.name) + "_BYTES)"
			}
			fmt.Fprintf(w, "--- %s%s ---\n%s", s.name, note, *s.text)
			if !strings.HasSuffix(*s.text, "\n") {
				fmt.Fprintln(w)
			}
		}
	})
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usageError{fmt.Errorf("%q is not an execution id; ids are positive whole numbers (attune execution list)", s)}
	}
	return id, nil
}

// followInterval is how often logs --follow reads the execution's row.
const followInterval = 200 * time.Millisecond

func (a *app) executionCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "execution", Short: "Inspect, follow and cancel executions"}
	var f jobs.ListFilter
	list := &cobra.Command{
		Use:   "list",
		Short: "List executions, newest first",
		Args:  cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			if f.Limit < 1 || f.Limit > 10000 {
				return usageError{fmt.Errorf("--limit %d is invalid: use 1 to 10000", f.Limit)}
			}
			// A mistyped status would list nothing, silently.
			if f.Status != "" && !jobs.Finished(f.Status) && !slices.Contains([]string{jobs.StatusRequested,
				jobs.StatusScheduled, jobs.StatusRunning, jobs.StatusCanceling}, f.Status) {
				return usageError{fmt.Errorf("--status %q is invalid: use requested, scheduled, running, completed, failed, timeout, canceling, cancelled or abandoned", f.Status)}
			}
			list, err := jobs.List(ctx, pool, f)
			if err != nil {
				return err
			}
			if list == nil {
				list = []*jobs.Execution{}
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tACTION\tSTATUS\tEXIT\tCREATED\tDURATION\tERROR")
				for _, e := range list {
					exit, dur := "", ""
					if e.ExitCode != nil {
						exit = strconv.Itoa(*e.ExitCode)
					}
					if e.StartedAt != nil && e.FinishedAt != nil {
						dur = e.FinishedAt.Sub(*e.StartedAt).Round(time.Millisecond).String()
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.ActionRef, e.Status, exit,
						e.CreatedAt.Local().Format("2006-01-02 15:04:05"), dur, truncate(deref(e.Error), 60))
				}
			})
		}),
	}
	list.Flags().StringVar(&f.ActionRef, "action", "", "only executions of this action")
	list.Flags().StringVar(&f.Status, "status", "", "only executions with this status")
	list.Flags().IntVar(&f.Limit, "limit", 50, "at most this many")

	byID := func(use, short string, fn func(ctx context.Context, pool *pgxpool.Pool, e *jobs.Execution) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
				id, err := parseID(args[0])
				if err != nil {
					return err
				}
				e, err := jobs.Get(ctx, pool, id)
				if err != nil {
					return err
				}
				return fn(ctx, pool, e)
			}),
		}
	}
	show := byID("show", "Show an execution: status, times, exit code, result, error, output", func(_ context.Context, _ *pgxpool.Pool, e *jobs.Execution) error {
		return a.showExecution(e)
	})
	result := byID("result", "Print an execution's JSON result", func(_ context.Context, _ *pgxpool.Pool, e *jobs.Execution) error {
		if len(e.Result) == 0 {
			if !jobs.Finished(e.Status) {
				return exitError{1, fmt.Sprintf("execution %d is %s; it has no result yet", e.ID, e.Status)}
			}
			return exitError{1, fmt.Sprintf("execution %d (%s) has no JSON result; attune execution logs %d shows its output", e.ID, e.Status, e.ID)}
		}
		_, err := fmt.Fprintf(a.stdout, "%s\n", e.Result)
		return err
	})
	var follow bool
	logs := byID("logs", "Print an execution's stdout and stderr", func(ctx context.Context, pool *pgxpool.Pool, e *jobs.Execution) error {
		// A running execution's row holds its output so far (written about
		// every second), so following prints what is new as it comes.
		var outN, errN int
		emit := func() {
			if out := deref(e.Stdout); len(out) > outN {
				fmt.Fprint(a.stdout, out[outN:])
				outN = len(out)
			}
			if errs := deref(e.Stderr); len(errs) > errN {
				fmt.Fprint(a.stderr, errs[errN:])
				errN = len(errs)
			}
		}
		if !a.json {
			emit()
		}
		if follow && !jobs.Finished(e.Status) {
			opts := jobs.WaitOptions{Interval: followInterval, Progress: func(es []*jobs.Execution) error {
				e = es[0]
				if !a.json {
					emit()
				}
				return nil
			}}
			if _, err := jobs.WaitWith(ctx, pool, opts, e.ID); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("stopped following execution %d (still %s): %w", e.ID, e.Status, ctx.Err())
				}
				return err
			}
		}
		if a.json {
			return a.print(map[string]any{"id": e.ID, "status": e.Status, "stdout": e.Stdout, "stderr": e.Stderr,
				"stdout_truncated": e.StdoutTruncated, "stderr_truncated": e.StderrTruncated}, nil)
		}
		if !follow && !jobs.Finished(e.Status) {
			fmt.Fprintf(a.stderr, "execution %d is %s; this is its output so far (--follow prints the rest as it comes)\n", e.ID, e.Status)
		}
		return nil
	})
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "print output as it comes until the execution finishes")
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a queued or running execution", Args: cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			before, err := jobs.Get(ctx, pool, id)
			if err != nil {
				return err
			}
			status, err := jobs.Cancel(ctx, pool, id)
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("execution %d %s", id, status)
			switch {
			case jobs.Finished(before.Status):
				msg = fmt.Sprintf("execution %d already finished (%s); nothing to cancel", id, before.Status)
			case status == jobs.StatusCanceling:
				msg = fmt.Sprintf("execution %d canceling: its process gets SIGTERM, then SIGKILL after the kill grace", id)
			}
			return a.print(map[string]any{"id": id, "status": status, "previous_status": before.Status}, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, msg)
			})
		}),
	}
	cmd.AddCommand(list, show, result, logs, cancel)
	return cmd
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
