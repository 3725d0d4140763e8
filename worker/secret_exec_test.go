package worker

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/worker/process/processtest"
)

// secretHelpers are the helper modes of these tests (see main_test.go).
var secretHelpers = map[string]func() int{
	// rot13 copies stdin to stdout in ROT13, which masking does not undo:
	// what tests read to see which secrets a child got.
	"rot13": func() int {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return 1
		}
		fmt.Print(rot13(string(b)))
		return 0
	},
	// leak prints every secret it got on stdin, to both streams, as is and
	// in base64; prints half of the password, signals through its pidfile
	// and waits past a live-output tick before the other half; then ends
	// with the password in its result, or, with big=fail, in its last
	// stderr line and exit code 3.
	"leak": func() int {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil {
			return 1
		}
		var secrets map[string]string
		if err := json.Unmarshal([]byte(line), &secrets); err != nil {
			return 1
		}
		fmt.Fprintf(os.Stderr, "stdin: %s", line)
		for k, v := range secrets {
			fmt.Printf("%s=%s base64=%s\n", k, v, base64.StdEncoding.EncodeToString([]byte(v)))
			fmt.Fprintf(os.Stderr, "%s=%s\n", k, v)
		}
		pw := secrets["password"]
		fmt.Fprint(os.Stderr, "split: "+pw[:len(pw)/2])
		pidfile := os.Getenv(processtest.PidfileEnv)
		if os.WriteFile(pidfile+".tmp", []byte(fmt.Sprintln(os.Getpid())), 0o644) != nil || os.Rename(pidfile+".tmp", pidfile) != nil {
			return 1
		}
		time.Sleep(2500 * time.Millisecond)
		fmt.Fprintln(os.Stderr, pw[len(pw)/2:])
		if os.Getenv("ATTUNE_ACTION_BIG") == "fail" {
			fmt.Fprintln(os.Stderr, "fatal: login refused for password "+pw)
			return 3
		}
		b, _ := json.Marshal(map[string]string{"echo": pw, "token": secrets["token"]})
		fmt.Println(string(b))
		return 0
	},
}

// TestExecuteSecretsMaskedInStoredOutput: a child that prints its secrets
// (store secrets and secret parameters) to stdout and stderr, as they are,
// JSON-escaped and in base64, leaves none of them in the execution row:
// not in stdout, stderr, result or error, nor in the live output written
// while it runs, even with a value printed in two halves a second apart.
func TestExecuteSecretsMaskedInStoredOutput(t *testing.T) {
	t.Parallel()
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	b := setup(t, setupOpts{env: []string{"ATTUNE_SECRETS_KEY=" + key}})
	k, err := DecodeSecretsKey(key)
	require.NoError(t, err)
	const token, password = "tok-1234567890", `pa"ss<w0rd>-long`
	require.NoError(t, jobs.SetSecret(b.ctx, b.pool, k, jobs.SecretRef{Name: "token", Scope: jobs.ScopeGlobal}, []byte(token)))
	forbidden := []string{token, password, password[:len(password)/2],
		base64.StdEncoding.EncodeToString([]byte(token)), base64.StdEncoding.EncodeToString([]byte(password))}
	html, _ := jsonEscapes(password)
	forbidden = append(forbidden, html, `pa\"ss<w0rd>-long`) // jsonb's escape, in result

	for _, mode := range []string{"ok", "fail"} {
		pidfile := filepath.Join(t.TempDir(), "pid")
		id := b.enqueue(t, "t.run", map[string]any{"helper": "leak", "password": password, "big": mode, "pidfile": pidfile}, &jobs.Options{SecretsKey: k})

		// Half the password is out; the next live write must hold it back.
		waitPidfile(t, pidfile)
		time.Sleep(1500 * time.Millisecond)
		var live string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT coalesce(stderr, '') FROM attune.execution WHERE id = $1", id).Scan(&live))
		require.Contains(t, live, "token=********\n", "live output is written while the child runs")
		require.Contains(t, live, "split: ")
		for _, f := range forbidden {
			require.NotContains(t, live, f, "live stderr")
		}

		e := b.wait(t, id)
		var row string
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT concat_ws(' | ', stdout, stderr, error, result::text, parameters::text)
			FROM attune.execution WHERE id = $1`, id).Scan(&row))
		for _, f := range forbidden {
			require.NotContains(t, row, f, "%s: execution row", mode)
		}
		require.Contains(t, *e.Stderr, "split: ********\n")
		require.Contains(t, *e.Stderr, `stdin: {"password":"********","token":"********"}`)
		require.Contains(t, *e.Stdout, "token=******** base64=********\n")
		if mode == "ok" {
			require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
			require.JSONEq(t, `{"echo": "********", "token": "********"}`, string(e.Result))
		} else {
			require.Equal(t, jobs.StatusFailed, e.Status)
			require.Equal(t, "exited with code 3: fatal: login refused for password ********", *e.Error)
		}
	}
	require.NotContains(t, b.logs.String(), token)
	require.NotContains(t, b.logs.String(), password)
}

// TestExecuteSealedSecretParameter: enqueued with the key, a secret
// parameter's row holds no trace of its value; the worker opens it, and the
// row is gone once the execution ends.
func TestExecuteSealedSecretParameter(t *testing.T) {
	t.Parallel()
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	b := setup(t, setupOpts{env: []string{"ATTUNE_SECRETS_KEY=" + key}})
	k, err := DecodeSecretsKey(key)
	require.NoError(t, err)
	const password = "sealed-hunter2"

	id := b.enqueue(t, "t.run", map[string]any{"helper": "stdin", "password": password},
		&jobs.Options{SecretsKey: k, ScheduledAt: time.Now().Add(time.Hour)})
	var stored []byte
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT parameters::text FROM attune.execution_secret WHERE execution_id = $1", id).Scan(&stored))
	require.NotContains(t, string(stored), password)
	require.NotContains(t, string(stored), base64.StdEncoding.EncodeToString([]byte(password)))
	require.True(t, jobs.Sealed(stored), "%s", stored)
	plain, err := jobs.OpenParameters(k, id, stored)
	require.NoError(t, err)
	require.JSONEq(t, `{"password": "`+password+`"}`, string(plain))
	_, err = jobs.OpenParameters(k, id+1, stored)
	require.Error(t, err, "the envelope is bound to its execution")

	// Now due: the worker opens it and hands it over; the child's echo of
	// it is masked, which only the exact value would be.
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.river_job SET scheduled_at = now() WHERE (args->>'execution_id')::bigint = $1", id)
	require.NoError(t, err)
	e := b.wait(t, id)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.JSONEq(t, `{"password": "********"}`, string(e.Result)) // the helper prints its stdin
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution_secret").Scan(&n))
	require.Zero(t, n)
}

func rot13(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return 'a' + (r-'a'+13)%26
		case r >= 'A' && r <= 'Z':
			return 'A' + (r-'A'+13)%26
		}
		return r
	}, s)
}
