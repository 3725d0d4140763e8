package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
)

// maxSleep bounds one sleep of a timer. Sleeps run on the monotonic clock,
// while cron and datetime fire times are wall-clock times: waking at least
// this often bounds how late a wall-clock step (NTP, a resumed VM) makes them.
const maxSleep = 30 * time.Second

// stopGrace is how long shutdown waits for timers caught in a stdout write.
const stopGrace = 2 * time.Second

// clock is the sensor's source of time; tests swap in a fake one.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) (c <-chan time.Time, stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// A sensor keeps one timer goroutine per active rule. Its methods other than
// the timers' own are called from one goroutine, which owns timers.
type sensor struct {
	ref   string
	clock clock
	log   *slog.Logger
	out   *eventWriter
	fail  func(error) // stdout is broken: the sensor must stop

	timers map[int64]*ruleTimer
	wg     sync.WaitGroup // every timer goroutine, stopped or not
}

type ruleTimer struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newSensor(ref string, clk clock, log *slog.Logger, stdout io.Writer, fail func(error)) *sensor {
	return &sensor{
		ref:    ref,
		clock:  clk,
		log:    log,
		out:    &eventWriter{w: stdout},
		fail:   fail,
		timers: make(map[int64]*ruleTimer),
	}
}

// handleLine applies one stdin line. A line it cannot use is logged and
// skipped; nothing on stdin stops the sensor.
func (s *sensor) handleLine(ctx context.Context, line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	var change ruleChange
	if err := json.Unmarshal(line, &change); err != nil {
		s.log.Error("skipping malformed stdin line", "error", err, "line", truncate(string(line), 200))
		return
	}
	r, err := decodeRule(change.Rule)
	if err != nil {
		s.log.Error("skipping stdin line without a usable rule", "event_type", change.EventType,
			"error", err, "line", truncate(string(line), 200))
		return
	}
	switch change.EventType {
	case ruleCreated, ruleEnabled:
		s.start(ctx, r, change.EventType)
	case ruleDisabled, ruleDeleted:
		s.stop(ctx, r, change.EventType)
	default:
		s.log.Error("skipping stdin line with unknown event_type; want rule.created, rule.enabled, rule.disabled or rule.deleted",
			"event_type", change.EventType, "rule", r.Ref, "id", r.ID)
	}
}

// start (re)starts r's timer, replacing any timer with r's id. A config that
// does not parse leaves r without a timer.
func (s *sensor) start(ctx context.Context, r rule, why string) {
	s.stop(ctx, r, "")
	now := s.clock.Now()
	t, err := parseTimer(r.TriggerRef, r.Config, now)
	if err != nil {
		level := slog.LevelError
		if errors.Is(err, errExpired) {
			level = slog.LevelInfo
		}
		s.log.Log(ctx, level, "rule not scheduled", "rule", r.Ref, "id", r.ID,
			"trigger", r.TriggerRef, "error", err)
		return
	}
	first, ok := t.schedule.next(now.Add(-t.catchUp))
	if !ok {
		s.log.Info("rule not scheduled: no fire time left", "rule", r.Ref, "id", r.ID,
			"trigger", r.TriggerRef, "schedule", t.describe)
		return
	}
	tctx, cancel := context.WithCancel(ctx)
	rt := &ruleTimer{cancel: cancel, done: make(chan struct{})}
	s.timers[r.ID] = rt
	s.log.Info("rule scheduled", "rule", r.Ref, "id", r.ID, "trigger", r.TriggerRef,
		"schedule", t.describe, "first_fire", formatTime(first), "cause", why)
	s.wg.Go(func() {
		defer close(rt.done)
		s.fire(tctx, r, t, first)
	})
}

// stop stops r's timer, if it has one. Once it returns, no event for r is
// written (unless ctx ended first). why is logged; "" stops quietly.
func (s *sensor) stop(ctx context.Context, r rule, why string) {
	rt, ok := s.timers[r.ID]
	if !ok {
		if why != "" {
			s.log.Debug("no timer to stop", "rule", r.Ref, "id", r.ID, "cause", why)
		}
		return
	}
	delete(s.timers, r.ID)
	rt.cancel()
	select {
	case <-rt.done:
	case <-ctx.Done():
	}
	if why != "" {
		s.log.Info("rule stopped", "rule", r.Ref, "id", r.ID, "cause", why)
	}
}

// stopAll stops every timer, waiting at most grace for those stuck writing.
func (s *sensor) stopAll(grace time.Duration) {
	for id, rt := range s.timers {
		rt.cancel()
		delete(s.timers, id)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		s.log.Warn("timers still blocked writing to stdout; leaving them", "waited", grace)
	}
}

// fire runs r's timer from its first fire time until ctx ends or the
// schedule runs out.
//
// A firing that wakes late (a loaded machine, a stopped process) fires once,
// and the next fire time is the schedule's first one after the moment it
// actually fired: missed slots are skipped, not replayed in a burst, and
// execution_count counts firings that happened, not slots that passed.
func (s *sensor) fire(ctx context.Context, r rule, t timer, at time.Time) {
	var count int64
	for {
		if !s.sleepUntil(ctx, at) {
			return
		}
		fired := s.clock.Now()
		count++
		ev := event{
			TriggerRef:        r.TriggerRef,
			Payload:           t.payload(firing{scheduled: at, fired: fired, count: count, sensorRef: s.ref}),
			TriggerInstanceID: r.ID,
		}
		if err := s.out.write(ev); err != nil {
			s.fail(err)
			return
		}
		s.log.Debug("fired", "rule", r.Ref, "id", r.ID, "count", count,
			"scheduled_at", formatTime(at), "late", fired.Sub(at))

		after := at
		if fired.After(after) {
			after = fired
		}
		next, ok := t.schedule.next(after)
		if !ok {
			s.log.Info("rule has no fire time left; its timer ends", "rule", r.Ref, "id", r.ID)
			return
		}
		if slot, _ := t.schedule.next(at); slot.Before(next) {
			s.log.Warn("fired late; skipping missed fire times", "rule", r.Ref, "id", r.ID,
				"scheduled_at", formatTime(at), "late", fired.Sub(at), "next", formatTime(next))
		}
		at = next
	}
}

// sleepUntil waits until the clock reaches at, and reports false if ctx
// ended first.
func (s *sensor) sleepUntil(ctx context.Context, at time.Time) bool {
	for {
		d := at.Sub(s.clock.Now())
		if d <= 0 {
			return ctx.Err() == nil
		}
		c, stop := s.clock.NewTimer(min(d, maxSleep))
		select {
		case <-ctx.Done():
			stop()
			return false
		case <-c:
		}
	}
}
