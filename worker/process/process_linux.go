package process

import (
	"errors"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts the child in a process group of its own, so one signal
// reaches it and every descendant that stays in the group, and has the
// kernel SIGKILL it if the worker dies (SPEC §6, "worker death").
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process; the Go runtime does not retire threads unless a goroutine exits
// while locked to one, which Start never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExited blocks until the child has exited but leaves it a zombie
// (WNOWAIT): it reports that it did not reap it. While the zombie exists
// its pid, hence its process group id, cannot be reused, so the group kill
// that follows cannot hit a stranger.
func waitExited(cmd *exec.Cmd) (reaped bool) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return false // ECHILD cannot happen: only Handle.reap reaps
		}
	}
}

// maxArgStrlen is Linux's MAX_ARG_STRLEN (32 pages): execve refuses any
// single argument or environment string longer than this, NUL included.
var maxArgStrlen = 32 * os.Getpagesize()
