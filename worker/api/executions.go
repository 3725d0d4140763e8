package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attune-system/attune/jobs"
)

var statuses = jobs.Statuses

// executionRequest is POST /api/v1/executions: attune.enqueue's three
// arguments.
type executionRequest struct {
	Action     string         `json:"action"`
	Parameters map[string]any `json:"parameters"`
	Options    *requestOpts   `json:"options"`
}

// requestOpts are the options a caller may give (SPEC §4); rule_ref and
// event_id belong to rules.
type requestOpts struct {
	TimeoutSeconds int       `json:"timeout_seconds"`
	Priority       int       `json:"priority"`
	ScheduledAt    time.Time `json:"scheduled_at"`
	MaxAttempts    int       `json:"max_attempts"`
}

func (s *Server) createExecution(w http.ResponseWriter, r *http.Request) {
	var req executionRequest
	if err := decodeJSON(w, r, maxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Action == "" {
		s.fail(w, r, errorf(http.StatusUnprocessableEntity, `give the action ref, such as {"action": "examples.hello"}`, "action is missing"))
		return
	}
	var opts jobs.Options
	if o := req.Options; o != nil {
		opts = jobs.Options{TimeoutSeconds: o.TimeoutSeconds, Priority: o.Priority, ScheduledAt: o.ScheduledAt, MaxAttempts: o.MaxAttempts}
	}
	var id int64
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		var err error
		id, err = jobs.Enqueue(r.Context(), tx, req.Action, req.Parameters, &opts)
		return err
	})
	if err != nil {
		s.fail(w, r, enqueueError(err))
		return
	}
	s.log.Info("execution enqueued over HTTP", "id", id, "action", req.Action, "token", tokenName(r))
	s.respondExecution(w, r, http.StatusCreated, id)
}

// enqueueError maps attune.enqueue's SQLSTATEs to statuses: the same
// message SQL and the CLI give, with its hint.
func enqueueError(err error) error {
	var je *jobs.Error
	if !errors.As(err, &je) {
		return err
	}
	status := http.StatusUnprocessableEntity
	switch je.Code {
	case "42704":
		status = http.StatusNotFound
	case "55000":
		status = http.StatusConflict
	}
	hint := je.Hint
	if hint == "" && status == http.StatusNotFound {
		hint = "GET /api/v1/actions lists the registered actions"
	}
	return &statusError{status: status, msg: je.Message, hint: hint}
}

func (s *Server) respondExecution(w http.ResponseWriter, r *http.Request, status int, id int64) {
	e, err := jobs.Get(r.Context(), s.pool, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/executions/%d", id))
	writeJSON(w, status, e)
}

// executionPage is GET /api/v1/executions.
type executionPage struct {
	Executions []*jobs.Execution `json:"executions"`
	NextCursor *string           `json:"next_cursor"`
}

func (s *Server) listExecutions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := jobs.PageFilter{ActionRef: q.Get("action"), Status: q.Get("status"), RuleRef: q.Get("rule")}
	if f.Status != "" && !jobs.ValidStatus(f.Status) {
		s.fail(w, r, errorf(http.StatusBadRequest, "use one of requested, scheduled, running, completed, failed, timeout, canceling, cancelled, abandoned", "status %q is not an execution status", f.Status))
		return
	}
	var err error
	if f.Since, err = timeParam(q.Get("since"), "since"); err == nil {
		f.Until, err = timeParam(q.Get("until"), "until")
	}
	if err == nil {
		f.Limit, f.Before, err = pageParams(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, next, err := jobs.ListPage(r.Context(), s.pool, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, executionPage{Executions: list, NextCursor: cursor(next)})
}

func timeParam(v, name string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errorf(http.StatusBadRequest, "use RFC 3339, such as 2026-01-02T15:04:05Z", "%s=%q is not a time", name, v)
	}
	return t, nil
}

// pageParams reads limit and cursor. The cursor is the last id of the
// previous page, opaque to callers.
func pageParams(r *http.Request) (limit int, before int64, err error) {
	q := r.URL.Query()
	limit = 50
	if v := q.Get("limit"); v != "" {
		limit, err = strconv.Atoi(v)
		if err != nil || limit < 1 || limit > 1000 {
			return 0, 0, errorf(http.StatusBadRequest, "use a whole number from 1 to 1000", "limit=%q is invalid", v)
		}
	}
	if v := q.Get("cursor"); v != "" {
		before, err = strconv.ParseInt(v, 10, 64)
		if err != nil || before <= 0 {
			return 0, 0, errorf(http.StatusBadRequest, "pass next_cursor from the previous page as is", "cursor=%q is invalid", v)
		}
	}
	return limit, before, nil
}

func cursor(next int64) *string {
	if next == 0 {
		return nil
	}
	c := strconv.FormatInt(next, 10)
	return &c
}

// executionID reads {id}: a positive whole number.
func executionID(r *http.Request) (int64, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, errorf(http.StatusBadRequest, "execution ids are positive whole numbers (GET /api/v1/executions)", "%q is not an execution id", v)
	}
	return id, nil
}

// notFound turns jobs.ErrNotFound into a 404.
func notFound(err error) error {
	if errors.Is(err, jobs.ErrNotFound) {
		return errorf(http.StatusNotFound, "GET /api/v1/executions lists recent executions", "%s", err)
	}
	return err
}

func (s *Server) getExecution(w http.ResponseWriter, r *http.Request) {
	id, err := executionID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	e, err := jobs.Get(r.Context(), s.pool, id)
	if err != nil {
		s.fail(w, r, notFound(err))
		return
	}
	writeJSON(w, http.StatusOK, e)
}

type cancelResult struct {
	ID             int64  `json:"id"`
	Status         string `json:"status"`
	PreviousStatus string `json:"previous_status"`
}

func (s *Server) cancelExecution(w http.ResponseWriter, r *http.Request) {
	id, err := executionID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	before, err := jobs.GetFacts(r.Context(), s.pool, id)
	if err != nil {
		s.fail(w, r, notFound(err))
		return
	}
	// A cancel is a small write the caller wants done even if it hangs up.
	status, err := jobs.Cancel(context.WithoutCancel(r.Context()), s.pool, id)
	if err != nil {
		s.fail(w, r, notFound(err))
		return
	}
	s.log.Info("execution cancelled over HTTP", "id", id, "status", status, "token", tokenName(r))
	writeJSON(w, http.StatusOK, cancelResult{ID: id, Status: status, PreviousStatus: before.Status})
}

func (s *Server) rerunExecution(w http.ResponseWriter, r *http.Request) {
	id, err := executionID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var newID int64
	err = pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		var err error
		newID, err = jobs.ReRun(r.Context(), tx, id)
		return err
	})
	switch {
	case errors.Is(err, jobs.ErrSecretParameters):
		s.fail(w, r, errorf(http.StatusConflict, "POST /api/v1/executions with every parameter", "%s", err))
		return
	case err != nil:
		s.fail(w, r, notFound(enqueueError(err)))
		return
	}
	s.log.Info("execution re-run over HTTP", "id", newID, "of", id, "token", tokenName(r))
	s.respondExecution(w, r, http.StatusCreated, newID)
}
