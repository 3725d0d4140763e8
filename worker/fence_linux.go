//go:build linux

package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killChildrenOf SIGKILLs the process groups that worker process ppid
// started for executions in execs (execution id → action ref) and that
// still run under it: a frozen worker (SIGSTOP, a stalled VM) cannot kill
// them itself, and its next attempts must not overlap them. A child is the
// leader of its own group (process.Start) and, being unreaped, keeps its
// pid: the kill cannot hit a stranger. It returns how many groups it killed.
func killChildrenOf(ppid int, execs map[string]string) int {
	if ppid <= 1 || len(execs) == 0 {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	killed := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')') // the command name may hold anything
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:])) // state ppid pgrp ...
		if len(f) < 3 || f[1] != strconv.Itoa(ppid) || f[2] != e.Name() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		id, action := environValue(env, "ATTUNE_EXEC_ID"), environValue(env, "ATTUNE_ACTION")
		if ref, ok := execs[id]; !ok || ref != action {
			continue
		}
		if syscall.Kill(-pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}

// environValue looks name up in a /proc/PID/environ.
func environValue(environ []byte, name string) string {
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte{'='}); ok && string(k) == name {
			return string(v)
		}
	}
	return ""
}
