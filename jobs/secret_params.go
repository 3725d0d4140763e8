package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Secret parameters wait in attune.execution_secret until their execution
// ends. Enqueued with a key (Options.SecretsKey) they are sealed there with
// the secret store's envelope, AES-256-GCM under ATTUNE_SECRETS_KEY, and the
// row holds a JSON array no parameters object can be taken for:
//
//	["aes-256-gcm", KEY_ID, NONCE, CIPHERTEXT]   (nonce and ciphertext in base64)
//
// SQL's attune.enqueue runs inside PostgreSQL, which never has the key: its
// rows hold the parameters object in clear.

// sealAlgorithm names the envelope in a sealed row.
const sealAlgorithm = "aes-256-gcm"

// paramsAAD binds a sealed row to its execution, so that one execution's
// secret parameters cannot be moved to another.
func paramsAAD(executionID int64) []byte {
	return []byte("execution_secret\x00" + strconv.FormatInt(executionID, 10))
}

// sealParameters seals the secret parameters object plain of one execution.
func sealParameters(key []byte, executionID int64, plain []byte) ([]byte, error) {
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("error making a nonce: %w", err)
	}
	ct := aead.Seal(nil, nonce, plain, paramsAAD(executionID))
	return json.Marshal([]any{sealAlgorithm, KeyID(key), nonce, ct}) // []byte as base64
}

// Sealed reports whether stored, a row of attune.execution_secret, is sealed.
func Sealed(stored []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(stored), []byte("["))
}

// OpenParameters returns the secret parameters object of execution
// executionID from its attune.execution_secret row: opened with key when
// sealed, as it is when in clear.
func OpenParameters(key []byte, executionID int64, stored []byte) ([]byte, error) {
	if !Sealed(stored) {
		return stored, nil
	}
	var env []json.RawMessage
	if err := json.Unmarshal(stored, &env); err != nil || len(env) != 4 {
		return nil, fmt.Errorf("secret parameters of execution %d are not a sealed envelope", executionID)
	}
	var alg, keyID string
	var nonce, ct []byte
	for i, dst := range []any{&alg, &keyID, &nonce, &ct} {
		if err := json.Unmarshal(env[i], dst); err != nil {
			return nil, fmt.Errorf("secret parameters of execution %d are not a sealed envelope", executionID)
		}
	}
	if alg != sealAlgorithm {
		return nil, fmt.Errorf("secret parameters of execution %d are sealed with %q; this attune knows only %s", executionID, alg, sealAlgorithm)
	}
	if key == nil {
		return nil, fmt.Errorf("secret parameters of execution %d are sealed under key %s, but %w", executionID, keyID, ErrNoSecretsKey)
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, nonce, ct, paramsAAD(executionID))
	if err != nil {
		return nil, fmt.Errorf("secret parameters of execution %d are sealed under key %s; this replica's ATTUNE_SECRETS_KEY is %s: %w",
			executionID, keyID, KeyID(key), errSealedElsewhere)
	}
	return plain, nil
}

var errSealedElsewhere = errors.New("give every replica the installation's key")

// sealFor seals the secret parameters of one prepared request when its
// options carry a key; the caller has checked the key (requireKey).
func sealFor(key []byte, p *prepared) error {
	if key == nil || len(p.Secret) == 0 || bytes.Equal(bytes.TrimSpace(p.Secret), []byte("{}")) {
		return nil
	}
	sealed, err := sealParameters(key, p.ExecutionID, p.Secret)
	if err != nil {
		return fmt.Errorf("error sealing secret parameters: %w", err)
	}
	p.Sealed = sealed
	return nil
}

// requireKey checks that key is the installation's recorded key before
// anything is sealed under it: parameters sealed under a key the replicas
// lack would fail when they run. Unlike CheckSecretsKey it never records
// a key: an application that enqueues needs no more than SELECT on
// attune.secrets_key.
func requireKey(ctx context.Context, db Querier, key []byte) error {
	want, err := recordedKeyID(ctx, db)
	if err != nil {
		return err
	}
	if want == "" {
		return fmt.Errorf("ATTUNE_SECRETS_KEY (fingerprint %s) cannot seal secret parameters: %w", KeyID(key), ErrKeyNotRecorded)
	}
	if have := KeyID(key); have != want {
		return &KeyMismatchError{Have: have, Want: want}
	}
	return nil
}
