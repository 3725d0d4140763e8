package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// peekScript is an action that tries to read its worker's credentials
// through /proc: the worker's environ, cmdline and memory (every readable
// mapping, searched for database URLs and for the secrets key, which it
// finds by its SHA-256 in ATTUNE_ACTION_KEY_SHA256).
const peekScript = `w=$PPID
echo "uid=$(id -u) worker=$w"
echo "--environ"; tr '\0' '\n' < /proc/$w/environ 2>&1
echo "--cmdline"; tr '\0' ' ' < /proc/$w/cmdline 2>&1; echo
echo "--mem"; python3 - "$w" "$ATTUNE_ACTION_KEY_SHA256" <<'PY' 2>&1
import hashlib, re, sys
pid, keyhash = sys.argv[1], sys.argv[2]
try:
    maps = open("/proc/%s/maps" % pid).read().splitlines()
    mem = open("/proc/%s/mem" % pid, "rb")
except Exception as e:
    print("mem: cannot open:", e)
    sys.exit(0)
n, hits = 0, set()
for line in maps:
    f = line.split()
    if "r" not in f[1]:
        continue
    a, b = (int(x, 16) for x in f[0].split("-"))
    if b - a > 1 << 30:
        continue
    try:
        mem.seek(a)
        data = mem.read(b - a)
    except Exception:
        continue
    n += len(data)
    for m in re.finditer(rb"postgres://[^\x00\s\"']{0,200}", data):
        hits.add(m.group(0).decode("latin1"))
    for m in re.finditer(rb"[A-Za-z0-9+/]{43}=", data):
        if hashlib.sha256(m.group(0)).hexdigest() == keyhash:
            hits.add("the secrets key")
print("mem: read %d bytes" % n)
for h in sorted(hits):
    print("mem hit:", h)
PY
`

// TestCredentialsOutOfReach runs `attune serve` with a database URL that
// holds a password and a secrets key in its environment, and an action
// that reads /proc/$PPID/environ, cmdline and mem. Neither reaches the
// action's output: the re-exec keeps them out of the kernel's copy of the
// environment, PR_SET_DUMPABLE 0 keeps a same-uid child from the memory,
// and ATTUNE_RUN_AS keeps a root worker's child from it.
func TestCredentialsOutOfReach(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs workers and children as nobody")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the memory reader needs python3")
	}
	b := setupReplicas(t, schematest.URL(t))

	// Trust authentication ignores the password, so it can be one to look for.
	u, err := url.Parse(b.url)
	require.NoError(t, err)
	const password = "Sekr1t-Passw0rd-4-proc"
	u.User = url.UserPassword(u.User.Username(), password)
	secretURL := u.String()
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	key := base64.StdEncoding.EncodeToString(raw)

	// Everything nobody must read: binary, packs, parent directories.
	shared, err := os.MkdirTemp("", "attune-cred-test-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(shared) })
	require.NoError(t, os.Chmod(shared, 0o755))
	bin := filepath.Join(shared, "attune")
	require.NoError(t, copyFile(b.bin, bin, 0o755))
	packs := filepath.Join(shared, "packs")
	for name, body := range map[string]string{
		"pack.yaml":         "ref: c\nlabel: C\n",
		"actions/peek.yaml": "name: peek\nentry_point: peek.sh\noutput_format: text\nparameters:\n  key_sha256: {type: string}\n",
		"actions/peek.sh":   peekScript,
	} {
		path := filepath.Join(packs, "c", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	}
	cmd := exec.Command(b.bin, "pack", "register", filepath.Join(packs, "c"))
	cmd.Env = b.env("cli")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))

	for _, tc := range []struct {
		name   string
		asUser bool     // the worker itself runs as nobody
		extra  []string // more configuration
		memOK  bool     // the child may read the worker's memory (root child)
	}{
		{name: "RootChild", memOK: true},
		{name: "RunAs", extra: []string{"ATTUNE_RUN_AS=nobody"}},
		{name: "SameUid", asUser: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "cred-" + strings.ToLower(tc.name)
			env := append(b.env(name, tc.extra...), "ATTUNE_PACKS_DIR="+packs, "ATTUNE_SECRETS_KEY="+key, "TMPDIR=/tmp")
			for i, kv := range env {
				if strings.HasPrefix(kv, "ATTUNE_DATABASE_URL=") {
					env[i] = "ATTUNE_DATABASE_URL=" + secretURL
				}
			}
			cmd := exec.Command(bin, "serve")
			cmd.Env = env
			logs := &syncLog{}
			cmd.Stdout, cmd.Stderr = logs, logs
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if tc.asUser {
				cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
			}
			require.NoError(t, cmd.Start())
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
				if t.Failed() {
					t.Logf("logs:\n%s", logs.String())
				}
			})

			id := b.enqueue(t, "c.peek", map[string]any{"key_sha256": sha256Hex(key)})
			var e execRow
			b.eventually(t, time.Minute, "the peek finished", func() bool {
				e = b.execution(t, id)
				return e.Status == "completed" || e.Status == "failed"
			})
			require.Equal(t, "completed", e.Status, logs.String())
			stdout := *e.Stdout
			t.Logf("what the child read:\n%s", stdout)
			if tc.memOK {
				// A root child can read any memory (CAP_SYS_PTRACE), so only
				// the environment and command line are clean.
				stdout = stdout[:strings.Index(stdout, "--mem")]
			}
			require.NotContains(t, stdout, password)
			require.NotContains(t, stdout, key)
			require.NotContains(t, stdout, "the secrets key")
			require.NotContains(t, stdout, "ATTUNE_DATABASE_URL")
			require.Contains(t, stdout, "attune serve", "cmdline is readable, and harmless")
			if !tc.memOK {
				require.Contains(t, stdout, "mem: cannot open")
			}
		})
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
