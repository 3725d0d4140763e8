package processtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// WaitPidfile waits until the helper wrote path and returns its pids.
func WaitPidfile(t testing.TB, path string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return parsePids(t, b)
		}
		require.ErrorIs(t, err, os.ErrNotExist)
		require.True(t, time.Now().Before(deadline), "pidfile %s not written in time", path)
		time.Sleep(5 * time.Millisecond)
	}
}

// ReadPidfile returns the pids in a pidfile the helper must have written.
func ReadPidfile(t testing.TB, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return parsePids(t, b)
}

func parsePids(t testing.TB, b []byte) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	require.NotEmpty(t, pids)
	return pids
}

// WaitGone waits until none of pids is alive and returns how long that
// took. A zombie counts as gone: it runs no code, and whoever inherited it
// (init) reaps it in its own time.
func WaitGone(t testing.TB, within time.Duration, pids ...int) time.Duration {
	t.Helper()
	start := time.Now()
	for _, pid := range pids {
		for Alive(pid) {
			require.Less(t, time.Since(start), within, "process %d still alive", pid)
			time.Sleep(2 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// Alive reports whether pid runs: it exists and is no zombie. Telling
// zombies apart needs /proc; elsewhere a zombie counts as alive.
func Alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	if runtime.GOOS != "linux" {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may contain
	// spaces or parentheses itself.
	_, rest, ok := bytes.Cut(stat[bytes.LastIndexByte(stat, ')')+1:], []byte(" "))
	return !ok || len(rest) == 0 || (rest[0] != 'Z' && rest[0] != 'X')
}
