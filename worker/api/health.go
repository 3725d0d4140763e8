package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/attune-system/attune/schema"
)

// health is the body of /healthz and /readyz.
type health struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
	// Failing names the first failing check.
	Failing string `json:"failing,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, health{Status: "ok"})
}

// readyz answers 200 only when this replica can do its work: the database
// answers, its schema is the one this binary migrates to, and River runs.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	failing := ""
	check := func(name string, fn func() string) {
		if failing != "" {
			checks[name] = "skipped"
			return
		}
		if msg := fn(); msg != "" {
			checks[name], failing = msg, name
			return
		}
		checks[name] = "ok"
	}
	check("database", func() string {
		if err := s.pool.Ping(ctx); err != nil {
			// The probe is public: the details (user, host, database) go to
			// the log, not to whoever asks.
			s.log.Warn("readyz: the database does not answer", "err", err)
			return "does not answer (see attune serve's log)"
		}
		return ""
	})
	check("migrations", func() string {
		ms, err := schema.Migrations()
		if err != nil || len(ms) == 0 {
			return "embedded migrations unreadable"
		}
		var applied int
		if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM attune.schema_migration").Scan(&applied); err != nil {
			s.log.Warn("readyz: cannot read attune.schema_migration", "err", err)
			return "cannot read attune.schema_migration (see attune serve's log)"
		}
		if want := ms[len(ms)-1].Version; applied < want {
			return "database is at migration " + strconv.Itoa(applied) + ", this binary needs " + strconv.Itoa(want) + ": run attune migrate"
		}
		return ""
	})
	check("river", func() string {
		if s.draining.Load() {
			return "shutting down"
		}
		if s.opts.RiverRunning != nil && !s.opts.RiverRunning() {
			return "River client is not running"
		}
		return ""
	})
	if failing != "" {
		writeJSON(w, http.StatusServiceUnavailable, health{Status: "unavailable", Checks: checks, Failing: failing})
		return
	}
	writeJSON(w, http.StatusOK, health{Status: "ready", Checks: checks})
}
