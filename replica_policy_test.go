//go:build linux

package main

// Policies across real `attune serve` replicas (issue 17's measurements):
// a concurrency limit holds exactly across replicas, per key, pack-wide
// and across a replica's death, and costs little throughput.

import (
	"fmt"
	"github.com/jackc/pgx/v5"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// policyPack is a second pack beside replicaPack's: its actions sleep,
// under limits.
var policyPack = map[string]string{
	"pack.yaml": "ref: q\nversion: 1.0.0\nconcurrency: {limit: 3}\n",
	"actions/nap.sh": `sleep "$ATTUNE_ACTION_SECONDS"
`,
	"actions/limit2.yaml": `name: limit2
entry_point: nap.sh
output_format: text
concurrency: {limit: 2}
parameters:
  seconds: {type: number, default: 1}
`,
	"actions/per_host.yaml": `name: per_host
entry_point: nap.sh
output_format: text
concurrency: {limit: 1, key: "{{ parameters.host }}"}
parameters:
  seconds: {type: number, default: 1}
  host: {type: string, required: true}
`,
	"actions/free.yaml": `name: free
entry_point: nap.sh
output_format: text
parameters:
  seconds: {type: number, default: 1}
`,
}

// trivialPack's actions do nothing, with and without a limit, for
// throughput.
var trivialPack = map[string]string{
	"pack.yaml":       "ref: z\nversion: 1.0.0\n",
	"actions/noop.sh": "exit 0\n",
	"actions/true.yaml": `name: "true"
entry_point: noop.sh
output_format: text
`,
	"actions/true_limited.yaml": `name: true_limited
entry_point: noop.sh
output_format: text
concurrency: {limit: 10}
`,
}

func (b *replicaBundle) addPack(t *testing.T, ref string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		path := filepath.Join(b.packs, ref, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	}
	b.attune(t, "pack", "register")
}

type span struct {
	id            int64
	key           string
	start, finish time.Time
}

// spans reads the started and finished times of finished executions.
func (b *replicaBundle) spans(t *testing.T, ids []int64) []span {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT id, coalesce(parameters ->> 'host', ''), started_at, finished_at
		FROM attune.execution WHERE id = ANY($1) AND status = 'completed' ORDER BY id`, ids)
	require.NoError(t, err)
	defer rows.Close()
	var out []span
	for rows.Next() {
		var s span
		require.NoError(t, rows.Scan(&s.id, &s.key, &s.start, &s.finish))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	require.Len(t, out, len(ids), "every execution completed")
	return out
}

// mostAtOnce is the largest number of spans overlapping at any instant.
func mostAtOnce(spans []span) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.start, 1}, edge{s.finish, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at.Before(edges[j].at)
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most
}

func (b *replicaBundle) enqueueN(t *testing.T, n int, action string, params func(i int) map[string]any) []int64 {
	t.Helper()
	var ids []int64
	for i := range n {
		ids = append(ids, b.enqueue(t, action, params(i)))
	}
	return ids
}

func TestReplicaConcurrencyLimit(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	b.addPack(t, "q", policyPack)
	b.start(t, "replica-a")
	b.start(t, "replica-b")

	start := time.Now()
	ids := b.enqueueN(t, 20, "q.limit2", func(int) map[string]any { return map[string]any{} })
	// Waiters are woken when a slot frees: the fallback look is 5 minutes
	// away, so finishing within this wait is the proof (10 s ideally; a
	// tighter bound would measure the machine's load).
	b.eventually(t, 60*time.Second, "20 executions finished", func() bool { return b.unfinished(t) == 0 })
	elapsed := time.Since(start)
	spans := b.spans(t, ids)
	require.Equal(t, 2, mostAtOnce(spans), "%v", spans)
	var workers, attempts int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(DISTINCT worker), max(attempt) FROM attune.execution WHERE id = ANY($1)", ids).
		Scan(&workers, &attempts))
	require.Equal(t, 2, workers, "both replicas ran some")
	require.Equal(t, 1, attempts, "waiting costs no attempt")
	t.Logf("limit 2, 20 executions of 1 s on 2 replicas: at most %d at once, all done in %s", mostAtOnce(spans), elapsed.Round(time.Millisecond))
}

func TestReplicaConcurrencyPerKeyAndPack(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	b.addPack(t, "q", policyPack)
	b.start(t, "replica-a")
	b.start(t, "replica-b")

	// Keyed limit 1, two keys: one per key, two overall.
	start := time.Now()
	ids := b.enqueueN(t, 10, "q.per_host", func(i int) map[string]any {
		return map[string]any{"host": fmt.Sprintf("web-%d", i%2+1), "seconds": 0.5}
	})
	b.eventually(t, 60*time.Second, "keyed executions finished", func() bool { return b.unfinished(t) == 0 })
	elapsed := time.Since(start)
	spans := b.spans(t, ids)
	perKey := map[string][]span{}
	for _, s := range spans {
		perKey[s.key] = append(perKey[s.key], s)
	}
	require.Len(t, perKey, 2)
	for key, ss := range perKey {
		require.Equal(t, 1, mostAtOnce(ss), "key %s", key)
	}
	require.Equal(t, 2, mostAtOnce(spans))
	t.Logf("keyed limit 1, 2 keys x 5 executions of 0.5 s: per key at most 1, overall %d, in %s", mostAtOnce(spans), elapsed.Round(time.Millisecond))

	// The pack's limit 3 holds over its actions together.
	ids = b.enqueueN(t, 8, "q.free", func(int) map[string]any { return map[string]any{"seconds": 0.5} })
	b.eventually(t, 60*time.Second, "pack-limited executions finished", func() bool { return b.unfinished(t) == 0 })
	require.Equal(t, 3, mostAtOnce(b.spans(t, ids)))
}

func TestReplicaConcurrencySlotFreedByReaper(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	b.addPack(t, "q", policyPack)
	a := b.start(t, "replica-a", fastReap)

	holder := b.enqueue(t, "q.per_host", map[string]any{"host": "h", "seconds": 60})
	b.eventually(t, 30*time.Second, "the holder runs", func() bool { return b.execution(t, holder).Status == "running" })
	waiter := b.enqueue(t, "q.per_host", map[string]any{"host": "h", "seconds": 0})
	b.eventually(t, 10*time.Second, "the second waits", func() bool {
		var reason *string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT waiting_reason FROM attune.execution WHERE id = $1", waiter).Scan(&reason))
		return reason != nil && *reason == "waiting: concurrency limit 1 of q.per_host (key h) reached"
	})
	out := b.attune(t, "execution", "show", fmt.Sprint(waiter))
	require.Contains(t, out, "concurrency limit 1 of q.per_host (key h) reached")

	a.signal(syscall.SIGKILL)
	a.exited(t, 10*time.Second)
	b.start(t, "replica-b", reaperReap)
	// B reaps A (stale after 6 s): the holder is abandoned, its slot freed,
	// the waiter runs.
	b.eventually(t, 30*time.Second, "the waiter completed", func() bool { return b.execution(t, waiter).Status == "completed" })
	require.Equal(t, "abandoned", b.execution(t, holder).Status)
}

// TestReplicaThroughputWithLimit compares trivial executions with a limit
// of 10 and without, on two replicas, in two shapes:
//   - "capacity": 5 process slots each, so the limit equals what the two
//     replicas can run at once (river#1145's shape: 4 × 10 workers, a
//     global limit of 40, throughput halved). The limit never binds; what
//     differs is the cost of holding to it;
//   - "binding": 10 slots each (the default), so the limit halves how many
//     run at once. Throughput is then bound by the limit times how long a
//     slot is held per execution (claim, run, settle, hand-over).
func TestReplicaThroughputWithLimit(t *testing.T) {
	if os.Getenv("ATTUNE_MEASURE") == "" {
		t.Skip("a measurement: ATTUNE_MEASURE=1 go test -run TestReplicaThroughputWithLimit -v .")
	}
	n := 1000
	if v := os.Getenv("ATTUNE_MEASURE_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("ATTUNE_MEASURE_N=%q: give the number of executions per round, such as 1000", v)
		}
	}
	rounds := 4
	if v := os.Getenv("ATTUNE_MEASURE_ROUNDS"); v != "" {
		var err error
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 2 || rounds%2 != 0 {
			t.Fatalf("ATTUNE_MEASURE_ROUNDS=%q: give an even number of rounds of each kind, such as 4", v)
		}
	}
	for _, shape := range []struct {
		name  string
		slots string
	}{{"capacity", "5"}, {"binding", "10"}} {
		t.Run(shape.name, func(t *testing.T) {
			b := setupReplicas(t, schematest.URL(t))
			b.addPack(t, "z", trivialPack)
			var dbn string
			require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT current_database()").Scan(&dbn))
			_, err := b.pool.Exec(b.ctx, "ALTER DATABASE "+pgx.Identifier{dbn}.Sanitize()+" SET track_functions = 'pl'")
			require.NoError(t, err)
			b.start(t, "replica-a", "ATTUNE_MAX_CONCURRENT_EXECUTIONS="+shape.slots)
			b.start(t, "replica-b", "ATTUNE_MAX_CONCURRENT_EXECUTIONS="+shape.slots)
			// CPU time the whole machine spent per execution: the replicas,
			// PostgreSQL and this test. This machine is CPU-bound under
			// this load, so the rate follows it, and it is steadier from
			// run to run than the rate, which other load on a shared
			// machine moves.
			cpu := map[string]time.Duration{}
			rate := func(action string) float64 {
				busy := machineBusy()
				defer func() { cpu[action] += machineBusy() - busy }()
				start := time.Now()
				_, err := b.pool.Exec(b.ctx, "SELECT attune.enqueue($1) FROM generate_series(1, $2)", action, n)
				require.NoError(t, err)
				if !pollUntil(120*time.Second, func() bool { return b.unfinished(t) == 0 }) {
					b.logUnfinished(t)
					t.Fatal("stuck")
				}
				return float64(n) / time.Since(start).Seconds()
			}
			// A round of each first, not counted: the first round runs on
			// empty tables and cold caches (PL/pgSQL plans its statements
			// on their first call in each connection), and whichever kind
			// came first would get that round.
			warm := []float64{rate("z.true"), rate("z.true_limited")}
			clear(cpu)
			var free, limited []float64
			// Taking turns, so that load from elsewhere on the machine falls
			// on both alike; the ratio of the sums is the figure. The order
			// alternates too (free, limited, limited, free, …): every round
			// leaves its rows behind, and with autovacuum off (as on this
			// machine) what River and the claims read grows with them, so
			// the second of each pair would always run on the larger tables.
			for r := range rounds {
				if r%2 == 0 {
					free = append(free, rate("z.true"))
					limited = append(limited, rate("z.true_limited"))
				} else {
					limited = append(limited, rate("z.true_limited"))
					free = append(free, rate("z.true"))
				}
			}
			// Admission's own cost, from the database's function statistics.
			time.Sleep(time.Second) // statistics are flushed when a backend goes idle
			var calls, ms float64
			require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT coalesce(sum(calls), 0), coalesce(sum(self_time), 0)
				FROM pg_stat_user_functions WHERE funcname = 'policy_admit'`).Scan(&calls, &ms))
			t.Logf("%s: policy_admit %.2f calls and %.2f ms per limited execution", shape.name, calls/float64((rounds+1)*n), ms/float64((rounds+1)*n)) // the first round too
			var snoozes float64
			require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT coalesce(sum((j.metadata ->> 'snoozes')::int), 0)::float8 / greatest(count(*), 1) FROM attune.river_job j
				JOIN attune.execution e ON e.job_id = j.id WHERE e.action_ref = 'z.true_limited'`).Scan(&snoozes))
			sum := func(rs []float64) (s float64) {
				for _, r := range rs {
					s += r
				}
				return s
			}
			t.Logf("%s: %d trivial executions a round, 2 replicas of %s slots: without a limit %.0f/s, with limit 10 %.0f/s: ratio %.2f (rounds: without %.0f, with %.0f; not counted, first: %.0f); %.2f snoozes per limited execution",
				shape.name, n, shape.slots, sum(free)/float64(rounds), sum(limited)/float64(rounds), sum(limited)/sum(free), free, limited, warm, snoozes)
			if f, l := cpu["z.true"], cpu["z.true_limited"]; f > 0 {
				each := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(rounds*n) }
				t.Logf("%s: machine CPU per execution: without a limit %.2f ms, with limit 10 %.2f ms: ratio %.2f",
					shape.name, each(f), each(l), float64(f)/float64(l))
			}
		})
	}
}
