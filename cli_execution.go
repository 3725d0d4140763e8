package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/worker"
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
		fmt.Fprintf(w, "priority\t%d\n", e.Priority)
		if e.Worker != nil {
			fmt.Fprintf(w, "worker\t%s\n", *e.Worker)
		}
		fmt.Fprintf(w, "created\t%s\n", tableTime(e.CreatedAt))
		if e.ScheduledAt.After(e.CreatedAt.Add(time.Second)) {
			fmt.Fprintf(w, "scheduled\t%s\n", tableTime(e.ScheduledAt))
		}
		if e.StartedAt != nil {
			fmt.Fprintf(w, "started\t%s\n", tableTime(*e.StartedAt))
		}
		if e.FinishedAt != nil {
			fmt.Fprintf(w, "finished\t%s", tableTime(*e.FinishedAt))
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

// timeFlag reads --since or --until: a duration before now ("2h", "90m")
// or an RFC 3339 time; empty is no bound.
func timeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--%s %q is invalid: give a duration before now such as 2h, or a time such as 2026-12-01T09:00:00Z", name, v)
}

// thousands writes n with a comma every three digits: 1,234.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// logFollower prints each new character of an execution's streams once.
type logFollower struct {
	streams [2]*followedStream
	last    string // the status last read
}

// followedStream is what a follower has printed of one stream: its length
// in characters and its MD5, which TailOutput checks the stored text still
// starts with.
type followedStream struct {
	name  string
	w     io.Writer
	chars int
	sum   hash.Hash
	cut   bool // the stored text was rewritten (truncated): no more follows
}

func (s *followedStream) add(text string) {
	if text == "" || s.cut {
		return
	}
	fmt.Fprint(s.w, text)
	s.chars += utf8.RuneCountInString(text)
	s.sum.Write([]byte(text))
}

func (s *followedStream) md5() string { return hex.EncodeToString(s.sum.Sum(nil)) }

// follow reads e's new output every followInterval until it finishes.
func (f *logFollower) follow(ctx context.Context, pool *pgxpool.Pool, e *jobs.Execution) error {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	out, errs := f.streams[0], f.streams[1]
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		tail, err := jobs.TailOutput(ctx, pool, e.ID, out.chars, out.md5(), errs.chars, errs.md5())
		if err != nil {
			return err
		}
		f.last = tail.Status
		for _, st := range []struct {
			s    *followedStream
			same bool
			text string
		}{{out, tail.StdoutSame, tail.Stdout}, {errs, tail.StderrSame, tail.Stderr}} {
			if !st.same && !st.s.cut {
				// The truncation notice replaced the last bytes kept: what
				// was printed stands, and the stream grows no more.
				st.s.cut = true
				fmt.Fprintf(os.Stderr, "\n[attune: %s was cut at ATTUNE_MAX_%s_BYTES; the rest is not stored]\n", st.s.name, strings.ToUpper(st.s.name))
			}
			st.s.add(st.text)
		}
		if jobs.Finished(tail.Status) {
			return nil
		}
	}
}

// status is the execution's status as last read.
func (f *logFollower) status(e *jobs.Execution) string {
	if f.last != "" {
		return f.last
	}
	return e.Status
}

// finalLine is one line on how an execution ended, closing logs --follow.
func finalLine(e *jobs.Execution) string {
	line := fmt.Sprintf("--- execution %d %s", e.ID, e.Status)
	if e.ExitCode != nil {
		line += fmt.Sprintf(", exit code %d", *e.ExitCode)
	}
	if e.StartedAt != nil && e.FinishedAt != nil {
		line += ", took " + e.FinishedAt.Sub(*e.StartedAt).Round(time.Millisecond).String()
	}
	if e.Error != nil && *e.Error != "" {
		line += ": " + truncate(*e.Error, 200)
	}
	return line
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
	var (
		f            jobs.PageFilter
		since, until string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List executions, newest first",
		Args:  cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			if f.Limit < 1 || f.Limit > 10000 {
				return usageError{fmt.Errorf("--limit %d is invalid: use 1 to 10000", f.Limit)}
			}
			// A mistyped status would list nothing, silently.
			if f.Status != "" && !jobs.ValidStatus(f.Status) {
				return usageError{fmt.Errorf("--status %q is invalid: use requested, scheduled, running, completed, failed, timeout, canceling, cancelled or abandoned", f.Status)}
			}
			var err error
			if f.Since, err = timeFlag("since", since); err != nil {
				return usageError{err}
			}
			if f.Until, err = timeFlag("until", until); err != nil {
				return usageError{err}
			}
			list, next, err := jobs.ListPage(ctx, pool, f)
			if err != nil {
				return err
			}
			var total int64
			if next != 0 && !a.json {
				if total, err = jobs.Count(ctx, pool, f); err != nil {
					return err
				}
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
						tableTime(e.CreatedAt), dur, truncate(deref(e.Error), 60))
				}
				if total > 0 {
					fmt.Fprintf(w, "(showing %d of %s; --limit, --since and the filters narrow or widen it)\n", len(list), thousands(total))
				}
			})
		}),
	}
	list.Flags().StringVar(&f.ActionRef, "action", "", "only executions of this action")
	list.Flags().StringVar(&f.PackRef, "pack", "", "only executions of this pack's actions")
	list.Flags().StringVar(&f.RuleRef, "rule", "", "only executions this rule enqueued")
	list.Flags().StringVar(&f.Status, "status", "", "only executions with this status")
	list.Flags().StringVar(&since, "since", "", "only executions created since then: a duration ago (2h) or a time (RFC 3339)")
	list.Flags().StringVar(&until, "until", "", "only executions created before then: a duration ago (30m) or a time (RFC 3339)")
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
	show.Aliases = []string{"get"} // StackStorm's verb
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
		// every second), so following prints what is new as it comes,
		// reading only that (jobs.TailOutput), not the whole output again.
		f := &logFollower{streams: [2]*followedStream{
			{name: "stdout", w: a.stdout, sum: md5.New()}, {name: "stderr", w: a.stderr, sum: md5.New()}}}
		if !a.json {
			f.streams[0].add(deref(e.Stdout))
			f.streams[1].add(deref(e.Stderr))
		}
		if follow && !jobs.Finished(e.Status) {
			var err error
			if a.json {
				_, err = jobs.WaitWith(ctx, pool, jobs.WaitOptions{Interval: followInterval}, e.ID)
			} else {
				err = f.follow(ctx, pool, e)
			}
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("stopped following execution %d (still %s): %w", e.ID, f.status(e), ctx.Err())
				}
				return err
			}
			if e, err = jobs.Get(ctx, pool, e.ID); err != nil {
				return err
			}
		}
		if follow && !a.json {
			// The end of the stream says how it ended, and the exit code
			// lets a script tell: tail -f cannot.
			fmt.Fprintln(a.stderr, finalLine(e))
			if e.Status != jobs.StatusCompleted {
				return exitError{1, fmt.Sprintf("execution %d %s", e.ID, e.Status)}
			}
			return nil
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
			before, err := jobs.GetFacts(ctx, pool, id)
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
	cmd.AddCommand(list, show, result, logs, cancel, a.reRunCommand())
	return cmd
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func (a *app) reRunCommand() *cobra.Command {
	var (
		params []string
		watch  bool
	)
	cmd := &cobra.Command{
		Use:   "re-run ID",
		Short: "Enqueue an execution again: same action, parameters, timeout, priority and attempts (--param replaces one)",
		Args:  cobra.ExactArgs(1),
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if _, err := parseParams(params, "", nil); err != nil {
				return usageError{err}
			}
			old, err := jobs.GetFacts(ctx, pool, id)
			if err != nil {
				return err
			}
			decl, err := actionParams(ctx, pool, old.ActionRef)
			if err != nil {
				return err
			}
			overrides, err := parseParams(params, "", decl)
			if err != nil {
				return usageError{err}
			}
			var key []byte
			if a.cfg.SecretsKey != "" {
				if key, err = worker.DecodeSecretsKey(a.cfg.SecretsKey); err != nil {
					return err
				}
			}
			var newID int64
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
				newID, err = jobs.ReRunWith(ctx, tx, id, overrides, key)
				return err
			})
			if serr := (*jobs.SecretParametersError)(nil); errors.As(err, &serr) {
				return exitError{1, fmt.Sprintf("execution %d had secret parameters, whose values attune does not keep: give them again with --param %s=VALUE",
					id, strings.Join(serr.Names, "=VALUE --param "))}
			}
			if err != nil {
				return err
			}
			if watch {
				return a.watch(ctx, pool, newID)
			}
			return a.print(map[string]any{"id": newID, "action_ref": old.ActionRef, "status": jobs.StatusRequested, "re_run_of": id}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "execution %d of %s requested, re-running %d (attune execution show %d)\n", newID, old.ActionRef, id, newID)
			})
		}),
	}
	cmd.Flags().StringArrayVar(&params, "param", nil, "replace parameter k=v, converted by k's declared type")
	cmd.Flags().BoolVar(&watch, "watch", false, "wait for the outcome; exit 0 only when completed")
	return cmd
}
