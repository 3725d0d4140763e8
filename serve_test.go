//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// TestServeLogs: serve says what it runs against when it starts (never the
// password) and that it stopped, and logs durations as text.
func TestServeLogs(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	r := b.start(t, "logs-a")
	r.signal(syscall.SIGTERM)
	require.Zero(t, r.exited(t, 30*time.Second))

	lines := map[string]map[string]any{}
	sc := bufio.NewScanner(strings.NewReader(r.logs.String()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines[m["msg"].(string)] = m
		}
	}
	start := lines["attune serve starting"]
	require.NotNil(t, start, r.logs.String())
	require.Regexp(t, `^127\.0\.0\.1:\d+/attune_test_\w+$|^[^@]+:\d+/attune_test_\w+$`, start["database"])
	require.Equal(t, false, start["secrets_key"])
	require.Contains(t, start, "version")
	require.Contains(t, start, "packs_dir")
	stopping := lines["stopping: running executions may finish"]
	require.NotNil(t, stopping)
	require.Equal(t, "30s", stopping["timeout"], "durations are text, not nanoseconds")
	require.NotNil(t, lines["stopped"])
	require.Equal(t, float64(0), lines["stopped"]["handed_back"], "an idle replica gives nothing back")
}

func TestDatabaseForLog(t *testing.T) {
	t.Parallel()
	require.Equal(t, "db.example:6543/prod", databaseForLog("postgres://app:s3cret@db.example:6543/prod?sslmode=require"))
	require.Equal(t, "(unparsable ATTUNE_DATABASE_URL)", databaseForLog("postgres://%zz"))
}
