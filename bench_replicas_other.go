//go:build !linux

package main

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// replicaResult is one `attune serve` process of a --replicas run.
type replicaResult struct {
	Name       string `json:"name"`
	PeakRSSKiB int64  `json:"peak_rss_kib"`
}

// benchReplicas reads peak RSS from /proc, which only Linux has.
func (a *app) benchReplicas(context.Context, *pgxpool.Pool, int, int, *benchResult, func(string, time.Time) func(int)) error {
	return errors.New("--replicas runs on Linux only")
}
