package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/worker/process/processtest"
)

// executionFields are the stable field names of an execution in -j output.
var executionFields = []string{
	"action_ref", "attempt", "created_at", "error", "event_id", "exit_code", "finished_at", "id",
	"max_attempts", "next_attempt_at", "parameters", "priority", "result", "rule_ref", "scheduled_at", "started_at", "status", "stderr",
	"stderr_truncated", "stdout", "stdout_truncated", "timeout_seconds", "waiting_reason", "worker",
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
	processtest.WaitGone(t, 3*time.Second, processtest.WaitPidfile(t, pidfile)...)

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
	// --follow of a finished, failed execution: its output, how it ended,
	// and exit 1 (issue: it used to exit 0 without a closing line).
	r = b.attune(t, "execution", "logs", "--follow", strconv.FormatInt(failedID, 10))
	require.Equal(t, 1, exitCode(r.err))
	require.Regexp(t, `^it went wrong\n--- execution \d+ failed, exit code 3, `, r.stderr)

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
	pids := processtest.WaitPidfile(t, pidfile)
	idArg = strconv.FormatInt(running, 10)
	start := time.Now()
	require.Equal(t, fmt.Sprintf("execution %d canceling: its process gets SIGTERM, then SIGKILL after the kill grace\n", running),
		b.ok(t, "execution", "cancel", idArg))
	e := b.waitStatus(t, running, 10*time.Second, jobs.StatusCancelled, jobs.StatusFailed, jobs.StatusCompleted, jobs.StatusAbandoned)
	took := time.Since(start)
	require.Equal(t, jobs.StatusCancelled, e.Status)
	require.Less(t, took, 4*time.Second, "kill grace is 1s")
	processtest.WaitGone(t, 2*time.Second, pids...)
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
	require.Regexp(t, `^oops\n--- execution `+strconv.FormatInt(id, 10)+` completed, exit code 0, took \d\.\d+s\n$`, r.stderr, "the output, then how it ended")
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, e.Status)
}

// TestCLIFollowFailed: following an execution that fails ends with its
// status and error, and a non-zero exit, so a script notices.
func TestCLIFollowFailed(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	id := b.execute(t, "c.fail")
	b.startWorker(t)
	r := b.attune(t, "execution", "logs", strconv.FormatInt(id, 10), "--follow")
	require.Equal(t, 1, exitCode(r.err))
	require.Equal(t, fmt.Sprintf("attune: execution %d failed", id), r.line())
	require.Regexp(t, `--- execution `+strconv.FormatInt(id, 10)+` failed, exit code 3, took \S+: exited with code 3: it went wrong\n$`, r.stderr)
}

// TestCLIReRun: re-run enqueues the same action and parameters again, a
// --param replaces one, and secret parameters, which attune does not keep,
// must be given again.
func TestCLIReRun(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	first := b.execute(t, "c.echo", "--param", "n=3", "--param", "s=hi", "--priority", "2")

	out := b.ok(t, "execution", "re-run", strconv.FormatInt(first, 10))
	m := regexp.MustCompile(`^execution (\d+) of c\.echo requested, re-running \d+ \(attune execution show \d+\)\n$`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	again, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	e, err := jobs.Get(b.ctx, b.pool, again)
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 3, "s": "hi"}`, string(e.Parameters))
	require.Equal(t, 2, e.Priority)
	require.Nil(t, e.RuleRef)

	var res map[string]any
	b.okJSON(t, &res, "execution", "re-run", strconv.FormatInt(first, 10), "--param", "s=bye")
	e, err = jobs.Get(b.ctx, b.pool, mustID(t, res["id"]))
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 3, "s": "bye"}`, string(e.Parameters))

	b.writeFile(t, "sec/pack.yaml", "ref: sec\n")
	b.writeFile(t, "sec/actions/login.yaml", "name: login\nrunner_type: shell\nentry_point: login.sh\nparameters:\n  user: {type: string}\n  password: {type: string, secret: true}\n")
	b.writeFile(t, "sec/actions/login.sh", "#!/bin/sh\necho ok\n")
	b.ok(t, "pack", "register", filepath.Join(b.packs, "sec"))
	key := "ATTUNE_SECRETS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	require.NoError(t, b.attuneWith(t, b.env(key), "v\n", "secret", "set", "x").err) // records the installation's key
	r := b.attuneWith(t, b.env(key), "", "action", "execute", "sec.login", "--param", "user=ann", "--param", "password=hunter22")
	require.NoError(t, r.err, r.stderr)
	secret := mustID(t, requestedRE.FindStringSubmatch(r.stdout)[1])
	r = b.attuneWith(t, b.env(key), "", "execution", "re-run", strconv.FormatInt(secret, 10))
	require.Equal(t, 1, exitCode(r.err))
	require.Regexp(t, `^attune: execution \d+ had secret parameters, whose values attune does not keep: give them again with --param password=VALUE$`, r.line())
	r = b.attuneWith(t, b.env(key), "", "execution", "re-run", strconv.FormatInt(secret, 10), "--param", "password=other22")
	require.NoError(t, r.err, r.stderr)

	r = b.attune(t, "execution", "re-run", "999999")
	require.Equal(t, "attune: execution not found: 999999 (attune execution list shows recent ones)", r.line())
}

func mustID(t *testing.T, v any) int64 {
	t.Helper()
	id, err := strconv.ParseInt(fmt.Sprint(v), 10, 64)
	require.NoError(t, err)
	return id
}

// TestCLIReRunSealsSecrets: a secret parameter given again to re-run is
// sealed like one given to action execute.
func TestCLIReRunSealsSecrets(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	b.writeFile(t, "sec/pack.yaml", "ref: sec\n")
	b.writeFile(t, "sec/actions/login.yaml", "name: login\nrunner_type: shell\nentry_point: login.sh\nparameters:\n  password: {type: string, secret: true}\n")
	b.writeFile(t, "sec/actions/login.sh", "#!/bin/sh\necho ok\n")
	b.ok(t, "pack", "register", filepath.Join(b.packs, "sec"))
	env := b.env("ATTUNE_SECRETS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	require.NoError(t, b.attuneWith(t, env, "v\n", "secret", "set", "x").err) // records the installation's key
	r := b.attuneWith(t, env, "", "action", "execute", "sec.login", "--param", "password=first-pass")
	require.NoError(t, r.err, r.stderr)
	id := mustID(t, requestedRE.FindStringSubmatch(r.stdout)[1])
	r = b.attuneWith(t, env, "", "-j", "execution", "re-run", strconv.FormatInt(id, 10), "--param", "password=second-pass")
	require.NoError(t, r.err, r.stderr)
	var raw string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT string_agg(parameters::text, ' ') FROM attune.execution_secret").Scan(&raw))
	require.NotContains(t, raw, "first-pass")
	require.NotContains(t, raw, "second-pass")
}
