package main

import (
	"time"

	"github.com/robfig/cron/v3"
)

// A schedule says when a timer fires. It is pure: the same argument always
// gives the same answer, so schedules are tested with fixed times.
type schedule interface {
	// next returns the first fire time strictly after after, and false when
	// the schedule will never fire again.
	next(after time.Time) (time.Time, bool)
}

// intervalSchedule fires at start + k*every for k = 1, 2, 3, ...
//
// Fire times are computed from start, never from the previous firing, so a
// late wake-up does not push later firings back: there is no cumulative drift.
type intervalSchedule struct {
	start time.Time
	every time.Duration
}

func (s intervalSchedule) next(after time.Time) (time.Time, bool) {
	if after.Before(s.start) {
		return s.start.Add(s.every), true
	}
	k := after.Sub(s.start)/s.every + 1
	return s.start.Add(k * s.every), true
}

// cronSchedule fires whenever a cron expression matches, read in loc.
type cronSchedule struct {
	spec cron.Schedule
	loc  *time.Location
}

func (s cronSchedule) next(after time.Time) (time.Time, bool) {
	// The parsed spec has no zone of its own (time.Local), so robfig/cron
	// matches it against the zone of the time it is given.
	t := s.spec.Next(after.In(s.loc))
	if t.IsZero() { // nothing within five years, e.g. "0 0 30 2 *"
		return time.Time{}, false
	}
	return t, true
}

// onceSchedule fires once, at at.
type onceSchedule struct {
	at time.Time
}

func (s onceSchedule) next(after time.Time) (time.Time, bool) {
	if after.Before(s.at) {
		return s.at, true
	}
	return time.Time{}, false
}
