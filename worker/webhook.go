package worker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
)

var (
	// ErrNoWebhook is returned for a path no enabled core.webhook rule
	// listens on.
	ErrNoWebhook = errors.New("no enabled core.webhook rule listens on this path")
	// ErrBadSignature is returned when a rule on the path names a secret and
	// the request's X-Hub-Signature-256 is missing or does not match.
	ErrBadSignature = errors.New("X-Hub-Signature-256 is missing or does not match the body")
	// ErrWebhookSecret is returned when a rule's secret cannot be read (not
	// in the store, or no ATTUNE_SECRETS_KEY): the request is refused, not
	// let through unsigned.
	ErrWebhookSecret = errors.New("webhook secret unavailable")
)

// SignatureHeader is the header GitHub signs webhooks with.
const SignatureHeader = "X-Hub-Signature-256"

// Webhook is one request to POST /webhooks/{path}, ready to become an event.
type Webhook struct {
	Path      string
	Body      []byte
	Signature string // the X-Hub-Signature-256 value, "sha256=<hex>"
	Payload   map[string]any
}

// WebhookResult is what a webhook led to.
type WebhookResult struct {
	EventID    int64    `json:"event_id"`
	Executions []int64  `json:"executions"`
	Skipped    []string `json:"skipped,omitempty"`
}

// webhookRule is an enabled core.webhook rule on a path.
type webhookRule struct {
	firingRule
	PackRef string
	Secret  string
}

// DispatchWebhook checks the signature of w against the secret of every
// enabled core.webhook rule on w.Path, then stores the event and fires those
// rules in one transaction, as sensor events do. Nothing is stored unless
// every rule's secret accepts the signature. key decrypts the secret store.
func DispatchWebhook(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, key []byte, w Webhook) (WebhookResult, error) {
	payload, err := json.Marshal(w.Payload)
	if err != nil {
		return WebhookResult{}, fmt.Errorf("error encoding the webhook payload: %w", err)
	}
	ev := sensorEvent{TriggerRef: packs.WebhookTrigger, Payload: w.Payload}
	out := WebhookResult{Executions: []int64{}}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		out = WebhookResult{Executions: []int64{}}
		rows, err := tx.Query(ctx, `SELECT id, ref, action_ref, conditions, action_params, pack_ref,
				coalesce(trigger_params->>'secret', '')
			FROM attune.rule WHERE enabled AND trigger_ref = $1 AND trigger_params->>'path' = $2 ORDER BY id`,
			packs.WebhookTrigger, w.Path)
		if err != nil {
			return fmt.Errorf("error reading webhook rules: %w", err)
		}
		rules, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (webhookRule, error) {
			var r webhookRule
			err := row.Scan(&r.ID, &r.Ref, &r.ActionRef, &r.Conditions, &r.ActionParams, &r.PackRef, &r.Secret)
			return r, err
		})
		if err != nil {
			return fmt.Errorf("error reading webhook rules: %w", err)
		}
		if len(rules) == 0 {
			return ErrNoWebhook
		}
		for _, r := range rules {
			if r.Secret == "" {
				continue
			}
			secret, err := webhookSecret(ctx, tx, key, r)
			if err != nil {
				log.Error("webhook refused: its secret cannot be read", "path", w.Path, "rule", r.Ref, "secret", r.Secret, "err", err)
				return fmt.Errorf("%w: rule %s: %w", ErrWebhookSecret, r.Ref, err)
			}
			if !ValidSignature(secret, w.Body, w.Signature) {
				return ErrBadSignature
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO attune.event (trigger_ref, payload) VALUES ($1, $2) RETURNING id`,
			packs.WebhookTrigger, payload).Scan(&out.EventID); err != nil {
			return fmt.Errorf("error storing event: %w", err)
		}
		firing := make([]firingRule, len(rules))
		for i, r := range rules {
			firing[i] = r.firingRule
		}
		d, err := fireRules(ctx, tx, log, key, firing, out.EventID, ev, "webhook", w.Path)
		out.Executions, out.Skipped = d.Executions, d.Skipped
		if out.Executions == nil {
			out.Executions = []int64{}
		}
		return err
	})
	if err != nil {
		return WebhookResult{}, err
	}
	return out, nil
}

// webhookSecret reads a rule's secret: the rule's pack scope over global.
func webhookSecret(ctx context.Context, tx pgx.Tx, key []byte, r webhookRule) ([]byte, error) {
	rows, err := tx.Query(ctx, `SELECT name, scope, scope_ref, nonce, ciphertext FROM attune.secret
		WHERE name = $1 AND (scope = 'global' OR (scope = 'pack' AND scope_ref = $2))`, r.Secret, r.PackRef)
	if err != nil {
		return nil, err
	}
	sealed, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (jobs.SealedSecret, error) {
		var s jobs.SealedSecret
		err := row.Scan(&s.Name, &s.Scope, &s.ScopeRef, &s.Nonce, &s.Ciphertext)
		return s, err
	})
	if err != nil {
		return nil, err
	}
	if len(sealed) == 0 {
		return nil, fmt.Errorf("secret %s is not in the secret store; attune secret set %s (global or --pack %s)", r.Secret, r.Secret, r.PackRef)
	}
	if key == nil {
		return nil, jobs.ErrNoSecretsKey
	}
	open, err := jobs.OpenSecrets(key, sealed)
	if err != nil {
		return nil, err
	}
	return []byte(open[r.Secret]), nil
}

// ValidSignature reports whether header is "sha256=" and the hex HMAC-SHA256
// of body under secret, compared in constant time.
func ValidSignature(secret, body []byte, header string) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// Sign returns the X-Hub-Signature-256 value for body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
