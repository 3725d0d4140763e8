package process

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readPids reads the escapers' pidfile.
func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	return pids
}

// TestContainment runs an action whose descendants escape its process
// group, and expects none to survive it, nor to be left a zombie (a zombie
// still takes signal 0, so waitGone would time out on it), whatever the
// mechanism.
func TestContainment(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	t.Logf("containment on this host: %s", Containment())

	for _, tc := range []struct {
		name     string
		noCgroup bool
	}{{"Host", false}, {"Subreaper", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			b := setupProc(t)
			spec := Spec{Path: "/bin/sh", Args: []string{"-c", escapersScript, "sh", b.pidfile},
				Env: []string{"PATH=/usr/bin:/bin"}, MaxStdout: 4096, MaxStderr: 4096,
				Timeout: 20 * time.Second, noCgroup: tc.noCgroup}
			res := Run(ctx, spec)
			returned := time.Now()
			pids := readPids(t, b.pidfile)
			require.Len(t, pids, 3)
			t.Cleanup(func() {
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
			require.Equal(t, "bye\n", res.Stdout)
			waitGone(t, 5*time.Second, pids...)
			require.Less(t, returned.Sub(res.FinishedAt), DefaultDrainTimeout, "the escaper holding stdout died: no drain timeout")
		})
	}

	t.Run("Start", func(t *testing.T) {
		t.Parallel()

		// Start and Wait, as sensors run: the same.
		b := setupProc(t)
		h, err := Start(Spec{Path: "/bin/sh", Args: []string{"-c", escapersScript + "sleep 600\n", "sh", b.pidfile},
			Env: []string{"PATH=/usr/bin:/bin"}, MaxStdout: 4096, MaxStderr: 4096, StdinPipe: true})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(b.pidfile)
			return strings.Count(string(b), "\n") >= 3
		}, 10*time.Second, 10*time.Millisecond)
		pids := readPids(t, b.pidfile)
		h.Terminate(0)
		res := h.Wait()
		require.Equal(t, "SIGKILL", res.Signal)
		waitGone(t, 5*time.Second, pids...)
	})
}

// TestSweepDeadWorker kills a worker (the test binary as "escape-worker")
// with SIGKILL: its child dies with it (parent-death signal), but the
// child's setsid descendant and the child's work directory would stay. The
// next worker's sweep kills the one and removes the other.
func TestSweepDeadWorker(t *testing.T) {
	t.Parallel()
	if Containment() != "cgroup" {
		t.Skip("without cgroups a dead worker's escapers are KillOrphans' (by environment)")
	}

	b := setupProc(t)
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self)
	cmd.Env = []string{helperEnv + "=escape-worker", pidfileEnv + "=" + b.pidfile, "TMPDIR=" + b.dir}
	require.NoError(t, cmd.Start())
	var pids []int
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(b.pidfile)
		return strings.Count(string(b), "\n") >= 3
	}, 10*time.Second, 10*time.Millisecond)
	pids = readPids(t, b.pidfile)
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	dirs, _ := filepath.Glob(filepath.Join(b.dir, "attune-exec-*"))
	require.Len(t, dirs, 1)

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	time.Sleep(100 * time.Millisecond)
	// Without a sweep the setsid descendant would outlive its dead worker.
	// Any live attune process on this host sweeps the shared cgroup root
	// too (a parallel test package's worker, say), so it may be gone
	// already; the work directory under this test's own TMPDIR is only
	// this sweep's to remove.
	if !alive(pids[0]) {
		t.Log("another attune process on this host swept the dead worker's cgroup first")
	}
	require.DirExists(t, dirs[0])

	sweepDead(b.dir)
	waitGone(t, 5*time.Second, pids...)
	require.NoDirExists(t, dirs[0])
}
