//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// replicaResult is one `attune serve` process of a --replicas run.
type replicaResult struct {
	Name string `json:"name"`
	// PeakRSSKiB is the process's VmHWM when the run ended.
	PeakRSSKiB int64 `json:"peak_rss_kib"`
}

// serveReplica is a running `attune serve`.
type serveReplica struct {
	name string
	cmd  *exec.Cmd
	logs *tailBuffer
}

// replicaSet is the `attune serve` processes of a --replicas run.
type replicaSet []*serveReplica

// startReplicas starts count `attune serve` processes on the configured
// database and warms each up. stop the set even when it returns an error.
func (a *app) startReplicas(ctx context.Context, pool *pgxpool.Pool, count int) (replicaSet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var rs replicaSet
	for i := range count {
		r := &serveReplica{name: fmt.Sprintf("bench-%d-replica-%d", os.Getpid(), i+1), logs: &tailBuffer{max: 8 << 10}}
		r.cmd = exec.Command(exe, "serve")
		// Replicas never outlive bench.
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		// Replicas on one host would all claim ATTUNE_HTTP_ADDR's port.
		r.cmd.Env = append(slices.Clone(a.environ), "ATTUNE_WORKER_NAME="+r.name, "ATTUNE_LOG_FORMAT=text", "ATTUNE_HTTP_ADDR=off")
		r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
		if err := r.cmd.Start(); err != nil {
			return rs, fmt.Errorf("error starting attune serve: %w", err)
		}
		rs = append(rs, r)
	}
	if err := waitReplicas(ctx, pool, rs); err != nil {
		return rs, err
	}
	// Every replica's connections and caches.
	return rs, enqueueAndDrain(ctx, pool, 2*a.cfg.MaxConcurrentExecutions*count, nil)
}

// peakRSS reads each replica's VmHWM.
func (rs replicaSet) peakRSS() ([]replicaResult, error) {
	var out []replicaResult
	for _, r := range rs {
		kib, err := peakRSS(r.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		out = append(out, replicaResult{Name: r.name, PeakRSSKiB: kib})
	}
	return out, nil
}

// stop stops every replica, at once.
func (rs replicaSet) stop() {
	for _, r := range rs {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, r := range rs {
		r.stop()
	}
}

// waitReplicas waits until every replica has registered in attune.worker.
func waitReplicas(ctx context.Context, pool *pgxpool.Pool, rs []*serveReplica) error {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.name
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var up int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM attune.worker WHERE name = ANY($1) AND status = 'active'", names).Scan(&up); err != nil {
			return err
		}
		if up == len(rs) {
			return nil
		}
		for _, r := range rs {
			if r.cmd.ProcessState != nil || r.cmd.Process.Signal(syscall.Signal(0)) != nil {
				return fmt.Errorf("replica %s exited: %s", r.name, r.logs)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d replicas registered within 30s; the first one logged: %s", up, len(rs), rs[0].logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// peakRSS is a process's VmHWM in KiB.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("error reading the peak RSS of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// stop stops a replica as an operator would, and kills it if it lingers.
func (r *serveReplica) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = r.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if extra := b.buf.Len() - b.max; extra > 0 {
		b.buf.Next(extra)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
