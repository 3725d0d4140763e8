package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCPUSplitPer(t *testing.T) {
	t.Parallel()
	a := cpuSample{self: time.Second, children: 2 * time.Second, machine: 10 * time.Second}
	b := cpuSample{self: 3 * time.Second, children: 3 * time.Second, machine: 20 * time.Second}
	got := a.per(b, 1000)
	require.Equal(t, cpuSplit{Self: 2, Children: 1, Other: 7}, got)
	require.InDelta(t, 10, got.total(), 1e-9)
	// Other machines' noise never goes negative.
	require.Zero(t, a.per(cpuSample{self: 2 * time.Second, children: 2 * time.Second, machine: 10 * time.Second}, 1).Other)
	require.Positive(t, machineBusy())
}
