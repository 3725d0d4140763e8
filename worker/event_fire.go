package worker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
)

// fireRules fires rules for event eventID inside tx, as sensor events and
// webhooks both do, and records in attune.event.rules what each rule did.
// logArgs name the event's source for the log ("sensor", ref or "webhook",
// path).
func fireRules(ctx context.Context, tx pgx.Tx, log *slog.Logger, key []byte, rules []firingRule, eventID int64, ev sensorEvent, logArgs ...any) (dispatched, error) {
	out := dispatched{EventID: eventID}
	outcomes := []ruleOutcome{}
	for _, r := range rules {
		id, why, err := fireRule(ctx, tx, key, r, eventID, ev)
		switch {
		case err != nil:
			return out, err
		case why != "":
			out.Skipped = append(out.Skipped, r.Ref+": "+why)
			outcomes = append(outcomes, ruleOutcome{Rule: r.Ref, Skipped: why})
			log.Warn("rule skipped", append([]any{"rule", r.Ref, "action", r.ActionRef, "event_id", eventID,
				"trigger", ev.TriggerRef, "reason", why}, logArgs...)...)
		case id != 0:
			out.Executions = append(out.Executions, id)
			outcomes = append(outcomes, ruleOutcome{Rule: r.Ref, ExecutionID: id})
		default:
			outcomes = append(outcomes, ruleOutcome{Rule: r.Ref, NotMatched: true})
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE attune.event SET rules = $2 WHERE id = $1", eventID, outcomes); err != nil {
		return out, fmt.Errorf("error storing what the event's rules did: %w", err)
	}
	return out, nil
}
