//go:build linux

package main

// One key per installation and sealed secret parameters, through the real
// binary: replicas and CLI commands with another key, or none, refuse with
// one line; `action execute` with the key seals; `secret rotate-key` moves
// everything to a new key.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema/schematest"
)

// runAttune runs one command with extra environment and stdin, returning
// its streams and exit code.
func (b *replicaBundle) runAttune(t *testing.T, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Env = b.env("cli-"+args[0], env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return out.String(), errOut.String(), exitErr.ExitCode()
	}
	require.NoError(t, err)
	return out.String(), errOut.String(), 0
}

func newKeyBase64(t *testing.T) (string, []byte) {
	t.Helper()
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(k), k
}

// requireOneErrorLine checks that a command failed with one line, want,
// after nothing but its JSON log lines.
func requireOneErrorLine(t *testing.T, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	require.Equal(t, "attune: "+want, lines[len(lines)-1], "stderr:\n%s", stderr)
	for _, l := range lines[:len(lines)-1] {
		require.True(t, strings.HasPrefix(l, "{"), "only log lines before the error: %q", l)
		require.NotContains(t, l, "worker started")
	}
}

func TestSecretsOneKeyPerInstallation(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	login := filepath.Join(b.packs, "r", "actions")
	require.NoError(t, os.WriteFile(filepath.Join(login, "login.yaml"), []byte(`name: login
entry_point: login.sh
output_format: text
parameters:
  password: {type: string, secret: true, required: true}
`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(login, "login.sh"), []byte("read -r line\necho \"got $line\"\necho \"no: $line\" >&2\n"), 0o755))
	b.attune(t, "pack", "register")

	keyA, rawA := newKeyBase64(t)
	keyB, rawB := newKeyBase64(t)
	_, stderr, code := b.runAttune(t, "tok-abcdef123\n", []string{"ATTUNE_SECRETS_KEY=" + keyA}, "secret", "set", "token")
	require.Zero(t, code, stderr)
	b.start(t, "ra", "ATTUNE_SECRETS_KEY="+keyA)

	// A second replica with another key, or none, refuses to start.
	mismatch := (&jobs.KeyMismatchError{Have: jobs.KeyID(rawB), Want: jobs.KeyID(rawA)}).Error()
	_, stderr, code = b.runAttune(t, "", []string{"ATTUNE_WORKER_NAME=rb", "ATTUNE_SECRETS_KEY=" + keyB}, "serve")
	require.Equal(t, 1, code)
	requireOneErrorLine(t, stderr, mismatch)
	_, stderr, code = b.runAttune(t, "", []string{"ATTUNE_WORKER_NAME=rc"}, "serve")
	require.Equal(t, 1, code)
	requireOneErrorLine(t, stderr, "ATTUNE_SECRETS_KEY is not set, but this installation stores 1 secret under key "+jobs.KeyID(rawA)+": set that key on this replica")
	var workers int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.worker WHERE name IN ('rb', 'rc')").Scan(&workers))
	require.Zero(t, workers, "a refused replica does not register")

	// secret set with another key refuses too.
	_, stderr, code = b.runAttune(t, "other\n", []string{"ATTUNE_SECRETS_KEY=" + keyB}, "secret", "set", "token2")
	require.Equal(t, 1, code)
	requireOneErrorLine(t, stderr, mismatch)

	// action execute with the key seals the secret parameter; cancelled
	// while queued, it is gone.
	stdout, stderr, code := b.runAttune(t, "", []string{"ATTUNE_SECRETS_KEY=" + keyA}, "-j", "action", "execute", "r.login", "--param", "password=cli-hunter22", "--delay", "1h")
	require.Zero(t, code, stderr)
	var id int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT max(id) FROM attune.execution").Scan(&id))
	require.Contains(t, stdout, `"id":`)
	var stored string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT parameters::text FROM attune.execution_secret WHERE execution_id = $1", id).Scan(&stored))
	require.True(t, strings.HasPrefix(stored, `["aes-256-gcm", "`+jobs.KeyID(rawA)+`"`), stored)
	require.NotContains(t, stored, "hunter22")
	_, stderr, code = b.runAttune(t, "", nil, "execution", "cancel", strconv.FormatInt(id, 10))
	require.Zero(t, code, stderr)
	var left int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution_secret").Scan(&left))
	require.Zero(t, left)

	// Run: what the child prints of its secrets is stored masked.
	stdout, stderr, code = b.runAttune(t, "", []string{"ATTUNE_SECRETS_KEY=" + keyA}, "action", "execute", "r.login", "--param", "password=cli-hunter22", "--watch")
	require.Zero(t, code, "%s%s", stdout, stderr)
	var out, errText string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT stdout, stderr FROM attune.execution ORDER BY id DESC LIMIT 1").Scan(&out, &errText))
	require.Equal(t, `got {"password":"********","token":"********"}`+"\n", out)
	require.Equal(t, `no: {"password":"********","token":"********"}`+"\n", errText)

	// Rotation: everything moves to the new key; the old one is refused.
	keyC, rawC := newKeyBase64(t)
	stdout, stderr, code = b.runAttune(t, "", []string{"ATTUNE_SECRETS_KEY=" + keyA, "ATTUNE_NEW_SECRETS_KEY=" + keyC}, "secret", "rotate-key")
	require.Zero(t, code, stderr)
	require.Equal(t, "re-encrypted 1 secret and the sealed secret parameters of 0 executions from key "+jobs.KeyID(rawA)+" to key "+jobs.KeyID(rawC)+
		"; restart every replica with ATTUNE_SECRETS_KEY set to the new key\n", stdout)
	_, stderr, code = b.runAttune(t, "x\n", []string{"ATTUNE_SECRETS_KEY=" + keyA}, "secret", "set", "token")
	require.Equal(t, 1, code)
	requireOneErrorLine(t, stderr, (&jobs.KeyMismatchError{Have: jobs.KeyID(rawA), Want: jobs.KeyID(rawC)}).Error())
}
