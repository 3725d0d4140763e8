package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The registered catalog (what attune pack register loaded) and the
// replicas, as the API and the CLI read them.

// ErrUnknownRef is wrapped by the errors for an action or rule ref that is
// not registered.
var ErrUnknownRef = errors.New("not registered")

// Action is one row of attune.action.
type Action struct {
	Ref               string          `json:"ref"`
	PackRef           string          `json:"pack_ref"`
	Name              string          `json:"name"`
	Label             string          `json:"label"`
	Description       string          `json:"description"`
	Enabled           bool            `json:"enabled"`
	RunnerType        string          `json:"runner_type"`
	EntryPoint        string          `json:"entry_point"`
	Parameters        json.RawMessage `json:"parameters"`
	ResultSchema      json.RawMessage `json:"result_schema"`
	TimeoutSeconds    *int            `json:"timeout_seconds"`
	ParameterDelivery string          `json:"parameter_delivery"`
	ParameterFormat   string          `json:"parameter_format"`
	OutputFormat      string          `json:"output_format"`
	MaxRetries        int             `json:"max_retries"`
	Tags              []string        `json:"tags"`
	Updated           time.Time       `json:"updated"`
}

const actionColumns = `ref, pack_ref, name, label, description, enabled, runner_type, entry_point,
	parameters, result_schema, timeout_seconds, parameter_delivery, parameter_format, output_format,
	max_retries, tags, updated`

// ListActions lists actions by ref, only pack's when pack is not empty.
func ListActions(ctx context.Context, db Querier, pack string) ([]Action, error) {
	rows, err := db.Query(ctx, "SELECT "+actionColumns+" FROM attune.action WHERE $1 = '' OR pack_ref = $1 ORDER BY ref", pack)
	if err != nil {
		return nil, fmt.Errorf("error listing actions: %w", err)
	}
	return collect[Action](rows, "actions")
}

// GetAction reads one action; an unknown ref wraps ErrUnknownRef.
func GetAction(ctx context.Context, db Querier, ref string) (*Action, error) {
	rows, err := db.Query(ctx, "SELECT "+actionColumns+" FROM attune.action WHERE ref = $1", ref)
	if err != nil {
		return nil, fmt.Errorf("error reading action %s: %w", ref, err)
	}
	list, err := collect[Action](rows, "actions")
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("action %q is %w (attune action list shows the registered ones)", ref, ErrUnknownRef)
	}
	return &list[0], nil
}

// Rule is one row of attune.rule.
type Rule struct {
	ID            int64           `json:"id"`
	Ref           string          `json:"ref"`
	PackRef       string          `json:"pack_ref"`
	Description   string          `json:"description"`
	Enabled       bool            `json:"enabled"`
	TriggerRef    string          `json:"trigger_ref"`
	TriggerParams json.RawMessage `json:"trigger_params"`
	Conditions    json.RawMessage `json:"conditions"`
	ActionRef     string          `json:"action_ref"`
	ActionParams  json.RawMessage `json:"action_params"`
	Updated       time.Time       `json:"updated"`
}

const ruleColumns = `id, ref, pack_ref, description, enabled, trigger_ref, trigger_params, conditions,
	action_ref, action_params, updated`

// ListRules lists rules by ref.
func ListRules(ctx context.Context, db Querier) ([]Rule, error) {
	rows, err := db.Query(ctx, "SELECT "+ruleColumns+" FROM attune.rule ORDER BY ref")
	if err != nil {
		return nil, fmt.Errorf("error listing rules: %w", err)
	}
	return collect[Rule](rows, "rules")
}

// GetRule reads one rule; an unknown ref wraps ErrUnknownRef.
func GetRule(ctx context.Context, db Querier, ref string) (*Rule, error) {
	rows, err := db.Query(ctx, "SELECT "+ruleColumns+" FROM attune.rule WHERE ref = $1", ref)
	if err != nil {
		return nil, fmt.Errorf("error reading rule %s: %w", ref, err)
	}
	list, err := collect[Rule](rows, "rules")
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("rule %q is %w (attune rule list shows the registered ones)", ref, ErrUnknownRef)
	}
	return &list[0], nil
}

// Sensor is one row of attune.sensor with the replica running it.
type Sensor struct {
	Ref          string    `json:"ref"`
	PackRef      string    `json:"pack_ref"`
	Description  string    `json:"description"`
	Enabled      bool      `json:"enabled"`
	RunnerType   string    `json:"runner_type"`
	EntryPoint   string    `json:"entry_point"`
	TriggerTypes []string  `json:"trigger_types"`
	Status       string    `json:"status"` // from attune.sensor_state; stopped when no replica runs it
	Worker       *string   `json:"worker"`
	Restarts     int       `json:"restarts"`
	LastError    *string   `json:"last_error"`
	Updated      time.Time `json:"updated"`
}

// ListSensors lists sensors by ref.
func ListSensors(ctx context.Context, db Querier) ([]Sensor, error) {
	rows, err := db.Query(ctx, `SELECT s.ref, s.pack_ref, s.description, s.enabled, s.runner_type, s.entry_point,
			s.trigger_types, coalesce(st.status, 'stopped'), st.worker, coalesce(st.restarts, 0), st.last_error, s.updated
		FROM attune.sensor s LEFT JOIN attune.sensor_state st ON st.sensor_ref = s.ref ORDER BY s.ref`)
	if err != nil {
		return nil, fmt.Errorf("error listing sensors: %w", err)
	}
	return collect[Sensor](rows, "sensors")
}

// Trigger is one row of attune.trigger.
type Trigger struct {
	Ref           string          `json:"ref"`
	PackRef       string          `json:"pack_ref"`
	Description   string          `json:"description"`
	Parameters    json.RawMessage `json:"parameters"`
	PayloadSchema json.RawMessage `json:"payload_schema"`
}

// ListTriggers lists triggers by ref.
func ListTriggers(ctx context.Context, db Querier) ([]Trigger, error) {
	rows, err := db.Query(ctx, "SELECT ref, pack_ref, description, parameters, payload_schema FROM attune.trigger ORDER BY ref")
	if err != nil {
		return nil, fmt.Errorf("error listing triggers: %w", err)
	}
	return collect[Trigger](rows, "triggers")
}

// Event is one row of attune.event.
type Event struct {
	ID         int64           `json:"id"`
	TriggerRef string          `json:"trigger_ref"`
	SensorRef  *string         `json:"sensor_ref"`
	Payload    json.RawMessage `json:"payload"`
	// Rules is what each enabled rule on the trigger did with the event:
	// {rule, execution_id} | {rule, skipped} | {rule, not_matched}.
	Rules     json.RawMessage `json:"rules"`
	CreatedAt time.Time       `json:"created_at"`
}

// ListEvents lists events newest first: at most limit, with ids below
// before when before > 0, of trigger when it is not empty.
func ListEvents(ctx context.Context, db Querier, trigger string, before int64, limit int) ([]Event, error) {
	rows, err := db.Query(ctx, `SELECT id, trigger_ref, sensor_ref, payload, rules, created_at FROM attune.event
		WHERE ($1 = '' OR trigger_ref = $1) AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3`, trigger, before, limit)
	if err != nil {
		return nil, fmt.Errorf("error listing events: %w", err)
	}
	return collect[Event](rows, "events")
}

// Worker is one row of attune.worker with its heartbeat age and how many
// executions it runs.
type Worker struct {
	Name                string          `json:"name"`
	Hostname            string          `json:"hostname"`
	Pid                 int             `json:"pid"`
	Status              string          `json:"status"`
	Capabilities        json.RawMessage `json:"capabilities"`
	StartedAt           time.Time       `json:"started_at"`
	HeartbeatAt         time.Time       `json:"heartbeat_at"`
	HeartbeatAgeSeconds float64         `json:"heartbeat_age_seconds"`
	Running             int             `json:"running"`
}

// ListWorkers lists workers, active ones first: all of them, or (all false)
// the active ones and those inactive for less than a day, since every serve
// run leaves a row.
func ListWorkers(ctx context.Context, db Querier, all bool) ([]Worker, error) {
	rows, err := db.Query(ctx, `SELECT w.name, w.hostname, w.pid, w.status, w.capabilities, w.started_at, w.heartbeat_at,
			extract(epoch FROM now() - w.heartbeat_at)::float8,
			(SELECT count(*) FROM attune.execution e WHERE e.worker = w.name AND e.status IN ('running', 'canceling'))::int
		FROM attune.worker w
		WHERE $1 OR w.status = 'active' OR w.heartbeat_at > now() - interval '24 hours'
		ORDER BY w.status, w.name`, all)
	if err != nil {
		return nil, fmt.Errorf("error listing workers: %w", err)
	}
	return collect[Worker](rows, "workers")
}

// collect scans rows by position into a never-nil slice (JSON [] for none).
func collect[T any](rows pgx.Rows, what string) ([]T, error) {
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[T])
	if err != nil {
		return nil, fmt.Errorf("error reading %s: %w", what, err)
	}
	if list == nil {
		list = []T{}
	}
	return list, nil
}
