package packs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrUnknownPack is matched (errors.Is) by the error of [Remove] for a pack
// that is not registered.
var ErrUnknownPack = errors.New("unknown pack")

// ErrPackBusy is matched by the error of [Remove] while executions of the
// pack's actions are queued or running.
var ErrPackBusy = errors.New("pack has unfinished executions")

// Removed tells what [Remove] deleted.
type Removed struct {
	Pack                              string `json:"pack"`
	Actions, Sensors, Triggers, Rules int    `json:"-"`
}

// Remove deletes pack ref and its actions, sensors, triggers and rules
// inside the caller's transaction tx; executions and events stay as
// history, and the pack's secrets stay until `attune secret delete`. It
// refuses while executions of the pack's actions are unfinished: their
// workers would find no action. Running sensor supervisors drop the pack's
// sensors when tx commits ([RuleChannel]).
func Remove(ctx context.Context, tx pgx.Tx, ref string) (*Removed, error) {
	r := &Removed{Pack: ref}
	err := tx.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM attune.action WHERE pack_ref = p.ref),
		(SELECT count(*) FROM attune.sensor WHERE pack_ref = p.ref),
		(SELECT count(*) FROM attune.trigger WHERE pack_ref = p.ref),
		(SELECT count(*) FROM attune.rule WHERE pack_ref = p.ref)
		FROM attune.pack p WHERE p.ref = $1 FOR UPDATE`, ref).Scan(&r.Actions, &r.Sensors, &r.Triggers, &r.Rules)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w %q", ErrUnknownPack, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("error reading pack %s: %w", ref, err)
	}
	var busy int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
		WHERE a.pack_ref = $1 AND e.status NOT IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')`, ref).Scan(&busy); err != nil {
		return nil, fmt.Errorf("error counting the executions of pack %s: %w", ref, err)
	}
	if busy > 0 {
		return nil, fmt.Errorf("%w: %d execution(s) of pack %s are queued or running; cancel them or let them finish", ErrPackBusy, busy, ref)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM attune.sensor_state WHERE sensor_ref IN (SELECT ref FROM attune.sensor WHERE pack_ref = $1)`, ref); err != nil {
		return nil, fmt.Errorf("error removing the sensor states of pack %s: %w", ref, err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM attune.pack WHERE ref = $1", ref); err != nil { // the rest cascades
		return nil, fmt.Errorf("error removing pack %s: %w", ref, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", RuleChannel, ref); err != nil {
		return nil, fmt.Errorf("error notifying %s: %w", RuleChannel, err)
	}
	return r, nil
}
