package worker

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema/schematest"
)

// testPack is a pack whose actions are this test binary posing as pack
// binaries (see main_test.go); the helper mode arrives as the parameter
// "helper", which env delivery turns into ATTUNE_ACTION_HELPER.
const testPack = `ref: t
label: test
version: 1.0.0
`

// helperParams are the parameters every helper action declares.
const helperParams = `parameters:
  helper: {type: string, required: true}
  pidfile: {type: string}
  bytes: {type: integer}
  signal: {type: string}
  grandchild: {type: string}
  password: {type: string, secret: true}
  big: {type: string}
`

var testActions = map[string]string{
	"run.yaml": `name: run
entry_point: helper
runner_type: native
` + helperParams,
	"retry.yaml": `name: retry
entry_point: helper
max_retries: 2
` + helperParams,
	"stdin_json.yaml": `name: stdin_json
entry_point: helper
parameter_delivery: stdin
` + helperParams,
	"stdin_dotenv.yaml": `name: stdin_dotenv
entry_point: helper
parameter_delivery: stdin
parameter_format: dotenv
output_format: text
` + helperParams + `  nested: {type: object}
`,
	"stdin_yaml.yaml": `name: stdin_yaml
entry_point: helper
parameter_delivery: stdin
parameter_format: yaml
output_format: text
` + helperParams,
	"file.yaml": `name: file
entry_point: helper
parameter_delivery: file
` + helperParams,
	"schema.yaml": `name: schema
entry_point: helper
result_schema:
  type: object
  properties:
    ok: {type: string}
  required: [ok]
` + helperParams,
	"missing.yaml": `name: missing
entry_point: not-deployed-yet
` + helperParams,
	"noexec.yaml": `name: noexec
entry_point: noexec
` + helperParams,
	"arm.yaml": `name: arm
entry_point: arm-binary
` + helperParams,
	"py.yaml": `name: py
entry_point: hello.py
parameters:
  who: {type: string, default: python}
`,
	"js.yaml": `name: js
entry_point: hello.js
parameters:
  who: {type: string, default: node}
`,
	"slowlines.yaml": `name: slowlines
entry_point: slowlines.sh
output_format: text
`,
	"legit.yaml": `name: legit
entry_point: legit.sh
output_format: text
`,
	"legit.sh": "echo legit\n",
	"yaml80k.yaml": `name: yaml80k
entry_point: yaml80k.sh
output_format: yaml
timeout_seconds: 120
`,
	"yaml80k.sh": "seq 1 80000 | awk '{print \"key-number-\" $1 \": \" $1}'\n",
	"flood.yaml": `name: flood
entry_point: flood.sh
output_format: text
parameters:
  seconds: {type: integer, required: true}
  file: {type: string, required: true}
`,
	// Incompressible output on both streams, as fast as cat goes, for
	// ATTUNE_ACTION_SECONDS.
	"flood.sh": `end=$(( $(date +%s) + ATTUNE_ACTION_SECONDS ))
while [ "$(date +%s)" -lt "$end" ]; do
	cat "$ATTUNE_ACTION_FILE"
	cat "$ATTUNE_ACTION_FILE" >&2
done
`,
	"script.yaml": `name: script
entry_point: script.sh
output_format: text
parameters:
  word: {type: string, default: hi}
`,
}

type testBundle struct {
	pool   *pgxpool.Pool
	cfg    Config
	srv    *Server
	logs   *syncBuffer
	packs  string
	ctx    context.Context
	cancel context.CancelFunc
}

type setupOpts struct {
	env []string // extra configuration variables
}

func setup(t *testing.T, opts setupOpts) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	url := schematest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	base := t.TempDir()
	dir := filepath.Join(base, "t")
	actions := filepath.Join(dir, "actions")
	require.NoError(t, os.MkdirAll(actions, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pack.yaml"), []byte(testPack), 0o644))
	for name, body := range testActions {
		require.NoError(t, os.WriteFile(filepath.Join(actions, name), []byte(body), 0o644))
	}
	self, err := os.Executable()
	require.NoError(t, err)
	linkOrCopy(t, self, filepath.Join(actions, "helper"))
	require.NoError(t, os.WriteFile(filepath.Join(actions, "noexec"), []byte("\x7fELF"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(actions, "arm-binary"), elfHeader(elf.EM_AARCH64, elf.ELFOSABI_NONE, elf.ET_EXEC), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(actions, "script.sh"), []byte("echo \"word=$ATTUNE_ACTION_WORD\"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(actions, "slowlines.sh"), []byte(
		"echo line 1; echo warn 1 >&2; sleep 2; echo line 2; sleep 2; echo line 3\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(actions, "hello.py"), []byte(
		"import json, os, sys\nsecrets = json.loads(sys.stdin.readline())\nprint(json.dumps({'hello': os.environ['ATTUNE_ACTION_WHO'], 'argv0': sys.argv[0], 'secrets': secrets}))\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(actions, "hello.js"), []byte(
		"console.log(JSON.stringify({hello: process.env.ATTUNE_ACTION_WHO, script: process.argv[1]}))\n"), 0o644))

	p, problems := packs.Load(dir)
	require.False(t, packs.HasErrors(problems), "%v", problems)
	err = packs.RegisterPool(ctx, pool, []*packs.Pack{p}, problems).Err()
	require.NoError(t, err)

	environ := append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=/home/attune-test",
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"ATTUNE_DATABASE_URL=" + url,
		"ATTUNE_PACKS_DIR=" + base,
		"ATTUNE_KILL_GRACE=500ms",
		"ATTUNE_WORKER_NAME=test-" + strings.ReplaceAll(t.Name(), "/", "_"),
		"CANARY_SECRET=do-not-leak",
	}, opts.env...)
	cfg, err := LoadConfig(environ)
	require.NoError(t, err)

	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(cfg, pool, log)
	require.NoError(t, err)
	require.NoError(t, srv.Start(ctx))
	t.Cleanup(func() { require.NoError(t, srv.Stop(context.Background())) })
	return &testBundle{pool: pool, cfg: cfg, srv: srv, logs: logs, packs: base, ctx: ctx, cancel: cancel}
}

// enqueue creates one execution and waits until it finishes.
func (b *testBundle) execute(t *testing.T, action string, params map[string]any, opts *jobs.Options) *jobs.Execution {
	t.Helper()
	id := b.enqueue(t, action, params, opts)
	return b.wait(t, id)
}

func (b *testBundle) enqueue(t *testing.T, action string, params map[string]any, opts *jobs.Options) int64 {
	t.Helper()
	var id int64
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		id, err = jobs.Enqueue(b.ctx, tx, action, params, opts)
		return err
	})
	require.NoError(t, err)
	return id
}

func (b *testBundle) wait(t *testing.T, id int64) *jobs.Execution {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		if jobs.Finished(e.Status) {
			return e
		}
		require.True(t, time.Now().Before(deadline), "execution %d still %s", id, e.Status)
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *testBundle) waitStatus(t *testing.T, id int64, status string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		if e.Status == status {
			return
		}
		require.True(t, time.Now().Before(deadline), "execution %d still %s, want %s", id, e.Status, status)
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecuteCompletedWithJSONResult(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "json"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status)
	require.Equal(t, 0, *e.ExitCode)
	require.JSONEq(t, `{"ok": true, "n": 3}`, string(e.Result))
	require.Nil(t, e.Error)
	require.Equal(t, 1, e.Attempt)
	require.Equal(t, b.cfg.WorkerName, *e.Worker)
	require.NotNil(t, e.StartedAt)
	require.NotNil(t, e.FinishedAt)
}

func TestExecuteNonZeroExit(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "exit3"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 3, *e.ExitCode)
	require.Equal(t, "exited with code 3: boom: last line", *e.Error)
	require.Contains(t, *e.Stderr, "boom: last line")
	require.Nil(t, e.Result)
}

func TestExecuteKilledBySignal(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "selfkill"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 128+int(syscall.SIGSEGV), *e.ExitCode)
	require.Contains(t, *e.Error, "SIGSEGV")
}

func TestExecuteTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	pidfile := filepath.Join(t.TempDir(), "pids")
	start := time.Now()
	e := b.execute(t, "t.run", map[string]any{"helper": "ignore-term", "grandchild": "hang", "pidfile": pidfile},
		&jobs.Options{TimeoutSeconds: 1})
	require.Equal(t, jobs.StatusTimeout, e.Status)
	require.Equal(t, "Execution timed out after 1 seconds", *e.Error)
	require.Less(t, time.Since(start), 20*time.Second)
	pids := readPidfile(t, pidfile)
	require.Len(t, pids, 2, "helper and grandchild")
	waitGone(t, 10*time.Second, pids...)
}

func TestExecuteEnvironmentBuiltFromNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_PASSTHROUGH_ENV=PASSME", "PASSME=yes"}})
	e := b.execute(t, "t.run", map[string]any{"helper": "env", "bytes": 5, "signal": "x y"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	var env map[string]string
	require.NoError(t, json.Unmarshal(e.Result, &env))

	require.Equal(t, "yes", env["PASSME"])
	require.Equal(t, "/home/attune-test", env["HOME"])
	require.Equal(t, "C.UTF-8", env["LC_ALL"])
	require.Equal(t, fmt.Sprint(e.ID), env["ATTUNE_EXEC_ID"])
	require.Equal(t, "t.run", env["ATTUNE_ACTION"])
	require.Equal(t, "t", env["ATTUNE_PACK_REF"])
	require.Equal(t, "5", env["ATTUNE_ACTION_BYTES"])
	require.Equal(t, "x y", env["ATTUNE_ACTION_SIGNAL"])
	require.NotEmpty(t, env["TMPDIR"])
	for k := range env {
		require.NotContains(t, []string{"ATTUNE_DATABASE_URL", "CANARY_SECRET", "ATTUNE_PACKS_DIR", "ATTUNE_PASSTHROUGH_ENV"}, k,
			"worker variable %s leaked into the child", k)
	}
	allowed := map[string]bool{"PATH": true, "HOME": true, "LANG": true, "TZ": true, "TMPDIR": true, "PASSME": true,
		"ATTUNE_EXEC_ID": true, "ATTUNE_ACTION": true, "ATTUNE_PACK_REF": true}
	for k := range env {
		if !allowed[k] && !strings.HasPrefix(k, "LC_") && !strings.HasPrefix(k, "ATTUNE_ACTION_") {
			t.Errorf("unexpected variable %s in the child's environment", k)
		}
	}
}

func TestExecuteSecretsOnStdinOnly(t *testing.T) {
	t.Parallel()
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	b := setup(t, setupOpts{env: []string{"ATTUNE_SECRETS_KEY=" + key}})
	k, err := DecodeSecretsKey(key)
	require.NoError(t, err)
	for _, s := range []struct {
		ref   jobs.SecretRef
		value string
	}{
		{jobs.SecretRef{Name: "token", Scope: jobs.ScopeGlobal}, "global-token"},
		{jobs.SecretRef{Name: "token", Scope: jobs.ScopeAction, ScopeRef: "t.run"}, "action-token"},
		{jobs.SecretRef{Name: "region", Scope: jobs.ScopePack, ScopeRef: "t"}, "pack-region"},
		{jobs.SecretRef{Name: "other", Scope: jobs.ScopeAction, ScopeRef: "t.file"}, "not-for-run"},
	} {
		require.NoError(t, jobs.SetSecret(b.ctx, b.pool, k, s.ref, []byte(s.value)))
	}

	// What the child printed of its secrets is masked; ROT13 shows which
	// it got.
	e := b.execute(t, "t.run", map[string]any{"helper": "stdin", "password": "hunter2"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.JSONEq(t, `{"token": "********", "region": "********", "password": "********"}`, string(e.Result))
	r := b.execute(t, "t.run", map[string]any{"helper": "rot13", "password": "hunter2"}, nil)
	require.Equal(t, jobs.StatusCompleted, r.Status, deref(r.Error))
	require.JSONEq(t, `{"token": "action-token", "region": "pack-region", "password": "hunter2"}`, rot13(*r.Stdout))
	require.JSONEq(t, `{"helper": "stdin", "password": "********"}`, string(e.Parameters))

	var leftover int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution_secret").Scan(&leftover))
	require.Zero(t, leftover, "secret parameters are deleted once the execution finishes")
	var args string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT args::text FROM attune.river_job").Scan(&args))
	require.NotContains(t, args, "hunter2")

	env := b.execute(t, "t.run", map[string]any{"helper": "env", "password": "hunter2"}, nil)
	require.NotContains(t, string(env.Result), "hunter2", "secret parameters never reach the environment")
	require.NotContains(t, string(env.Result), "action-token")
	require.NotContains(t, b.logs.String(), "hunter2")
	require.NotContains(t, b.logs.String(), "action-token")
}

func TestExecuteSecretsWithoutKeyFail(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	k, err := DecodeSecretsKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	require.NoError(t, err)
	require.NoError(t, jobs.SetSecret(b.ctx, b.pool, k, jobs.SecretRef{Name: "token", Scope: jobs.ScopeGlobal}, []byte("x")))
	e := b.execute(t, "t.run", map[string]any{"helper": "json"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, *e.Error, "ATTUNE_SECRETS_KEY is not set")
	require.Nil(t, e.ExitCode, "nothing started")
}

// With stdin and file delivery no parameter reaches the environment, so the
// helper mode comes from the worker's environment through passthrough.
func helperMode(mode string) setupOpts {
	return setupOpts{env: []string{"ATTUNE_PASSTHROUGH_ENV=ATTUNE_ACTION_HELPER", "ATTUNE_ACTION_HELPER=" + mode}}
}

func TestExecuteParameterDeliveryStdin(t *testing.T) {
	t.Parallel()
	b := setup(t, helperMode("stdin"))

	e := b.execute(t, "t.stdin_json", map[string]any{"helper": "stdin", "bytes": 7}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.JSONEq(t, `{"helper": "stdin", "bytes": 7}`, string(e.Result))

	e = b.execute(t, "t.stdin_dotenv", map[string]any{"helper": "stdin", "nested": map[string]any{"a": "it's", "b": []any{1, true}}}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, "helper='stdin'\nnested.a='it'\\''s'\nnested.b.0='1'\nnested.b.1='true'\n", *e.Stdout)

	e = b.execute(t, "t.stdin_yaml", map[string]any{"helper": "stdin", "bytes": 7}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, "bytes: 7\nhelper: stdin\n", *e.Stdout)
}

func TestExecuteParameterDeliveryFile(t *testing.T) {
	t.Parallel()
	b := setup(t, helperMode("paramfile"))
	e := b.execute(t, "t.file", map[string]any{"helper": "paramfile", "password": "s3cret"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	var pf struct {
		Path, Content, Mode string
	}
	require.NoError(t, json.Unmarshal(e.Result, &pf))
	require.Contains(t, pf.Mode, "400")
	// The secret is masked in the result; only its exact value would be.
	require.JSONEq(t, `{"helper": "paramfile", "password": "********"}`, pf.Content)
	_, err := os.Stat(pf.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "parameter file and work dir removed afterwards")
}

func TestExecuteEnvValueTooLong(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "json", "big": strings.Repeat("x", 200_000)}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, *e.Error, "parameter_delivery: stdin")
}

func TestExecutePreChecks(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	dir := filepath.Join(b.packs, "t", "actions")
	for action, want := range map[string]string{
		"t.missing": "Binary not found: " + filepath.Join(dir, "not-deployed-yet"),
		"t.noexec":  "Binary is not executable: " + filepath.Join(dir, "noexec"),
		"t.arm":     "arm64",
	} {
		e := b.execute(t, action, map[string]any{"helper": "json"}, nil)
		require.Equal(t, jobs.StatusFailed, e.Status, action)
		require.Contains(t, *e.Error, want, action)
		require.NotContains(t, *e.Error, "exec format error", action)
		require.Nil(t, e.ExitCode, "%s: nothing started", action)
	}
}

func TestExecuteResultSchemaMismatchFails(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.schema", map[string]any{"helper": "json"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, *e.Error, "result does not match result_schema")
	require.Contains(t, *e.Error, "ok")
}

func TestExecuteRetriesCountAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	start := time.Now()
	e := b.execute(t, "t.retry", map[string]any{"helper": "exit3"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 3, e.Attempt, "max_retries 2 means three attempts")
	require.Equal(t, 3, e.MaxAttempts)
	require.Equal(t, "exited with code 3: boom: last line", *e.Error)
	require.Less(t, time.Since(start), 30*time.Second)

	ok := b.execute(t, "t.retry", map[string]any{"helper": "json"}, nil)
	require.Equal(t, 1, ok.Attempt, "a success is not retried")
}

func TestExecuteOutputCappedAndSanitized(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_MAX_STDOUT_BYTES=4096"}})
	e := b.execute(t, "t.run", map[string]any{"helper": "flood", "bytes": 10 << 20}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.True(t, e.StdoutTruncated)
	require.LessOrEqual(t, len(*e.Stdout), 4096)
	require.True(t, strings.HasSuffix(*e.Stdout, "\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n"))

	e = b.execute(t, "t.run", map[string]any{"helper": "badbytes"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Contains(t, *e.Stdout, "\uFFFD")
	require.NotContains(t, *e.Stdout, "\x00")
}

func TestExecuteShellScriptWithoutShebang(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.script", nil, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, "word=hi\n", *e.Stdout, "defaults applied, script run by /bin/sh")
}

// Runtimes are chosen by extension when runner_type is absent; this machine
// kind has python3 and node, so the worker must advertise and run both.
func TestExecutePythonAndNodeByExtension(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	names := b.srv.Runtimes().Names()
	require.Contains(t, names, "python", "python3 is on PATH here; the worker must advertise it")
	require.Contains(t, names, "node", "node is on PATH here; the worker must advertise it")

	py := b.execute(t, "t.py", nil, nil)
	require.Equal(t, jobs.StatusCompleted, py.Status, deref(py.Error), deref(py.Stderr))
	require.JSONEq(t, fmt.Sprintf(`{"hello": "python", "argv0": %q, "secrets": {}}`, filepath.Join(b.packs, "t", "actions", "hello.py")), string(py.Result))

	js := b.execute(t, "t.js", map[string]any{"who": "attune"}, nil)
	require.Equal(t, jobs.StatusCompleted, js.Status, deref(js.Error), deref(js.Stderr))
	require.JSONEq(t, fmt.Sprintf(`{"hello": "attune", "script": %q}`, filepath.Join(b.packs, "t", "actions", "hello.js")), string(js.Result))
}

func TestRolledBackEnqueueRunsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	pidfile := filepath.Join(t.TempDir(), "pids")
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(b.ctx, "SELECT attune.enqueue('t.run', $1)", map[string]any{"helper": "json", "pidfile": pidfile})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(b.ctx))

	// A committed execution after it proves the worker was listening.
	e := b.execute(t, "t.run", map[string]any{"helper": "json"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status)
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution").Scan(&n))
	require.Equal(t, 1, n)
	_, err = os.Stat(pidfile)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestCancelRunningExecution(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	pidfile := filepath.Join(t.TempDir(), "pids")
	id := b.enqueue(t, "t.run", map[string]any{"helper": "ignore-term", "grandchild": "hang", "pidfile": pidfile}, nil)
	b.waitStatus(t, id, jobs.StatusRunning)
	pids := waitPidfile(t, pidfile)
	require.Len(t, pids, 2, "helper and grandchild")

	status, err := jobs.Cancel(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCanceling, status)
	e := b.wait(t, id)
	require.Equal(t, jobs.StatusCancelled, e.Status)
	waitGone(t, 10*time.Second, pids...)
}

func TestCancelQueuedExecution(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	pidfile := filepath.Join(t.TempDir(), "pids")
	id := b.enqueue(t, "t.run", map[string]any{"helper": "json", "pidfile": pidfile},
		&jobs.Options{ScheduledAt: time.Now().Add(time.Hour)})
	status, err := jobs.Cancel(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCancelled, status)
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCancelled, e.Status)
	require.Nil(t, e.StartedAt)
	var state string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT state::text FROM attune.river_job WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)", id).Scan(&state))
	require.Equal(t, "cancelled", state)
}

// --- helpers

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func linkOrCopy(t *testing.T, from, to string) {
	t.Helper()
	if os.Link(from, to) == nil {
		return
	}
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// A last stderr line cut at 500 bytes in the middle of a rune, or a #! line
// naming an interpreter in invalid UTF-8, must not make the error text one
// PostgreSQL refuses: the result would never be written and the execution
// would stay running.
func TestExecuteErrorTextIsValidUTF8(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "fail", "big": strings.Repeat("x", 499) + "é and more"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 3, *e.ExitCode)
	require.True(t, strings.HasPrefix(*e.Error, "exited with code 3: xxx"), *e.Error)
	require.True(t, utf8.ValidString(*e.Error))

	script := filepath.Join(b.packs, "t", "actions", "badinterp.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/nonexistent/\xff\xfesh\x00\necho hi\n"), 0o755))
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.action (ref, pack_ref, name, runner_type, entry_point, path)
		VALUES ('t.badinterp', 't', 'badinterp', 'shell', 'badinterp.sh', $1)`, script)
	require.NoError(t, err)
	e = b.execute(t, "t.badinterp", nil, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, *e.Error, "Interpreter not found: /nonexistent/")
	require.True(t, utf8.ValidString(*e.Error))
}

// JSON may spell a NUL (\u0000), which jsonb refuses: storing the result
// must not fail the write, so the NUL is stored as U+FFFD like in stdout.
func TestExecuteResultWithNUL(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "echo", "big": `{"a\u0000": "x\u0000y"}`}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.JSONEq(t, `{"a\ufffd": "x\ufffdy"}`, string(e.Result))
}

// Integers beyond float64's 53 bits keep their digits in the result.
func TestExecuteResultKeepsLargeIntegers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "echo", "big": `{"id": 12345678901234567891, "f": 0.1}`}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Contains(t, string(e.Result), "12345678901234567891")
	require.JSONEq(t, `{"id": 12345678901234567891, "f": 0.1}`, string(e.Result))
}

// A secret parameter that no longer matches its declaration (the action
// was registered again after the enqueue) fails the execution without its
// value appearing in the error.
func TestExecuteSecretNotInValidationError(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var id int64
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		if id, err = jobs.Enqueue(b.ctx, tx, "t.run", map[string]any{"helper": "json", "password": "hunter2"}, nil); err != nil {
			return err
		}
		_, err = tx.Exec(b.ctx, `UPDATE attune.action SET parameters = jsonb_set(parameters, '{password,enum}', '["other"]'),
			updated = now() WHERE ref = 't.run'`)
		return err
	})
	require.NoError(t, err)
	e := b.wait(t, id)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, *e.Error, "password")
	require.NotContains(t, *e.Error, "hunter2")
	require.NotContains(t, b.logs.String(), "hunter2")
}

// The secret parameters of an execution a dead worker left are deleted once
// it is settled, as they are when it finishes normally.
func TestReapDeletesSecretParameters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, "t.run", map[string]any{"helper": "json", "password": "hunter2"},
		&jobs.Options{ScheduledAt: time.Now().Add(time.Hour)})
	// What a worker on another host that died mid-run leaves behind.
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid) VALUES ('ghost', 'elsewhere', 1)`)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.execution SET status = 'running', worker = 'ghost', attempt = 1, started_at = now() WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.river_job SET state = 'running', attempt = 1, attempted_at = now(), attempted_by = '{ghost}'
		WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)`, id)
	require.NoError(t, err)

	require.NoError(t, b.srv.reap(b.ctx, "ghost", 0))
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusAbandoned, e.Status)
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution_secret").Scan(&n))
	require.Zero(t, n, "secret parameters of a settled execution are deleted")
}

// A cancel that arrives while an attempt fails (before River's remote cancel
// reaches the worker) ends the execution cancelled: River cancels the job
// instead of retrying it, so a row sent back to requested would stay there.
func TestCancelWhileAttemptFails(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	pidfile := filepath.Join(t.TempDir(), "pids")
	id := b.enqueue(t, "t.retry", map[string]any{"helper": "hang", "pidfile": pidfile}, nil)
	b.waitStatus(t, id, jobs.StatusRunning)
	pids := waitPidfile(t, pidfile)

	// jobs.Cancel's writes, without the notification that would reach the
	// worker first: the cancel is committed, the worker does not know yet.
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(b.ctx, "UPDATE attune.execution SET status = 'canceling' WHERE id = $1", id); err != nil {
			return err
		}
		_, err := tx.Exec(b.ctx, `UPDATE attune.river_job SET metadata = jsonb_set(metadata, '{cancel_attempted_at}', to_jsonb(now()))
			WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)`, id)
		return err
	})
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL)) // the attempt fails on its own

	e := b.wait(t, id)
	require.Equal(t, jobs.StatusCancelled, e.Status, deref(e.Error))
	require.NotNil(t, e.FinishedAt)
	var state string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT state::text FROM attune.river_job WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)", id).Scan(&state))
	require.Contains(t, []string{"cancelled", "completed"}, state)
}

// Integer parameters past 2^53 reach the child with all their digits, in
// the environment and in each parameter_format.
func TestExecuteLargeIntegerParameters(t *testing.T) {
	t.Parallel()
	const n = int64(9007199254740993) // 2^53 + 1: no float64 holds it
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "env", "bytes": n}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	var env map[string]string
	require.NoError(t, json.Unmarshal(e.Result, &env))
	require.Equal(t, "9007199254740993", env["ATTUNE_ACTION_BYTES"])

	b = setup(t, helperMode("stdin"))
	e = b.execute(t, "t.stdin_json", map[string]any{"helper": "stdin", "bytes": n}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Contains(t, *e.Stdout, `"bytes":9007199254740993`)
	e = b.execute(t, "t.stdin_yaml", map[string]any{"helper": "stdin", "bytes": n}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, "bytes: 9007199254740993\nhelper: stdin\n", *e.Stdout)
	e = b.execute(t, "t.stdin_dotenv", map[string]any{"helper": "stdin", "bytes": n, "nested": map[string]any{"x": 1.5}}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, "bytes='9007199254740993'\nhelper='stdin'\nnested.x='1.5'\n", *e.Stdout)
}

// A result write that PostgreSQL refuses for a reason other than the
// connection must still settle the execution: the status stands, and the
// error says the output could not be stored.
func TestExecuteUnstorableOutputStillSettles(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	_, err := b.pool.Exec(b.ctx, `ALTER TABLE attune.execution
		ADD CONSTRAINT refuse_magic CHECK (stdout IS NULL OR stdout NOT LIKE '%MAGIC%')`)
	require.NoError(t, err)

	e := b.execute(t, "t.run", map[string]any{"helper": "echo", "big": "MAGIC"}, nil)
	require.Equal(t, jobs.StatusCompleted, e.Status)
	require.Equal(t, 0, *e.ExitCode)
	require.Nil(t, e.Stdout)
	require.Contains(t, *e.Error, "the output and result could not be stored")
	require.Contains(t, *e.Error, "refuse_magic")
	require.NotNil(t, e.FinishedAt)

	var state string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT state::text FROM attune.river_job WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)", e.ID).Scan(&state))
	require.Equal(t, "completed", state, "the River job completes with the row")
}

// A job River's fetch marked as running on this replica but that never
// reached a worker (the fetch's reply lost to a dropped connection) goes
// back to the queue instead of waiting days for River's rescuer.
func TestLostFetchedJobIsRecovered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_HEARTBEAT_INTERVAL=200ms"}})
	id := b.enqueue(t, "t.run", map[string]any{"helper": "json"}, &jobs.Options{ScheduledAt: time.Now().Add(time.Hour)})
	_, err := b.pool.Exec(b.ctx, `UPDATE attune.river_job SET state = 'running', attempt = 1,
			attempted_by = ARRAY[$2::text], attempted_at = now() - interval '2 minutes', scheduled_at = now()
		WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)`, id, riverID(b.cfg.WorkerName))
	require.NoError(t, err)

	e := b.wait(t, id)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, 1, e.Attempt, "the lost fetch does not count as an attempt")
	require.JSONEq(t, `{"ok": true, "n": 3}`, string(e.Result))
}

// An attempt that ran and was settled to run again, whose retry River's
// completer gave up writing (the database away for longer than its
// retries), leaves the job running with the row back in requested at the
// job's attempt. It goes back to the queue as the next attempt.
func TestLostRetryIsRecovered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_HEARTBEAT_INTERVAL=200ms"}})
	id := b.enqueue(t, "t.run", map[string]any{"helper": "json"},
		&jobs.Options{ScheduledAt: time.Now().Add(time.Hour), MaxAttempts: 3})
	_, err := b.pool.Exec(b.ctx, `UPDATE attune.execution SET status = 'requested', attempt = 1, worker = $2,
			started_at = now() - interval '2 minutes', error = 'exited with code 1'
		WHERE id = $1`, id, b.cfg.WorkerName)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.river_job SET state = 'running', attempt = 1,
			attempted_by = ARRAY[$2::text], attempted_at = now() - interval '2 minutes', scheduled_at = now()
		WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)`, id, riverID(b.cfg.WorkerName))
	require.NoError(t, err)

	e := b.wait(t, id)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, 2, e.Attempt, "the attempt that ran counts")
}

// A job this replica's worker returned moments ago is not lost, however old
// its fetch: River's completer may still be writing what Work returned.
func TestReturnedJobIsHeldForLostJobAge(t *testing.T) {
	t.Parallel()
	w := &executor{}
	w.inflight.Store(int64(1), time.Time{})                             // running
	w.inflight.Store(int64(2), time.Now())                              // just returned
	w.inflight.Store(int64(3), time.Now().Add(-lostJobAge-time.Second)) // returned long ago
	require.True(t, w.holds(1))
	require.True(t, w.holds(2))
	require.False(t, w.holds(3))
	require.False(t, w.holds(4), "never seen")
	w.forgetReturned()
	_, kept := w.inflight.Load(int64(3))
	require.False(t, kept, "forgotten")
	require.True(t, w.holds(1) && w.holds(2))
}

// A running execution's row shows its output so far, for execution logs
// --follow and show; the final write replaces it.
func TestExecuteLiveOutput(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, "t.slowlines", nil, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.False(t, jobs.Finished(e.Status), "finished before its first line showed while running")
		if e.Status == jobs.StatusRunning && e.Stdout != nil && *e.Stdout == "line 1\n" {
			require.Equal(t, "warn 1\n", deref(e.Stderr))
			break
		}
		require.True(t, time.Now().Before(deadline), "no live output")
		time.Sleep(50 * time.Millisecond)
	}
	e := b.wait(t, id)
	require.Equal(t, jobs.StatusCompleted, e.Status)
	require.Equal(t, "line 1\nline 2\nline 3\n", *e.Stdout)
}

// A replica whose slots are all busy does not keep the jobs it fetched
// beyond them: they go back to the queue and an idle replica runs them.
func TestBusyReplicaDoesNotHoardJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_MAX_CONCURRENT_EXECUTIONS=1"}})
	pidfile := filepath.Join(t.TempDir(), "pids")
	long := b.enqueue(t, "t.run", map[string]any{"helper": "hang", "pidfile": pidfile}, &jobs.Options{TimeoutSeconds: 60})
	b.waitStatus(t, long, jobs.StatusRunning)
	waiting := b.enqueue(t, "t.run", map[string]any{"helper": "json"}, nil)
	time.Sleep(500 * time.Millisecond) // the busy replica fetches it and waits for its only slot

	cfg := b.cfg
	cfg.WorkerName += "-idle"
	idle, err := NewServer(cfg, b.pool, slog.New(slog.NewJSONHandler(b.logs, nil)))
	require.NoError(t, err)
	require.NoError(t, idle.Start(b.ctx))
	t.Cleanup(func() { require.NoError(t, idle.Stop(context.Background())) })

	e := b.wait(t, waiting)
	require.Equal(t, jobs.StatusCompleted, e.Status)
	require.Equal(t, cfg.WorkerName, *e.Worker, "the idle replica ran it")
	require.Equal(t, 1, e.Attempt, "giving a job back costs no attempt")

	_, err = jobs.Cancel(b.ctx, b.pool, long)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCancelled, b.wait(t, long).Status)
}
