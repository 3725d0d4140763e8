package worker

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// TestExecutionLogLines: every finished execution is one info line an
// operator can read (id, action, status, exit code, duration, error), and
// the pickup one at debug.
func TestExecutionLogLines(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ok := b.execute(t, "t.run", map[string]any{"helper": "json"}, nil)
	require.Equal(t, jobs.StatusCompleted, ok.Status)
	bad := b.execute(t, "t.run", map[string]any{"helper": "fail"}, nil)
	require.Equal(t, jobs.StatusFailed, bad.Status)

	lines := map[float64]map[string]any{}
	picked := map[float64]bool{}
	sc := bufio.NewScanner(strings.NewReader(b.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		id, _ := m["id"].(float64)
		switch m["msg"] {
		case "execution finished":
			require.Equal(t, "INFO", m["level"])
			lines[id] = m
		case "execution picked up":
			require.Equal(t, "DEBUG", m["level"])
			picked[id] = true
		}
	}
	done := lines[float64(ok.ID)]
	require.NotNil(t, done, b.logs.String())
	require.Equal(t, "t.run", done["action"])
	require.Equal(t, "completed", done["status"])
	require.Equal(t, float64(0), done["exit_code"])
	require.Contains(t, done, "duration") // text under attune serve: TestServeLogs
	require.NotContains(t, done, "error")

	failed := lines[float64(bad.ID)]
	require.NotNil(t, failed)
	require.Equal(t, "failed", failed["status"])
	require.Equal(t, float64(3), failed["exit_code"])
	require.Equal(t, *bad.Error, failed["error"])
	require.True(t, picked[float64(ok.ID)] && picked[float64(bad.ID)])
}
