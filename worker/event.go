package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema"
)

// errBadEvent is wrapped by the errors of event lines that are skipped for
// what they say (not JSON, an undeclared trigger, a payload that is not an
// object), as opposed to a database failure.
var errBadEvent = errors.New("bad event line")

// sensorEvent is one event a sensor wrote on stdout (SPEC §7), decoded.
type sensorEvent struct {
	TriggerRef string
	// Payload is decoded with json.Number, so large integers keep their
	// digits in conditions and rendered parameters.
	Payload map[string]any
	// RuleID is trigger_instance_id: only this rule may fire; 0 for any.
	RuleID int64
}

// parseEvent decodes one stdout line of sensor ref, which serves
// triggerTypes. Its errors wrap errBadEvent.
func parseEvent(line []byte, ref string, triggerTypes []string) (sensorEvent, error) {
	var raw struct {
		TriggerRef        *string         `json:"trigger_ref"`
		Payload           json.RawMessage `json:"payload"`
		TriggerInstanceID json.RawMessage `json:"trigger_instance_id"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return sensorEvent{}, fmt.Errorf("%w: not a JSON object (%v); write one line of {\"trigger_ref\": ..., \"payload\": {...}} per event", errBadEvent, err)
	}
	if raw.TriggerRef == nil || *raw.TriggerRef == "" {
		return sensorEvent{}, fmt.Errorf("%w: trigger_ref is missing", errBadEvent)
	}
	ev := sensorEvent{TriggerRef: *raw.TriggerRef, Payload: map[string]any{}}
	if !slices.Contains(triggerTypes, ev.TriggerRef) {
		return sensorEvent{}, fmt.Errorf("%w: trigger %q is not one of sensor %s's trigger_types %v; declare it in the sensor's YAML",
			errBadEvent, ev.TriggerRef, ref, triggerTypes)
	}
	if p := bytes.TrimSpace(raw.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.UseNumber()
		if err := dec.Decode(&ev.Payload); err != nil {
			return sensorEvent{}, fmt.Errorf("%w: payload must be a JSON object, got %s", errBadEvent, truncate(string(p), 80))
		}
	}
	if id := bytes.TrimSpace(raw.TriggerInstanceID); len(id) > 0 && !bytes.Equal(id, []byte("null")) {
		// A rule id, as a number or a string of digits.
		n, err := strconv.ParseInt(strings.Trim(string(id), `"`), 10, 64)
		if err != nil || n < 0 {
			return sensorEvent{}, fmt.Errorf("%w: trigger_instance_id must be a rule id (the id in ATTUNE_SENSOR_TRIGGERS), got %s",
				errBadEvent, truncate(string(id), 80))
		}
		ev.RuleID = n
	}
	return ev, nil
}

// dispatched is what one event led to.
type dispatched struct {
	EventID    int64
	Executions []int64
	// Skipped lists the rules that matched the trigger but enqueued nothing,
	// with the reason.
	Skipped []string
}

// ruleOutcome is what one rule did with an event, stored in
// attune.event.rules.
type ruleOutcome struct {
	Rule        string `json:"rule"`
	ExecutionID int64  `json:"execution_id,omitempty"`
	Skipped     string `json:"skipped,omitempty"`
	NotMatched  bool   `json:"not_matched,omitempty"`
}

// firingRule is an enabled rule on an event's trigger, as read for firing.
type firingRule struct {
	ID           int64
	Ref          string
	ActionRef    string
	Conditions   []byte
	ActionParams []byte
}

// dispatchEvent stores ev in attune.event and, in the same transaction,
// enqueues the action of every enabled rule on its trigger (only rule
// ev.RuleID when set) whose conditions hold. A rule that cannot fire (its
// conditions cannot be evaluated, a template names a missing field, its
// action rejects the parameters) is logged and skipped; the event and the
// other rules still commit. jobs.EnqueueMany runs in a savepoint, so a
// rejected enqueue leaves the transaction usable.
func dispatchEvent(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, key []byte, sensorRef string, ev sensorEvent) (dispatched, error) {
	payload, err := json.Marshal(ev.Payload)
	if err != nil {
		return dispatched{}, fmt.Errorf("%w: payload cannot be stored: %v", errBadEvent, err)
	}
	var out dispatched
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		out = dispatched{}
		if err := tx.QueryRow(ctx, `INSERT INTO attune.event (trigger_ref, sensor_ref, payload) VALUES ($1, $2, $3) RETURNING id`,
			ev.TriggerRef, sensorRef, payload).Scan(&out.EventID); err != nil {
			return fmt.Errorf("error storing event: %w", err)
		}
		var only *int64
		if ev.RuleID != 0 {
			only = &ev.RuleID
		}
		rows, err := tx.Query(ctx, `SELECT id, ref, action_ref, conditions, action_params FROM attune.rule
			WHERE enabled AND trigger_ref = $1 AND ($2::bigint IS NULL OR id = $2) ORDER BY id`, ev.TriggerRef, only)
		if err != nil {
			return fmt.Errorf("error reading rules: %w", err)
		}
		rules, err := pgx.CollectRows(rows, pgx.RowToStructByPos[firingRule])
		if err != nil {
			return fmt.Errorf("error reading rules: %w", err)
		}
		if only != nil && len(rules) == 0 {
			log.Debug("event names a rule that is not enabled on its trigger; no rule fires",
				"sensor", sensorRef, "event_id", out.EventID, "trigger", ev.TriggerRef, "trigger_instance_id", ev.RuleID)
		}
		out, err = fireRules(ctx, tx, log, key, rules, out.EventID, ev, "sensor", sensorRef)
		return err
	})
	if err != nil {
		return dispatched{}, err
	}
	log.Debug("event", "sensor", sensorRef, "event_id", out.EventID, "trigger", ev.TriggerRef,
		"executions", out.Executions, "skipped", len(out.Skipped))
	return out, nil
}

// eventRetryFor bounds how long an event is retried while the database is
// unreachable; meanwhile the sensor's stdout is not read, which slows it
// down rather than losing its events.
const eventRetryFor = time.Minute

// dispatchEventRetrying is dispatchEvent, retried while the failure is
// transient (schema.Transient): the whole transaction runs again, so the
// event is stored once.
func dispatchEventRetrying(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, key []byte, sensorRef string, ev sensorEvent) (dispatched, error) {
	var d dispatched
	err := schema.Retry(ctx, schema.RetryPolicy{
		GiveUpAfter: eventRetryFor, Log: log, What: "event",
		LogArgs: []any{"sensor", sensorRef, "trigger", ev.TriggerRef},
	}, func() (err error) {
		d, err = dispatchEvent(ctx, pool, log, key, sensorRef, ev)
		return err
	})
	return d, err
}

// fireRule enqueues r's action for the event when r's conditions hold. It
// returns the execution id (0 when the conditions do not hold), or why r
// was skipped, or an error that must abort the event's transaction.
func fireRule(ctx context.Context, tx pgx.Tx, key []byte, r firingRule, eventID int64, ev sensorEvent) (id int64, why string, err error) {
	rule := packs.Rule{Ref: r.Ref}
	if err := json.Unmarshal(r.Conditions, &rule.Conditions); err != nil {
		return 0, fmt.Sprintf("conditions are not a list of {field, operator, value}: %v; register its pack again", err), nil
	}
	dec := json.NewDecoder(bytes.NewReader(r.ActionParams))
	dec.UseNumber()
	if err := dec.Decode(&rule.ActionParams); err != nil {
		return 0, fmt.Sprintf("action_params are not a JSON object: %v; register its pack again", err), nil
	}
	ok, err := rule.Match(ev.Payload)
	if err != nil {
		return 0, fmt.Sprintf("conditions cannot be evaluated: %v", err), nil
	}
	if !ok {
		return 0, "", nil
	}
	params, err := packs.RenderParams(rule.ActionParams, packs.TemplateContext(eventID, ev.TriggerRef, ev.Payload, r.Ref))
	if err != nil {
		return 0, fmt.Sprintf("action_params cannot be rendered: %v", err), nil
	}
	id, err = jobs.EnqueueForRule(ctx, tx, r.Ref, eventID, r.ActionRef, params, key)
	if err != nil {
		var jerr *jobs.Error
		if errors.As(err, &jerr) {
			return 0, fmt.Sprintf("action %s rejected the parameters: %v", r.ActionRef, err), nil
		}
		return 0, "", fmt.Errorf("error enqueueing rule %s: %w", r.Ref, err)
	}
	return id, "", nil
}

// truncate shortens s to at most n bytes for a log line, on a rune
// boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
