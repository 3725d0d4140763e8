package processtest

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// selfKillSignal is the signal selfKill dies by: SIGSEGV, or the one named
// in SignalEnv; false for a name that is no signal.
func selfKillSignal() (syscall.Signal, bool) {
	name := os.Getenv(SignalEnv)
	if name == "" {
		return syscall.SIGSEGV, true
	}
	sig := unix.SignalNum(name)
	return sig, sig != 0
}
