package main

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBench runs the whole in-process bench small: raw spawn, the peer,
// attune and pickup all report, and the ratios are of the same run.
func TestBench(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	r := b.attune(t, "-j", "bench", "-n", "30", "--pickups", "5")
	require.NoError(t, r.err, r.stderr)
	var res benchResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	require.Equal(t, 30, res.Executions)
	require.Equal(t, 2, res.Concurrency)
	require.Positive(t, res.RawSpawnPerS)
	require.Positive(t, res.PeerPerS)
	require.Positive(t, res.ExecutionsPerS)
	require.InDelta(t, res.ExecutionsPerS/res.RawSpawnPerS, res.Ratio, 1e-9)
	require.InDelta(t, res.ExecutionsPerS/res.PeerPerS, res.PeerRatio, 1e-9)
	require.NotNil(t, res.PeerCPU)
	require.NotNil(t, res.Pickup)
	require.Equal(t, 5, res.Pickup.Samples)
	require.Positive(t, res.Pickup.P50Ms)
	require.GreaterOrEqual(t, res.Pickup.P99Ms, res.Pickup.P50Ms)

	// The peer drops its schema when done.
	var schemas int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", peerSchema).Scan(&schemas))
	require.Zero(t, schemas)

	out := b.ok(t, "bench", "-n", "10", "--pickups", "2", "--binary", "/bin/true")
	for _, want := range []string{"raw spawn", "peer (plain River worker)", "attune/peer", "pickup latency"} {
		require.Contains(t, out, want)
	}
}

// TestBenchPeerCounts: the peer reports a job done only once its result
// row and the River job's completion have committed, once per job.
func TestBenchPeerCounts(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	p, err := startPeer(b.ctx, b.url, "/bin/true", 3, 40)
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = p.stop(b.ctx)
		}
	})
	require.NoError(t, p.run(b.ctx, 15, nil))
	require.NoError(t, p.run(b.ctx, 25, nil))
	got, err := p.results(b.ctx)
	require.NoError(t, err)
	require.Equal(t, 40, got)
	var completed, other int
	require.NoError(t, p.pool.QueryRow(b.ctx, `SELECT count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state <> 'completed')
		FROM `+peerSchema+`.river_job`).Scan(&completed, &other))
	require.Equal(t, 40, completed)
	require.Zero(t, other)
	require.Empty(t, p.done, "no completion reported twice")
	stopped = true
	require.NoError(t, p.stop(b.ctx))
}

// TestBenchReplicas runs attune in two `attune serve` processes (this test
// binary posing as attune) and reads their peak RSS.
func TestBenchReplicas(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("--replicas reads /proc")
	}
	b := setupCLI(t)
	r := b.attuneWith(t, b.env(asMainEnv+"=1"), "", "-j", "bench", "-n", "40", "--replicas", "2", "--no-peer")
	require.NoError(t, r.err, r.stderr)
	var res benchResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	require.Positive(t, res.ExecutionsPerS)
	require.Zero(t, res.PeerPerS)
	require.Nil(t, res.Pickup)
	require.Len(t, res.Replicas, 2)
	for _, rep := range res.Replicas {
		require.True(t, strings.HasPrefix(rep.Name, "bench-"), rep.Name)
		require.Positive(t, rep.PeakRSSKiB)
	}
	var active int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.worker WHERE name LIKE 'bench-%' AND status = 'active'").Scan(&active))
	require.Zero(t, active, "replicas stopped")
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	s := make([]float64, 0, 100)
	for i := 100; i >= 1; i-- {
		s = append(s, float64(i))
	}
	p50, p99 := percentiles(s)
	require.Equal(t, 50.0, p50)
	require.Equal(t, 99.0, p99)
	p50, p99 = percentiles([]float64{3})
	require.Equal(t, 3.0, p50)
	require.Equal(t, 3.0, p99)
	p50, p99 = percentiles(nil)
	require.Zero(t, p50+p99)
}

// TestRunRounds: every phase runs n in all, in turns whose order rotates.
func TestRunRounds(t *testing.T) {
	t.Parallel()
	var order []string
	ran := map[string]int{}
	mk := func(name string) *phase {
		return &phase{name: name, run: func(_ context.Context, k int, _ func(int)) error {
			order = append(order, name)
			ran[name] += k
			return nil
		}}
	}
	phases := []*phase{mk("a"), mk("b"), mk("c")}
	require.NoError(t, runRounds(context.Background(), phases, 10, 3, func(string, ...any) {}))
	require.Equal(t, map[string]int{"a": 10, "b": 10, "c": 10}, ran)
	require.Equal(t, []string{"a", "b", "c", "b", "c", "a", "c", "a", "b"}, order)
	for _, p := range phases {
		require.Positive(t, p.elapsed)
	}
}
