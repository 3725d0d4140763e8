package processtest

import (
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// selfKill dies by a signal. Go turns a SIGSEGV, even one sent with kill(2),
// into a crash with exit status 2, so the handler is first reset to the
// default with a raw rt_sigaction (an all-zero struct is SIG_DFL, no flags,
// no mask on every Linux ABI).
func selfKill() int {
	sig, ok := selfKillSignal()
	if !ok {
		return 2
	}
	// No core file: the dump would only slow the test down.
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	var act [64]byte
	_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(10 * time.Second)
	return 1
}
