//go:build !linux

package main

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"
)

// replicaResult is one `attune serve` process of a --replicas run.
type replicaResult struct {
	Name       string `json:"name"`
	PeakRSSKiB int64  `json:"peak_rss_kib"`
}

type replicaSet struct{}

func (replicaSet) stop() {}

func (replicaSet) peakRSS() ([]replicaResult, error) { return nil, nil }

// startReplicas reads peak RSS from /proc, which only Linux has.
func (a *app) startReplicas(context.Context, *pgxpool.Pool, int) (replicaSet, error) {
	return replicaSet{}, errors.New("--replicas runs on Linux only")
}
