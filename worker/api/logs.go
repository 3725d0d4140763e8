package api

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/attune-system/attune/jobs"
)

// logs is GET /api/v1/executions/{id}/logs as JSON.
type logs struct {
	ID              int64   `json:"id"`
	Status          string  `json:"status"`
	Stdout          *string `json:"stdout,omitempty"`
	Stderr          *string `json:"stderr,omitempty"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
}

// How often a log stream reads the row (a running execution's output is
// stored about every second) and how often an idle stream sends a comment
// so proxies keep it open.
var (
	streamPoll      = 200 * time.Millisecond
	streamKeepalive = 15 * time.Second
)

func (s *Server) executionLogs(w http.ResponseWriter, r *http.Request) {
	id, err := executionID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	stream := r.URL.Query().Get("stream")
	if stream != "" && stream != "stdout" && stream != "stderr" {
		s.fail(w, r, errorf(http.StatusBadRequest, "use stream=stdout or stream=stderr, or leave it out for both", "stream=%q is invalid", stream))
		return
	}
	e, err := jobs.Get(r.Context(), s.pool, id)
	if err != nil {
		s.fail(w, r, notFound(err))
		return
	}
	if wantsEventStream(r) {
		s.streamLogs(w, r, e, stream)
		return
	}
	out := logs{ID: e.ID, Status: e.Status, StdoutTruncated: e.StdoutTruncated, StderrTruncated: e.StderrTruncated}
	empty := ""
	if stream != "stderr" {
		out.Stdout = orEmpty(e.Stdout, &empty)
	}
	if stream != "stdout" {
		out.Stderr = orEmpty(e.Stderr, &empty)
	}
	writeJSON(w, http.StatusOK, out)
}

func orEmpty(p, empty *string) *string {
	if p == nil {
		return empty
	}
	return p
}

func wantsEventStream(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
			return true
		}
	}
	return false
}

// streamLogs sends an execution's output as Server-Sent Events: an event
// "stdout" or "stderr" whose data is a JSON string of the bytes new since
// the last one (each byte is sent once), then one "end" event with the
// final status, exit code and error, and the stream closes. It also ends,
// without "end", when the client goes or the listener shuts down.
func (s *Server) streamLogs(w http.ResponseWriter, r *http.Request, e *jobs.Execution, stream string) {
	rc := http.NewResponseController(w)
	// The write deadline is for ordinary answers; a stream lasts as long
	// as the execution.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	sent := map[string]int{}
	send := func(event string, data []byte) bool {
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
		return err == nil
	}
	emit := func(e *jobs.Execution) bool {
		for _, st := range []struct {
			name string
			text *string
		}{{"stdout", e.Stdout}, {"stderr", e.Stderr}} {
			if (stream != "" && stream != st.name) || st.text == nil || len(*st.text) <= sent[st.name] {
				continue
			}
			// Stored output only grows while an execution runs, so the new
			// part starts on a character boundary.
			chunk, _ := json.Marshal((*st.text)[sent[st.name]:])
			if !send(st.name, chunk) {
				return false
			}
			sent[st.name] = len(*st.text)
		}
		return rc.Flush() == nil
	}
	if !emit(e) {
		return
	}
	poll := time.NewTicker(streamPoll)
	defer poll.Stop()
	lastWrite := time.Now()
	for !jobs.Finished(e.Status) {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			_, _ = fmt.Fprint(w, ": server shutting down; reconnect to another replica\n\n")
			_ = rc.Flush()
			return
		case <-poll.C:
		}
		next, err := jobs.Get(r.Context(), s.pool, e.ID)
		if err != nil {
			if r.Context().Err() == nil {
				s.log.Warn("log stream: reading the execution failed", "id", e.ID, "err", err)
			}
			return
		}
		before := sent["stdout"] + sent["stderr"]
		e = next
		if !emit(e) {
			return
		}
		if sent["stdout"]+sent["stderr"] != before {
			lastWrite = time.Now()
		} else if time.Since(lastWrite) > streamKeepalive {
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		}
	}
	end, _ := json.Marshal(map[string]any{"id": e.ID, "status": e.Status, "exit_code": e.ExitCode, "error": e.Error,
		"stdout_truncated": e.StdoutTruncated, "stderr_truncated": e.StderrTruncated})
	send("end", end)
	_ = rc.Flush()
}
