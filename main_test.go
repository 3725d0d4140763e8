package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// asMainEnv, set to 1 in the test binary's environment, makes it run main()
// with its arguments instead of the tests: cli_test.go runs it so to see
// what a user sees, stderr and exit code included.
const asMainEnv = "ATTUNE_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	code := schematest.MainNoLeaks(m)
	removeBuiltBinary() // see attuneBinary
	os.Exit(code)
}

// The attune binary, built once per test run for tests that run it as a
// real process, and removed by TestMain.
var (
	buildOnce sync.Once
	builtDir  string
	builtBin  string
	buildErr  error
)

func attuneBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if builtDir, buildErr = os.MkdirTemp("", "attune-replica-test-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(builtDir, "attune")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return builtBin
}

func removeBuiltBinary() {
	if builtDir != "" {
		_ = os.RemoveAll(builtDir)
	}
}
