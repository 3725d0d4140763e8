package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// One key per installation: the fingerprint of ATTUNE_SECRETS_KEY is
// recorded in attune.secrets_key by the first replica or command that uses
// a key, and every later one must bring the same key. Without this a
// replica with another key fails every execution that needs a secret, and
// its `secret set` would leave the store half under one key, half under
// another.

// KeyID is a short, non-secret fingerprint of a secrets key: what the
// database records and what messages name. The key is 32 random bytes, so
// 48 bits of its digest tell keys apart without telling anything of them.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return base64.RawURLEncoding.EncodeToString(sum[:6])
}

// KeyMismatchError is a secrets key that is not this installation's.
type KeyMismatchError struct {
	Have string // fingerprint of the key given
	// Want is the recorded fingerprint; "" when none is recorded yet and
	// the key does not open the secrets already stored.
	Want string
}

func (e *KeyMismatchError) Error() string {
	if e.Want == "" {
		return fmt.Sprintf("ATTUNE_SECRETS_KEY (fingerprint %s) does not open the secrets stored in this database: they were written under another key; set that key instead", e.Have)
	}
	return fmt.Sprintf("ATTUNE_SECRETS_KEY has fingerprint %s, but this installation's secrets are under key %s: give every replica and command the same key (attune secret rotate-key changes it)", e.Have, e.Want)
}

// MissingKeyError is a replica without a secrets key in an installation
// that stores secrets it would have to open.
type MissingKeyError struct {
	Secrets int    // stored secrets and sealed secret parameters
	Want    string // recorded fingerprint, "" when none is recorded
}

func (e *MissingKeyError) Error() string {
	under := "a key"
	if e.Want != "" {
		under = "key " + e.Want
	}
	noun := "secrets"
	if e.Secrets == 1 {
		noun = "secret"
	}
	return fmt.Sprintf("ATTUNE_SECRETS_KEY is not set, but this installation stores %d %s under %s: set that key on this replica", e.Secrets, noun, under)
}

// ErrKeyNotRecorded is returned when secret parameters would be sealed
// under a key no replica has used yet: none might be able to open them.
var ErrKeyNotRecorded = errors.New("no secrets key is recorded for this installation yet: start attune serve (or run attune secret set) with ATTUNE_SECRETS_KEY first, so that replicas can open what is sealed")

// DB runs statements and queries: a pool, a connection or a transaction.
type DB interface {
	Execer
	Querier
}

// recordedKeyID is the installation's key fingerprint, "" when none is
// recorded yet.
func recordedKeyID(ctx context.Context, db Querier) (string, error) {
	var id string
	err := db.QueryRow(ctx, "SELECT key_id FROM attune.secrets_key").Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("error reading the secrets key fingerprint: %w", err)
	}
	return id, nil
}

// CheckSecretsKey checks that key (ATTUNE_SECRETS_KEY decoded, nil when
// unset) is this installation's: the same as the recorded fingerprint, or,
// when none is recorded yet, a key that opens what is already stored, whose
// fingerprint it then records. Without a key it fails only while secrets are
// stored. The errors are *KeyMismatchError and *MissingKeyError.
func CheckSecretsKey(ctx context.Context, db DB, key []byte) error {
	want, err := recordedKeyID(ctx, db)
	if err != nil {
		return err
	}
	if key == nil {
		var n int
		err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM attune.secret)
			+ (SELECT count(*) FROM attune.execution_secret WHERE jsonb_typeof(parameters) = 'array')`).Scan(&n)
		if err != nil {
			return fmt.Errorf("error counting stored secrets: %w", err)
		}
		if n > 0 {
			return &MissingKeyError{Secrets: n, Want: want}
		}
		return nil
	}
	have := KeyID(key)
	if want != "" {
		if want != have {
			return &KeyMismatchError{Have: have, Want: want}
		}
		return nil
	}
	if err := opensStored(ctx, db, key); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, "INSERT INTO attune.secrets_key (key_id) VALUES ($1) ON CONFLICT DO NOTHING", have); err != nil {
		return fmt.Errorf("error recording the secrets key fingerprint: %w", err)
	}
	// Another replica may have recorded its key meanwhile.
	if want, err = recordedKeyID(ctx, db); err != nil {
		return err
	}
	if want != have {
		return &KeyMismatchError{Have: have, Want: want}
	}
	return nil
}

// opensStored checks that key opens one stored secret and one sealed
// secret parameter, if there are any: an installation from before the
// fingerprint was recorded must not record the wrong key.
func opensStored(ctx context.Context, db Querier, key []byte) error {
	aead, err := gcm(key)
	if err != nil {
		return err
	}
	var s SealedSecret
	err = db.QueryRow(ctx, "SELECT name, scope, scope_ref, nonce, ciphertext FROM attune.secret LIMIT 1").
		Scan(&s.Name, &s.Scope, &s.ScopeRef, &s.Nonce, &s.Ciphertext)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("error reading a stored secret: %w", err)
	default:
		if _, err := aead.Open(nil, s.Nonce, s.Ciphertext, s.aad()); err != nil {
			return &KeyMismatchError{Have: KeyID(key)}
		}
	}
	var id int64
	var stored []byte
	err = db.QueryRow(ctx, "SELECT execution_id, parameters FROM attune.execution_secret WHERE jsonb_typeof(parameters) = 'array' LIMIT 1").
		Scan(&id, &stored)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("error reading sealed secret parameters: %w", err)
	default:
		if _, err := OpenParameters(key, id, stored); err != nil {
			return &KeyMismatchError{Have: KeyID(key)}
		}
	}
	return nil
}
