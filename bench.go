package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
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
	Executions  int    `json:"executions"`
	Concurrency int    `json:"concurrency"`
	Binary      string `json:"binary"`
	// RawSpawnPerS is the binary run through the process layer alone;
	// PeerPerS a plain River worker running it (bench_peer.go);
	// ExecutionsPerS attune.
	RawSpawnPerS   float64 `json:"raw_spawn_per_second"`
	PeerPerS       float64 `json:"peer_per_second,omitempty"`
	ExecutionsPerS float64 `json:"executions_per_second"`
	// Ratio is attune/raw spawn, PeerRatio attune/peer.
	Ratio     float64 `json:"ratio"`
	PeerRatio float64 `json:"ratio_to_peer,omitempty"`

	Pickup *pickupResult `json:"pickup,omitempty"`

	WorkerCPUPerExe float64 `json:"worker_cpu_ms_per_execution"`
	// Where the machine's CPU went, per execution, in each phase: this
	// process, its children (the action), and everything else (mostly
	// PostgreSQL).
	RawCPU    cpuSplit  `json:"raw_spawn_cpu_ms_per_run"`
	PeerCPU   *cpuSplit `json:"peer_cpu_ms_per_job,omitempty"`
	AttuneCPU cpuSplit  `json:"attune_cpu_ms_per_execution"`

	// Replicas is set with --replicas: attune ran in that many `attune
	// serve` processes instead of in this one.
	Replicas []replicaResult `json:"replicas,omitempty"`
}

type benchOptions struct {
	n, pickups, replicas int
	rounds               int
	binary               string
	noPeer               bool
}

func (a *app) benchCommand() *cobra.Command {
	var (
		o       benchOptions
		profile string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure executions/s against raw spawn and a plain River worker, and pickup latency",
		Long: `bench registers a pack with one trivial native action (a copy of --binary,
/bin/true by default), then in one run measures, at
ATTUNE_MAX_CONCURRENT_EXECUTIONS:
  - the raw spawn rate of that binary;
  - the peer: a plain River worker running the same binary, inserting its
    result into a table of its own and completing the job in the same
    transaction (FetchCooldown 2ms, its own schema);
  - executions/s through attune: SQL enqueue -> River -> process -> result
    committed;
  - pickup latency (SQL enqueue committed -> process started) over
    sequential enqueues from a pool of its own on an idle worker, and where
    it goes;
  - the CPU each costs the machine.
The three contenders take turns (--rounds), so that load from elsewhere on
the machine falls on each alike; compare their ratios, not runs.
With --replicas N, attune runs in N 'attune serve' processes instead of in
bench's own, with -n executions queued at once; bench reports their
throughput and each replica's peak RSS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.n < 1 || o.pickups < 1 || o.rounds < 1 || o.replicas < 0 {
				return usageError{fmt.Errorf("-n, --pickups and --rounds must be positive, --replicas 0 or more")}
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
			res, err := a.bench(ctx, pool, o)
			if err != nil {
				return err
			}
			return a.print(res, func(w *tabwriter.Writer) { printBench(w, res) })
		},
	}
	cmd.Flags().IntVarP(&o.n, "executions", "n", 2000, "executions to run")
	cmd.Flags().IntVar(&o.pickups, "pickups", 100, "sequential enqueues for pickup latency")
	cmd.Flags().StringVar(&o.binary, "binary", "/bin/true", "the trivial native binary to run")
	cmd.Flags().IntVar(&o.rounds, "rounds", 4, "take turns this many times, each contender running -n/rounds per turn")
	cmd.Flags().IntVar(&o.replicas, "replicas", 0, "run attune in this many 'attune serve' processes (0: in bench's own)")
	cmd.Flags().BoolVar(&o.noPeer, "no-peer", false, "skip the plain River worker")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the whole run (go tool pprof)")
	return cmd
}

func printBench(w io.Writer, res *benchResult) {
	fmt.Fprintf(w, "\nexecutions\t%d at concurrency %d (%s)\n", res.Executions, res.Concurrency, filepath.Base(res.Binary))
	fmt.Fprintf(w, "raw spawn\t%.0f /s\n", res.RawSpawnPerS)
	if res.PeerPerS > 0 {
		fmt.Fprintf(w, "peer (plain River worker)\t%.0f jobs/s\n", res.PeerPerS)
	}
	fmt.Fprintf(w, "attune\t%.0f executions/s", res.ExecutionsPerS)
	if len(res.Replicas) > 0 {
		fmt.Fprintf(w, " (%d replicas)", len(res.Replicas))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "attune/raw\t%.2f\n", res.Ratio)
	if res.PeerRatio > 0 {
		fmt.Fprintf(w, "attune/peer\t%.2f\n", res.PeerRatio)
	}
	if p := res.Pickup; p != nil {
		fmt.Fprintf(w, "pickup latency\tp50 %.2f ms, p99 %.2f ms (%d sequential SQL enqueues from another pool)\n", p.P50Ms, p.P99Ms, p.Samples)
		fmt.Fprintf(w, "\tp50 by step: commit to River's fetch %.2f ms, to the claim %.2f, to process start %.2f\n",
			p.FetchP50Ms, p.ClaimP50Ms, p.StartP50Ms)
		fmt.Fprintf(w, "\tp99 by step: commit to River's fetch %.2f ms, to the claim %.2f, to process start %.2f\n",
			p.FetchP99Ms, p.ClaimP99Ms, p.StartP99Ms)
	}
	for _, r := range res.Replicas {
		fmt.Fprintf(w, "replica %s\tpeak RSS (VmHWM) %d KiB\n", r.Name, r.PeakRSSKiB)
	}
	if len(res.Replicas) == 0 {
		fmt.Fprintf(w, "worker CPU\t%.3f ms per execution\n", res.WorkerCPUPerExe)
	}
	fmt.Fprintf(w, "machine CPU per run\traw spawn: %.3f ms (spawner %.3f, child %.3f, other %.3f)\n",
		res.RawCPU.total(), res.RawCPU.Self, res.RawCPU.Children, res.RawCPU.Other)
	if c := res.PeerCPU; c != nil {
		fmt.Fprintf(w, "\tpeer: %.3f ms (worker %.3f, child %.3f, other, mostly PostgreSQL, %.3f)\n",
			c.total(), c.Self, c.Children, c.Other)
	}
	if len(res.Replicas) > 0 {
		fmt.Fprintf(w, "\tattune: %.3f ms (bench %.3f; replicas, their children and PostgreSQL %.3f)\n",
			res.AttuneCPU.total(), res.AttuneCPU.Self, res.AttuneCPU.Other)
		return
	}
	fmt.Fprintf(w, "\tattune: %.3f ms (worker %.3f, child %.3f, other, mostly PostgreSQL, %.3f)\n",
		res.AttuneCPU.total(), res.AttuneCPU.Self, res.AttuneCPU.Children, res.AttuneCPU.Other)
}

// benchPack registers pack bench, whose action noop is a copy of binary,
// and returns the copy's path.
func benchPack(ctx context.Context, pool *pgxpool.Pool, dir, binary string) (string, error) {
	packDir := filepath.Join(dir, "bench")
	if err := os.MkdirAll(filepath.Join(packDir, "actions"), 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(packDir, "actions", "noop")
	if err := copyFile(binary, bin, 0o755); err != nil {
		return "", fmt.Errorf("copying %s into the bench pack: %w", binary, err)
	}
	files := map[string]string{
		"pack.yaml":         "ref: bench\nlabel: bench\nversion: 1.0.0\n",
		"actions/noop.yaml": "name: noop\nrunner_type: native\nentry_point: noop\noutput_format: text\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(packDir, name), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	p, problems := packs.Load(packDir)
	if packs.HasErrors(problems) {
		return "", packs.AsError(problems)
	}
	if err := packs.RegisterPool(ctx, pool, []*packs.Pack{p}, problems).Err(); err != nil {
		return "", err
	}
	return bin, nil
}

func (a *app) bench(ctx context.Context, pool *pgxpool.Pool, o benchOptions) (*benchResult, error) {
	dir, err := os.MkdirTemp("", "attune-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin, err := benchPack(ctx, pool, dir, o.binary)
	if err != nil {
		return nil, err
	}

	n, conc := o.n, a.cfg.MaxConcurrentExecutions
	res := &benchResult{Executions: n, Concurrency: conc, Binary: o.binary}
	tty := false
	if f, ok := a.stderr.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	progress := func(format string, args ...any) {
		if tty && !a.json {
			fmt.Fprintf(a.stderr, "\r\033[K"+format, args...)
		}
	}
	defer progress("")

	// The contenders, each warmed up, then run in rounds that take turns so
	// that load from elsewhere on the machine falls on all of them alike.
	phases := []*phase{{name: "raw spawn", run: func(ctx context.Context, k int, _ func(int)) error {
		return rawSpawn(ctx, bin, k, conc)
	}}}
	if !o.noPeer {
		// What a Go user would write instead of attune.
		p, err := startPeer(ctx, a.cfg.DatabaseURL, bin, conc, n+2*conc)
		if err != nil {
			return nil, err
		}
		defer p.stop(context.WithoutCancel(ctx)) //nolint:errcheck
		if err := p.run(ctx, 2*conc, nil); err != nil {
			return nil, err
		}
		phases = append(phases, &phase{name: "peer", run: p.run, check: func(ctx context.Context) error {
			got, err := p.results(ctx)
			if err == nil && got != n+2*conc {
				err = fmt.Errorf("the peer committed %d results for %d jobs", got, n+2*conc)
			}
			return err
		}})
	}

	if o.replicas > 0 {
		rs, err := a.startReplicas(ctx, pool, o.replicas)
		defer rs.stop()
		if err != nil {
			return nil, err
		}
		attune := &phase{name: fmt.Sprintf("attune, %d replicas", o.replicas), run: func(ctx context.Context, k int, report func(int)) error {
			return enqueueAndDrain(ctx, pool, k, report)
		}}
		if err := runRounds(ctx, append(phases, attune), n, o.rounds, progress); err != nil {
			return nil, err
		}
		if res.Replicas, err = rs.peakRSS(); err != nil {
			return nil, err
		}
		res.fill(phases, attune, n)
		return res, nil
	}

	var (
		mu       sync.Mutex
		starts   = map[int64]time.Time{}
		claims   = map[int64]time.Time{} // the claim's started_at, read while the process runs
		wantPick atomic.Bool
		finished = make(chan string, n+4*conc)
		picked   = make(chan pickDone, 1)
	)
	srv, err := worker.NewServer(a.cfg, pool, a.log)
	if err != nil {
		return nil, err
	}
	srv.OnFinish(func(id int64, status string) {
		if wantPick.Load() {
			picked <- pickDone{id, status}
			return
		}
		finished <- status
	})
	srv.OnStart(func(id int64, at time.Time) {
		if !wantPick.Load() {
			return
		}
		mu.Lock()
		starts[id] = at
		mu.Unlock()
		// The row says when the claim ran until the result replaces
		// started_at with the process's own start: read it now, after the
		// start was taken.
		var claimed time.Time
		if err := pool.QueryRow(ctx, "SELECT started_at FROM attune.execution WHERE id = $1", id).Scan(&claimed); err == nil {
			mu.Lock()
			claims[id] = claimed
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
	attune := &phase{name: "attune", run: func(ctx context.Context, k int, report func(int)) error {
		return enqueueAndWait(ctx, pool, finished, k, report)
	}}
	if err := runRounds(ctx, append(phases, attune), n, o.rounds, progress); err != nil {
		return nil, err
	}
	res.fill(phases, attune, n)
	res.WorkerCPUPerExe = res.AttuneCPU.Self

	// Pickup latency on an idle worker, enqueued as an application would.
	wantPick.Store(true)
	startedAt := func(id int64) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := starts[id]
		return at, ok
	}
	waitPicked := func(ctx context.Context, id int64) error {
		// The hook, not polling: an idle replica means an idle database.
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for {
			select {
			case d := <-picked:
				if d.id != id {
					continue
				}
				if d.status != jobs.StatusCompleted {
					return fmt.Errorf("bench execution %d %s; attune execution show %d says why", id, d.status, id)
				}
				return nil
			case <-timeout.C:
				return fmt.Errorf("bench execution %d not finished after 30s; is the worker running?", id)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	steps := func(ctx context.Context, id int64) (fetched, claimed time.Time, err error) {
		mu.Lock()
		claimed, ok := claims[id]
		mu.Unlock()
		if !ok {
			return fetched, claimed, fmt.Errorf("the claim time of execution %d was not read while it ran", id)
		}
		var jobID int64
		if err := pool.QueryRow(ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&jobID); err != nil {
			return fetched, claimed, fmt.Errorf("error reading execution %d: %w", id, err)
		}
		// River's fetch sets attempted_at to its transaction's start.
		job, err := srv.Client().JobGet(ctx, jobID)
		if err != nil {
			return fetched, claimed, fmt.Errorf("error reading River job %d: %w", jobID, err)
		}
		if job.AttemptedAt != nil {
			fetched = *job.AttemptedAt
		}
		return fetched, claimed, nil
	}
	res.Pickup, err = measurePickup(ctx, a.cfg.DatabaseURL, o.pickups, startedAt, waitPicked, steps, func(i int) {
		progress("pickup latency: %d/%d", i+1, o.pickups)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// phase is one contender of a bench run: run runs k jobs and returns once
// all are committed; check, when set, verifies the contender's own count at
// the end.
type phase struct {
	name    string
	run     func(ctx context.Context, k int, report func(done int)) error
	check   func(ctx context.Context) error
	elapsed time.Duration
	cpu     cpuSample // summed over rounds
}

func (p *phase) perS(n int) float64 { return float64(n) / p.elapsed.Seconds() }

// runRounds runs n jobs through every phase in rounds, each phase a share
// of n per round, the order rotating so that none always goes first.
func runRounds(ctx context.Context, phases []*phase, n, rounds int, progress func(string, ...any)) error {
	rounds = max(1, min(rounds, n))
	for r := range rounds {
		k := n / rounds
		if r == rounds-1 {
			k = n - k*(rounds-1)
		}
		for i := range phases {
			p := phases[(r+i)%len(phases)]
			c0, t0 := sampleCPU(), time.Now()
			err := p.run(ctx, k, func(done int) {
				progress("round %d/%d, %s: %d/%d committed (%.0f/s)", r+1, rounds, p.name, done, k, float64(done)/time.Since(t0).Seconds())
			})
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			p.elapsed += time.Since(t0)
			p.cpu = p.cpu.add(sampleCPU().sub(c0))
		}
	}
	for _, p := range phases {
		if p.check != nil {
			if err := p.check(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// fill sets the rates, ratios and CPU of res from the phases: raw spawn
// first, the peer second if it ran.
func (res *benchResult) fill(phases []*phase, attune *phase, n int) {
	res.RawSpawnPerS = phases[0].perS(n)
	res.RawCPU = cpuSample{}.per(phases[0].cpu, n)
	res.ExecutionsPerS = attune.perS(n)
	res.Ratio = res.ExecutionsPerS / res.RawSpawnPerS
	res.AttuneCPU = cpuSample{}.per(attune.cpu, n)
	if len(phases) > 1 {
		res.PeerPerS = phases[1].perS(n)
		res.PeerRatio = res.ExecutionsPerS / res.PeerPerS
		c := cpuSample{}.per(phases[1].cpu, n)
		res.PeerCPU = &c
	}
}

// pickDone is an execution settled while bench measures pickup.
type pickDone struct {
	id     int64
	status string
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

// enqueueAndDrain enqueues n executions in one statement and polls until
// all of them have finished, whichever replica ran them.
func enqueueAndDrain(ctx context.Context, pool *pgxpool.Pool, n int, report func(done int)) error {
	var first, last int64
	err := pool.QueryRow(ctx, `SELECT min(id), max(id) FROM (
		SELECT attune.enqueue('bench.noop') AS id FROM generate_series(1, $1)) e`, n).Scan(&first, &last)
	if err != nil {
		return fmt.Errorf("error enqueueing: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastReport time.Time
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		var completed, failed int
		err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'completed'),
			count(*) FILTER (WHERE status IN ('failed', 'timeout', 'cancelled', 'abandoned'))
			FROM attune.execution WHERE id BETWEEN $1 AND $2`, first, last).Scan(&completed, &failed)
		if err != nil {
			return err
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d bench executions did not complete; attune execution list --action bench.noop shows why", failed, n)
		}
		if completed == n {
			return nil
		}
		if report != nil && time.Since(lastReport) > 200*time.Millisecond {
			report(completed)
			lastReport = time.Now()
		}
	}
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
