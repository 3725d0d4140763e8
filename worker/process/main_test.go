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
	processtest.ServeHelper(map[string]func() int{"worker": actAsWorker})
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
