package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// The trigger types this sensor serves.
const (
	triggerInterval = "core.intervaltimer"
	triggerCron     = "core.crontimer"
	triggerDatetime = "core.datetimetimer"
)

// datetimeGrace is how far in the past a core.datetimetimer fire_at may be
// when its rule starts and still fire (at once). An older one is skipped, so
// a sensor restarted hours later does not replay a one-shot it already fired.
const datetimeGrace = 60 * time.Second

// errExpired marks a datetime that is too far in the past to fire: expected
// after a restart, so it is logged at info level rather than as an error.
var errExpired = errors.New("expired")

// cronParser reads 5 fields, or 6 with leading seconds, and @descriptors.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour |
	cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// intervalUnits are the units core.intervaltimer accepts.
var intervalUnits = map[string]time.Duration{
	"seconds": time.Second,
	"minutes": time.Minute,
	"hours":   time.Hour,
	"days":    24 * time.Hour,
}

// A timer is one rule's parsed trigger config: when it fires and what each
// firing says.
type timer struct {
	schedule schedule
	// catchUp is how far before the rule's start a fire time may lie and
	// still fire, at once. Zero for all but core.datetimetimer.
	catchUp time.Duration
	// describe is the schedule in words, for logs.
	describe string
	payload  func(f firing) any
}

// A firing is one moment a timer went off.
type firing struct {
	scheduled time.Time
	fired     time.Time
	count     int64 // 1 for the first firing of this rule's timer
	sensorRef string
}

type intervalPayload struct {
	Type            string `json:"type"`
	IntervalSeconds int64  `json:"interval_seconds"`
	FiredAt         string `json:"fired_at"`
	ExecutionCount  int64  `json:"execution_count"`
	SensorRef       string `json:"sensor_ref"`
}

type cronPayload struct {
	Type           string `json:"type"`
	FiredAt        string `json:"fired_at"`
	ScheduledAt    string `json:"scheduled_at"`
	Expression     string `json:"expression"`
	Timezone       string `json:"timezone"`
	ExecutionCount int64  `json:"execution_count"`
	SensorRef      string `json:"sensor_ref"`
}

type datetimePayload struct {
	Type        string `json:"type"`
	FiredAt     string `json:"fired_at"`
	ScheduledAt string `json:"scheduled_at"`
	SensorRef   string `json:"sensor_ref"`
}

// parseTimer reads a rule's trigger config. start is when the rule's timer
// starts: intervals count from it, and a datetime is judged against it.
func parseTimer(triggerRef string, config json.RawMessage, start time.Time) (timer, error) {
	switch triggerRef {
	case triggerInterval:
		return parseInterval(config, start)
	case triggerCron:
		return parseCron(config, start)
	case triggerDatetime:
		return parseDatetime(config, start)
	default:
		return timer{}, fmt.Errorf("trigger_ref %q is not served by this sensor; use one of %s, %s, %s",
			triggerRef, triggerInterval, triggerCron, triggerDatetime)
	}
}

func parseInterval(config json.RawMessage, start time.Time) (timer, error) {
	var c struct {
		Unit     string      `json:"unit"`
		Interval json.Number `json:"interval"`
	}
	if err := decodeConfig(config, &c); err != nil {
		return timer{}, err
	}
	if c.Unit == "" {
		c.Unit = "seconds" // the trigger's declared default
	}
	unit, ok := intervalUnits[c.Unit]
	if !ok {
		return timer{}, fmt.Errorf("unit %q is not one of seconds, minutes, hours, days", c.Unit)
	}
	if c.Interval == "" {
		return timer{}, errors.New("interval is required: a whole number > 0")
	}
	n, err := c.Interval.Int64()
	if err != nil {
		return timer{}, fmt.Errorf("interval %s is not a whole number", c.Interval)
	}
	if n <= 0 {
		return timer{}, fmt.Errorf("interval must be > 0, got %d", n)
	}
	if n > int64(math.MaxInt64/unit) {
		return timer{}, fmt.Errorf("interval %d %s is too long; at most %d %s",
			n, c.Unit, int64(math.MaxInt64/unit), c.Unit)
	}
	every := time.Duration(n) * unit
	seconds := int64(every / time.Second)
	return timer{
		schedule: intervalSchedule{start: start, every: every},
		describe: "every " + every.String(),
		payload: func(f firing) any {
			return intervalPayload{
				Type:            "interval",
				IntervalSeconds: seconds,
				FiredAt:         formatTime(f.fired),
				ExecutionCount:  f.count,
				SensorRef:       f.sensorRef,
			}
		},
	}, nil
}

func parseCron(config json.RawMessage, start time.Time) (timer, error) {
	var c struct {
		Expression string `json:"expression"`
		Timezone   string `json:"timezone"`
	}
	if err := decodeConfig(config, &c); err != nil {
		return timer{}, err
	}
	expr := strings.TrimSpace(c.Expression)
	if expr == "" {
		return timer{}, errors.New(`expression is required, e.g. "*/5 * * * *"`)
	}
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return timer{}, fmt.Errorf("expression %q: put the zone in timezone, not in the expression", expr)
	}
	spec, err := cronParser.Parse(expr)
	if err != nil {
		return timer{}, fmt.Errorf("expression %q: %w (5 fields, or 6 with leading seconds)", expr, err)
	}
	tz := c.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return timer{}, fmt.Errorf("timezone %q is not an IANA zone name such as Europe/Paris: %w", tz, err)
	}
	sched := cronSchedule{spec: spec, loc: loc}
	if _, ok := sched.next(start); !ok {
		return timer{}, fmt.Errorf("expression %q never matches within five years", expr)
	}
	return timer{
		schedule: sched,
		describe: fmt.Sprintf("cron %q in %s", expr, tz),
		payload: func(f firing) any {
			return cronPayload{
				Type:           "cron",
				FiredAt:        formatTime(f.fired),
				ScheduledAt:    formatTime(f.scheduled),
				Expression:     expr,
				Timezone:       tz,
				ExecutionCount: f.count,
				SensorRef:      f.sensorRef,
			}
		},
	}, nil
}

func parseDatetime(config json.RawMessage, start time.Time) (timer, error) {
	var c struct {
		FireAt string `json:"fire_at"`
	}
	if err := decodeConfig(config, &c); err != nil {
		return timer{}, err
	}
	if c.FireAt == "" {
		return timer{}, errors.New(`fire_at is required, e.g. "2030-01-01T09:00:00Z"`)
	}
	at, err := time.Parse(time.RFC3339, c.FireAt)
	if err != nil {
		return timer{}, fmt.Errorf("fire_at %q is not an RFC 3339 time such as 2030-01-01T09:00:00Z", c.FireAt)
	}
	if late := start.Sub(at); late > datetimeGrace {
		return timer{}, fmt.Errorf("fire_at %s is %s in the past, more than %s; not firing: %w",
			c.FireAt, late.Round(time.Second), datetimeGrace, errExpired)
	}
	return timer{
		schedule: onceSchedule{at: at},
		catchUp:  datetimeGrace,
		describe: "once at " + formatTime(at),
		payload: func(f firing) any {
			return datetimePayload{
				Type:        "datetime",
				FiredAt:     formatTime(f.fired),
				ScheduledAt: formatTime(f.scheduled),
				SensorRef:   f.sensorRef,
			}
		},
	}, nil
}

// decodeConfig reads a rule's config object into v. A missing or null config
// reads as {}. Unknown keys are ignored, as StackStorm does.
func decodeConfig(config json.RawMessage, v any) error {
	config = bytes.TrimSpace(config)
	if len(config) == 0 || bytes.Equal(config, []byte("null")) {
		return nil
	}
	if config[0] != '{' {
		return fmt.Errorf("config must be a JSON object, got %s", truncate(string(config), 60))
	}
	if err := json.Unmarshal(config, v); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// formatTime is how every timestamp in a payload is written.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// truncate shortens s for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
