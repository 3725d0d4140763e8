//go:build linux

package worker

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// killOrphans kills what a dead worker's executions left on this host. The
// parent-death signal reaches only each execution's direct child; its
// grandchildren live on in the process group with no one left to kill it.
// A process belongs to one of execs (execution id → action ref) when its
// environment names both, and it is an orphan when the leader of its process
// group, the execution's direct child, is gone. It returns how many process
// groups it killed.
func killOrphans(execs map[string]string) int {
	if len(execs) == 0 {
		return 0
	}
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
		id, action := envLookup(env, "ATTUNE_EXEC_ID"), envLookup(env, "ATTUNE_ACTION")
		if id == "" || execs[id] != action {
			continue
		}
		// A live leader means a live execution (a retry, or another
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
