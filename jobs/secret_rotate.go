package jobs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Rotated is what RotateSecretsKey re-encrypted.
type Rotated struct {
	Secrets    int    `json:"secrets"`    // rows of attune.secret
	Parameters int    `json:"parameters"` // sealed rows of attune.execution_secret
	OldKeyID   string `json:"old_key_id"`
	NewKeyID   string `json:"new_key_id"`
}

// RotateSecretsKey re-encrypts every stored secret and every sealed secret
// parameter from oldKey, the installation's key, to newKey, and records
// newKey's fingerprint, all in one transaction: either everything is under
// the new key or nothing changed. It locks the three tables against
// writers meanwhile; replicas still running with the old key fail the
// executions that need a secret until they restart with the new one.
func RotateSecretsKey(ctx context.Context, db Beginner, oldKey, newKey []byte) (Rotated, error) {
	r := Rotated{OldKeyID: KeyID(oldKey), NewKeyID: KeyID(newKey)}
	oldAEAD, err := gcm(oldKey)
	if err != nil {
		return r, err
	}
	newAEAD, err := gcm(newKey)
	if err != nil {
		return r, err
	}
	if r.OldKeyID == r.NewKeyID {
		return r, errors.New("ATTUNE_NEW_SECRETS_KEY is the same key as ATTUNE_SECRETS_KEY: give it a new one (head -c32 /dev/urandom | base64)")
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE attune.secrets_key, attune.secret, attune.execution_secret IN EXCLUSIVE MODE"); err != nil {
			return fmt.Errorf("error locking the secret tables: %w", err)
		}
		if err := CheckSecretsKey(ctx, tx, oldKey); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT name, scope, scope_ref, nonce, ciphertext FROM attune.secret")
		if err != nil {
			return fmt.Errorf("error reading secrets: %w", err)
		}
		secrets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SealedSecret, error) {
			var s SealedSecret
			err := row.Scan(&s.Name, &s.Scope, &s.ScopeRef, &s.Nonce, &s.Ciphertext)
			return s, err
		})
		if err != nil {
			return fmt.Errorf("error reading secrets: %w", err)
		}
		for _, s := range secrets {
			plain, err := oldAEAD.Open(nil, s.Nonce, s.Ciphertext, s.aad())
			if err != nil {
				return fmt.Errorf("%w (secret %s, %s scope%s); nothing was changed", ErrSecretUndecryptable, s.Name, s.Scope, refSuffix(s.ScopeRef))
			}
			nonce := make([]byte, newAEAD.NonceSize())
			if _, err := rand.Read(nonce); err != nil {
				return fmt.Errorf("error making a nonce: %w", err)
			}
			_, err = tx.Exec(ctx, "UPDATE attune.secret SET nonce = $4, ciphertext = $5 WHERE name = $1 AND scope = $2 AND scope_ref = $3",
				s.Name, s.Scope, s.ScopeRef, nonce, newAEAD.Seal(nil, nonce, plain, s.aad()))
			if err != nil {
				return fmt.Errorf("error re-encrypting secret %s: %w", s.Name, err)
			}
			r.Secrets++
		}

		rows, err = tx.Query(ctx, "SELECT execution_id, parameters FROM attune.execution_secret WHERE jsonb_typeof(parameters) = 'array'")
		if err != nil {
			return fmt.Errorf("error reading secret parameters: %w", err)
		}
		type sealedRow struct {
			id     int64
			stored []byte
		}
		params, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (sealedRow, error) {
			var p sealedRow
			err := row.Scan(&p.id, &p.stored)
			return p, err
		})
		if err != nil {
			return fmt.Errorf("error reading secret parameters: %w", err)
		}
		for _, p := range params {
			plain, err := OpenParameters(oldKey, p.id, p.stored)
			if err != nil {
				return fmt.Errorf("%w; nothing was changed", err)
			}
			sealed, err := sealParameters(newKey, p.id, plain)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE attune.execution_secret SET parameters = $2 WHERE execution_id = $1", p.id, sealed); err != nil {
				return fmt.Errorf("error re-encrypting the secret parameters of execution %d: %w", p.id, err)
			}
			r.Parameters++
		}
		_, err = tx.Exec(ctx, `INSERT INTO attune.secrets_key (key_id) VALUES ($1)
			ON CONFLICT (singleton) DO UPDATE SET key_id = EXCLUDED.key_id, recorded_at = now()`, r.NewKeyID)
		if err != nil {
			return fmt.Errorf("error recording the new key's fingerprint: %w", err)
		}
		return nil
	})
	return r, err
}

func refSuffix(ref string) string {
	if ref == "" {
		return ""
	}
	return " for " + ref
}
