// Package api is attune serve's HTTP listener: the REST API under /api/v1,
// signed webhooks under /webhooks/, Prometheus metrics at /metrics and the
// health probes /healthz and /readyz. Every route reads and writes through
// the same functions as the CLI and SQL (package jobs), so a row created over
// HTTP is the row any other path creates.
package api
