package worker

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

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
	code := schematest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Short names for what the tests use of processtest.
var (
	waitPidfile = processtest.WaitPidfile
	readPidfile = processtest.ReadPidfile
	waitGone    = processtest.WaitGone
	alive       = processtest.Alive
	elfHeader   = processtest.ELFHeader
)
