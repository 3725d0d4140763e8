package packs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RuleChannel is the NOTIFY channel on which rule changes reach the sensor
// supervisors of every replica. The payload is the rule ref after
// [SetRuleEnabled], the pack ref after a registration; a supervisor re-reads
// all of its rules whatever it says.
const RuleChannel = "attune_rule_changed"

// ErrUnknownRule is matched (errors.Is) by the error of [SetRuleEnabled]
// for a rule that is not registered.
var ErrUnknownRule = errors.New("unknown rule")

// SetRuleEnabled enables or disables rule ref inside the caller's
// transaction tx and reports whether that changed it. A change is notified
// on [RuleChannel], so running sensor supervisors start or stop the rule's
// sensors as soon as tx commits; a rule already in that state is left alone
// and notifies nothing. The rule's row stays locked until tx ends, so two
// callers racing on one rule both see a consistent was-it-changed answer.
func SetRuleEnabled(ctx context.Context, tx pgx.Tx, ref string, enabled bool) (changed bool, err error) {
	var was bool
	err = tx.QueryRow(ctx, "SELECT enabled FROM attune.rule WHERE ref = $1 FOR UPDATE", ref).Scan(&was)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%w %q", ErrUnknownRule, ref)
	}
	if err != nil {
		return false, fmt.Errorf("error reading rule %s: %w", ref, err)
	}
	if was == enabled {
		return false, nil
	}
	if _, err := tx.Exec(ctx, "UPDATE attune.rule SET enabled = $2, updated = now() WHERE ref = $1", ref, enabled); err != nil {
		return false, fmt.Errorf("error updating rule %s: %w", ref, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", RuleChannel, ref); err != nil {
		return false, fmt.Errorf("error notifying %s: %w", RuleChannel, err)
	}
	return true, nil
}
