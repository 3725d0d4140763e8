package worker

import (
	"os"
	"testing"

	"github.com/attune-system/attune/schema/schematest"
	"github.com/attune-system/attune/worker/process/processtest"
)

// The test binary poses as a pack binary (see processtest): the test pack's
// native actions are this binary, and the helper mode arrives as the
// parameter "helper".
func TestMain(m *testing.M) {
	processtest.ServeHelper(secretHelpers)
	// Database tests need schematest.Main, which stops a private cluster
	// it may have started; goleak checks what the tests left behind after.
	os.Exit(schematest.MainNoLeaks(m))
}

// Short names for what the tests use of processtest.
var (
	waitPidfile = processtest.WaitPidfile
	readPidfile = processtest.ReadPidfile
	waitGone    = processtest.WaitGone
	alive       = processtest.Alive
	elfHeader   = processtest.ELFHeader
)
