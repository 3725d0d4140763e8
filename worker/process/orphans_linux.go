//go:build linux

package process

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// KillOrphans kills the process groups on this host that outlived their
// leader and that owned claims. When a worker dies, the parent-death
// signal reaches only the children it started; their descendants live on
// in each child's process group with no one left to kill them. owned is
// asked about each such process with a lookup into its environment, which
// Start made from nothing, so it says what the child was started for. A
// group whose leader lives is left alone: a live worker still serves that
// child. It returns how many groups it killed.
func KillOrphans(owned func(getenv func(name string) string) bool) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	killed := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		pgid, ok := processGroup(pid)
		if !ok || killed[pgid] || pgid == pid {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if !owned(func(name string) string { return envLookup(env, name) }) {
			continue
		}
		// A live leader means a live child (a retry, or another
		// installation's): leave it alone.
		if err := syscall.Kill(pgid, 0); !errors.Is(err, syscall.ESRCH) {
			continue
		}
		if syscall.Kill(-pgid, syscall.SIGKILL) == nil {
			killed[pgid] = true
		}
	}
	return len(killed)
}

// processGroup reads a process's group id from /proc/PID/stat.
func processGroup(pid int) (int, bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' are state, ppid, pgrp.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 3 {
		return 0, false
	}
	pgid, err := strconv.Atoi(string(fields[2]))
	return pgid, err == nil
}

func envLookup(environ []byte, name string) string {
	prefix := []byte(name + "=")
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if bytes.HasPrefix(kv, prefix) {
			return string(kv[len(prefix):])
		}
	}
	return ""
}
