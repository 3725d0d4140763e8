package jobs_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// TestSecretParameter: a parameter declared secret is masked in
// attune.execution.parameters, kept in attune.execution_secret only until
// the execution finishes, never in River's args, and reaches the action on
// stdin, not in its environment.
func TestSecretParameter(t *testing.T) {
	t.Parallel()
	b := setup(t)

	sqlID, err := sqlEnqueue(b.ctx, b.pool, "t.secret", `{"user": "bob", "password": "hunter2"}`, `{}`)
	require.NoError(t, err)
	var goID int64
	require.NoError(t, pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) (err error) {
		goID, err = jobs.Enqueue(b.ctx, tx, "t.secret", map[string]any{"user": "bob", "password": "hunter2"}, nil)
		return err
	}))
	// Cancelled while queued: its secret goes at once.
	cancelled, err := sqlEnqueue(b.ctx, b.pool, "t.secret", `{"user": "eve", "password": "hunter2"}`, `{}`)
	require.NoError(t, err)
	_, err = jobs.Cancel(b.ctx, b.pool, cancelled)
	require.NoError(t, err)

	for _, id := range []int64{sqlID, goID} {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.JSONEq(t, `{"user": "bob", "password": "********"}`, string(e.Parameters))
		var secret []byte
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT parameters FROM attune.execution_secret WHERE execution_id = $1", id).Scan(&secret))
		require.JSONEq(t, `{"password": "hunter2"}`, string(secret))
	}
	require.Equal(t, 2, count(t, b.pool, "attune.execution_secret"))
	requireNowhere(t, b.pool, "hunter2", "attune.river_job", "attune.execution")

	run(t, b.startWorker(t, "w1"))
	for _, id := range []int64{sqlID, goID} {
		e := waitStatus(t, b.pool, id, 10*time.Second, jobs.StatusCompleted, jobs.StatusFailed)
		require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
		var res struct {
			Stdin       map[string]string `json:"stdin"`
			StdinRot13  map[string]string `json:"stdin_rot13"`
			User        string            `json:"user"`
			SecretInEnv bool              `json:"secret_in_env"`
		}
		require.NoError(t, json.Unmarshal(e.Result, &res))
		require.Equal(t, map[string]string{"password": "********"}, res.Stdin, "masked in the stored result")
		require.Equal(t, map[string]string{"cnffjbeq": rot13("hunter2")}, res.StdinRot13)
		require.Equal(t, "bob", res.User)
		require.False(t, res.SecretInEnv)
		require.JSONEq(t, `{"user": "bob", "password": "********"}`, string(e.Parameters))
	}
	require.Zero(t, count(t, b.pool, "attune.execution_secret"), "secrets are deleted once executions finish")
}

// TestSecretParameterNotInErrors: a rejected secret value is not echoed in
// the error, which PostgreSQL logs and the CLI prints.
func TestSecretParameterNotInErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := sqlEnqueue(b.ctx, b.pool, "t.secret", `{"user": "bob", "password": 987654321}`, `{}`)
	require.Error(t, err)
	require.Contains(t, err.Error(), `parameter "password" of action t.secret must be string`)
	require.NotContains(t, err.Error(), "987654321")

	err = pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		_, err := jobs.Enqueue(b.ctx, tx, "t.secret", map[string]any{"user": "bob", "password": []any{"hunter2"}}, nil)
		return err
	})
	var jerr *jobs.Error
	require.ErrorAs(t, err, &jerr)
	require.NotContains(t, jerr.Error(), "hunter2")
}

// requireNowhere checks that no row of tables mentions s.
func requireNowhere(t *testing.T, pool *pgxpool.Pool, s string, tables ...string) {
	t.Helper()
	for _, table := range tables {
		var n int
		require.NoError(t, pool.QueryRow(context.Background(),
			"SELECT count(*) FROM "+table+" x WHERE to_jsonb(x)::text LIKE '%' || $1 || '%'", s).Scan(&n))
		require.Zero(t, n, "%s mentions %q", table, s)
	}
}

func newKey(t *testing.T) []byte {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	return key
}

// sealed reads the stored secrets as the worker does.
func sealed(t *testing.T, pool *pgxpool.Pool) []jobs.SealedSecret {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT name, scope, scope_ref, nonce, ciphertext FROM attune.secret ORDER BY scope DESC")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (jobs.SealedSecret, error) {
		var s jobs.SealedSecret
		err := r.Scan(&s.Name, &s.Scope, &s.ScopeRef, &s.Nonce, &s.Ciphertext)
		return s, err
	})
	require.NoError(t, err)
	return out
}

func TestSecretStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := newKey(t)

	set := func(name, pack, action, value string) {
		t.Helper()
		ref, err := jobs.NewSecretRef(name, pack, action)
		require.NoError(t, err)
		require.NoError(t, jobs.SetSecret(b.ctx, b.pool, key, ref, []byte(value)))
	}
	set("token", "", "", "global-token")
	set("token", "t", "", "pack-token")
	set("token", "", "t.secret", "action-token")
	set("region", "", "", "old-region")
	set("region", "", "", "global-region") // overwrites
	set("bucket", "t", "", "pack-bucket")
	set("bucket", "", "", "global-bucket")

	// Precedence does not depend on the order rows come in.
	all := sealed(t, b.pool)
	for _, order := range [][]jobs.SealedSecret{all, reversed(all)} {
		opened, err := jobs.OpenSecrets(key, order)
		require.NoError(t, err)
		require.Equal(t, map[string]string{"token": "action-token", "region": "global-region", "bucket": "pack-bucket"}, opened)
	}

	list, err := jobs.ListSecrets(b.ctx, b.pool)
	require.NoError(t, err)
	require.Len(t, list, 6)
	out, err := json.Marshal(list)
	require.NoError(t, err)
	for _, v := range []string{"token", "region", "bucket"} {
		require.NotContains(t, string(out), "-"+v, "list shows a value")
	}
	require.Equal(t, jobs.SecretRef{Name: "token", Scope: jobs.ScopeAction, ScopeRef: "t.secret"}, list[0].SecretRef)
	var raw []byte
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT string_agg(ciphertext, '') FROM attune.secret").Scan(&raw))
	require.NotContains(t, string(raw), "token", "stored in the clear")

	// Another key opens nothing; no key is its own error.
	_, err = jobs.OpenSecrets(newKey(t), all)
	require.ErrorIs(t, err, jobs.ErrSecretUndecryptable)
	_, err = jobs.OpenSecrets(nil, all)
	require.ErrorIs(t, err, jobs.ErrNoSecretsKey)
	opened, err := jobs.OpenSecrets(nil, nil)
	require.NoError(t, err)
	require.Empty(t, opened)

	// A ciphertext moved to another row does not open there.
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.secret s SET nonce = g.nonce, ciphertext = g.ciphertext
		FROM attune.secret g WHERE g.scope = 'global' AND g.name = 'token' AND s.scope = 'pack' AND s.name = 'token'`)
	require.NoError(t, err)
	_, err = jobs.OpenSecrets(key, sealed(t, b.pool))
	require.ErrorIs(t, err, jobs.ErrSecretUndecryptable)

	ref, err := jobs.NewSecretRef("token", "t", "")
	require.NoError(t, err)
	ok, err := jobs.DeleteSecret(b.ctx, b.pool, ref)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = jobs.DeleteSecret(b.ctx, b.pool, ref)
	require.NoError(t, err)
	require.False(t, ok, "already deleted")
	list, err = jobs.ListSecrets(b.ctx, b.pool)
	require.NoError(t, err)
	require.Len(t, list, 5)

	require.ErrorIs(t, jobs.SetSecret(b.ctx, b.pool, nil, ref, []byte("x")), jobs.ErrNoSecretsKey)
}

func TestNewSecretRef(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, pack, action string
		want               jobs.SecretRef
		err                string
	}{
		{name: "api_key", want: jobs.SecretRef{Name: "api_key", Scope: jobs.ScopeGlobal}},
		{name: "api_key", pack: "p", want: jobs.SecretRef{Name: "api_key", Scope: jobs.ScopePack, ScopeRef: "p"}},
		{name: "api_key", action: "p.a", want: jobs.SecretRef{Name: "api_key", Scope: jobs.ScopeAction, ScopeRef: "p.a"}},
		{name: "api_key", pack: "p", action: "p.a", err: "give --pack or --action, not both"},
		{name: "1abc", err: `secret name "1abc" is invalid`},
		{name: "a b", err: `secret name "a b" is invalid`},
		{name: "", err: `secret name "" is invalid`},
		// A ref the worker can never look up would store a dead secret.
		{name: "api_key", action: "hello", err: `--action "hello" is not an action ref; give {pack}.{name}`},
		{name: "api_key", action: "p.a.b", err: `--action "p.a.b" is not an action ref`},
		{name: "api_key", pack: "Examples", err: `--pack "Examples" is not a pack ref`},
		{name: "api_key", pack: "p.a", err: `--pack "p.a" is not a pack ref`},
	} {
		got, err := jobs.NewSecretRef(tc.name, tc.pack, tc.action)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
}

// TestSecretStoreReachesAction: the worker hands the action its store
// secrets, the most specific scope winning, with its secret parameters.
func TestSecretStoreReachesAction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := newKey(t)
	for _, s := range []struct{ name, pack, action, value string }{
		{"token", "", "", "global-token"},
		{"token", "t", "", "pack-token"},
		{"token", "", "t.secret", "action-token"},
		{"region", "", "", "global-region"},
		{"other", "", "t.noop", "not-for-this-action"},
		{"other", "elsewhere", "", "not-for-this-pack"},
	} {
		ref, err := jobs.NewSecretRef(s.name, s.pack, s.action)
		require.NoError(t, err)
		require.NoError(t, jobs.SetSecret(b.ctx, b.pool, key, ref, []byte(s.value)))
	}
	run(t, b.startWorker(t, "w1", "ATTUNE_SECRETS_KEY="+base64.StdEncoding.EncodeToString(key)))

	id, err := sqlEnqueue(b.ctx, b.pool, "t.secret", `{"user": "bob", "password": "hunter2"}`, `{}`)
	require.NoError(t, err)
	e := waitStatus(t, b.pool, id, 10*time.Second, jobs.StatusCompleted, jobs.StatusFailed)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	var res struct {
		Stdin map[string]string `json:"stdin_rot13"`
	}
	require.NoError(t, json.Unmarshal(e.Result, &res))
	got := map[string]string{}
	for k, v := range res.Stdin {
		got[rot13(k)] = rot13(v)
	}
	require.Equal(t, map[string]string{"token": "action-token", "region": "global-region", "password": "hunter2"}, got)

}

// TestSecretStoreWrongKey: a replica whose key is not the installation's,
// or that has none while secrets are stored, refuses to start, saying
// which; a secret stored after a keyless replica started fails the
// executions that need it, and nothing starts.
func TestSecretStoreWrongKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keyless := b.startWorker(t, "keyless")
	run(t, keyless) // no secrets yet: fine

	key := newKey(t)
	ref, err := jobs.NewSecretRef("token", "t", "")
	require.NoError(t, err)
	require.NoError(t, jobs.SetSecret(b.ctx, b.pool, key, ref, []byte("pack-token")))
	id, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	e := waitStatus(t, b.pool, id, 10*time.Second, jobs.StatusCompleted, jobs.StatusFailed)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Contains(t, deref(e.Error), jobs.ErrNoSecretsKey.Error())
	require.Nil(t, e.ExitCode, "the process must not start")

	other := newKey(t)
	err = b.startWorker(t, "wrong-key", "ATTUNE_SECRETS_KEY="+base64.StdEncoding.EncodeToString(other)).Start(b.ctx)
	var mismatch *jobs.KeyMismatchError
	require.ErrorAs(t, err, &mismatch)
	require.Equal(t, fmt.Sprintf("ATTUNE_SECRETS_KEY has fingerprint %s, but this installation's secrets are under key %s: give every replica and command the same key (attune secret rotate-key changes it)",
		jobs.KeyID(other), jobs.KeyID(key)), err.Error())

	err = b.startWorker(t, "no-key").Start(b.ctx)
	var missing *jobs.MissingKeyError
	require.ErrorAs(t, err, &missing)
	require.Equal(t, fmt.Sprintf("ATTUNE_SECRETS_KEY is not set, but this installation stores 1 secret under key %s: set that key on this replica", jobs.KeyID(key)), err.Error())

	// Storing a secret under another key is refused too, and stores nothing.
	err = jobs.SetSecret(b.ctx, b.pool, other, ref, []byte("other-token"))
	require.ErrorAs(t, err, &mismatch)
	opened, err := jobs.OpenSecrets(key, sealed(t, b.pool))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"token": "pack-token"}, opened)

	run(t, b.startWorker(t, "right-key", "ATTUNE_SECRETS_KEY="+base64.StdEncoding.EncodeToString(key)))
}

// TestSecretsKeyFirstUse: with no fingerprint recorded (a database from
// before it was), the first key is recorded only if it opens what is
// stored.
func TestSecretsKeyFirstUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := newKey(t)
	ref, err := jobs.NewSecretRef("token", "", "")
	require.NoError(t, err)
	require.NoError(t, jobs.SetSecret(b.ctx, b.pool, key, ref, []byte("v1")))
	_, err = b.pool.Exec(b.ctx, "DELETE FROM attune.secrets_key") // as before migration 008
	require.NoError(t, err)

	var mismatch *jobs.KeyMismatchError
	require.ErrorAs(t, jobs.CheckSecretsKey(b.ctx, b.pool, newKey(t)), &mismatch)
	require.Contains(t, mismatch.Error(), "does not open the secrets stored in this database")
	require.Zero(t, count(t, b.pool, "attune.secrets_key"), "the wrong key is not recorded")

	require.NoError(t, jobs.CheckSecretsKey(b.ctx, b.pool, key))
	var id string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT key_id FROM attune.secrets_key").Scan(&id))
	require.Equal(t, jobs.KeyID(key), id)
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func rot13(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return 'a' + (r-'a'+13)%26
		case r >= 'A' && r <= 'Z':
			return 'A' + (r-'A'+13)%26
		}
		return r
	}, s)
}
