//go:build unix && !linux

package process

import (
	"math"
	"os/exec"
	"syscall"
)

// sysProcAttr puts the child in a process group of its own, so one signal
// reaches it and every descendant that stays in the group. There is no
// parent-death signal here: a child outlives a worker killed with SIGKILL
// (one that stops in order still stops its children).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitExited blocks until the child has exited. Without waitid(WNOWAIT) in
// golang.org/x/sys/unix here it has to reap the child to learn that, so it
// reports that it did. The group kill that follows is still safe while
// any member of the group lives, since a process group id is not reused
// while the group exists; only when the whole group is gone could its id
// have been recycled, by a new group leader, in the moment between.
func waitExited(cmd *exec.Cmd) (reaped bool) {
	_ = cmd.Wait() // the status is in cmd.ProcessState
	return true
}

// maxArgStrlen: execve here limits only the total of arguments and
// environment (ARG_MAX, reported as E2BIG), not each string.
const maxArgStrlen = math.MaxInt
