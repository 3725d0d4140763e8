// Command attune-core-timer-sensor is the core pack's timer sensor,
// core.timer_sensor (SPEC §7). It serves three trigger types:
//
//   - core.intervaltimer, {unit: seconds|minutes|hours|days, interval: N > 0}:
//     fires at start + k·interval, k = 1, 2, ..., counted from when the
//     rule's timer started, so there is no cumulative drift. unit defaults
//     to seconds.
//   - core.crontimer, {expression, timezone}: 5 fields, or 6 with leading
//     seconds, or a descriptor such as @daily; timezone is an IANA name and
//     defaults to UTC.
//   - core.datetimetimer, {fire_at: RFC 3339}: fires once. A fire_at up to
//     60 s in the past when the rule starts fires at once; an older one is
//     logged and skipped, so a restart does not replay it.
//
// It speaks only stdio. The active rules arrive in ATTUNE_SENSOR_TRIGGERS, a
// JSON list of {id, ref, trigger_ref, config}; rule changes arrive as JSON
// lines on stdin, {"event_type": "rule.created"|"rule.enabled"|
// "rule.disabled"|"rule.deleted", "rule": {...}}. Each firing is one JSON line
// on stdout, {"trigger_ref", "payload", "trigger_instance_id": rule id}. Logs
// go to stderr (log/slog text); ATTUNE_SENSOR_DEBUG logs every firing.
//
// Choices where the contract is silent:
//   - rule.created and rule.enabled replace any timer with the same rule id:
//     an interval restarts from that moment and execution_count from 1.
//     rule.disabled and rule.deleted need only rule.id; stopping an unknown
//     id is not an error. Once a stop is applied, no event for it follows.
//   - A timer that wakes late fires once and resumes at the first fire time
//     after the moment it fired: missed slots are skipped, not replayed, and
//     execution_count counts firings, not elapsed slots.
//   - fired_at and scheduled_at are RFC 3339 with nanoseconds, in UTC, also
//     for cron rules in another timezone (the payload names the zone).
//   - A config that does not parse, an unknown trigger_ref, a stdin line that
//     is not JSON, has no rule id, has an unknown event_type or is over 1 MiB
//     is one line on stderr and is skipped; the sensor keeps running.
//     Unknown config keys are ignored.
//   - Stdin reaching EOF stops nothing: timers keep running until SIGTERM or
//     SIGINT, which stop them and exit 0. A malformed ATTUNE_SENSOR_TRIGGERS
//     (not a JSON list) or a broken stdout exits 1.
//   - ATTUNE_SENSOR_REF defaults to core.timer_sensor.
package main
