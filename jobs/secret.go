package jobs

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/attune-system/attune/packs"
)

// ErrNoSecretsKey is returned when a secret is needed and ATTUNE_SECRETS_KEY
// is unset.
var ErrNoSecretsKey = errors.New("ATTUNE_SECRETS_KEY is not set; set it to base64 of 32 random bytes (head -c32 /dev/urandom | base64) on every replica")

// ErrSecretUndecryptable is returned when a stored secret does not open
// under the configured key.
var ErrSecretUndecryptable = errors.New("secret cannot be decrypted with ATTUNE_SECRETS_KEY; it was stored under another key: give every replica the installation's key")

// Secret scopes, most specific last.
const (
	ScopeGlobal = "global"
	ScopePack   = "pack"
	ScopeAction = "action"
)

// SecretRef names one secret: global, or scoped to a pack or an action.
type SecretRef struct {
	Name     string `json:"name"`
	Scope    string `json:"scope"`
	ScopeRef string `json:"scope_ref"`
}

// NewSecretRef builds a ref from the CLI's flags: neither pack nor action is
// global; --pack P is pack scope; --action A (pack.name) is action scope.
// A secret scoped to a malformed ref could never reach an action (the
// worker looks them up by the action's pack ref and {pack}.{name} ref), so
// the refs are checked as packs checks them.
func NewSecretRef(name, pack, action string) (SecretRef, error) {
	if !packs.IsSecretName(name) {
		return SecretRef{}, fmt.Errorf("secret name %q is invalid: use letters, digits, _ . - (starting with a letter or _)", name)
	}
	switch {
	case pack != "" && action != "":
		return SecretRef{}, errors.New("give --pack or --action, not both: an action secret already belongs to its pack")
	case action != "" && !packs.IsFullRef(action):
		return SecretRef{}, fmt.Errorf("--action %q is not an action ref; give {pack}.{name}, such as examples.hello (attune action list)", action)
	case action != "":
		return SecretRef{Name: name, Scope: ScopeAction, ScopeRef: action}, nil
	case pack != "" && !packs.IsPackRef(pack):
		return SecretRef{}, fmt.Errorf("--pack %q is not a pack ref; give a lowercase ref without dots, such as examples (attune pack list)", pack)
	case pack != "":
		return SecretRef{Name: name, Scope: ScopePack, ScopeRef: pack}, nil
	}
	return SecretRef{Name: name, Scope: ScopeGlobal}, nil
}

// aad binds a ciphertext to its row, so one secret cannot be swapped for
// another in the table.
func (r SecretRef) aad() []byte { return []byte(r.Scope + "\x00" + r.ScopeRef + "\x00" + r.Name) }

func gcm(key []byte) (cipher.AEAD, error) {
	if len(key) == 0 {
		return nil, ErrNoSecretsKey
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("bad secrets key: %w", err)
	}
	return cipher.NewGCM(block)
}

// Beginner starts transactions: a pool, a connection, or a transaction
// (a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// SetSecret stores value under ref, encrypted with AES-256-GCM under key,
// which must be the installation's (CheckSecretsKey: a first key is
// recorded, another is refused with a *KeyMismatchError).
func SetSecret(ctx context.Context, db Beginner, key []byte, ref SecretRef, value []byte) error {
	aead, err := gcm(key)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("error making a nonce: %w", err)
	}
	ct := aead.Seal(nil, nonce, value, ref.aad())
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := CheckSecretsKey(ctx, tx, key); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO attune.secret (name, scope, scope_ref, nonce, ciphertext) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name, scope, scope_ref) DO UPDATE SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, updated = now()`,
			ref.Name, ref.Scope, ref.ScopeRef, nonce, ct)
		if err != nil {
			return fmt.Errorf("error storing secret %s: %w", ref.Name, err)
		}
		// Again once the row is written: a key rotation that committed
		// while it waited shows here, and the row goes with the transaction.
		return requireKey(ctx, tx, key)
	})
}

// DeleteSecret removes ref; it reports whether it existed.
func DeleteSecret(ctx context.Context, db Execer, ref SecretRef) (bool, error) {
	tag, err := db.Exec(ctx, "DELETE FROM attune.secret WHERE name = $1 AND scope = $2 AND scope_ref = $3", ref.Name, ref.Scope, ref.ScopeRef)
	if err != nil {
		return false, fmt.Errorf("error deleting secret %s: %w", ref.Name, err)
	}
	return tag.RowsAffected() > 0, nil
}

// SecretInfo describes a stored secret without its value.
type SecretInfo struct {
	SecretRef
	Updated time.Time `json:"updated"`
}

// ListSecrets lists stored secrets; values are never read.
func ListSecrets(ctx context.Context, db Querier) ([]SecretInfo, error) {
	rows, err := db.Query(ctx, "SELECT name, scope, scope_ref, updated FROM attune.secret ORDER BY scope, scope_ref, name")
	if err != nil {
		return nil, fmt.Errorf("error listing secrets: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SecretInfo, error) {
		var s SecretInfo
		err := r.Scan(&s.Name, &s.Scope, &s.ScopeRef, &s.Updated)
		return s, err
	})
}

// SealedSecret is a stored secret as read from the table.
type SealedSecret struct {
	SecretRef
	Nonce, Ciphertext []byte
}

// OpenSecrets decrypts the secrets that apply to one action and folds them
// by name, the most specific scope winning (action over pack over global).
func OpenSecrets(key []byte, sealed []SealedSecret) (map[string]string, error) {
	if len(sealed) == 0 {
		return map[string]string{}, nil
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	rank := map[string]int{ScopeGlobal: 0, ScopePack: 1, ScopeAction: 2}
	out := map[string]string{}
	best := map[string]int{}
	for _, s := range sealed {
		plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, s.aad())
		if err != nil {
			return nil, fmt.Errorf("%w (secret %s, %s scope; this key's fingerprint is %s)", ErrSecretUndecryptable, s.Name, s.Scope, KeyID(key))
		}
		if r, seen := best[s.Name]; seen && r > rank[s.Scope] {
			continue
		}
		best[s.Name] = rank[s.Scope]
		out[s.Name] = string(plain)
	}
	return out, nil
}

// Execer runs statements: a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}
