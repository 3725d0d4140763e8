package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The line protocol between the supervisor and a sensor process (SPEC §7):
// rule changes go to its stdin as JSON lines, events come from its stdout
// as JSON lines, and its stderr lines go to attune's log. Everything here
// is bounded (line sizes, queue length, log rate), because a sensor is a
// long-running program of a pack's that may misbehave for as long as it
// likes.

// Bounds on what a sensor writes.
const (
	// maxEventLine bounds one stdout line; a longer one is skipped whole.
	maxEventLine = 1 << 20
	// maxLogLine bounds one stderr line in the log; the rest is cut.
	maxLogLine = 4 << 10
	// stdinQueue is how many rule-change lines may wait for the sensor to
	// read them.
	stdinQueue = 256
)

// ruleQueue holds the rule-change lines waiting to be written to a
// sensor's stdin; it never blocks the supervisor.
type ruleQueue chan []byte

// queue queues rule-change lines for stdin; false when the queue is full.
func (q ruleQueue) queue(lines [][]byte) bool {
	for _, l := range lines {
		select {
		case q <- l:
		default:
			return false
		}
	}
	return true
}

// ruleChanges returns the stdin lines that turn the rules a process knows
// into next.Rules, and updates known. announced holds every rule id the
// process was ever told of; started is the database time of the rules it
// started with.
func ruleChanges(known map[int64]sensorRule, announced map[int64]bool, started time.Time, next sensorDef) [][]byte {
	var out [][]byte
	add := func(typ string, r sensorRule) {
		b, _ := json.Marshal(map[string]any{"event_type": typ, "rule": r})
		out = append(out, append(b, '\n'))
	}
	active := map[int64]bool{}
	for _, r := range next.Rules {
		active[r.ID] = true
		old, ok := known[r.ID]
		switch {
		case !ok && !announced[r.ID] && r.created.After(started):
			add("rule.created", r)
		case !ok:
			add("rule.enabled", r)
		case !old.same(r):
			add("rule.disabled", old)
			add("rule.enabled", r)
		default:
			continue
		}
		known[r.ID], announced[r.ID] = r, true
	}
	for _, id := range slices.Sorted(maps.Keys(known)) {
		if active[id] {
			continue
		}
		if next.Existing[id] {
			add("rule.disabled", known[id])
		} else {
			add("rule.deleted", known[id])
		}
		delete(known, id)
	}
	return out
}

// writeStdin writes the queued rule-change lines until the queue closes. A
// sensor that closed its stdin does not get them; that is its choice.
func writeStdin(w io.Writer, lines <-chan []byte, log *slog.Logger) {
	broken := false
	for line := range lines {
		if broken {
			continue
		}
		if _, err := w.Write(line); err != nil {
			broken = true
			log.Debug("sensor stdin closed; rule changes are not delivered", "err", err)
		}
	}
}

// readEvents handles each stdout line as an event until EOF.
func (in *sensorInstance) readEvents(ctx context.Context, r io.Reader, def sensorDef) {
	limit := newLogLimiter(10, 50)
	complain := func(msg string, args ...any) {
		if ok, dropped := limit.allow(); ok {
			if dropped > 0 {
				args = append(args, "suppressed", dropped)
			}
			in.log.Warn(msg, args...)
		}
	}
	_ = scanLines(r, maxEventLine, func(line []byte, over bool) {
		if over {
			complain("skipping sensor output line over the size limit", "limit_bytes", maxEventLine, "start", truncate(string(line), 100))
			return
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			return
		}
		_, err := in.handleEvent(ctx, line, def)
		switch {
		case errors.Is(err, errBadEvent):
			complain("skipping sensor output line", "err", err, "line", truncate(string(line), 200))
		case err != nil:
			in.log.Error("error handling event; it is lost", "err", err, "line", truncate(string(line), 200))
		}
	})
	if n := limit.dropped(); n > 0 {
		in.log.Warn("sensor output lines skipped without a log line", "suppressed", n)
	}
}

// handleEvent parses and dispatches one event line. A panic is turned into
// an error: no line a sensor writes may bring the replica down.
func (in *sensorInstance) handleEvent(ctx context.Context, line []byte, def sensorDef) (d dispatched, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic handling event: %v", r)
		}
	}()
	ev, err := parseEvent(line, def.Ref, def.TriggerTypes)
	if err != nil {
		return dispatched{}, err
	}
	d, err = dispatchEventRetrying(ctx, in.sup.pool, in.sup.log, in.sup.secretsKey(), def.Ref, ev)
	if err == nil && in.sup.onEvent != nil {
		in.sup.onEvent(ev.TriggerRef, len(d.Executions), len(d.Skipped))
	}
	return d, err
}

// readLogs copies stderr lines to the log, each cut at maxLogLine, at a
// bounded rate.
func (in *sensorInstance) readLogs(r io.Reader, tail *stderrTail) {
	limit := newLogLimiter(20, 100)
	_ = scanLines(r, maxLogLine, func(line []byte, over bool) {
		text := string(bytes.ToValidUTF8(bytes.TrimRight(line, "\r\n"), []byte("\uFFFD")))
		if text == "" {
			return
		}
		if !over {
			tail.set(truncate(text, 500))
		}
		ok, dropped := limit.allow()
		if !ok {
			return
		}
		args := sensorLogArgs(text)
		if over {
			args = append(args, "cut_at_bytes", maxLogLine)
		}
		if dropped > 0 {
			args = append(args, "suppressed", dropped)
		}
		in.log.Info("sensor stderr", args...)
	})
	if n := limit.dropped(); n > 0 {
		in.log.Warn("sensor stderr lines not logged (rate limit)", "suppressed", n)
	}
}

// sensorLogArgs are the log attributes of one stderr line. A structured
// line, a JSON object or logfmt with a msg key (what slog's JSON and text
// handlers print; the core timer sensor uses the latter), becomes a
// "sensor_log" group of its fields, so they are fields of attune's own log
// line rather than text nested in one; anything else is "line".
func sensorLogArgs(text string) []any {
	fields := parseStructuredLine(text)
	if fields == nil {
		return []any{"line", text}
	}
	attrs := make([]any, 0, len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	return []any{slog.Group("sensor_log", attrs...)}
}

// maxLogFields bounds the fields taken from one structured stderr line.
const maxLogFields = 64

func parseStructuredLine(text string) map[string]any {
	if strings.HasPrefix(text, "{") {
		var fields map[string]any
		if json.Unmarshal([]byte(text), &fields) != nil || len(fields) > maxLogFields {
			return nil
		}
		return fields
	}
	fields := map[string]any{}
	for rest := strings.TrimSpace(text); rest != ""; rest = strings.TrimLeft(rest, " ") {
		key, after, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \"") || len(fields) == maxLogFields {
			return nil
		}
		var value string
		if strings.HasPrefix(after, `"`) {
			quoted, err := strconv.QuotedPrefix(after)
			if err != nil {
				return nil
			}
			value, _ = strconv.Unquote(quoted)
			after = after[len(quoted):]
		} else {
			value, after, _ = strings.Cut(after, " ")
			after = " " + after
		}
		if after != "" && after[0] != ' ' {
			return nil
		}
		fields[key] = value
		rest = after
	}
	if _, ok := fields["msg"]; !ok {
		return nil
	}
	return fields
}

// stderrTail is a sensor's last complete stderr line, which ends the error
// its exit is recorded with: usually the reason it gave up.
type stderrTail struct {
	mu   sync.Mutex
	line string
}

func (t *stderrTail) set(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.line = line
}

func (t *stderrTail) get() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.line
}

// scanLines calls fn with each line of r, without its line ending, until
// EOF or a read error. A line longer than size is reported once with
// over set and its first size bytes, and the rest of it is skipped; memory
// stays bounded by size. line is valid only during the call.
func scanLines(r io.Reader, size int, fn func(line []byte, over bool)) error {
	br := bufio.NewReaderSize(r, size)
	over := false
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if !over {
				fn(chunk, true)
			}
			over = true
			continue
		case over:
			over = false // the end of a long line
		case len(chunk) > 0:
			fn(bytes.TrimRight(chunk, "\r\n"), false)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// logLimiter is a token bucket for the log lines one sensor causes, so a
// sensor flooding stderr or garbage cannot flood attune's log.
type logLimiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	tokens  float64
	last    time.Time
	skipped int
}

func newLogLimiter(rate, burst float64) *logLimiter {
	return &logLimiter{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// allow reports whether a line may be logged and, when it may, how many
// were suppressed since the last one that was.
func (l *logLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		l.skipped++
		return false, 0
	}
	l.tokens--
	n := l.skipped
	l.skipped = 0
	return true, n
}

func (l *logLimiter) dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.skipped
}
