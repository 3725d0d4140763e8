package schematest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/attune-system/attune/worker/process"
)

var errNoInitdb = errors.New("no initdb found in PATH or /usr/lib/postgresql/*/bin")

// cluster is a private PostgreSQL cluster started for the tests of one
// process.
type cluster struct {
	dir, bin string
	url      string
	opts     string   // the server's options, for a start after a stop
	asUser   []string // a runuser prefix when running as root
}

// startCluster runs initdb and pg_ctl from the newest installed PostgreSQL
// into a temporary directory, listening on a free loopback port.
func startCluster(ctx context.Context) (*cluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if p, err := exec.LookPath("initdb"); err == nil {
		bins = append(bins, p)
	}
	if len(bins) == 0 {
		return nil, errNoInitdb
	}
	sort.Strings(bins)
	c := &cluster{bin: filepath.Dir(bins[len(bins)-1])}

	dir, err := os.MkdirTemp("", "attune-pg-")
	if err != nil {
		return nil, err
	}
	c.dir = dir
	dbUser := "postgres"
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user to own the cluster: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			return nil, fmt.Errorf("running as root needs runuser to drop to the postgres user: %w", err)
		}
		c.asUser = []string{runuser, "-u", "postgres", "--"}
	} else if u, err := user.Current(); err == nil {
		dbUser = u.Username
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	data := filepath.Join(dir, "data")
	if out, err := c.run(ctx, "initdb", "-D", data, "-U", dbUser, "--auth=trust", "-E", "UTF8"); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", port, dir)
	c.opts = opts
	if out, err := c.run(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		return nil, fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	c.url = fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", dbUser, port)
	return c, nil
}

// run runs a PostgreSQL tool with our environment and returns what it
// wrote. pg_ctl start leaves the postmaster running: it calls setsid, so
// the group kill after pg_ctl exits does not reach it.
func (c *cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	argv := append(append(append([]string{}, c.asUser...), filepath.Join(c.bin, name)), args...)
	// Detached: pg_ctl start leaves the postmaster running, by design.
	return process.Output(ctx, process.Spec{Path: argv[0], Args: argv[1:], Env: os.Environ(), Detached: true})
}

func (c *cluster) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = c.run(ctx, "pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "stop")
	_ = os.RemoveAll(c.dir)
}

// Cluster is a private PostgreSQL server owned by one test, for tests that
// must restart or stop the server under a running attune.
type Cluster struct {
	c *cluster
}

// StartCluster starts a private PostgreSQL cluster for tb, stopped and
// removed when tb ends. It needs the PostgreSQL server binaries (initdb,
// pg_ctl); tb is skipped when they are not installed.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := startCluster(ctx)
	if errors.Is(err, errNoInitdb) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatalf("schematest: starting a private cluster: %v", err)
	}
	tb.Cleanup(c.stop)
	return &Cluster{c: c}
}

// URL returns the URL of database db on the cluster; attune creates it on
// first use.
func (c *Cluster) URL(db string) string { return withDatabase(c.c.url, db) }

// Restart restarts the server as an operator would (pg_ctl restart -m fast):
// sessions are terminated, in-flight transactions rolled back, and the server
// is accepting connections again when Restart returns.
func (c *Cluster) Restart(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.c.run(ctx, "pg_ctl", "-D", filepath.Join(c.c.dir, "data"), "-l", filepath.Join(c.c.dir, "log"),
		"-m", "fast", "-w", "-t", "60", "restart"); err != nil {
		tb.Fatalf("schematest: pg_ctl restart: %v: %s", err, out)
	}
}

// RestartImmediate restarts the server as a crash would (pg_ctl restart -m
// immediate): no checkpoint, and what was not yet in the WAL on disk is
// lost, such as commits made with synchronous_commit = off.
func (c *Cluster) RestartImmediate(tb testing.TB) {
	tb.Helper()
	c.Stop(tb)
	c.Start(tb)
}

// Stop stops the server at once (pg_ctl stop -m immediate): clients see
// their connections drop and new ones refused until Start.
func (c *Cluster) Stop(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.c.run(ctx, "pg_ctl", "-D", filepath.Join(c.c.dir, "data"), "-m", "immediate", "-w", "-t", "60", "stop"); err != nil {
		tb.Fatalf("schematest: pg_ctl stop: %v: %s", err, out)
	}
}

// Start starts the server Stop stopped, with its settings, and returns
// once it accepts connections.
func (c *Cluster) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.c.run(ctx, "pg_ctl", "-D", filepath.Join(c.c.dir, "data"), "-l", filepath.Join(c.c.dir, "log"),
		"-o", c.c.opts, "-w", "-t", "60", "start"); err != nil {
		tb.Fatalf("schematest: pg_ctl start: %v: %s", err, out)
	}
}
