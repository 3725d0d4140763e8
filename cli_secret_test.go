package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"
)

func TestCLISecret(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	// secrets: set from stdin, list without values, delete.
	key := "ATTUNE_SECRETS_KEY=" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	r := b.attuneWith(t, b.env(key), "s3cr3t-value\n", "secret", "set", "api_token", "--pack", "c")
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

// TestCLISecretScopeMustExist: a secret for a pack or action nobody
// registered would never reach an execution, so it is refused unless forced.
func TestCLISecretScopeMustExist(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	key := "ATTUNE_SECRETS_KEY=" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

	r := b.attuneWith(t, b.env(key), "v\n", "secret", "set", "tok", "--pack", "nosuchpack")
	require.Equal(t, 1, exitCode(r.err))
	require.Equal(t, `attune: no pack "nosuchpack" is registered (attune pack list shows them); register it first, or pass --force to store the secret anyway`, r.line())
	r = b.attuneWith(t, b.env(key), "v\n", "secret", "set", "tok", "--action", "c.nosuch")
	require.Equal(t, `attune: no action "c.nosuch" is registered (attune action list shows them); register it first, or pass --force to store the secret anyway`, r.line())
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.secret").Scan(&n))
	require.Zero(t, n, "a refused secret was stored")

	r = b.attuneWith(t, b.env(key), "v\n", "secret", "set", "tok", "--action", "c.nosuch", "--force")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "secret tok stored (action scope c.nosuch)\n", r.stdout)
	r = b.attuneWith(t, b.env(key), "v\n", "secret", "set", "tok", "--action", "c.echo")
	require.NoError(t, r.err, r.stderr)
}

// TestCLISecretFromTerminal: typed at a terminal, the value is prompted for
// and never echoed.
func TestCLISecretFromTerminal(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	self, err := os.Executable()
	require.NoError(t, err)
	ptmx, tty, err := pty.Open()
	require.NoError(t, err)
	defer ptmx.Close()

	cmd := exec.Command(self, "secret", "set", "typed_token")
	cmd.Env = append(b.env("ATTUNE_SECRETS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="), asMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	require.NoError(t, cmd.Start())
	tty.Close()

	var screen syncLog
	done := make(chan error, 1)
	go func() { _, err := io.Copy(&screen, ptmx); done <- err }()
	// Type only once the prompt is up: typed earlier, the terminal would
	// still be in echo mode.
	require.Eventually(t, func() bool { return strings.Contains(screen.String(), "(not echoed): ") }, 30*time.Second, 10*time.Millisecond)
	_, err = ptmx.Write([]byte("hunter2-typed\n"))
	require.NoError(t, err)
	require.NoError(t, cmd.Wait())
	<-done // EIO once the child closed the terminal

	out := screen.String()
	require.Contains(t, out, "value of secret typed_token (not echoed): ")
	require.Contains(t, out, "secret typed_token stored (global scope)")
	require.NotContains(t, out, "hunter2")
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.secret WHERE name = 'typed_token'").Scan(&n))
	require.Equal(t, 1, n)
}
