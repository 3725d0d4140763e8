//go:build linux

package main

// Replicas and crash safety (SPEC §6 "worker death", §2, §8), tested with
// real `attune serve` processes on real PostgreSQL: exactly once across
// replicas, kill -9 of a replica, SIGTERM with long executions, a PostgreSQL
// restart under load, and `attune worker list`.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
	"github.com/attune-system/attune/worker"
)

// replicaPack is the pack the replicas run. Shell scripts keep the children
// cheap and make their process tree realistic: sleep.sh's `sleep` is a
// grandchild of the worker, in the script's process group.
var replicaPack = map[string]string{
	"pack.yaml": "ref: r\nlabel: replica tests\nversion: 1.0.0\n",
	"actions/append.yaml": `name: append
entry_point: append.sh
parameters:
  out: {type: string, required: true}
  pause: {type: number, default: 0}
`,
	// O_APPEND writes of a short line are atomic: concurrent children never
	// interleave, so the file is a faithful log of runs. The pause after it
	// keeps executions in flight.
	"actions/append.sh": `echo "$ATTUNE_EXEC_ID" >> "$ATTUNE_ACTION_OUT"
if [ "$ATTUNE_ACTION_PAUSE" != 0 ]; then sleep "$ATTUNE_ACTION_PAUSE"; fi
`,
	"actions/sleep.yaml": `name: sleep
entry_point: sleep.sh
max_retries: 0
parameters:
  dir: {type: string, required: true}
  seconds: {type: integer, default: 30}
`,
	"actions/sleep_retry.yaml": `name: sleep_retry
entry_point: sleep.sh
max_retries: 1
parameters:
  dir: {type: string, required: true}
  seconds: {type: integer, default: 30}
`,
	// Each run leaves its pid (the process group id) in {id}.pids, then its
	// output marker; a run after the first ends at once, so a retried
	// execution completes.
	"actions/sleep.sh": `d="$ATTUNE_ACTION_DIR"
echo "$$" >> "$d/$ATTUNE_EXEC_ID.pids"
if [ -e "$d/$ATTUNE_EXEC_ID.ran" ]; then
	echo "second run"
	exit 0
fi
: > "$d/$ATTUNE_EXEC_ID.ran"
sleep "$ATTUNE_ACTION_SECONDS"
echo "slept"
`,
}

type replicaBundle struct {
	bin   string
	url   string
	packs string
	work  string // where actions write
	pool  *pgxpool.Pool
	ctx   context.Context
	// pgids are the process groups of every action run seen, killed at the
	// end in case a test failed with them alive.
	mu       sync.Mutex
	pgids    map[int]bool
	replicas []*replica // every replica started, for dumpReplicas
}

// setupReplicas registers the test pack in the database at url (created and
// migrated by attune migrate when missing) and returns what tests need to
// start replicas on it.
func setupReplicas(t *testing.T, url string) *replicaBundle {
	t.Helper()
	// Longer than any wait below (the longest is 5 minutes), so that a
	// wait that times out says what it waited for, not "context deadline
	// exceeded".
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	b := &replicaBundle{bin: attuneBinary(t), url: url, packs: t.TempDir(), work: t.TempDir(), ctx: ctx, pgids: map[int]bool{}}
	for name, body := range replicaPack {
		path := filepath.Join(b.packs, "r", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	}
	b.attune(t, "migrate")
	b.attune(t, "pack", "register")
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	b.pool = pool
	t.Cleanup(b.killLeftovers)
	return b
}

// fastReap gives a replica the short stale window (3 s: its fence at
// 1.5 s, its reaping of others after 3 s), for the tests of a dead, frozen
// or fenced replica. The others keep the default's 15 s, as a heartbeat
// held up on a loaded machine would fence a replica with 3 s and abandon
// what it runs: right, but not what they test.
const fastReap = "ATTUNE_WORKER_STALE_AFTER=3s"

// reaperReap is for the replica that reaps a dead or frozen one and then
// runs its work: 6 s, so that it still reaps within seconds, while its own
// fence (at 4.5 s) does not fire on a heartbeat the loaded machine held
// up. (CI: a survivor with 3 s fenced itself and abandoned its retry.) A
// window longer than the victim's is safe: the victim fences first.
const reaperReap = "ATTUNE_WORKER_STALE_AFTER=6s"

// env is the complete environment of an attune process.
func (b *replicaBundle) env(name string, extra ...string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"ATTUNE_DATABASE_URL=" + b.url,
		"ATTUNE_PACKS_DIR=" + b.packs,
		"ATTUNE_WORKER_NAME=" + name,
		"ATTUNE_HEARTBEAT_INTERVAL=1s",
		"ATTUNE_WORKER_STALE_AFTER=15s", // fastReap shortens it
		"ATTUNE_KILL_GRACE=1s",
		"ATTUNE_LOG_FORMAT=json",
		"ATTUNE_HTTP_ADDR=127.0.0.1:0", // replicas share this host: any free port
	}, extra...)
}

// attune runs one CLI command to completion and returns its stdout.
func (b *replicaBundle) attune(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Env = b.env("cli")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "attune %s: %s", strings.Join(args, " "), stderr.String())
	return stdout.String()
}

// replica is one running `attune serve`.
type replica struct {
	name string
	cmd  *exec.Cmd
	logs *syncLog
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, once done
}

// start runs `attune serve` as replica name and waits until it heartbeats.
func (b *replicaBundle) start(t *testing.T, name string, extra ...string) *replica {
	t.Helper()
	r := &replica{name: name, logs: &syncLog{}, done: make(chan struct{})}
	r.cmd = exec.Command(b.bin, "serve")
	r.cmd.Env = b.env(name, extra...)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	// Should the test binary die, its replicas die with it.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, r.cmd.Start())
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	b.mu.Lock()
	b.replicas = append(b.replicas, r)
	b.mu.Unlock()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.signal(syscall.SIGTERM)
			r.signal(syscall.SIGTERM) // second signal: stop at once
			select {
			case <-r.done:
			case <-time.After(30 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.done
			}
		}
		if t.Failed() {
			t.Logf("logs of replica %s:\n%s", r.name, r.logs.String())
		}
	})
	b.eventually(t, 30*time.Second, "replica "+name+" registered", func() bool {
		var n int
		err := b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.worker WHERE name = $1 AND status = 'active' AND pid = $2",
			name, r.cmd.Process.Pid).Scan(&n)
		return err == nil && n == 1 && b.logged(r, "worker started")
	})
	return r
}

func (b *replicaBundle) logged(r *replica, msg string) bool {
	return strings.Contains(r.logs.String(), `"msg":"`+msg+`"`)
}

func (r *replica) signal(sig syscall.Signal) {
	_ = r.cmd.Process.Signal(sig)
}

// exited waits for the process to exit and returns its exit code.
func (r *replica) exited(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(within):
		t.Fatalf("replica %s still running after %s", r.name, within)
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, r.err)
	return 0
}

func (r *replica) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// eventually polls cond until it holds, failing t after within.
func (b *replicaBundle) eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !pollUntil(within, cond) {
		b.logUnfinished(t)
		b.dumpReplicas()
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// dumpReplicas makes every replica still running print the stacks of all
// its goroutines (SIGQUIT) into its log, which a failed test prints: a
// wait that timed out then shows where the work is stuck.
func (b *replicaBundle) dumpReplicas() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.replicas {
		if !r.running() {
			continue
		}
		r.signal(syscall.SIGQUIT)
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
		}
	}
}

// logUnfinished logs every execution not yet final with its River job, so
// that a timed-out wait shows where each one is stuck.
func (b *replicaBundle) logUnfinished(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := b.pool.Query(ctx, `SELECT e.id, e.status, e.attempt, coalesce(e.worker, ''), coalesce(e.job_id, 0),
			coalesce(j.state::text, 'no job'), coalesce(j.attempt, 0), coalesce(j.attempted_by[array_upper(j.attempted_by, 1)], ''),
			coalesce(j.scheduled_at::text, ''), coalesce(j.errors[array_upper(j.errors, 1)]::text, '')
		FROM attune.execution e LEFT JOIN attune.river_job j ON j.id = e.job_id
		WHERE e.status NOT IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')
		ORDER BY e.id LIMIT 50`)
	if err != nil {
		t.Logf("listing unfinished executions: %v", err)
		return
	}
	type row struct {
		id                        int64
		status                    string
		attempt                   int
		worker                    string
		job                       int64
		state                     string
		jobAttempt                int
		by, scheduled, lastErrors string
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.status, &x.attempt, &x.worker, &x.job, &x.state, &x.jobAttempt, &x.by, &x.scheduled, &x.lastErrors)
		return x, err
	})
	if err != nil {
		t.Logf("listing unfinished executions: %v", err)
		return
	}
	for _, x := range got {
		t.Logf("unfinished: execution %d %s attempt %d worker %q job %d %s attempt %d by %q scheduled %s last error %s",
			x.id, x.status, x.attempt, x.worker, x.job, x.state, x.jobAttempt, x.by, x.scheduled, x.lastErrors)
	}
}

// pollUntil polls cond until it holds or within passes, and reports which.
func pollUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// enqueue enqueues one execution through SQL and returns its id.
func (b *replicaBundle) enqueue(t *testing.T, action string, params map[string]any) int64 {
	t.Helper()
	p, err := json.Marshal(params)
	require.NoError(t, err)
	var id int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT attune.enqueue($1, $2::jsonb)", action, string(p)).Scan(&id))
	return id
}

type execRow struct {
	ID      int64
	Status  string
	Attempt int
	Worker  *string
	Error   *string
	Stdout  *string
}

func (b *replicaBundle) execution(t *testing.T, id int64) execRow {
	t.Helper()
	var e execRow
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT id, status, attempt, worker, error, stdout FROM attune.execution WHERE id = $1", id).
		Scan(&e.ID, &e.Status, &e.Attempt, &e.Worker, &e.Error, &e.Stdout))
	return e
}

// unfinished counts executions that are not in a final state.
func (b *replicaBundle) unfinished(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM attune.execution
		WHERE status NOT IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')`).Scan(&n))
	return n
}

// sleeper enqueues a sleep action and returns its id.
func (b *replicaBundle) sleeper(t *testing.T, action string, seconds int) int64 {
	t.Helper()
	return b.enqueue(t, action, map[string]any{"dir": b.work, "seconds": seconds})
}

// pids returns the pids of an execution's runs so far (each the leader of
// its process group), remembering them for killLeftovers.
func (b *replicaBundle) pids(id int64) []int {
	data, err := os.ReadFile(filepath.Join(b.work, fmt.Sprintf("%d.pids", id)))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	b.mu.Lock()
	for _, pid := range pids {
		b.pgids[pid] = true
	}
	b.mu.Unlock()
	return pids
}

// waitRunning waits until every execution in ids runs its process on
// worker.
func (b *replicaBundle) waitRunning(t *testing.T, worker string, ids ...int64) {
	t.Helper()
	b.eventually(t, 60*time.Second, fmt.Sprintf("executions %v running on %s", ids, worker), func() bool {
		for _, id := range ids {
			e := b.execution(t, id)
			if e.Status != "running" || e.Worker == nil || *e.Worker != worker || len(b.pids(id)) == 0 {
				return false
			}
		}
		return true
	})
}

// waitFetched waits until worker has fetched the River jobs of ids while
// their executions have not started: they wait for a slot.
func (b *replicaBundle) waitFetched(t *testing.T, worker string, ids ...int64) {
	t.Helper()
	b.eventually(t, 60*time.Second, fmt.Sprintf("executions %v fetched by %s", ids, worker), func() bool {
		var n int
		err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM attune.execution e JOIN attune.river_job j ON j.id = e.job_id
			WHERE e.id = ANY($1) AND e.status = 'requested' AND j.state = 'running'
				AND j.attempted_by[array_upper(j.attempted_by, 1)] = $2`, ids, worker).Scan(&n)
		return err == nil && n == len(ids)
	})
}

// killLeftovers SIGKILLs what is left of the action process groups seen, so
// a failed test leaves nothing behind.
func (b *replicaBundle) killLeftovers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for pgid := range b.pgids {
		for _, pid := range groupMembers(pgid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// groupMembers lists the live processes of process group pgid, from /proc.
func groupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readProcStat(pid)
		if ok && st.pgid == pgid && st.state != 'Z' && st.state != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}

type procStat struct {
	state byte
	pgid  int
}

// readProcStat reads a process's state and process group from /proc/pid/stat.
func readProcStat(pid int) (procStat, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// The command name, in parentheses, may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(data[i+1:])) // state ppid pgrp ...
	if len(f) < 3 {
		return procStat{}, false
	}
	pgid, err := strconv.Atoi(f[2])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0][0], pgid: pgid}, true
}

func processAlive(pid int) bool {
	st, ok := readProcStat(pid)
	return ok && st.state != 'Z' && st.state != 'X'
}

// readIDs reads the execution ids appended to path, one a line.
func readIDs(t *testing.T, path string) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var ids []int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		require.NoError(t, err, "line %q of %s", sc.Text(), path)
		ids = append(ids, id)
	}
	require.NoError(t, sc.Err())
	return ids
}

// checkOnce compares the runs logged in path with the executions in the
// database: every execution completed, each run exactly once. It returns the
// number of runs and of duplicate runs.
func (b *replicaBundle) checkOnce(t *testing.T, path string) (runs, duplicates int) {
	t.Helper()
	seen := map[int64]int{}
	ids := readIDs(t, path)
	for _, id := range ids {
		seen[id]++
	}
	for id, n := range seen {
		if n > 1 {
			duplicates += n - 1
			t.Errorf("execution %d ran %d times", id, n)
		}
	}
	rows, err := b.pool.Query(b.ctx, "SELECT id, status, attempt, coalesce(error, '') FROM attune.execution WHERE action_ref = 'r.append' ORDER BY id")
	require.NoError(t, err)
	type row struct {
		ID      int64
		Status  string
		Attempt int
		Error   string
	}
	execs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	require.NoError(t, err)
	for _, e := range execs {
		if e.Status != "completed" || seen[e.ID] != 1 {
			t.Errorf("execution %d: status %s attempt %d, ran %d times (%s)", e.ID, e.Status, e.Attempt, seen[e.ID], e.Error)
		}
		delete(seen, e.ID)
	}
	for id := range seen {
		t.Errorf("%s names execution %d, which is not in the database", path, id)
	}
	return len(ids), duplicates
}

func TestReplicaExactlyOncePerAttempt(t *testing.T) {
	t.Parallel()
	const n = 3000
	b := setupReplicas(t, schematest.URL(t))
	names := []string{"replica-a", "replica-b", "replica-c"}
	for _, name := range names {
		b.start(t, name)
	}

	out := filepath.Join(b.work, "runs")
	start := time.Now()
	_, err := b.pool.Exec(b.ctx, "SELECT attune.enqueue('r.append', jsonb_build_object('out', $1::text)) FROM generate_series(1, $2)", out, n)
	require.NoError(t, err)
	b.eventually(t, 150*time.Second, fmt.Sprintf("%d executions finished", n), func() bool { return b.unfinished(t) == 0 })
	elapsed := time.Since(start)

	runs, duplicates := b.checkOnce(t, out)
	var executions, firstAttempt int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*), count(*) FILTER (WHERE attempt = 1) FROM attune.execution").
		Scan(&executions, &firstAttempt))
	require.Equal(t, n, executions)
	require.Equal(t, n, firstAttempt, "every execution ran at its first attempt")
	require.Equal(t, n, runs)
	require.Zero(t, duplicates)

	var jobsLeft int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.river_job WHERE state <> 'completed'").Scan(&jobsLeft))
	require.Zero(t, jobsLeft, "every River job completed")

	rows, err := b.pool.Query(b.ctx, "SELECT worker, count(*)::int FROM attune.execution GROUP BY worker ORDER BY worker")
	require.NoError(t, err)
	perWorker := map[string]int{}
	for rows.Next() {
		var w string
		var c int
		require.NoError(t, rows.Scan(&w, &c))
		perWorker[w] = c
	}
	require.NoError(t, rows.Err())
	for _, name := range names {
		require.Positive(t, perWorker[name], "replica %s ran executions", name)
	}
	t.Logf("exactly once: %d executions, %d runs, %d duplicates, in %s (%.0f/s); per replica %v",
		executions, runs, duplicates, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), perWorker)
}

func TestKillReplicaMidExecution(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	a := b.start(t, "replica-a", "ATTUNE_MAX_CONCURRENT_EXECUTIONS=5", fastReap)

	abandon := []int64{b.sleeper(t, "r.sleep", 30), b.sleeper(t, "r.sleep", 30), b.sleeper(t, "r.sleep", 30)}
	retry := []int64{b.sleeper(t, "r.sleep_retry", 30), b.sleeper(t, "r.sleep_retry", 30)}
	all := append(slices.Clone(abandon), retry...)
	b.waitRunning(t, "replica-a", all...)
	// With its 5 slots busy, A still fetches more (River's MaxWorkers is
	// twice the slots): these wait for a slot when A dies.
	out := filepath.Join(b.work, "runs")
	var waiting []int64
	for range 3 {
		waiting = append(waiting, b.enqueue(t, "r.append", map[string]any{"out": out}))
	}
	b.waitFetched(t, "replica-a", waiting...)
	var children []int
	for _, id := range all {
		children = append(children, b.pids(id)...)
	}
	b.eventually(t, 10*time.Second, "each script running sleep as a grandchild", func() bool {
		for _, pgid := range children {
			if len(groupMembers(pgid)) < 2 {
				return false
			}
		}
		return true
	})

	// The work directories are looked at before the kill: once A is dead,
	// any replica starting on this host (other tests run in parallel) may
	// sweep them as a dead owner's, before B reaps.
	var database string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT current_database()").Scan(&database))
	workDirs := func(id int64) []string {
		dirs, err := filepath.Glob(filepath.Join(os.TempDir(), worker.WorkDirPrefix(database, "replica-a", id)+"*"))
		require.NoError(t, err)
		return dirs
	}
	for _, id := range abandon {
		require.NotEmpty(t, workDirs(id), "the running execution has its work directory")
	}

	killed := time.Now()
	a.signal(syscall.SIGKILL)
	a.exited(t, 10*time.Second)

	// The children die with their worker (parent-death signal); so must what
	// they started, which the kernel does not signal.
	b.eventually(t, 10*time.Second, "the children of the killed replica gone", func() bool {
		return !slices.ContainsFunc(children, processAlive)
	})
	childrenGone := time.Since(killed)
	// What the children started (sleep) gets no parent-death signal: it is
	// orphaned in the child's process group. The replica that reaps the dead
	// worker on this host kills those groups before settling.
	orphaned := 0
	for _, pgid := range children {
		orphaned += len(groupMembers(pgid))
	}
	require.Positive(t, orphaned, "grandchildren outlive the kill -9 until a replica reaps")
	b.start(t, "replica-b", reaperReap)
	b.eventually(t, 60*time.Second, "the killed replica's executions settled", func() bool {
		for _, id := range abandon {
			if b.execution(t, id).Status != "abandoned" {
				return false
			}
		}
		for _, id := range append(slices.Clone(retry), waiting...) {
			if b.execution(t, id).Status != "completed" {
				return false
			}
		}
		return true
	})
	settled := time.Since(killed)
	for _, pgid := range children {
		require.Empty(t, groupMembers(pgid), "what the killed replica's executions started is gone after the reap")
	}
	for _, id := range abandon {
		require.Empty(t, workDirs(id), "the reap removes the dead replica's work directories")
	}
	runs, duplicates := b.checkOnce(t, out)
	require.Equal(t, len(waiting), runs)
	require.Zero(t, duplicates)
	for _, id := range waiting {
		e := b.execution(t, id)
		require.Equal(t, 1, e.Attempt, "a job fetched but never started keeps its attempt")
		require.Equal(t, "replica-b", *e.Worker)
	}

	for _, id := range abandon {
		e := b.execution(t, id)
		require.Equal(t, 1, e.Attempt)
		require.Equal(t, "replica-a", *e.Worker)
		require.Contains(t, *e.Error, "replica-a died")
		require.Len(t, b.pids(id), 1, "an abandoned execution does not run again")
	}
	for _, id := range retry {
		e := b.execution(t, id)
		require.Equal(t, 2, e.Attempt)
		require.Equal(t, "replica-b", *e.Worker)
		require.Equal(t, "second run\n", *e.Stdout)
		require.Len(t, b.pids(id), 2, "one run per attempt")
	}
	var status string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT status FROM attune.worker WHERE name = 'replica-a'").Scan(&status))
	require.Equal(t, "inactive", status)
	var jobsLeft int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.river_job WHERE state <> 'completed'").Scan(&jobsLeft))
	require.Zero(t, jobsLeft)
	t.Logf("kill -9: %d children gone %.2fs after the kill; %d executions settled %.2fs after it (%d abandoned, %d re-run at attempt 2, %d fetched but not started run by the other replica)",
		len(children), childrenGone.Seconds(), len(all)+len(waiting), settled.Seconds(), len(abandon), len(retry), len(waiting))
}

func TestShutdownWaitsThenKills(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	a := b.start(t, "replica-a", "ATTUNE_SHUTDOWN_TIMEOUT=2s", "ATTUNE_MAX_CONCURRENT_EXECUTIONS=4")

	long := b.sleeper(t, "r.sleep", 30)
	longRetry := b.sleeper(t, "r.sleep_retry", 30)
	short := []int64{b.sleeper(t, "r.sleep", 1), b.sleeper(t, "r.sleep", 1)}
	b.waitRunning(t, "replica-a", append([]int64{long, longRetry}, short...)...)
	// Fetched, waiting for one of the 4 slots, which the short executions
	// free during the shutdown: it must not start then.
	fetched := b.enqueue(t, "r.append", map[string]any{"out": filepath.Join(b.work, "fetched")})
	b.waitFetched(t, "replica-a", fetched)

	signalled := time.Now()
	a.signal(syscall.SIGTERM)
	b.eventually(t, 10*time.Second, "replica-a stopping", func() bool { return b.logged(a, "stopping: running executions may finish") })
	late := b.enqueue(t, "r.append", map[string]any{"out": filepath.Join(b.work, "late")})
	require.Zero(t, a.exited(t, 30*time.Second), "exit code")
	exitedAfter := time.Since(signalled)

	for _, id := range short {
		e := b.execution(t, id)
		require.Equal(t, "completed", e.Status, "an execution shorter than the shutdown timeout finishes: %s", deref(e.Error))
		require.Equal(t, "slept\n", *e.Stdout)
	}
	e := b.execution(t, long)
	require.Equal(t, "abandoned", e.Status)
	require.Contains(t, *e.Error, "replica-a stopped")
	e = b.execution(t, longRetry)
	require.Equal(t, "requested", e.Status, "max_retries 1 allows another attempt")
	require.Equal(t, 1, e.Attempt)
	for _, id := range []int64{late, fetched} {
		e = b.execution(t, id)
		require.Equal(t, "requested", e.Status, "a stopping replica starts no new work")
		require.Nil(t, e.Worker)
	}
	for _, id := range []int64{long, longRetry} {
		for _, pid := range b.pids(id) {
			require.Empty(t, groupMembers(pid), "process group of execution %d killed", id)
		}
	}
	var status string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT status FROM attune.worker WHERE name = 'replica-a'").Scan(&status))
	require.Equal(t, "inactive", status)
	require.Less(t, exitedAfter, 20*time.Second, "exits soon after the shutdown timeout (2s) and the kill grace (1s)")
	require.Regexp(t, `"msg":"stopped","handed_back":[1-9]`, a.logs.String(), "the stopped line counts the fetched job it gave back")

	// Another replica runs what is left: the retry, and the late execution.
	b.start(t, "replica-b")
	b.eventually(t, 60*time.Second, "the retry and the late execution finished", func() bool { return b.unfinished(t) == 0 })
	e = b.execution(t, longRetry)
	require.Equal(t, "completed", e.Status)
	require.Equal(t, 2, e.Attempt)
	for _, id := range []int64{late, fetched} {
		e = b.execution(t, id)
		require.Equal(t, "completed", e.Status)
		require.Equal(t, 1, e.Attempt)
		require.Equal(t, "replica-b", *e.Worker)
	}
	t.Logf("SIGTERM with ATTUNE_SHUTDOWN_TIMEOUT=2s and ATTUNE_KILL_GRACE=1s: exited 0 after %.2fs", exitedAfter.Seconds())
}

func TestShutdownSecondSignalIsImmediate(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	a := b.start(t, "replica-a", "ATTUNE_SHUTDOWN_TIMEOUT=5m")
	ids := []int64{b.sleeper(t, "r.sleep", 30), b.sleeper(t, "r.sleep", 30)}
	b.waitRunning(t, "replica-a", ids...)

	a.signal(syscall.SIGTERM)
	b.eventually(t, 10*time.Second, "replica-a stopping", func() bool { return b.logged(a, "stopping: running executions may finish") })
	signalled := time.Now()
	a.signal(syscall.SIGTERM)
	require.Zero(t, a.exited(t, 60*time.Second), "exit code")
	exitedAfter := time.Since(signalled)
	require.True(t, b.logged(a, "second signal: stopping now"))

	for _, id := range ids {
		e := b.execution(t, id)
		require.Equal(t, "abandoned", e.Status)
		for _, pid := range b.pids(id) {
			require.Empty(t, groupMembers(pid), "process group of execution %d killed", id)
		}
	}
	var status string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT status FROM attune.worker WHERE name = 'replica-a'").Scan(&status))
	require.Equal(t, "inactive", status)
	require.Less(t, exitedAfter, 30*time.Second, "far sooner than ATTUNE_SHUTDOWN_TIMEOUT=5m")
	t.Logf("second SIGTERM: exited 0 after %.2fs (ATTUNE_KILL_GRACE=1s)", exitedAfter.Seconds())
}

func TestRestartPostgresUnderLoad(t *testing.T) {
	t.Parallel()
	cluster := schematest.StartCluster(t)
	b := setupReplicas(t, cluster.URL("attune_restart"))
	a := b.start(t, "replica-a")
	out := filepath.Join(b.work, "runs")

	// A steady stream of short executions, enqueued from a pool of our own
	// that, like any client, sees errors while the server restarts.
	var (
		mu        sync.Mutex
		enqueued  []int64
		failures  int
		restarted atomic.Bool
		after     []int64 // enqueued once the server was back
	)
	feedCtx, stopFeed := context.WithCancel(b.ctx)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-feedCtx.Done():
				return
			case <-tick.C:
			}
			var id int64
			err := b.pool.QueryRow(feedCtx, "SELECT attune.enqueue('r.append', jsonb_build_object('out', $1::text, 'pause', 0.25))", out).Scan(&id)
			mu.Lock()
			if err != nil {
				failures++
			} else {
				enqueued = append(enqueued, id)
				if restarted.Load() {
					after = append(after, id)
				}
			}
			mu.Unlock()
		}
	}()

	b.eventually(t, 60*time.Second, "executions completing", func() bool {
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution WHERE status = 'completed'").Scan(&n))
		return n >= 50
	})
	var runningBefore int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution WHERE status <> 'completed'").Scan(&runningBefore))
	restartAt := time.Now()
	cluster.Restart(t)
	restartTook := time.Since(restartAt)
	restarted.Store(true)

	b.eventually(t, 60*time.Second, "executions enqueued after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(after) >= 50
	})
	stopFeed()
	<-fed
	// Executions lost to the restart never finish: after a generous wait,
	// count them rather than time out.
	finished := pollUntil(60*time.Second, func() bool { return b.unfinished(t) == 0 })
	require.True(t, a.running(), "the replica survives the restart")

	runs, duplicates := b.checkOnce(t, out)
	var executions, completed int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM attune.execution").
		Scan(&executions, &completed))
	mu.Lock()
	defer mu.Unlock()
	var known int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution WHERE id = ANY($1)", enqueued).Scan(&known))
	require.Equal(t, len(enqueued), known, "every acknowledged enqueue has its row")
	lost := executions - completed
	t.Logf("PostgreSQL restart (pg_ctl restart -m fast, %.2fs) under load: %d executions (%d not finished at the restart, %d enqueued after it), %d runs, %d duplicates, %d lost; %d enqueues failed during the restart",
		restartTook.Seconds(), executions, runningBefore, len(after), runs, duplicates, lost, failures)
	require.Zero(t, lost, "executions lost to the restart")
	require.True(t, finished)
	var jobsLeft int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.river_job WHERE state <> 'completed'").Scan(&jobsLeft))
	require.Zero(t, jobsLeft, "every River job completed")
	require.Zero(t, duplicates)
	require.Equal(t, executions, runs)
	var afterDone int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution WHERE id = ANY($1) AND status = 'completed' AND worker = 'replica-a'", after).
		Scan(&afterDone))
	require.Equal(t, len(after), afterDone, "the replica takes new work after the restart")
	var status string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT status FROM attune.worker WHERE name = 'replica-a'").Scan(&status))
	require.Equal(t, "active", status)
}

func TestWorkerList(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	a := b.start(t, "replica-list", "ATTUNE_MAX_CONCURRENT_EXECUTIONS=4", "ATTUNE_SHUTDOWN_TIMEOUT=0s")
	id := b.sleeper(t, "r.sleep", 30)
	b.waitRunning(t, "replica-list", id)

	type listed struct {
		Name         string  `json:"name"`
		Hostname     string  `json:"hostname"`
		Pid          int     `json:"pid"`
		Status       string  `json:"status"`
		HeartbeatAge float64 `json:"heartbeat_age_seconds"`
		Running      int     `json:"running"`
		Capabilities struct {
			Runtimes                []string `json:"runtimes"`
			MaxConcurrentExecutions int      `json:"max_concurrent_executions"`
		} `json:"capabilities"`
	}
	list := func() []listed {
		var ws []listed
		require.NoError(t, json.Unmarshal([]byte(b.attune(t, "worker", "list", "-j")), &ws))
		return ws
	}

	ws := list()
	require.Len(t, ws, 1)
	w := ws[0]
	host, _ := os.Hostname()
	require.Equal(t, "replica-list", w.Name)
	require.Equal(t, host, w.Hostname)
	require.Equal(t, a.cmd.Process.Pid, w.Pid)
	require.Equal(t, "active", w.Status)
	require.GreaterOrEqual(t, w.HeartbeatAge, 0.0)
	require.Less(t, w.HeartbeatAge, 10.0, "heartbeats every second")
	require.Equal(t, 1, w.Running)
	require.Equal(t, 4, w.Capabilities.MaxConcurrentExecutions)
	require.Contains(t, w.Capabilities.Runtimes, "shell")
	require.Contains(t, w.Capabilities.Runtimes, "native")

	table := b.attune(t, "worker", "list")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 2, table)
	require.Equal(t, []string{"NAME", "STATUS", "HEARTBEAT", "RUNNING", "CAPABILITIES"}, strings.Fields(lines[0]))
	f := strings.Fields(lines[1])
	require.Equal(t, []string{"replica-list", "active"}, f[:2])
	require.Regexp(t, `^[0-9.hms]+$`, f[2])
	require.Equal(t, "ago", f[3])
	require.Equal(t, "1", f[4])
	require.Contains(t, lines[1], `"max_concurrent_executions": 4`)

	a.signal(syscall.SIGTERM)
	require.Zero(t, a.exited(t, 30*time.Second))
	ws = list()
	require.Len(t, ws, 1)
	require.Equal(t, "inactive", ws[0].Status)
	require.Zero(t, ws[0].Running)
	require.Equal(t, "abandoned", b.execution(t, id).Status)
}

// TestSensorFailoverOnKill: a sensor runs on exactly one replica; when that
// replica is killed with SIGKILL, its sensor process dies with it and
// another replica takes the sensor over, and events keep firing rules.
func TestSensorFailoverOnKill(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	ticks := filepath.Join(b.work, "ticks")
	files := map[string]string{
		"triggers/tick.yaml":  "name: tick\ndescription: a tick from the test sensor\n",
		"sensors/ticker.yaml": "name: ticker\nrunner_type: shell\nentry_point: ticker.sh\ntrigger_types: [r.tick]\n",
		// Each event names the sensor process that sent it.
		"sensors/ticker.sh":  "while :; do echo '{\"trigger_ref\": \"r.tick\", \"payload\": {\"pid\": '$$'}}'; sleep 0.2; done\n",
		"rules/on_tick.yaml": fmt.Sprintf("name: on_tick\ntrigger_ref: r.tick\naction_ref: r.append\naction_params: {out: %q}\n", ticks),
	}
	for name, body := range files {
		path := filepath.Join(b.packs, "r", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	}
	b.attune(t, "pack", "register")

	holder := func() (worker string, pid int) {
		_ = b.pool.QueryRow(b.ctx, `SELECT worker, coalesce(pid, 0) FROM attune.sensor_state
			WHERE sensor_ref = 'r.ticker' AND status = 'running'`).Scan(&worker, &pid)
		return worker, pid
	}
	eventsFrom := func(pid int) int {
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM attune.event
			WHERE sensor_ref = 'r.ticker' AND (payload->>'pid')::int = $1`, pid).Scan(&n))
		return n
	}

	a := b.start(t, "replica-a", fastReap)
	var pidA int
	b.eventually(t, 30*time.Second, "the sensor running on replica-a, firing", func() bool {
		w, pid := holder()
		pidA = pid
		return w == "replica-a" && pid != 0 && eventsFrom(pid) >= 3
	})
	b.start(t, "replica-b", fastReap)
	time.Sleep(3 * time.Second) // replica-b tries the sensor's lock and must not get it
	w, pid := holder()
	require.Equal(t, "replica-a", w, "one instance: replica-b leaves a held sensor alone")
	require.Equal(t, pidA, pid)

	killed := time.Now()
	a.signal(syscall.SIGKILL)
	a.exited(t, 10*time.Second)
	b.eventually(t, 10*time.Second, "replica-a's sensor process gone with it", func() bool { return !processAlive(pidA) })

	var pidB int
	b.eventually(t, 60*time.Second, "replica-b running the sensor, its events firing the rule", func() bool {
		w, pid := holder()
		pidB = pid
		return w == "replica-b" && pid != 0 && pid != pidA && eventsFrom(pid) >= 3
	})
	var executions int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM attune.execution WHERE rule_ref = 'r.on_tick'`).Scan(&executions))
	require.Positive(t, executions)
	var lastA, firstB time.Time
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT max(created_at) FROM attune.event WHERE (payload->>'pid')::int = $1`, pidA).Scan(&lastA))
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT min(created_at) FROM attune.event WHERE (payload->>'pid')::int = $1`, pidB).Scan(&firstB))
	require.True(t, firstB.After(lastA), "no event from the new instance before the old one's last: never two at once")
	t.Logf("sensor failover after kill -9: replica-b's first event %.2fs after the kill (rule fired %d executions in all)",
		firstB.Sub(killed).Seconds(), executions)
}
