//go:build unix

package process

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// signalGroup sends sig to the process group led by pid. A group already
// gone is not an error.
func signalGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
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
