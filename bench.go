package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker"
	"github.com/attune-system/attune/worker/process"
)

// benchResult is what attune bench measures, in one run.
type benchResult struct {
	Executions      int     `json:"executions"`
	Concurrency     int     `json:"concurrency"`
	Binary          string  `json:"binary"`
	ExecutionsPerS  float64 `json:"executions_per_second"`
	RawSpawnPerS    float64 `json:"raw_spawn_per_second"`
	Ratio           float64 `json:"ratio"`
	PickupP50Ms     float64 `json:"pickup_p50_ms"`
	PickupP99Ms     float64 `json:"pickup_p99_ms"`
	PickupSamples   int     `json:"pickup_samples"`
	WorkerCPUPerExe float64 `json:"worker_cpu_ms_per_execution"`
	// Where the machine's CPU went, per execution, in each phase: this
	// process, its children (the action), and everything else (mostly
	// PostgreSQL).
	RawCPU    cpuSplit `json:"raw_spawn_cpu_ms_per_run"`
	AttuneCPU cpuSplit `json:"attune_cpu_ms_per_execution"`
}

// cpuSplit is CPU time per run, in milliseconds.
type cpuSplit struct {
	Self     float64 `json:"self"`
	Children float64 `json:"children"`
	Other    float64 `json:"other"`
}

// cpuSample is a point-in-time reading of the CPU counters.
type cpuSample struct {
	self, children, machine time.Duration
}

func sampleCPU() cpuSample {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return cpuSample{
		self:     time.Duration(self.Utime.Nano() + self.Stime.Nano()),
		children: time.Duration(kids.Utime.Nano() + kids.Stime.Nano()),
		machine:  machineBusy(),
	}
}

// machineBusy is the machine's non-idle CPU time from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

func (a cpuSample) per(b cpuSample, n int) cpuSplit {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	self, kids := b.self-a.self, b.children-a.children
	return cpuSplit{Self: ms(self), Children: ms(kids), Other: max(ms(b.machine-a.machine-self-kids), 0)}
}

func (a *app) benchCommand() *cobra.Command {
	var (
		n       int
		pickups int
		binary  string
		profile string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure executions/s against the raw spawn rate, and pickup latency",
		Long: `bench registers a pack with one trivial native action (a copy of /bin/true
by default), then in one run measures:
  - the raw spawn rate of that binary at ATTUNE_MAX_CONCURRENT_EXECUTIONS;
  - executions/s through the real path: SQL enqueue -> River -> process ->
    result committed, at the same concurrency;
  - pickup latency (SQL enqueue committed -> process started) over
    sequential enqueues on an idle worker;
  - the worker's CPU per execution.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || pickups < 1 {
				return usageError{fmt.Errorf("-n and --pickups must be positive")}
			}
			ctx := cmd.Context()
			pool, err := a.installDB(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			if profile != "" {
				f, err := os.Create(profile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			res, err := a.bench(ctx, pool, binary, n, pickups)
			if err != nil {
				return err
			}
			return a.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "\nexecutions\t%d at concurrency %d (%s)\n", res.Executions, res.Concurrency, filepath.Base(res.Binary))
				fmt.Fprintf(w, "raw spawn\t%.0f /s\n", res.RawSpawnPerS)
				fmt.Fprintf(w, "attune\t%.0f executions/s\n", res.ExecutionsPerS)
				fmt.Fprintf(w, "ratio\t%.2f of raw spawn\n", res.Ratio)
				fmt.Fprintf(w, "pickup latency\tp50 %.2f ms, p99 %.2f ms (%d sequential SQL enqueues)\n", res.PickupP50Ms, res.PickupP99Ms, res.PickupSamples)
				fmt.Fprintf(w, "worker CPU\t%.3f ms per execution\n", res.WorkerCPUPerExe)
				fmt.Fprintf(w, "machine CPU per run\traw spawn: %.3f ms (spawner %.3f, child %.3f, other %.3f)\n",
					res.RawCPU.Self+res.RawCPU.Children+res.RawCPU.Other, res.RawCPU.Self, res.RawCPU.Children, res.RawCPU.Other)
				fmt.Fprintf(w, "\tattune: %.3f ms (worker %.3f, child %.3f, other, mostly PostgreSQL, %.3f)\n",
					res.AttuneCPU.Self+res.AttuneCPU.Children+res.AttuneCPU.Other, res.AttuneCPU.Self, res.AttuneCPU.Children, res.AttuneCPU.Other)
			})
		},
	}
	cmd.Flags().IntVarP(&n, "executions", "n", 2000, "executions to run")
	cmd.Flags().IntVar(&pickups, "pickups", 100, "sequential enqueues for pickup latency")
	cmd.Flags().StringVar(&binary, "binary", "/bin/true", "the trivial native binary to run")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the whole run (go tool pprof)")
	return cmd
}

func (a *app) bench(ctx context.Context, pool *pgxpool.Pool, binary string, n, pickups int) (*benchResult, error) {
	dir, err := os.MkdirTemp("", "attune-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	packDir := filepath.Join(dir, "bench")
	if err := os.MkdirAll(filepath.Join(packDir, "actions"), 0o755); err != nil {
		return nil, err
	}
	bin := filepath.Join(packDir, "actions", "noop")
	if err := copyFile(binary, bin, 0o755); err != nil {
		return nil, fmt.Errorf("copying %s into the bench pack: %w", binary, err)
	}
	files := map[string]string{
		"pack.yaml":         "ref: bench\nlabel: bench\nversion: 1.0.0\n",
		"actions/noop.yaml": "name: noop\nrunner_type: native\nentry_point: noop\noutput_format: text\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(packDir, name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	p, problems := packs.Load(packDir)
	if packs.HasErrors(problems) {
		return nil, packs.AsError(problems)
	}
	if err := packs.RegisterPool(ctx, pool, []*packs.Pack{p}, problems).Err(); err != nil {
		return nil, err
	}

	conc := a.cfg.MaxConcurrentExecutions
	res := &benchResult{Executions: n, Concurrency: conc, Binary: binary}
	tty := false
	if f, ok := a.stderr.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	progress := func(format string, args ...any) {
		if tty && !a.json {
			fmt.Fprintf(a.stderr, "\r\033[K"+format, args...)
		}
	}

	// Raw spawn: the same binary, same concurrency, no attune.
	progress("raw spawn: %d runs of %s...", n, filepath.Base(binary))
	rawStart, rawCPU := time.Now(), sampleCPU()
	if err := rawSpawn(ctx, bin, n, conc); err != nil {
		return nil, err
	}
	res.RawSpawnPerS = float64(n) / time.Since(rawStart).Seconds()
	res.RawCPU = rawCPU.per(sampleCPU(), n)

	var (
		mu       sync.Mutex
		starts   = map[int64]time.Time{}
		wantPick atomic.Bool
		finished = make(chan string, n+4*conc)
	)
	cfg := a.cfg
	srv, err := worker.NewServer(cfg, pool, a.log)
	if err != nil {
		return nil, err
	}
	srv.OnFinish(func(_ int64, status string) {
		if !wantPick.Load() {
			finished <- status
		}
	})
	srv.OnStart(func(id int64, at time.Time) {
		if wantPick.Load() {
			mu.Lock()
			starts[id] = at
			mu.Unlock()
		}
	})
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	defer srv.Stop(context.WithoutCancel(ctx)) //nolint:errcheck

	// Warm up: connections, caches, the first fork.
	if err := enqueueAndWait(ctx, pool, finished, 2*conc, nil); err != nil {
		return nil, err
	}

	// Throughput through the real path.
	cpu0 := sampleCPU()
	t0 := time.Now()
	err = enqueueAndWait(ctx, pool, finished, n, func(done int) {
		progress("attune: %d/%d executions committed (%.0f/s)", done, n, float64(done)/time.Since(t0).Seconds())
	})
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(t0)
	res.ExecutionsPerS = float64(n) / elapsed.Seconds()
	res.Ratio = res.ExecutionsPerS / res.RawSpawnPerS
	res.AttuneCPU = cpu0.per(sampleCPU(), n)
	res.WorkerCPUPerExe = res.AttuneCPU.Self

	// Pickup latency on an idle worker: enqueue commits, then the process
	// starts; one at a time.
	wantPick.Store(true)
	var lat []float64
	for i := range pickups {
		progress("pickup latency: %d/%d", i+1, pickups)
		var id int64
		var committed time.Time
		if err := pool.QueryRow(ctx, "SELECT attune.enqueue('bench.noop')").Scan(&id); err != nil {
			return nil, err
		}
		committed = time.Now()
		if err := waitFinished(ctx, pool, id); err != nil {
			return nil, err
		}
		mu.Lock()
		at, ok := starts[id]
		mu.Unlock()
		if ok {
			lat = append(lat, float64(at.Sub(committed).Microseconds())/1000)
		}
	}
	progress("")
	slices.Sort(lat)
	res.PickupSamples = len(lat)
	if len(lat) > 0 {
		res.PickupP50Ms = lat[len(lat)*50/100]
		res.PickupP99Ms = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}

// rawSpawn runs bin n times with conc at once through the process layer
// alone (fork/exec in a process group of its own, pipes, a work directory,
// reap): the cost of a process, without attune's queue and database.
func rawSpawn(ctx context.Context, bin string, n, conc int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := process.Run(ctx, process.Spec{Path: bin}).Err(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// enqueueAndWait enqueues n executions in one statement and waits until the
// worker reports all of them committed as finished.
func enqueueAndWait(ctx context.Context, pool *pgxpool.Pool, finished <-chan string, n int, report func(done int)) error {
	if _, err := pool.Exec(ctx, "SELECT attune.enqueue('bench.noop') FROM generate_series(1, $1)", n); err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	failed := 0
	for done := 0; done < n; {
		select {
		case status := <-finished:
			done++
			if status != "completed" {
				failed++
			}
		case <-tick.C:
			if report != nil {
				report(done)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d bench executions did not complete; attune execution list --action bench.noop shows why", failed, n)
	}
	return nil
}

// waitFinished waits until one bench execution has finished, reading it
// every millisecond: the pickup loop enqueues the next one only then.
func waitFinished(ctx context.Context, pool *pgxpool.Pool, id int64) error {
	const limit = 30 * time.Second
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	es, err := jobs.WaitWith(wctx, pool, jobs.WaitOptions{Interval: time.Millisecond}, id)
	switch {
	case err != nil && ctx.Err() == nil && es != nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("bench execution %d still %s after %s; is the worker running?", id, es[0].Status, limit)
	case err != nil:
		return err
	case es[0].Status != jobs.StatusCompleted:
		return fmt.Errorf("bench execution %d %s", id, es[0].Status)
	}
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
