//go:build unix

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
// while locked to one, which Run never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup sends sig to the process group led by pid. A group already
// gone is not an error.
func signalGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
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

// exitStatus returns the exit code, 128+signal for a signalled child as
// shells and Nomad report it, and the signal's name.
func exitStatus(state *os.ProcessState) (code int, signal string) {
	ws, ok := state.Sys().(syscall.WaitStatus)
	if !ok {
		return state.ExitCode(), ""
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), unix.SignalName(ws.Signal())
	}
	return ws.ExitStatus(), ""
}

// MaxArgLen is the longest single argument or environment string, NUL
// included, that execve takes: a variable longer than this fails to start
// however small the rest.
func MaxArgLen() int { return maxArgStrlen }

// maxArgStrlen is Linux's MAX_ARG_STRLEN (32 pages): execve refuses any
// single argument or environment string longer than this, NUL included.
var maxArgStrlen = 32 * os.Getpagesize()
