package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema/schematest"
	"github.com/attune-system/attune/worker"
)

func TestMain(m *testing.M) {
	os.Exit(schematest.MainNoLeaks(m))
}

// testPack is the pack every test here registers, as ref "t". Its shell
// actions read their parameters from ATTUNE_ACTION_*.
var testPack = map[string]string{
	"pack.yaml": "ref: t\nlabel: Test\ndescription: actions for the jobs tests\nversion: 1.0.0\n",

	"actions/noop.yaml": "name: noop\nref: t.noop\nrunner_type: shell\nentry_point: noop.sh\noutput_format: json\n",
	"actions/noop.sh":   "#!/bin/sh\necho '{\"ok\": true}'\n",

	// params declares one parameter of each type; nothing about it runs.
	"actions/params.yaml": `name: params
ref: t.params
runner_type: shell
entry_point: noop.sh
parameters:
  n:
    type: integer
    required: true
    minimum: 0
    maximum: 100
  s:
    type: string
  f:
    type: number
  b:
    type: boolean
  o:
    type: object
  a:
    type: array
  color:
    type: string
    enum: [red, green]
  d:
    type: string
    required: true
    default: dflt
timeout_seconds: 30
max_retries: 2
`,

	"actions/disabled.yaml": "name: disabled\nref: t.disabled\nenabled: false\nrunner_type: shell\nentry_point: noop.sh\n",

	// secret prints whether the secret reached it on stdin, and what it
	// got there, as its result: as is (which attune masks) and in ROT13
	// (which it does not), so tests can see the values.
	"actions/secret.yaml": `name: secret
ref: t.secret
runner_type: shell
entry_point: secret.sh
parameters:
  user:
    type: string
    required: true
  password:
    type: string
    secret: true
    required: true
  env_dump:
    type: string
`,
	"actions/secret.sh": "#!/bin/sh\nread -r line\n" +
		`if env | grep -q hunter2; then inenv=true; else inenv=false; fi` + "\n" +
		`rot=$(printf '%s' "$line" | tr 'A-Za-z' 'N-ZA-Mn-za-m')` + "\n" +
		`printf '{"stdin": %s, "stdin_rot13": %s, "user": "%s", "secret_in_env": %s}\n' "$line" "$rot" "$ATTUNE_ACTION_USER" "$inenv"` + "\n",

	// hang writes its pid and a grandchild's to ATTUNE_ACTION_PIDFILE, then
	// waits for the grandchild: a process group to kill.
	"actions/hang.yaml": `name: hang
ref: t.hang
runner_type: shell
entry_point: hang.sh
parameters:
  pidfile:
    type: string
    required: true
  ignore_term:
    type: boolean
    default: false
`,
	"actions/hang.sh": `#!/bin/sh
if [ "$ATTUNE_ACTION_IGNORE_TERM" = true ]; then trap '' TERM; fi
sleep 1000 &
printf '%s\n%s\n' $$ $! > "$ATTUNE_ACTION_PIDFILE.tmp"
mv "$ATTUNE_ACTION_PIDFILE.tmp" "$ATTUNE_ACTION_PIDFILE"
wait
`,

	"actions/fail.yaml": "name: fail\nref: t.fail\nrunner_type: shell\nentry_point: fail.sh\n",
	"actions/fail.sh":   "#!/bin/sh\necho 'something broke' >&2\nexit 3\n",
}

// testBundle is what most tests need: a fresh migrated database with the
// test pack registered.
type testBundle struct {
	ctx     context.Context
	pool    *pgxpool.Pool
	url     string
	packDir string // ATTUNE_PACKS_DIR
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := schematest.URL(t)
	pool := newPool(t, url)
	base := t.TempDir()
	writePack(t, filepath.Join(base, "t"), testPack)
	registerPack(t, pool, filepath.Join(base, "t"))
	return &testBundle{ctx: ctx, pool: pool, url: url, packDir: base}
}

// registerPack loads the pack in dir and registers it.
func registerPack(t testing.TB, pool *pgxpool.Pool, dir string) {
	t.Helper()
	p, problems := packs.Load(dir)
	require.NoError(t, packs.AsError(problems))
	err := packs.RegisterPool(context.Background(), pool, []*packs.Pack{p}, problems).Err()
	require.NoError(t, err)
}

// newPool opens a pool on url, closed when t ends.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// writePack writes files (path → content) under dir; .sh files are made
// executable.
func writePack(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		require.NoError(t, os.WriteFile(path, []byte(content), mode))
	}
}

// startWorker runs a replica on the bundle's database with its own pool,
// stopped when t ends. extra adds or overrides ATTUNE_* variables.
func (b *testBundle) startWorker(t *testing.T, name string, extra ...string) *worker.Server {
	t.Helper()
	environ := append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"ATTUNE_DATABASE_URL=" + b.url,
		"ATTUNE_PACKS_DIR=" + b.packDir,
		"ATTUNE_KILL_GRACE=1s",
		"ATTUNE_SHUTDOWN_TIMEOUT=2s",
		"ATTUNE_WORKER_NAME=" + name,
		"ATTUNE_LOG_LEVEL=debug",
	}, extra...)
	cfg, err := worker.LoadConfig(environ)
	require.NoError(t, err)
	pool := newPool(t, b.url+"&pool_max_conns=8")
	srv, err := worker.NewServer(cfg, pool, testLogger(t))
	require.NoError(t, err)
	return srv
}

// run starts srv and stops it when t ends.
func run(t *testing.T, srv *worker.Server) {
	t.Helper()
	require.NoError(t, srv.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
	})
}

// testLogger collects a worker's logs and prints them only when the test
// failed: River logs from its goroutines, where t.Log could race the end of
// the test.
func testLogger(t *testing.T) *slog.Logger {
	lb := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitStatus polls until execution id has one of statuses and returns it.
func waitStatus(t testing.TB, pool *pgxpool.Pool, id int64, within time.Duration, statuses ...string) *jobs.Execution {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		e, err := jobs.Get(context.Background(), pool, id)
		require.NoError(t, err)
		for _, s := range statuses {
			if e.Status == s {
				return e
			}
		}
		if time.Now().After(deadline) {
			require.Failf(t, "execution did not reach status", "execution %d is %s after %s, want %v (error %v)",
				id, e.Status, within, statuses, e.Error)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count returns SELECT count(*) FROM table.
func count(t testing.TB, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

// waitPidfile waits for the hang action's pidfile and returns its pids.
func waitPidfile(t testing.TB, path string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var pids []int
			for _, f := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(f)
				require.NoError(t, err)
				pids = append(pids, pid)
			}
			require.Len(t, pids, 2)
			return pids
		}
		require.ErrorIs(t, err, os.ErrNotExist)
		require.True(t, time.Now().Before(deadline), "pidfile %s not written in time", path)
		time.Sleep(5 * time.Millisecond)
	}
}

// requireGone waits until none of pids runs. A zombie counts as gone: it runs
// no code, and whoever inherited it reaps it in its own time.
func requireGone(t testing.TB, within time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for alive(pid) {
			require.True(t, time.Now().Before(deadline), "process %d still alive after %s", pid, within)
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}
