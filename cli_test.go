package main

// The command line (SPEC §8) through run, with an environment each test
// controls, against a database of its own and an in-process worker; and
// bad input through the real main, in a child process, to see exactly what
// a user sees.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
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

	"github.com/jackc/pgx/v5"
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

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
		{name: "ParamWrongType", args: []string{"action", "execute", "c.echo", "--param", "n=three", "--param", "s=x"}, code: 2, msg: `^attune: --param n=three: n is an integer parameter; give a whole number such as 3$`},
		{name: "ParamsJSONWrongType", args: []string{"action", "execute", "c.echo", "--params-json", `{"n": "three", "s": "x"}`}, code: 1, msg: `parameter "n" of action c\.echo must be integer, got string`},
		{name: "MissingParam", args: []string{"action", "execute", "c.echo", "--param", "n=1"}, code: 1, msg: `missing required parameter "s" for action c\.echo`},
		{name: "UnknownParam", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--param", "zz=1"}, code: 1, msg: `unknown parameter "zz" for action c\.echo\. The action declares: n, s\.$`},
		{name: "ParamsJSONNotObject", args: []string{"action", "execute", "c.echo", "--params-json", "[1]"}, code: 2, msg: `--params-json must be a JSON object`},
		{name: "ParamsJSONInvalid", args: []string{"action", "execute", "c.echo", "--params-json", "{n: 1}"}, code: 2, msg: `--params-json is not valid JSON`},
		{name: "NegativeTimeout", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--timeout", "-5s"}, code: 2, msg: `--timeout -5s is invalid: use whole seconds of at least 1s`},
		{name: "FractionalTimeout", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--timeout", "1500ms"}, code: 2, msg: `--timeout 1.5s is invalid`},
		{name: "AbsurdTimeout", args: []string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--timeout", "10000h"}, code: 1, msg: `option timeout_seconds must be an integer from 1 to 604800, got 36000000`},
		// The hint names the command as typed, not its last word alone.
		{name: "TimeoutNotDuration", args: []string{"action", "execute", "c.echo", "--timeout", "soon"}, code: 2, msg: `^attune: --timeout must be a duration such as 30s, 5m or 2h, got "soon" \(see attune action execute --help\)$`},
		{name: "TimeoutNoUnit", args: []string{"action", "execute", "c.echo", "--timeout", "5"}, code: 2, msg: `^attune: --timeout must be a duration such as 30s, 5m or 2h, got "5" \(see attune action execute --help\)$`},
		{name: "LimitNotNumber", args: []string{"execution", "list", "--limit", "abc"}, code: 2, msg: `^attune: --limit must be a whole number, got "abc" \(see attune execution list --help\)$`},
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
		{name: "GetIsShow", args: []string{"execution", "get", "999999"}, code: 1, msg: `^attune: execution not found: 999999 \(attune execution list shows recent ones\)$`},
		{name: "ZeroID", args: []string{"execution", "cancel", "0"}, code: 2, msg: `"0" is not an execution id`},
		{name: "NegativeLimit", args: []string{"execution", "list", "--limit", "-1"}, code: 2, msg: `--limit -1 is invalid: use 1 to 10000`},
		{name: "UnknownStatus", args: []string{"execution", "list", "--status", "done"}, code: 2, msg: `--status "done" is invalid: use requested, scheduled, running, completed`},
		{name: "HugeLimit", args: []string{"execution", "list", "--limit", "100000"}, code: 2, msg: `--limit 100000 is invalid`},
		{name: "EventListLimit", args: []string{"event", "list", "--limit", "-1"}, code: 2, msg: `--limit -1 is invalid`},
		{name: "PruneLimit", args: []string{"prune", "--dry-run", "--limit", "-1"}, code: 2, msg: `^attune: --limit -1 is invalid: use 1 to 10000$`},
		{name: "UnknownCommand", args: []string{"frobnicate"}, code: 2, msg: `unknown command "frobnicate"`},
		{name: "GroupTypo", args: []string{"execution", "cancle", "5"}, code: 2, msg: `^attune: unknown command "cancle" for "attune execution" \(did you mean "cancel"\?\)$`},
		{name: "RuleTypo", args: []string{"rule", "disabel", "X"}, code: 2, msg: `^attune: unknown command "disabel" for "attune rule" \(did you mean "disable"\?\)$`},
		{name: "RootTypo", args: []string{"exection", "list"}, code: 2, msg: `^attune: unknown command "exection" for "attune" \(did you mean "execution"\?\)$`},
		{name: "GroupUnknownNoSuggestion", args: []string{"worker", "zzzzzz"}, code: 2, msg: `^attune: unknown command "zzzzzz" for "attune worker" \(see attune worker --help\)$`},
		{name: "UnknownFlag", args: []string{"execution", "list", "--colour"}, code: 2, msg: `unknown flag: --colour`},
		{name: "KillGraceNotDuration", args: []string{"serve"}, env: []string{"ATTUNE_KILL_GRACE=soon"}, code: 1,
			msg: `^attune: ATTUNE_KILL_GRACE="soon" is invalid: must be a duration such as 90s or 5m$`},
		{name: "NegativeKillGrace", args: []string{"serve"}, env: []string{"ATTUNE_KILL_GRACE=-1s"}, code: 1, msg: `ATTUNE_KILL_GRACE=-1s is invalid`},
		{name: "BadSecretsKey", args: []string{"secret", "list"}, env: []string{"ATTUNE_SECRETS_KEY=short"}, code: 1, msg: `ATTUNE_SECRETS_KEY=\(hidden\) is invalid`},
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

// TestCLIGroupWithoutCommand: a group alone still prints its help and
// succeeds; only an unknown word after it is an error.
func TestCLIGroupWithoutCommand(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := runWithEnv(context.Background(), []string{"execution"}, nil, strings.NewReader(""), &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	require.Contains(t, stdout.String(), "Available Commands:")
	require.Contains(t, stdout.String(), "cancel")
}

// TestCLIReadCommandsNeverInstall: only migrate, serve and demo create or
// migrate; every other command says what is missing and changes nothing.
func TestCLIReadCommandsNeverInstall(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	admin := b.pool

	// A typo'd database name is reported, not created.
	typo := "attune_typo_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	r := b.attuneWith(t, b.env("ATTUNE_DATABASE_URL="+withDatabaseName(t, b.url, typo)), "", "execution", "list")
	require.Equal(t, 1, exitCode(r.err))
	require.Regexp(t, `^attune: database does not exist: "`+typo+`" at \S+:\d+; check ATTUNE_DATABASE_URL, or create it with attune migrate$`, r.line())
	var exists bool
	require.NoError(t, admin.QueryRow(b.ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", typo).Scan(&exists))
	require.False(t, exists, "execution list created the database")

	// A schema one migration behind is reported, not upgraded.
	var latest, previous int // versions may leave gaps
	require.NoError(t, admin.QueryRow(b.ctx, "SELECT max(version), (SELECT max(version) FROM attune.schema_migration WHERE version < (SELECT max(version) FROM attune.schema_migration)) FROM attune.schema_migration").Scan(&latest, &previous))
	_, err := admin.Exec(b.ctx, "DELETE FROM attune.schema_migration WHERE version = $1", latest)
	require.NoError(t, err)
	r = b.attune(t, "execution", "list")
	require.Equal(t, fmt.Sprintf("attune: schema is not at this attune's version: schema is at version %d, this attune needs %d: run attune migrate", previous, latest), r.line())
	r = b.attune(t, "pack", "register")
	require.Contains(t, r.line(), "run attune migrate")
	var n int
	require.NoError(t, admin.QueryRow(b.ctx, "SELECT count(*) FROM attune.schema_migration WHERE version = $1", latest).Scan(&n))
	require.Zero(t, n, "a read command migrated")

	// No schema at all.
	_, err = admin.Exec(b.ctx, "DROP SCHEMA attune CASCADE")
	require.NoError(t, err)
	r = b.attune(t, "worker", "list")
	require.Regexp(t, `^attune: schema is not at this attune's version: no attune schema in database "\w+": run attune migrate$`, r.line())
	require.NoError(t, admin.QueryRow(b.ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'attune')").Scan(&exists))
	require.False(t, exists, "worker list created the schema")

	// migrate installs; then reads work.
	b.ok(t, "migrate")
	b.ok(t, "execution", "list")
}

// TestCLIReadOnlyRole: a role granted only SELECT on the schema (README,
// "Database roles") can list and show.
func TestCLIReadOnlyRole(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	b.startWorker(t)
	id := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x")
	b.waitStatus(t, id, 30*time.Second, "completed")

	role := "attune_ro_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, sql := range []string{
		"CREATE ROLE " + role + " LOGIN PASSWORD 'ro-pass'",
		// The README's read-only grants.
		"GRANT USAGE ON SCHEMA attune TO " + role,
		"GRANT SELECT ON ALL TABLES IN SCHEMA attune TO " + role,
		"REVOKE SELECT ON attune.execution_secret FROM " + role,
	} {
		_, err := b.pool.Exec(b.ctx, sql)
		require.NoError(t, err, sql)
	}
	t.Cleanup(func() {
		_, _ = b.pool.Exec(b.ctx, "DROP OWNED BY "+role)
		_, _ = b.pool.Exec(b.ctx, "DROP ROLE "+role)
	})
	u, err := url.Parse(b.url)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "ro-pass")
	env := b.env("ATTUNE_DATABASE_URL=" + u.String())

	for _, args := range [][]string{
		{"execution", "list"}, {"execution", "show", strconv.FormatInt(id, 10)}, {"action", "list"},
		{"worker", "list"}, {"rule", "list"}, {"pack", "list"},
	} {
		r := b.attuneWith(t, env, "", args...)
		require.NoError(t, r.err, "attune %v as a read-only role: %s", args, r.line())
	}
	r := b.attuneWith(t, env, "", "execution", "list")
	require.Contains(t, r.stdout, "c.echo")
	// Secret parameters, which SQL enqueues store in clear, stay unreadable.
	conn, err := pgx.Connect(b.ctx, u.String())
	require.NoError(t, err)
	defer conn.Close(b.ctx)
	_, err = conn.Exec(b.ctx, "SELECT parameters FROM attune.execution_secret")
	require.ErrorContains(t, err, "permission denied")
	// Writing is refused by PostgreSQL, with its own words.
	r = b.attuneWith(t, env, "", "action", "execute", "c.echo", "--param", "n=1", "--param", "s=x")
	require.ErrorContains(t, r.err, "permission denied")
}

func withDatabaseName(t *testing.T, u, db string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	require.NoError(t, err)
	parsed.Path = "/" + db
	return parsed.String()
}

// TestCLIValidatesOnlyWhatItUses: a bad value of a setting a command does
// not read does not stop it; one it reads does.
func TestCLIValidatesOnlyWhatItUses(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	bad := []string{"ATTUNE_MAX_CONCURRENT_EXECUTIONS=abc", "ATTUNE_KILL_GRACE=soon", "ATTUNE_SECRETS_KEY=short"}
	for _, args := range [][]string{{"version"}, {"execution", "list"}, {"worker", "list"}, {"pack", "list"}} {
		r := b.attuneWith(t, b.env(bad...), "", args...)
		require.NoError(t, r.err, "attune %v: %s", args, r.line())
	}
	r := b.attuneWith(t, b.env(bad...), "", "secret", "list")
	require.Equal(t, "attune: ATTUNE_SECRETS_KEY=(hidden) is invalid: must be base64 of 32 random bytes (head -c32 /dev/urandom | base64)", r.line())
	r = b.attuneWith(t, b.env("ATTUNE_MAX_CONCURRENT_EXECUTIONS=abc"), "", "serve")
	require.Equal(t, `attune: ATTUNE_MAX_CONCURRENT_EXECUTIONS="abc" is invalid: must be a whole number`, r.line())
	r = b.attuneWith(t, b.env("ATTUNE_LOG_LEVEL=loud"), "", "execution", "list")
	require.Equal(t, "attune: ATTUNE_LOG_LEVEL=loud is invalid: must be debug, info, warn or error", r.line())
}
