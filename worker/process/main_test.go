package process

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attune-system/attune/worker/process/processtest"
)

// The test binary poses as the programs these tests run (see processtest);
// the tests get such a child from helperSpec. Mode "worker" is this
// package's own: it acts as a worker, Running a "hang" child and passing
// ATTUNE_ACTION_PIDFILE on, and waits (the tests that children die with
// their worker kill it).
func TestMain(m *testing.M) {
	processtest.ServeHelper(map[string]func() int{"worker": actAsWorker, "escape-worker": actAsEscapeWorker})
	Containment() // a subreaper before the first child starts, as attune serve is
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func actAsWorker() int {
	self, _ := os.Executable()
	res := Run(context.Background(), Spec{
		Path: self,
		Env:  []string{helperEnv + "=hang", pidfileEnv + "=" + os.Getenv(pidfileEnv)},
	})
	fmt.Println(res.Outcome) // never reached: the test kills us
	return 0
}

// Short names for what the tests use of processtest.
const (
	helperEnv      = processtest.HelperEnv
	pidfileEnv     = processtest.PidfileEnv
	grandchildEnv  = processtest.GrandchildEnv
	floodBytesEnv  = processtest.FloodBytesEnv
	floodStreamEnv = processtest.FloodStreamEnv
	signalEnv      = processtest.SignalEnv
)

var (
	waitPidfile = processtest.WaitPidfile
	readPidfile = processtest.ReadPidfile
	waitGone    = processtest.WaitGone
	alive       = processtest.Alive
	elfHeader   = processtest.ELFHeader
)

// helperSpec returns a Spec that runs the test binary in helper mode, with
// an environment of exactly ATTUNE_ACTION_HELPER and env.
func helperSpec(t testing.TB, mode string, env ...string) Spec {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	return Spec{
		Path:      self,
		Env:       append([]string{helperEnv + "=" + mode}, env...),
		MaxStdout: 1 << 20,
		MaxStderr: 1 << 20,
		Timeout:   20 * time.Second, // a backstop: no test should get near it
		KillGrace: time.Second,
	}
}

// actAsEscapeWorker runs the escapers and hangs, for TestSweepDeadWorker
// to kill.
func actAsEscapeWorker() int {
	pidfile := os.Getenv(pidfileEnv)
	_ = Run(context.Background(), Spec{Path: "/bin/sh", Args: []string{"-c", escapersScript + "sleep 600\n", "sh", pidfile},
		Env: []string{"PATH=/usr/bin:/bin"}, MaxStdout: 4096, MaxStderr: 4096})
	return 0
}

// escapersScript is a shell action whose descendants leave its process group in
// the ways an adversarial run found to survive: setsid in the background
// (holding stdout), and a double fork into a new session with an empty
// environment (not holding it). It writes their pids to $1 and exits 0.
const escapersScript = `
setsid sleep 612 &
echo $! >> "$1"
( setsid sh -c 'env -i /usr/bin/sleep 613 </dev/null >/dev/null 2>&1 & echo $! >> "$1"' sh "$1" & )
setsid sh -c 'sleep 614' </dev/null >/dev/null 2>&1 &
echo $! >> "$1"
while [ "$(wc -l < "$1")" -lt 3 ]; do sleep 0.01; done
echo bye
`
