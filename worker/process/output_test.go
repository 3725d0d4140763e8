package process

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestSanitize(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name     string
		in       string
		limit    int
		want     string
		complete bool
	}{
		{"Clean", "hello\n", 100, "hello\n", true},
		{"ValidMultibyte", "héllo ✓ \U0001F600", 100, "héllo ✓ \U0001F600", true},
		{"NUL", "a\x00b", 100, "a\uFFFDb", true},
		{"InvalidBytesEachReplaced", "a\xff\xfeb", 100, "a\uFFFD\uFFFDb", true},
		{"CutRune", "ab\xe2\x82", 100, "ab\uFFFD\uFFFD", true},
		{"LiteralReplacementKept", "\uFFFD", 100, "\uFFFD", true},
		{"CutAtLimit", "abcdef", 4, "abcd", false},
		{"CutBeforeMultibyte", "abc✓", 4, "abc", false},
		{"CutBeforeReplacement", "ab\x00", 4, "ab", false},
		{"ExpansionPastLimit", "\x00\x00", 4, "\uFFFD", false},
		{"ZeroLimit", "x", 0, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			got, complete := Sanitize([]byte(tt.in), tt.limit)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.complete, complete)
			require.True(t, utf8.ValidString(got))
			require.LessOrEqual(t, len(got), tt.limit)
		})
	}
}

func TestCaptureText(t *testing.T) {
	t.Parallel()

	notice := truncationNotice("stdout")
	require.Equal(t, "\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n", notice)

	for _, tt := range []struct {
		name      string
		max       int
		writes    []string
		want      string
		truncated bool
	}{
		{"Empty", 100, nil, "", false},
		{"UnderLimit", 100, []string{"a", "b"}, "ab", false},
		{"ExactlyLimit", 100, []string{strings.Repeat("x", 60), strings.Repeat("y", 40)}, strings.Repeat("x", 60) + strings.Repeat("y", 40), false},
		{"OneOver", 100, []string{strings.Repeat("x", 101)}, strings.Repeat("x", 100-len(notice)) + notice, true},
		{"CutAtRuneBoundary", 100, []string{strings.Repeat("✓", 40)}, strings.Repeat("✓", (100-len(notice))/3) + notice, true},
		{"SanitizingOverflows", 100, []string{strings.Repeat("\x00", 40)}, strings.Repeat("\uFFFD", (100-len(notice))/3) + notice, true},
		{"LimitSmallerThanNotice", 10, []string{strings.Repeat("x", 11)}, "", true},
		{"ZeroLimit", 0, []string{"x"}, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			c := newCapture(tt.max)
			for _, w := range tt.writes {
				n, err := c.Write([]byte(w))
				require.NoError(t, err)
				require.Equal(t, len(w), n, "a capture never refuses bytes")
			}
			require.LessOrEqual(t, cap(c.buf), max(tt.max, 0))
			got, truncated := c.text("stdout")
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.truncated, truncated)
			require.LessOrEqual(t, len(got), max(tt.max, 0))
		})
	}
}

func TestRunOutput(t *testing.T) {
	t.Parallel()

	ctx := context.Background()

	t.Run("BadBytesStoredAsReplacement", func(t *testing.T) {
		t.Parallel()

		res := Run(ctx, helperSpec(t, "badbytes"))
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, "ok \uFFFD\uFFFD bad \uFFFD nul \uFFFD\uFFFD cut\n", res.Stdout)
		require.Equal(t, "err \uFFFD\uFFFD( end\n", res.Stderr)
		require.True(t, utf8.ValidString(res.Stdout))
		require.True(t, utf8.ValidString(res.Stderr))
		require.False(t, res.StdoutTruncated)
	})

	t.Run("LimitIsExact", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "stdin")
		spec.MaxStdout = 1000
		spec.Stdin = bytes.Repeat([]byte("z"), 1000)
		res := Run(ctx, spec)
		require.Equal(t, string(spec.Stdin), res.Stdout)
		require.False(t, res.StdoutTruncated)

		spec.Stdin = append(spec.Stdin, 'z')
		res = Run(ctx, spec)
		notice := truncationNotice("stdout")
		require.Equal(t, strings.Repeat("z", 1000-len(notice))+notice, res.Stdout)
		require.True(t, res.StdoutTruncated)
	})

	t.Run("BothStreamsFlooded", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "flood", floodBytesEnv+"="+strconv.Itoa(32<<20), floodStreamEnv+"=both")
		spec.MaxStdout, spec.MaxStderr = 4096, 1000
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, 0, res.ExitCode)
		require.True(t, res.StdoutTruncated)
		require.True(t, res.StderrTruncated)
		require.True(t, strings.HasSuffix(res.Stdout, "\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n"))
		require.True(t, strings.HasSuffix(res.Stderr, "\n\n[OUTPUT TRUNCATED: stderr exceeded size limit]\n"))
		require.LessOrEqual(t, len(res.Stdout), 4096)
		require.LessOrEqual(t, len(res.Stderr), 1000)
		require.True(t, strings.HasPrefix(res.Stderr, "flood flood"))
	})
}

// TestRunFlood1GiB pushes 1 GiB through stdout and checks that the worker's
// memory does not follow: the capture keeps MaxStdout bytes and reuses one
// read buffer.
func TestRunFlood1GiB(t *testing.T) {
	t.Parallel()

	const total = 1 << 30
	spec := helperSpec(t, "flood", floodBytesEnv+"="+strconv.Itoa(total))
	spec.MaxStdout = 1 << 20
	spec.Timeout = 60 * time.Second

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	hwmBefore := vmHWM(t)

	// Sample the heap while the flood runs: the peak is what matters.
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	var peakHeapInuse uint64
	sampler.Go(func() {
		ticker := time.NewTicker(20 * time.Millisecond)
		defer ticker.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeapInuse = max(peakHeapInuse, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
		}
	})

	start := time.Now()
	res := Run(context.Background(), spec)
	elapsed := time.Since(start)
	close(stop)
	sampler.Wait()

	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heapGrowth := int64(peakHeapInuse) - int64(before.HeapInuse)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("1 GiB flood: %s (%.0f MiB/s); peak HeapInuse growth %s; TotalAlloc during run %s (whole process, parallel tests included); VmHWM %s -> %s",
		elapsed.Round(time.Millisecond), float64(total)/(1<<20)/elapsed.Seconds(), mib(heapGrowth), mib(int64(allocated)), mib(hwmBefore), mib(vmHWM(t)))

	require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
	require.Equal(t, 0, res.ExitCode)
	require.True(t, res.StdoutTruncated)
	require.True(t, strings.HasSuffix(res.Stdout, "\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n"))
	require.LessOrEqual(t, len(res.Stdout), spec.MaxStdout)
	require.Greater(t, len(res.Stdout), spec.MaxStdout-100, "all but the notice is kept")
	require.True(t, strings.HasPrefix(res.Stdout, "flood flood"))
	require.Less(t, heapGrowth, int64(64<<20), "heap grew with output volume")
	require.Less(t, allocated, uint64(256<<20), "allocations grew with output volume")
}

// vmHWM is the peak resident set size of this process, from /proc.
func vmHWM(t *testing.T) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
