package main

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// credentialsFDEnv names the descriptor through which a re-exec'd attune
// receives the credentials taken out of its environment.
const credentialsFDEnv = "ATTUNE_CREDENTIALS_FD"

// isCredential reports whether an environment variable holds what no child
// may read: the database URL (with its password), the secrets key, and
// libpq's variables, PGPASSWORD among them, which pgx reads too.
func isCredential(name string) bool {
	return name == "ATTUNE_DATABASE_URL" || name == "ATTUNE_SECRETS_KEY" || strings.HasPrefix(name, "PG")
}

// protectCredentials keeps the worker's credentials from its children,
// who may run as the same user. Two holes, two plugs:
//
//   - /proc/PID/environ shows the environment the kernel gave the process
//     at execve, whatever the process did to its copy since. So when it
//     holds credentials, attune re-execs itself (same pid, same argv)
//     with them taken out and handed over in a memfd instead; the new
//     image reads them back into its own (Go's) environment, which
//     /proc/PID/environ does not show, and closes the memfd.
//   - /proc/PID/environ and /proc/PID/mem of a process are open to any
//     process of the same uid; PR_SET_DUMPABLE 0 restricts them to
//     processes with CAP_SYS_PTRACE, root's. A child running as root can
//     still read the worker's memory: run children as another user
//     (ATTUNE_RUN_AS).
//
// A failure leaves attune running as it was: the re-exec is a protection,
// not a condition to start.
func protectCredentials() {
	if fdText, ok := os.LookupEnv(credentialsFDEnv); ok {
		_ = os.Unsetenv(credentialsFDEnv)
		// Only the memfd our previous image made: a stray variable must not
		// have us read stdin, say.
		fd, err := strconv.Atoi(fdText)
		if link, _ := os.Readlink("/proc/self/fd/" + fdText); err == nil && strings.HasPrefix(link, "/memfd:attune-credentials") {
			f := os.NewFile(uintptr(fd), "credentials")
			b, _ := io.ReadAll(f)
			_ = f.Close()
			for _, kv := range bytes.Split(b, []byte{0}) {
				if k, v, ok := strings.Cut(string(kv), "="); ok {
					_ = os.Setenv(k, v)
				}
			}
		}
	} else {
		reexecWithoutCredentials()
	}
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

// reexecWithoutCredentials replaces the process with itself, the
// credentials moved from the environment into a memfd. It returns only
// when there is nothing to move or it could not.
func reexecWithoutCredentials() {
	var secret bytes.Buffer
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); isCredential(k) {
			secret.WriteString(kv)
			secret.WriteByte(0)
			continue
		}
		env = append(env, kv)
	}
	if secret.Len() == 0 {
		return
	}
	fd, err := unix.MemfdCreate("attune-credentials", 0) // no CLOEXEC: the new image inherits it
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "credentials")
	defer f.Close()
	if _, err := f.Write(secret.Bytes()); err != nil {
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return
	}
	env = append(env, credentialsFDEnv+"="+strconv.Itoa(fd))
	_ = syscall.Exec("/proc/self/exe", os.Args, env) // returns only on failure
}
