//go:build unix && !linux

package processtest

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// selfKill dies by a signal. Without Linux's raw rt_sigaction the Go
// runtime keeps its own handler for SIGSEGV and friends, so those may end
// as a Go crash (exit status 2) instead; the tests that check signal exits
// run on Linux.
func selfKill() int {
	sig, ok := selfKillSignal()
	if !ok {
		return 2
	}
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	signal.Reset(sig)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(10 * time.Second)
	return 1
}
