package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// The rule-change event types that arrive on stdin.
const (
	ruleCreated  = "rule.created"
	ruleEnabled  = "rule.enabled"
	ruleDisabled = "rule.disabled"
	ruleDeleted  = "rule.deleted"
)

// maxLineBytes bounds one stdin line; a longer one is skipped whole.
const maxLineBytes = 1 << 20

// config is what the sensor reads from its environment, once, at start.
type config struct {
	// SensorRef is ATTUNE_SENSOR_REF, echoed as sensor_ref in payloads.
	// Defaults to core.timer_sensor.
	SensorRef string
	// Rules is ATTUNE_SENSOR_TRIGGERS, a JSON list of the active rules, kept
	// raw so one bad entry is skipped without losing the others. Defaults to
	// none.
	Rules []json.RawMessage
	// Debug is ATTUNE_SENSOR_DEBUG: any value but "", "0" or "false" logs
	// each firing. Defaults to false.
	Debug bool
}

func loadConfig(getenv func(string) string) (config, error) {
	cfg := config{SensorRef: getenv("ATTUNE_SENSOR_REF")}
	if cfg.SensorRef == "" {
		cfg.SensorRef = "core.timer_sensor"
	}
	if raw := bytes.TrimSpace([]byte(getenv("ATTUNE_SENSOR_TRIGGERS"))); len(raw) > 0 {
		if err := json.Unmarshal(raw, &cfg.Rules); err != nil {
			return config{}, fmt.Errorf("ATTUNE_SENSOR_TRIGGERS must be a JSON list of {id, ref, trigger_ref, config}: %w", err)
		}
	}
	switch v := getenv("ATTUNE_SENSOR_DEBUG"); v {
	case "", "0":
	default:
		b, err := strconv.ParseBool(v)
		cfg.Debug = err != nil || b
	}
	return cfg, nil
}

// A rule is one active rule on a trigger this sensor serves.
type rule struct {
	ID         int64           `json:"id"`
	Ref        string          `json:"ref"`
	TriggerRef string          `json:"trigger_ref"`
	Config     json.RawMessage `json:"config"`
}

func decodeRule(data []byte) (rule, error) {
	var r rule
	if err := json.Unmarshal(data, &r); err != nil {
		return rule{}, err
	}
	if r.ID <= 0 {
		return rule{}, fmt.Errorf("rule %q: id must be a positive integer, got %d", r.Ref, r.ID)
	}
	return r, nil
}

// A ruleChange is one stdin line.
type ruleChange struct {
	EventType string          `json:"event_type"`
	Rule      json.RawMessage `json:"rule"`
}

// An event is one stdout line.
type event struct {
	TriggerRef        string `json:"trigger_ref"`
	Payload           any    `json:"payload"`
	TriggerInstanceID int64  `json:"trigger_instance_id"`
}

// eventWriter writes events as JSON lines, one Write per line under a mutex,
// so lines from concurrent timers never interleave. After a failed write it
// keeps returning that error: a broken stdout means nobody is listening.
type eventWriter struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

func (w *eventWriter) write(ev event) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("error encoding event: %w", err)
	}
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(line); err != nil {
		w.err = fmt.Errorf("error writing event to stdout: %w", err)
	}
	return w.err
}

// errLineTooLong is reported for a stdin line longer than maxLineBytes.
var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxLineBytes)

// readLines calls fn with each line of r, without its line ending, until r
// ends; it returns nil at EOF. A line over maxLineBytes is skipped whole and
// reported as errLineTooLong; fn's returning false stops the reading.
func readLines(r io.Reader, fn func(line []byte, err error) bool) error {
	br := bufio.NewReaderSize(r, maxLineBytes)
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		switch {
		case tooLong:
			tooLong = false
			if !fn(nil, errLineTooLong) {
				return nil
			}
		case len(chunk) > 0:
			if !fn(bytes.Clone(bytes.TrimRight(chunk, "\r\n")), nil) {
				return nil
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}
