package jobs_test

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// storedSecretParams is the attune.execution_secret row of id as text, ""
// when there is none.
func (b *testBundle) storedSecretParams(t *testing.T, id int64) string {
	t.Helper()
	var s string
	err := b.pool.QueryRow(b.ctx, "SELECT parameters::text FROM attune.execution_secret WHERE execution_id = $1", id).Scan(&s)
	if err == pgx.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	return s
}

func (b *testBundle) goEnqueue(t *testing.T, action string, params map[string]any, opts *jobs.Options) (int64, error) {
	t.Helper()
	var id int64
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) (err error) {
		id, err = jobs.Enqueue(b.ctx, tx, action, params, opts)
		return err
	})
	return id, err
}

// TestSealedSecretParameter: enqueued with the installation's key, a secret
// parameter is stored sealed, its row holding nothing of the value; the
// worker opens it; cancelled while queued, the row goes at once.
func TestSealedSecretParameter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := newKey(t)
	params := map[string]any{"user": "bob", "password": "sealed-hunter2"}
	later := time.Now().Add(time.Hour)

	// No replica has used a key yet: none could open what it sealed.
	_, err := b.goEnqueue(t, "t.secret", params, &jobs.Options{SecretsKey: key})
	require.ErrorIs(t, err, jobs.ErrKeyNotRecorded)
	require.NoError(t, jobs.CheckSecretsKey(b.ctx, b.pool, key))
	// Another key than the installation's is refused, and writes nothing.
	_, err = b.goEnqueue(t, "t.secret", params, &jobs.Options{SecretsKey: newKey(t)})
	var mismatch *jobs.KeyMismatchError
	require.ErrorAs(t, err, &mismatch)
	require.Zero(t, count(t, b.pool, "attune.execution"))

	queued, err := b.goEnqueue(t, "t.secret", params, &jobs.Options{SecretsKey: key, ScheduledAt: later})
	require.NoError(t, err)
	stored := b.storedSecretParams(t, queued)
	require.True(t, jobs.Sealed([]byte(stored)), stored)
	for _, f := range []string{"sealed-hunter2", "hunter2", base64.StdEncoding.EncodeToString([]byte(`{"password":"sealed-hunter2"}`))} {
		require.NotContains(t, stored, f)
	}
	var env []any
	require.NoError(t, json.Unmarshal([]byte(stored), &env))
	require.Equal(t, []any{"aes-256-gcm", jobs.KeyID(key)}, env[:2])
	requireNowhere(t, b.pool, "hunter2", "attune.river_job", "attune.execution", "attune.execution_secret")

	_, err = jobs.Cancel(b.ctx, b.pool, queued)
	require.NoError(t, err)
	require.Empty(t, b.storedSecretParams(t, queued), "cancelled while queued: its secret parameters are gone")

	run(t, b.startWorker(t, "w1", "ATTUNE_SECRETS_KEY="+base64.StdEncoding.EncodeToString(key)))
	id, err := b.goEnqueue(t, "t.secret", params, &jobs.Options{SecretsKey: key})
	require.NoError(t, err)
	e := waitStatus(t, b.pool, id, 10*time.Second, jobs.StatusCompleted, jobs.StatusFailed)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	var res struct {
		Rot13 map[string]string `json:"stdin_rot13"`
	}
	require.NoError(t, json.Unmarshal(e.Result, &res))
	require.Equal(t, map[string]string{"cnffjbeq": rot13("sealed-hunter2")}, res.Rot13)
	require.Empty(t, b.storedSecretParams(t, id), "ran: gone")
}

// TestSecretParametersGoUntilFinal: whatever moves an execution to a final
// status, its secret parameters go with it (migration 008's trigger), and
// only then.
func TestSecretParametersGoUntilFinal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	later := `{"scheduled_at": "` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`
	for _, status := range []string{"running", "canceling", "requested", "completed", "failed", "timeout", "cancelled", "abandoned"} {
		id, err := sqlEnqueue(b.ctx, b.pool, "t.secret", `{"user": "bob", "password": "hunter2"}`, later)
		require.NoError(t, err)
		_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET status = $2 WHERE id = $1", id, status)
		require.NoError(t, err)
		if jobs.Finished(status) {
			require.Empty(t, b.storedSecretParams(t, id), status)
		} else {
			require.JSONEq(t, `{"password": "hunter2"}`, b.storedSecretParams(t, id), "%s: kept while it may still run", status)
		}
	}
	// Pruned: the row goes with its execution.
	_, err := b.pool.Exec(b.ctx, "DELETE FROM attune.execution")
	require.NoError(t, err)
	require.Zero(t, count(t, b.pool, "attune.execution_secret"))
}

// TestRotateSecretsKey: rotation re-encrypts the store and sealed secret
// parameters in one go and records the new fingerprint; the old key is
// refused afterwards; a rotation from a key that is not the installation's
// changes nothing.
func TestRotateSecretsKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	oldKey, newKey2 := newKey(t), newKey(t)
	for _, name := range []string{"a", "b"} {
		ref, err := jobs.NewSecretRef(name, "", "")
		require.NoError(t, err)
		require.NoError(t, jobs.SetSecret(b.ctx, b.pool, oldKey, ref, []byte("value-"+name)))
	}
	id, err := b.goEnqueue(t, "t.secret", map[string]any{"user": "bob", "password": "hunter2"},
		&jobs.Options{SecretsKey: oldKey, ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)

	_, err = jobs.RotateSecretsKey(b.ctx, b.pool, newKey(t), newKey2)
	var mismatch *jobs.KeyMismatchError
	require.ErrorAs(t, err, &mismatch)
	require.NoError(t, jobs.CheckSecretsKey(b.ctx, b.pool, oldKey), "nothing changed")

	r, err := jobs.RotateSecretsKey(b.ctx, b.pool, oldKey, newKey2)
	require.NoError(t, err)
	require.Equal(t, jobs.Rotated{Secrets: 2, Parameters: 1, OldKeyID: jobs.KeyID(oldKey), NewKeyID: jobs.KeyID(newKey2)}, r)

	opened, err := jobs.OpenSecrets(newKey2, sealed(t, b.pool))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a": "value-a", "b": "value-b"}, opened)
	plain, err := jobs.OpenParameters(newKey2, id, []byte(b.storedSecretParams(t, id)))
	require.NoError(t, err)
	require.JSONEq(t, `{"password": "hunter2"}`, string(plain))
	require.ErrorAs(t, jobs.CheckSecretsKey(b.ctx, b.pool, oldKey), &mismatch)
	require.NoError(t, jobs.CheckSecretsKey(b.ctx, b.pool, newKey2))
}
