package main

// The command line (SPEC §8) through run, with an environment each test
// controls, against a database of its own and an in-process worker; and
// bad input through the real main, in a child process, to see exactly what
// a user sees.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema/schematest"
	"github.com/attune-system/attune/worker"
)

// cliPack is pack "c", registered by every test through `attune pack
// register`.
var cliPack = map[string]string{
	"pack.yaml": "ref: c\nlabel: CLI tests\ndescription: actions for the CLI tests\nversion: 0.1.0\n",
	"actions/echo.yaml": `name: echo
description: Echoes n and s as its result.
runner_type: shell
entry_point: echo.sh
parameters:
  n: {type: integer, required: true}
  s: {type: string, required: true}
`,
	"actions/echo.sh": `#!/bin/sh
echo "hello from echo"
echo "a line on stderr" >&2
printf '{"n": %s, "s": "%s"}\n' "$ATTUNE_ACTION_N" "$ATTUNE_ACTION_S"
`,
	"actions/fail.yaml": "name: fail\nrunner_type: shell\nentry_point: fail.sh\n",
	"actions/slow.yaml": "name: slow\nrunner_type: shell\nentry_point: slow.sh\noutput_format: text\n",
	"actions/slow.sh":   "#!/bin/sh\necho first\necho oops >&2\nsleep 1.5\necho second\nsleep 1.5\necho third\n",
	"actions/fail.sh":   "#!/bin/sh\necho 'it went wrong' >&2\nexit 3\n",
	"actions/off.yaml":  "name: off\nenabled: false\nrunner_type: shell\nentry_point: fail.sh\n",
	// hang leaves its pid and its child's in ATTUNE_ACTION_PIDFILE, then
	// waits: a process group for cancel and timeout to kill.
	"actions/hang.yaml": `name: hang
runner_type: shell
entry_point: hang.sh
parameters:
  pidfile: {type: string, required: true}
  ignore_term: {type: boolean, default: false}
`,
	"actions/hang.sh": `#!/bin/sh
if [ "$ATTUNE_ACTION_IGNORE_TERM" = true ]; then trap '' TERM; fi
sleep 1000 &
printf '%s\n%s\n' $$ $! > "$ATTUNE_ACTION_PIDFILE.tmp"
mv "$ATTUNE_ACTION_PIDFILE.tmp" "$ATTUNE_ACTION_PIDFILE"
wait
`,
}

type cliBundle struct {
	ctx   context.Context
	url   string
	pool  *pgxpool.Pool
	packs string
}

func setupCLI(t *testing.T) *cliBundle {
	t.Helper()
	b := &cliBundle{ctx: context.Background(), url: schematest.URL(t), packs: t.TempDir()}
	for name, body := range cliPack {
		path := filepath.Join(b.packs, "c", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		require.NoError(t, os.WriteFile(path, []byte(body), mode))
	}
	pool, err := pgxpool.New(b.ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	b.pool = pool
	out := b.ok(t, "pack", "register")
	require.Contains(t, out, "registered pack c: 5 actions")
	return b
}

// env is the whole environment of the commands a test runs.
func (b *cliBundle) env(extra ...string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"ATTUNE_DATABASE_URL=" + b.url,
		"ATTUNE_PACKS_DIR=" + b.packs,
		"ATTUNE_KILL_GRACE=1s",
		"ATTUNE_SHUTDOWN_TIMEOUT=2s",
		"ATTUNE_MAX_CONCURRENT_EXECUTIONS=2",
		"ATTUNE_LOG_FORMAT=json",
	}, extra...)
}

type cliResult struct {
	stdout, stderr string
	err            error
}

// line is what main prints for r.err, as a user sees it.
func (r cliResult) line() string {
	if r.err == nil {
		return ""
	}
	return "attune: " + oneLine(r.err)
}

// attune runs one command in process.
func (b *cliBundle) attune(t *testing.T, args ...string) cliResult {
	t.Helper()
	return b.attuneWith(t, b.env(), "", args...)
}

func (b *cliBundle) attuneWith(t *testing.T, env []string, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runWithEnv(ctx, args, env, strings.NewReader(stdin), &stdout, &stderr)
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// ok runs a command that must succeed and returns its stdout.
func (b *cliBundle) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := b.attune(t, args...)
	require.NoError(t, r.err, "attune %s: stderr %s", strings.Join(args, " "), r.stderr)
	return r.stdout
}

// okJSON runs a command with -j and decodes its stdout into v.
func (b *cliBundle) okJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := b.ok(t, append([]string{"-j"}, args...)...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	require.NoError(t, dec.Decode(v), "attune -j %s printed %q", strings.Join(args, " "), out)
}

// startWorker runs a replica in process on the bundle's database.
func (b *cliBundle) startWorker(t *testing.T) {
	t.Helper()
	cfg, err := worker.LoadConfig(b.env("ATTUNE_WORKER_NAME=cli-worker"))
	require.NoError(t, err)
	pool, err := pgxpool.New(b.ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	var logs syncLog
	srv, err := worker.NewServer(cfg, pool, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	require.NoError(t, srv.Start(b.ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})
}

// syncLog is a log buffer that River's goroutines may write to.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (b *cliBundle) executions(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution").Scan(&n))
	return n
}

func (b *cliBundle) waitStatus(t *testing.T, id int64, within time.Duration, statuses ...string) *jobs.Execution {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		if slices.Contains(statuses, e.Status) {
			return e
		}
		require.True(t, time.Now().Before(deadline), "execution %d is %s after %s, want %v", id, e.Status, within, statuses)
		time.Sleep(10 * time.Millisecond)
	}
}

var requestedRE = regexp.MustCompile(`^execution (\d+) of (\S+) requested \(attune execution show (\d+)\)\n$`)

// execute runs `action execute` without --watch and returns the new id.
func (b *cliBundle) execute(t *testing.T, args ...string) int64 {
	t.Helper()
	out := b.ok(t, append([]string{"action", "execute"}, args...)...)
	m := requestedRE.FindStringSubmatch(out)
	require.NotNil(t, m, "unexpected output %q", out)
	require.Equal(t, m[1], m[3])
	id, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	return id
}

func TestCLIExecute(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	id := b.execute(t, "c.echo", "--param", "n=3", "--param", "s=hi")
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusRequested, e.Status)
	require.JSONEq(t, `{"n": 3, "s": "hi"}`, string(e.Parameters), "n=3 is a number, s=hi a string")

	// --params-json, with --param on top; values that are JSON stay JSON.
	id = b.execute(t, "c.echo", "--params-json", `{"n": 4, "s": "from json"}`, "--param", "s=\"42\"")
	e, err = jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 4, "s": "42"}`, string(e.Parameters))
	require.Nil(t, e.TimeoutSeconds)

	id = b.execute(t, "c.echo", "--param", "n=5", "--param", "s=a=b", "--timeout", "5s")
	e, err = jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 5, "s": "a=b"}`, string(e.Parameters), "only the first = splits")
	require.Equal(t, 5, *e.TimeoutSeconds)

	id = b.execute(t, "c.echo", "--param", "n=6", "--param", "s=x", "--timeout", "2m")
	e, err = jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, 120, *e.TimeoutSeconds)

	var got map[string]any
	b.okJSON(t, &got, "action", "execute", "c.echo", "--param", "n=7", "--param", "s=x")
	require.Equal(t, []string{"action_ref", "id", "status"}, sortedKeys(got))
	require.Equal(t, "c.echo", got["action_ref"])
	require.Equal(t, jobs.StatusRequested, got["status"])
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// executionFields are the stable field names of an execution in -j output.
var executionFields = []string{
	"action_ref", "attempt", "created_at", "error", "event_id", "exit_code", "finished_at", "id",
	"max_attempts", "parameters", "result", "rule_ref", "started_at", "status", "stderr",
	"stderr_truncated", "stdout", "stdout_truncated", "timeout_seconds", "worker",
}

func TestCLIWatchAndInspect(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	b.startWorker(t)

	// --watch exits 0 for completed and prints the outcome.
	r := b.attune(t, "action", "execute", "c.echo", "--param", "n=3", "--param", "s=hi", "--watch")
	require.NoError(t, r.err, r.stderr)
	require.Regexp(t, `(?m)^status\s+completed$`, r.stdout)
	require.Regexp(t, `(?m)^result\s+\{"n": 3, "s": "hi"\}$`, r.stdout)
	require.Regexp(t, `(?m)^exit code\s+0$`, r.stdout)
	require.Contains(t, r.stdout, "--- stdout ---\nhello from echo\n")
	id, err := strconv.ParseInt(regexp.MustCompile(`(?m)^id\s+(\d+)$`).FindStringSubmatch(r.stdout)[1], 10, 64)
	require.NoError(t, err)

	// -j --watch prints the execution with stable field names.
	var e map[string]any
	b.okJSON(t, &e, "action", "execute", "c.echo", "--param", "n=4", "--param", "s=there", "--watch")
	require.Equal(t, executionFields, sortedKeys(e))
	require.Equal(t, jobs.StatusCompleted, e["status"])
	require.Equal(t, map[string]any{"n": json.Number("4"), "s": "there"}, e["result"])

	// --watch of a failure prints the outcome and exits non-zero.
	r = b.attune(t, "action", "execute", "c.fail", "--watch")
	require.Error(t, r.err)
	require.Equal(t, 1, exitCode(r.err))
	require.Regexp(t, `(?m)^status\s+failed$`, r.stdout)
	require.Regexp(t, `(?m)^error\s+exited with code 3: it went wrong$`, r.stdout)
	require.Regexp(t, `^attune: execution \d+ failed$`, r.line())
	failedID, err := strconv.ParseInt(regexp.MustCompile(`(?m)^id\s+(\d+)$`).FindStringSubmatch(r.stdout)[1], 10, 64)
	require.NoError(t, err)

	// --timeout bounds the run; --watch reports the timeout.
	pidfile := filepath.Join(t.TempDir(), "pids")
	r = b.attune(t, "action", "execute", "c.hang", "--param", "pidfile="+pidfile, "--timeout", "1s", "--watch")
	require.Error(t, r.err)
	require.Regexp(t, `(?m)^status\s+timeout$`, r.stdout)
	require.Contains(t, r.stdout, "Execution timed out after 1 seconds")
	requireProcessesGone(t, 3*time.Second, readPids(t, pidfile)...)

	// show, result and logs of the first execution.
	out := b.ok(t, "execution", "show", strconv.FormatInt(id, 10))
	require.Regexp(t, `(?m)^action\s+c\.echo$`, out)
	require.Regexp(t, `(?m)^parameters\s+\{"n": 3, "s": "hi"\}$`, out)
	require.Regexp(t, `(?m)^attempt\s+1 of 1$`, out)
	require.Regexp(t, `(?m)^worker\s+cli-worker$`, out)
	require.Contains(t, out, "--- stderr ---\na line on stderr\n")
	e = nil
	b.okJSON(t, &e, "execution", "show", strconv.FormatInt(id, 10))
	require.Equal(t, executionFields, sortedKeys(e))
	require.Equal(t, json.Number(strconv.FormatInt(id, 10)), e["id"])

	require.Equal(t, `{"n": 3, "s": "hi"}`+"\n", b.ok(t, "execution", "result", strconv.FormatInt(id, 10)))
	r = b.attune(t, "execution", "result", strconv.FormatInt(failedID, 10))
	require.Error(t, r.err)
	require.Equal(t, fmt.Sprintf("attune: execution %d (failed) has no JSON result; attune execution logs %d shows its output", failedID, failedID), r.line())

	r = b.attune(t, "execution", "logs", strconv.FormatInt(id, 10))
	require.NoError(t, r.err)
	require.Equal(t, "hello from echo\n{\"n\": 3, \"s\": \"hi\"}\n", r.stdout)
	require.Equal(t, "a line on stderr\n", r.stderr)
	var logs map[string]any
	b.okJSON(t, &logs, "execution", "logs", strconv.FormatInt(id, 10))
	require.Equal(t, []string{"id", "status", "stderr", "stderr_truncated", "stdout", "stdout_truncated"}, sortedKeys(logs))
	require.Equal(t, "hello from echo\n{\"n\": 3, \"s\": \"hi\"}\n", logs["stdout"])
	r = b.attune(t, "execution", "logs", "--follow", strconv.FormatInt(failedID, 10))
	require.NoError(t, r.err)
	require.Equal(t, "it went wrong\n", r.stderr)

	// list and its filters, newest first.
	out = b.ok(t, "execution", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Regexp(t, `^ID\s+ACTION\s+STATUS\s+EXIT\s+CREATED\s+DURATION\s+ERROR$`, lines[0])
	require.Len(t, lines, 5)
	require.Regexp(t, `^\d+\s+c\.hang\s+timeout\s+`, lines[1])
	var list []map[string]any
	b.okJSON(t, &list, "execution", "list", "--action", "c.echo", "--status", "completed", "--limit", "1")
	require.Len(t, list, 1)
	require.Equal(t, executionFields, sortedKeys(list[0]))
	require.Equal(t, "c.echo", list[0]["action_ref"])
	require.NotEqual(t, json.Number(strconv.FormatInt(id, 10)), list[0]["id"], "newest first")
	b.okJSON(t, &list, "execution", "list", "--status", "failed")
	require.Len(t, list, 1)
	b.okJSON(t, &list, "execution", "list", "--action", "c.nope")
	require.Empty(t, list)
	require.NotNil(t, list, "an empty list is [], not null")

	// worker list shows the in-process replica.
	out = b.ok(t, "worker", "list")
	require.Regexp(t, `(?m)^NAME\s+STATUS\s+HEARTBEAT\s+RUNNING\s+CAPABILITIES$`, out)
	require.Regexp(t, `(?m)^cli-worker\s+active\s+`, out)
	var workers []map[string]any
	b.okJSON(t, &workers, "worker", "list")
	require.Len(t, workers, 1)
	require.Equal(t, []string{"capabilities", "heartbeat_age_seconds", "heartbeat_at", "hostname", "name", "pid", "running", "started_at", "status"}, sortedKeys(workers[0]))
	require.Equal(t, "cli-worker", workers[0]["name"])
	require.Equal(t, json.Number(strconv.Itoa(os.Getpid())), workers[0]["pid"])
	caps := workers[0]["capabilities"].(map[string]any)
	require.Contains(t, caps["runtimes"], "shell")
	require.Equal(t, json.Number("2"), caps["max_concurrent_executions"])
}

func TestCLICancel(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	// Queued (no worker yet): cancelled at once.
	queued := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x")
	idArg := strconv.FormatInt(queued, 10)
	require.Equal(t, fmt.Sprintf("execution %d cancelled\n", queued), b.ok(t, "execution", "cancel", idArg))
	var res map[string]any
	b.okJSON(t, &res, "execution", "cancel", idArg)
	require.Equal(t, map[string]any{"id": json.Number(idArg), "status": "cancelled", "previous_status": "cancelled"}, res)

	b.startWorker(t)
	// Running: canceling, then cancelled within the kill grace, the whole
	// process group gone. This one ignores SIGTERM: SIGKILL ends it.
	pidfile := filepath.Join(t.TempDir(), "pids")
	running := b.execute(t, "c.hang", "--param", "pidfile="+pidfile, "--param", "ignore_term=true")
	b.waitStatus(t, running, 10*time.Second, jobs.StatusRunning)
	pids := readPids(t, pidfile)
	idArg = strconv.FormatInt(running, 10)
	start := time.Now()
	require.Equal(t, fmt.Sprintf("execution %d canceling: its process gets SIGTERM, then SIGKILL after the kill grace\n", running),
		b.ok(t, "execution", "cancel", idArg))
	e := b.waitStatus(t, running, 10*time.Second, jobs.StatusCancelled, jobs.StatusFailed, jobs.StatusCompleted, jobs.StatusAbandoned)
	took := time.Since(start)
	require.Equal(t, jobs.StatusCancelled, e.Status)
	require.Less(t, took, 4*time.Second, "kill grace is 1s")
	requireProcessesGone(t, 2*time.Second, pids...)
	t.Logf("cancel of a SIGTERM-ignoring execution → cancelled in %s (kill grace 1s)", took.Round(time.Millisecond))

	// The queued one never ran.
	e, err := jobs.Get(b.ctx, b.pool, queued)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCancelled, e.Status)
	require.Nil(t, e.StartedAt)

	// Finished: a clear no-op.
	require.Equal(t, fmt.Sprintf("execution %d already finished (cancelled); nothing to cancel\n", running), b.ok(t, "execution", "cancel", idArg))
	done := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x")
	b.waitStatus(t, done, 10*time.Second, jobs.StatusCompleted)
	require.Equal(t, fmt.Sprintf("execution %d already finished (completed); nothing to cancel\n", done), b.ok(t, "execution", "cancel", strconv.FormatInt(done, 10)))
	e, err = jobs.Get(b.ctx, b.pool, done)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, e.Status)
}

func TestCLIAdmin(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	out := b.ok(t, "version")
	require.Regexp(t, `^attune \S+ \(commit \S+, go1\.\S+\)\n$`, out)
	var v map[string]any
	b.okJSON(t, &v, "version")
	require.Equal(t, []string{"commit", "go", "version"}, sortedKeys(v))

	// migrate on an emptied database, then again.
	_, err := b.pool.Exec(b.ctx, "DROP SCHEMA attune CASCADE")
	require.NoError(t, err)
	require.Regexp(t, `^applied River migrations \[.+\] and attune migrations 001_core, 002_enqueue`, b.ok(t, "migrate"))
	require.Equal(t, "schema attune is up to date\n", b.ok(t, "migrate"))
	var m map[string]any
	b.okJSON(t, &m, "migrate")
	require.Equal(t, map[string]any{"applied": []any{}, "river_versions": []any{}}, m)

	// pack list and action list after registering again.
	b.ok(t, "pack", "register", filepath.Join(b.packs, "c"))
	require.Regexp(t, `(?m)^c\s+0\.1\.0\s+4\s+CLI tests$`, b.ok(t, "pack", "list"))
	var actions []map[string]any
	b.okJSON(t, &actions, "action", "list", "--pack", "c")
	require.Len(t, actions, 5)
	require.Equal(t, []string{"description", "enabled", "pack", "parameters", "ref", "runner_type"}, sortedKeys(actions[0]))

	// pack check of a good pack, then of a broken one.
	require.Contains(t, b.ok(t, "pack", "check", filepath.Join(b.packs, "c")), "pack c: 5 actions, 0 sensors, 0 triggers, 0 rules: OK")
	broken := filepath.Join(t.TempDir(), "broken")
	require.NoError(t, os.MkdirAll(filepath.Join(broken, "actions"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "pack.yaml"), []byte("ref: broken\nversion: 1\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "actions", "bad.yaml"), []byte("name: bad\nentry_point: bad.sh\nparameters:\n  n:\n    type: integr\n"), 0o644))
	r := b.attune(t, "pack", "check", broken)
	require.Error(t, r.err)
	require.NotZero(t, exitCode(r.err))
	require.Regexp(t, regexp.QuoteMeta(filepath.Join(broken, "actions", "bad.yaml"))+`:5: .*integr`, r.stderr)
	require.Contains(t, r.line(), "has 1 error(s)")
	r = b.attune(t, "-j", "pack", "check", broken)
	require.Error(t, r.err)
	var check struct {
		OK       bool `json:"ok"`
		Problems []struct {
			File    string `json:"file"`
			Line    int    `json:"line"`
			Message string `json:"message"`
			Warning bool   `json:"warning"`
		} `json:"problems"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &check), r.stdout)
	require.False(t, check.OK)
	require.Len(t, check.Problems, 2, "the missing entry point (a warning) and the bad type")
	require.True(t, check.Problems[0].Warning)
	require.Equal(t, 2, check.Problems[0].Line)
	require.False(t, check.Problems[1].Warning)
	require.Equal(t, filepath.Join(broken, "actions", "bad.yaml"), check.Problems[1].File)
	require.Equal(t, 5, check.Problems[1].Line)
	require.Contains(t, check.Problems[1].Message, "integr")

	// secrets: set from stdin, list without values, delete.
	key := "ATTUNE_SECRETS_KEY=" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	r = b.attuneWith(t, b.env(key), "s3cr3t-value\n", "secret", "set", "api_token", "--pack", "c")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "secret api_token stored (pack scope c)\n", r.stdout)
	r = b.attuneWith(t, b.env(key), "", "-j", "secret", "list")
	require.NoError(t, r.err)
	require.NotContains(t, r.stdout, "s3cr3t")
	var secrets []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &secrets))
	require.Len(t, secrets, 1)
	require.Equal(t, []string{"name", "scope", "scope_ref", "updated"}, sortedKeys(secrets[0]))
	r = b.attuneWith(t, b.env(key), "v\n", "secret", "set", "global_token")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "secret global_token stored (global scope)\n", r.stdout)
	require.Equal(t, "secret api_token deleted\n", b.ok(t, "secret", "delete", "api_token", "--pack", "c"))
	r = b.attune(t, "secret", "delete", "api_token", "--pack", "c")
	require.Equal(t, "attune: no pack secret api_token for c; attune secret list shows them", r.line())
}

// TestCLIBadInput runs the real main in a child process: every mistake is one
// line on stderr, no stack trace, a non-zero exit, and nothing enqueued.
func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	self, err := os.Executable()
	require.NoError(t, err)
	empty := t.TempDir()

	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		msg  string // a regexp the line must match
	}{
		{name: "UnknownAction", args: []string{"action", "execute", "c.nope"}, code: 1,
			msg: `^attune: unknown action "c\.nope"\. Register its pack with "attune pack register"; "attune action list" shows the known actions\.$`},
		{name: "DisabledAction", args: []string{"action", "execute", "c.off"}, code: 1, msg: `action "c\.off" is disabled`},
		{name: "ParamWithoutEquals", args: []string{"action", "execute", "c.echo", "--param", "n"}, code: 2, msg: `--param "n" is not key=value; write --param name=value`},
		{name: "ParamEmptyKey", args: []string{"action", "execute", "c.echo", "--param", "=3"}, code: 2, msg: `--param "=3" is not key=value`},
		{name: "ParamWrongType", args: []string{"action", "execute", "c.echo", "--param", "n=three", "--param", "s=x"}, code: 1, msg: `parameter "n" of action c\.echo must be integer, got string`},
		{name: "MissingParam", args: []string{"action", "execute", "c.echo", "--param", "n=1"}, code: 1, msg: `missing required parameter "s" for action c\.echo`},
		{name: "UnknownParam", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--param", "zz=1"}, code: 1, msg: `unknown parameter "zz" for action c\.echo\. The action declares: n, s\.$`},
		{name: "ParamsJSONNotObject", args: []string{"action", "execute", "c.echo", "--params-json", "[1]"}, code: 2, msg: `--params-json must be a JSON object`},
		{name: "ParamsJSONInvalid", args: []string{"action", "execute", "c.echo", "--params-json", "{n: 1}"}, code: 2, msg: `--params-json is not valid JSON`},
		{name: "NegativeTimeout", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--timeout", "-5s"}, code: 2, msg: `--timeout -5s is invalid: use whole seconds of at least 1s`},
		{name: "FractionalTimeout", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--timeout", "1500ms"}, code: 2, msg: `--timeout 1.5s is invalid`},
		{name: "AbsurdTimeout", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--timeout", "10000h"}, code: 1, msg: `option timeout_seconds must be an integer from 1 to 604800, got 36000000`},
		// The hint names the command as typed, not its last word alone.
		{name: "TimeoutNotDuration", args: []string{"action", "execute", "c.echo", "--timeout", "soon"}, code: 2, msg: `invalid argument "soon" for "--timeout" flag.* \(see attune action execute --help\)$`},
		{name: "ParamsJSONTrailing", args: []string{"action", "execute", "c.echo", "--params-json", `{"n": 1, "s": "x"} {"zz": 1}`}, code: 2, msg: `--params-json holds more than one JSON value`},
		{name: "ZeroLimit", args: []string{"execution", "list", "--limit", "0"}, code: 2, msg: `--limit 0 is invalid: use 1 to 10000`},
		{name: "SecretBadActionRef", args: []string{"secret", "set", "x", "--action", "echo"}, code: 2, msg: `--action "echo" is not an action ref; give \{pack\}\.\{name\}`},
		{name: "PackCheckEmpty", args: []string{"pack", "check", empty}, code: 1, msg: `^attune: no pack found in .*: a pack is a directory holding a pack\.yaml`},
		{name: "PackRegisterEmpty", args: []string{"pack", "register", empty}, code: 1, msg: `^attune: no pack found in .*: a pack is a directory holding a pack\.yaml`},
		{name: "PackRegisterMissing", args: []string{"pack", "register", "/nonexistent/packs"}, code: 1, msg: `^attune: /nonexistent/packs: no such directory; give a pack.s directory or the directory of packs \(ATTUNE_PACKS_DIR\)$`},
		{name: "NoRef", args: []string{"action", "execute"}, code: 2, msg: `accepts 1 arg\(s\), received 0; usage: attune action execute REF$`},
		{name: "PackCheckNoPath", args: []string{"pack", "check"}, code: 2, msg: `^attune: accepts 1 arg\(s\), received 0; usage: attune pack check PATH$`},
		{name: "UnknownSubcommand", args: []string{"worker", "list", "extra"}, code: 2, msg: `^attune: unknown command "extra" for "attune worker list" \(see attune worker list --help\)$`},
		{name: "ShowMissing", args: []string{"execution", "show", "999999"}, code: 1, msg: `^attune: execution not found: 999999 \(attune execution list shows recent ones\)$`},
		{name: "ResultMissing", args: []string{"execution", "result", "999999"}, code: 1, msg: `execution not found: 999999`},
		{name: "LogsMissing", args: []string{"execution", "logs", "999999"}, code: 1, msg: `execution not found: 999999`},
		{name: "CancelMissing", args: []string{"execution", "cancel", "999999"}, code: 1, msg: `execution not found: 999999`},
		{name: "BadID", args: []string{"execution", "show", "abc"}, code: 2, msg: `"abc" is not an execution id`},
		{name: "ZeroID", args: []string{"execution", "cancel", "0"}, code: 2, msg: `"0" is not an execution id`},
		{name: "NegativeLimit", args: []string{"execution", "list", "--limit", "-1"}, code: 2, msg: `--limit -1 is invalid: use 1 to 10000`},
		{name: "UnknownStatus", args: []string{"execution", "list", "--status", "done"}, code: 2, msg: `--status "done" is invalid: use requested, scheduled, running, completed`},
		{name: "HugeLimit", args: []string{"execution", "list", "--limit", "100000"}, code: 2, msg: `--limit 100000 is invalid`},
		{name: "EventListLimit", args: []string{"event", "list", "--limit", "-1"}, code: 2, msg: `--limit -1 is invalid`},
		{name: "UnknownCommand", args: []string{"frobnicate"}, code: 2, msg: `unknown command "frobnicate"`},
		{name: "UnknownFlag", args: []string{"execution", "list", "--colour"}, code: 2, msg: `unknown flag: --colour`},
		{name: "KillGraceNotDuration", args: []string{"version"}, env: []string{"ATTUNE_KILL_GRACE=soon"}, code: 1,
			msg: `^attune: ATTUNE_KILL_GRACE="soon" is invalid: must be a duration such as 90s or 5m$`},
		{name: "NegativeKillGrace", args: []string{"execution", "list"}, env: []string{"ATTUNE_KILL_GRACE=-1s"}, code: 1, msg: `ATTUNE_KILL_GRACE=-1s is invalid`},
		{name: "BadSecretsKey", args: []string{"version"}, env: []string{"ATTUNE_SECRETS_KEY=short"}, code: 1, msg: `ATTUNE_SECRETS_KEY=\(hidden\) is invalid`},
		{name: "NoSecretsKey", args: []string{"secret", "set", "x"}, code: 1, msg: `ATTUNE_SECRETS_KEY is not set`},
		{name: "DatabaseDown", args: []string{"execution", "list"}, env: []string{"ATTUNE_DATABASE_URL=postgres://127.0.0.1:1/attune?sslmode=disable&connect_timeout=2"}, code: 1, msg: `cannot reach PostgreSQL at 127\.0\.0\.1:1`},
		{name: "PackCheckMissing", args: []string{"pack", "check", "/nonexistent/pack"}, code: 1, msg: `^attune: /nonexistent/pack: no such directory; give a pack.s directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(self, tc.args...)
			cmd.Env = append(b.env(tc.env...), asMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "exit 0; stdout %q stderr %q", stdout.String(), stderr.String())
			require.Equal(t, tc.code, ee.ExitCode(), "stderr %q", stderr.String())
			out := stderr.String()
			require.True(t, strings.HasSuffix(out, "\n") && strings.Count(out, "\n") == 1, "not one line: %q", out)
			require.True(t, strings.HasPrefix(out, "attune: "), out)
			require.Regexp(t, tc.msg, strings.TrimSuffix(out, "\n"))
			require.NotContains(t, out, "goroutine")
			require.NotContains(t, out, "Usage:")
			require.Empty(t, stdout.String())
		})
	}
	t.Cleanup(func() {
		require.Zero(t, b.executions(t), "a rejected command enqueued something")
		var jobsN int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.river_job").Scan(&jobsN))
		require.Zero(t, jobsN)
	})
}

// readPids waits for the hang action's pidfile.
func readPids(t *testing.T, path string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			var pids []int
			for _, f := range strings.Fields(string(data)) {
				pid, err := strconv.Atoi(f)
				require.NoError(t, err)
				pids = append(pids, pid)
			}
			return pids
		}
		require.True(t, errors.Is(err, os.ErrNotExist) && time.Now().Before(deadline), "pidfile %s: %v", path, err)
		time.Sleep(5 * time.Millisecond)
	}
}

// requireProcessesGone waits until no pid runs; a zombie counts as gone.
func requireProcessesGone(t *testing.T, within time.Duration, pids ...int) {
	t.Helper()
	require.NotEmpty(t, pids)
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for processAlive(pid) {
			require.True(t, time.Now().Before(deadline), "process %d still runs after %s", pid, within)
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestCLIRegisterAcrossPacks: registering a directory of packs does not
// depend on their names' order when a rule names another pack's action, -j
// prints snake_case fields, and a rule's action_params are checked against
// an action of another pack.
func TestCLIRegisterAcrossPacks(t *testing.T) {
	t.Parallel()
	b := &cliBundle{ctx: context.Background(), url: schematest.URL(t), packs: t.TempDir()}
	write := func(path, body string) {
		t.Helper()
		path = filepath.Join(b.packs, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	}
	// alpha sorts first, but its rule needs zeta's trigger and action.
	write("alpha/pack.yaml", "ref: alpha\n")
	write("alpha/rules/r.yaml", "name: r\ntrigger_ref: zeta.tick\naction_ref: zeta.a\naction_params: {n: 1}\n")
	write("zeta/pack.yaml", "ref: zeta\n")
	write("zeta/triggers/tick.yaml", "name: tick\n")
	write("zeta/actions/a.yaml", "name: a\nentry_point: a.sh\nparameters:\n  n: {type: integer}\n")
	write("zeta/actions/a.sh", "#!/bin/sh\n")

	var res []map[string]any
	b.okJSON(t, &res, "pack", "register")
	require.Len(t, res, 2)
	for _, r := range res {
		require.Equal(t, []string{"actions", "disabled_actions", "pack", "rules", "sensors", "triggers"}, sortedKeys(r))
	}
	require.ElementsMatch(t, []any{"alpha", "zeta"}, []any{res[0]["pack"], res[1]["pack"]})

	// A parameter zeta.a does not declare: every event would fail to
	// enqueue, so registration refuses the rule.
	write("alpha/rules/r.yaml", "name: r\ntrigger_ref: zeta.tick\naction_ref: zeta.a\naction_params: {bogus: 1}\n")
	r := b.attune(t, "pack", "register", filepath.Join(b.packs, "alpha"))
	require.Error(t, r.err)
	require.Contains(t, r.stderr, `rule alpha.r: action_params: unknown parameter "bogus"; zeta.a declares: n`)
	require.Equal(t, "attune: 1 pack(s) not registered", r.line())

	// Nothing to register is an error, not silence.
	r = b.attuneWith(t, b.env("ATTUNE_PACKS_DIR="+t.TempDir()), "", "-j", "pack", "register")
	require.Error(t, r.err)
	require.Empty(t, r.stdout)
}

func TestParseParams(t *testing.T) {
	t.Parallel()
	p, err := parseParams([]string{"n=3", "s=hi", "b=true", `o={"a":1}`, "t=3}", "u=1 2", "e="}, "")
	require.NoError(t, err)
	require.Equal(t, map[string]any{"n": json.Number("3"), "s": "hi", "b": true, "o": map[string]any{"a": json.Number("1")},
		"t": "3}", "u": "1 2", "e": ""}, p)

	_, err = parseParams(nil, `{"a": 1}}`)
	require.ErrorContains(t, err, "--params-json holds more than one JSON value")
}

// TestCLIFollowInterrupted: interrupting logs --follow says which execution
// was left and in what state, not a bare "context canceled".
func TestCLIFollowInterrupted(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	id := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x") // no worker: it stays requested

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	interrupted := *b
	interrupted.ctx = ctx
	r := interrupted.attune(t, "execution", "logs", strconv.FormatInt(id, 10), "--follow")
	require.Error(t, r.err)
	require.Equal(t, fmt.Sprintf("attune: stopped following execution %d (still requested): context deadline exceeded", id), r.line())
}

// TestCLIFollowStreams: logs --follow on a running execution prints its
// output as the row grows, each byte once, and returns when it finishes.
func TestCLIFollowStreams(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	b.startWorker(t)
	id := b.execute(t, "c.slow")
	b.waitStatus(t, id, 30*time.Second, jobs.StatusRunning)

	r := b.attune(t, "execution", "logs", strconv.FormatInt(id, 10), "--follow")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "first\nsecond\nthird\n", r.stdout)
	require.Equal(t, "oops\n", r.stderr)
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, e.Status)
}
