package jobs

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestListColumns: lists read every column Get reads, the output as NULL.
func TestListColumns(t *testing.T) {
	t.Parallel()
	require.NotEqual(t, executionColumns, listColumns)
	require.Equal(t, strings.Count(executionColumns, ","), strings.Count(listColumns, ","))
	require.Contains(t, listColumns, "NULL::text AS stdout")
}
