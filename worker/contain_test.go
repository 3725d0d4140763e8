package worker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// TestEntryPointSwappedAfterRegister replaces a registered entry point with
// a link to a script outside the pack: the execution fails before anything
// runs.
func TestEntryPointSwappedAfterRegister(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.legit", nil, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status)
	require.Equal(t, "legit\n", *e.Stdout)

	outside := filepath.Join(t.TempDir(), "evil.sh")
	marker := filepath.Join(t.TempDir(), "ran")
	require.NoError(t, os.WriteFile(outside, []byte("echo evil; : > "+marker+"\n"), 0o755))
	entry := filepath.Join(b.packs, "t", "actions", "legit.sh")
	require.NoError(t, os.Remove(entry))
	require.NoError(t, os.Symlink(outside, entry))

	e = b.execute(t, "t.legit", nil, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, *e.Error, "outside its pack's folder")
	require.Nil(t, e.ExitCode, "nothing ran")
	require.NoFileExists(t, marker)
}

// TestYAMLResultIsLinear parses a 2 MB YAML mapping of 80,000 keys, which
// yaml.v3's decoding (a pairwise duplicate-key check) took minutes of CPU
// over.
func TestYAMLResultIsLinear(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	began := time.Now()
	e := b.execute(t, "t.yaml80k", nil, nil)
	took := time.Since(began)
	require.Equal(t, jobs.StatusCompleted, e.Status, "%v", derefErr(e.Error))
	require.Greater(t, len(*e.Stdout), 1800000)
	var result map[string]any
	require.NoError(t, json.Unmarshal(e.Result, &result))
	require.Len(t, result, 80000)
	require.EqualValues(t, 12345, result["key-number-12345"])
	// Completed, not timeout: the parse runs within the execution's own
	// deadline (timeout_seconds: 120 in its YAML), which the quadratic
	// decoding overran by minutes. No bound in seconds here: it would
	// measure the machine's load.
	t.Logf("%d bytes of YAML: execution took %s", len(*e.Stdout), took)
}

func TestDecodeYAMLResultBounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// A billion laughs: small text, 10^9 values once expanded.
	var bomb strings.Builder
	bomb.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&bomb, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	began := time.Now()
	_, err := decodeYAMLResult(ctx, bomb.String())
	require.ErrorIs(t, err, errResultBudget)
	require.Less(t, time.Since(began), 5*time.Second)

	// A deadline already passed stops it.
	var big strings.Builder
	for i := range 50000 {
		fmt.Fprintf(&big, "k%d: %d\n", i, i)
	}
	expired, cancel := context.WithCancel(ctx)
	cancel()
	_, err = decodeYAMLResult(expired, big.String())
	require.ErrorIs(t, err, context.Canceled)

	// Duplicates, merges and scalars as yaml.v3 resolves them.
	_, err = decodeYAMLResult(ctx, "a: 1\na: 2\n")
	require.ErrorContains(t, err, `mapping key "a" already defined`)
	v, err := decodeYAMLResult(ctx, "base: &b {x: 1, y: two}\nm:\n  <<: *b\n  y: 3\nn: ~\nt: true\nf: 1.5\nbig: 123456789012\n")
	require.NoError(t, err)
	got, _ := json.Marshal(v)
	require.JSONEq(t, `{"base": {"x": 1, "y": "two"}, "m": {"x": 1, "y": 3}, "n": null, "t": true, "f": 1.5, "big": 123456789012}`, string(got))
}

// floodFile writes n bytes of base64 of random bytes: output that TOAST
// cannot compress away, so WAL measures what is written.
func floodFile(t *testing.T, n int) string {
	t.Helper()
	raw := make([]byte, n*3/4)
	_, _ = rand.Read(raw)
	path := filepath.Join(t.TempDir(), "flood")
	require.NoError(t, os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(raw)), 0o644))
	return path
}

// envInt reads an integer from the environment, for running a test by
// hand at full size.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// peakRSS is this process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(rest)), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestFloodIsWrittenOnce floods both streams past their caps and measures
// the WAL the whole execution wrote: each stream is written at most once
// live after it reached its cap, and once with the result. Not parallel:
// WAL is the cluster's, so other tests of this package must not write
// meanwhile. Set ATTUNE_TEST_FLOOD_SECONDS and ATTUNE_TEST_FLOOD_CAP to
// run it at full size (30 s, 10 MiB).
func TestFloodIsWrittenOnce(t *testing.T) {
	seconds := envInt("ATTUNE_TEST_FLOOD_SECONDS", 10)
	limit := envInt("ATTUNE_TEST_FLOOD_CAP", 1<<20)
	b := setup(t, setupOpts{env: []string{
		"ATTUNE_MAX_STDOUT_BYTES=" + strconv.Itoa(limit), "ATTUNE_MAX_STDERR_BYTES=" + strconv.Itoa(limit),
		"ATTUNE_DEFAULT_TIMEOUT=120s",
	}})
	file := floodFile(t, 4<<20)
	params := map[string]any{"seconds": seconds, "file": file}

	lsn := func() string {
		var l string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT pg_current_wal_lsn()::text").Scan(&l))
		return l
	}
	// Other tests' CREATE DATABASE checkpoints recycle WAL within seconds: a
	// replication slot keeps what pg_waldump is to read.
	slot := fmt.Sprintf("attune_flood_%d", os.Getpid())
	conn, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	_, slotErr := conn.Exec(b.ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", slot)
	defer func() {
		if slotErr == nil {
			_, _ = conn.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot)
		}
		conn.Release()
	}()
	before := lsn()
	e := b.execute(t, "t.flood", params, nil)
	after := lsn()
	require.Equal(t, jobs.StatusCompleted, e.Status, "%v", derefErr(e.Error))
	require.True(t, e.StdoutTruncated)
	require.True(t, e.StderrTruncated)
	var all int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint", after, before).Scan(&all))
	wal, records, ok := databaseWAL(t, b, before, after)
	if !ok {
		t.Skipf("pg_waldump cannot read the server's WAL here; the whole cluster wrote %d bytes", all)
	}
	t.Logf("one %d s flood, caps %d bytes per stream: %d bytes of WAL for its database, %d without full-page images (%.2f x the caps; the cluster wrote %d)",
		seconds, limit, wal, records, float64(records)/float64(2*limit), all)
	// Twice: once live, once with the result; WAL adds about 8% for TOAST
	// chunk headers and the TOAST index. (Before, every second rewrote it.)
	require.LessOrEqual(t, records, int64(float64(2*2*limit)*1.12), "the capped text written twice at most, and little else")

	// Five at once: what the worker holds stays near the caps. "5" resets
	// the peak (VmHWM), which the test's own work above raised.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	rssBefore := peakRSS(t)
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := b.execute(t, "t.flood", params, nil)
			require.Equal(t, jobs.StatusCompleted, e.Status)
		}()
	}
	wg.Wait()
	t.Logf("five %d s floods at once: peak RSS of the test process (the worker) %d MiB (was %d MiB)", seconds, peakRSS(t)>>20, rssBefore>>20)
}

func derefErr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// databaseWAL sums, with pg_waldump, the WAL records between two LSNs that
// touch the test's database: the server is shared with other tests and
// sessions, so the cluster's LSN difference says little. It returns the
// total and the total without full-page images, which depend on when
// checkpoints run (other tests' CREATE DATABASE force one every few
// seconds here), not on what attune writes.
func databaseWAL(t *testing.T, b *testBundle, from, to string) (total, records int64, ok bool) {
	t.Helper()
	var dataDir, dbOID string
	if b.pool.QueryRow(b.ctx, "SELECT current_setting('data_directory'), (SELECT oid::text FROM pg_database WHERE datname = current_database())").Scan(&dataDir, &dbOID) != nil {
		return 0, 0, false
	}
	waldump, err := exec.LookPath("pg_waldump")
	if err != nil {
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_waldump")
		if len(matches) == 0 {
			return 0, 0, false
		}
		waldump = matches[len(matches)-1]
	}
	var stderr bytes.Buffer
	// Without -e: it reads on to the end of the WAL written so far (and
	// then fails, which is expected); records after to are left out below.
	// Read as it goes: the cluster's WAL makes hundreds of MB of text.
	cmd := exec.Command(waldump, "-p", filepath.Join(dataDir, "pg_wal"), "-s", from)
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	needle := []byte("/" + dbOID + "/")
	end := walLSNText(to)
	lines := 0
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		lines++
		if walLSN(line) > end {
			break
		}
		if !bytes.Contains(line, needle) {
			continue
		}
		// "len (rec/tot):     54/    54, ..."
		_, rest, ok := bytes.Cut(line, []byte("len (rec/tot):"))
		if !ok {
			continue
		}
		rec, rest, _ := bytes.Cut(rest, []byte("/"))
		tot, _, _ := bytes.Cut(rest, []byte(","))
		r, err1 := strconv.ParseInt(string(bytes.TrimSpace(rec)), 10, 64)
		n, err2 := strconv.ParseInt(string(bytes.TrimSpace(tot)), 10, 64)
		if err1 == nil && err2 == nil {
			total += n
			records += r
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	_ = cmd.Wait()
	if lines == 0 {
		t.Logf("pg_waldump: %s", stderr.String())
		return 0, 0, false
	}
	return total, records, true
}

// walLSN reads the "lsn: X/Y" of a pg_waldump line.
func walLSN(line []byte) uint64 {
	_, rest, ok := bytes.Cut(line, []byte("lsn: "))
	if !ok {
		return 0
	}
	l, _, _ := bytes.Cut(rest, []byte(","))
	return walLSNText(string(l))
}

// walLSNText parses an LSN such as 4/A24982C0.
func walLSNText(s string) uint64 {
	hi, lo, _ := strings.Cut(s, "/")
	h, _ := strconv.ParseUint(hi, 16, 64)
	l, _ := strconv.ParseUint(lo, 16, 64)
	return h<<32 | l
}
