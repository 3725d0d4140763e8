package api

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

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
// "stdout" or "stderr" whose data is a JSON string of the text new since
// the last one (each byte is sent once), then one "end" event with the
// final status, exit code and error, and the stream closes. Should stored
// text be rewritten (the truncation notice replacing the last bytes kept),
// a "reset" event names the stream and its whole text follows again. The
// stream also ends, without "end", when the client goes or the listener
// shuts down.
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

	type sent struct {
		chars int // characters, as PostgreSQL's substr counts
		sum   hash.Hash
	}
	streams := map[string]*sent{"stdout": {sum: md5.New()}, "stderr": {sum: md5.New()}}
	send := func(event string, data []byte) bool {
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
		return err == nil
	}
	sumOf := func(st *sent) string { return hex.EncodeToString(st.sum.Sum(nil)) }
	// emit sends what is new and reports whether to go on, and whether
	// anything was sent.
	emit := func(t *jobs.OutputTail) (ok, wrote bool) {
		for _, part := range []struct {
			name string
			text string
			same bool
		}{{"stdout", t.Stdout, t.StdoutSame}, {"stderr", t.Stderr, t.StderrSame}} {
			if stream != "" && stream != part.name {
				continue
			}
			st := streams[part.name]
			if !part.same {
				name, _ := json.Marshal(part.name)
				if !send("reset", name) {
					return false, wrote
				}
				st.chars, st.sum = 0, md5.New()
				wrote = true
				continue // the next read starts over
			}
			if part.text == "" {
				continue
			}
			chunk, _ := json.Marshal(part.text)
			if !send(part.name, chunk) {
				return false, wrote
			}
			st.chars += utf8.RuneCountInString(part.text)
			st.sum.Write([]byte(part.text))
			wrote = true
		}
		return rc.Flush() == nil, wrote
	}
	read := func() (*jobs.OutputTail, error) {
		return jobs.TailOutput(r.Context(), s.pool, e.ID, streams["stdout"].chars, sumOf(streams["stdout"]),
			streams["stderr"].chars, sumOf(streams["stderr"]))
	}
	poll := time.NewTicker(streamPoll)
	defer poll.Stop()
	lastWrite := time.Now()
	for first := true; ; first = false {
		if !first {
			select {
			case <-r.Context().Done():
				return
			case <-s.stopping:
				_, _ = fmt.Fprint(w, ": server shutting down; reconnect to another replica\n\n")
				_ = rc.Flush()
				return
			case <-poll.C:
			}
		}
		t, err := read()
		if err != nil {
			if r.Context().Err() == nil {
				s.log.Warn("log stream: reading the execution failed", "id", e.ID, "err", err)
			}
			return
		}
		ok, wrote := emit(t)
		switch {
		case !ok:
			return
		case wrote:
			lastWrite = time.Now()
			if !t.StdoutSame || !t.StderrSame {
				continue // resend from the start before ending
			}
		case time.Since(lastWrite) > streamKeepalive:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		}
		if jobs.Finished(t.Status) {
			end, _ := json.Marshal(map[string]any{"id": e.ID, "status": t.Status, "exit_code": t.ExitCode, "error": t.Error,
				"stdout_truncated": t.StdoutTruncated, "stderr_truncated": t.StderrTruncated})
			send("end", end)
			_ = rc.Flush()
			return
		}
	}
}
