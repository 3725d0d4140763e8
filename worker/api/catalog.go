package api

import (
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
)

func (s *Server) listActions(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListActions(r.Context(), s.pool, r.URL.Query().Get("pack"))
	s.respond(w, r, map[string]any{"actions": list}, err)
}

func (s *Server) getAction(w http.ResponseWriter, r *http.Request) {
	a, err := jobs.GetAction(r.Context(), s.pool, r.PathValue("ref"))
	s.respond(w, r, a, unknownRef(err, "GET /api/v1/actions lists the registered actions"))
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListRules(r.Context(), s.pool)
	s.respond(w, r, map[string]any{"rules": list}, err)
}

func (s *Server) setRule(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ref := r.PathValue("ref")
		var changed bool
		err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
			var err error
			changed, err = packs.SetRuleEnabled(r.Context(), tx, ref, enabled)
			return err
		})
		if errors.Is(err, packs.ErrUnknownRule) {
			s.fail(w, r, errorf(http.StatusNotFound, "GET /api/v1/rules lists the registered rules", "%s", err))
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.log.Info("rule changed over HTTP", "rule", ref, "enabled", enabled, "changed", changed, "token", tokenName(r))
		rule, err := jobs.GetRule(r.Context(), s.pool, ref)
		s.respond(w, r, map[string]any{"rule": rule, "changed": changed}, unknownRef(err, "GET /api/v1/rules lists the registered rules"))
	}
}

func (s *Server) listSensors(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListSensors(r.Context(), s.pool)
	s.respond(w, r, map[string]any{"sensors": list}, err)
}

func (s *Server) listTriggers(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListTriggers(r.Context(), s.pool)
	s.respond(w, r, map[string]any{"triggers": list}, err)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	limit, before, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// One more than asked tells whether another page follows.
	list, err := jobs.ListEvents(r.Context(), s.pool, r.URL.Query().Get("trigger"), before, limit+1)
	var next int64
	if len(list) > limit {
		list = list[:limit]
		next = list[len(list)-1].ID
	}
	s.respond(w, r, map[string]any{"events": list, "next_cursor": cursor(next)}, err)
}

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListWorkers(r.Context(), s.pool, true)
	s.respond(w, r, map[string]any{"workers": list}, err)
}

func (s *Server) respond(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func unknownRef(err error, hint string) error {
	if errors.Is(err, jobs.ErrUnknownRef) {
		return errorf(http.StatusNotFound, hint, "%s", err)
	}
	return err
}
