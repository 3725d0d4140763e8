package packs

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// writePacks writes files (path under base → content), .sh files
// executable, and loads every pack of base.
func writePacks(t *testing.T, base string, files map[string]string) ([]*Pack, []Problem) {
	t.Helper()
	for path, body := range files {
		path = filepath.Join(base, path)
		writeFile(t, path, body)
		if filepath.Ext(path) == ".sh" {
			require.NoError(t, os.Chmod(path, 0o755))
		}
	}
	return LoadAll(base)
}

// querier is what the tests read the database with: a pool, or a
// transaction that sees its own writes.
type querier interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
	QueryRow(context.Context, string, ...any) pgx.Row
}

// twoPacks are two good packs; alpha sorts first but its rule needs zeta's
// trigger and action, so registration must order them itself.
var twoPacks = map[string]string{
	"alpha/pack.yaml":         "ref: alpha\n",
	"alpha/rules/r.yaml":      "name: r\ntrigger_ref: zeta.tick\naction_ref: zeta.a\naction_params: {n: 1}\n",
	"zeta/pack.yaml":          "ref: zeta\n",
	"zeta/triggers/tick.yaml": "name: tick\n",
	"zeta/actions/a.yaml":     "name: a\nentry_point: a.sh\nparameters:\n  n: {type: integer}\n",
	"zeta/actions/a.sh":       "#!/bin/sh\n",
}

// count counts the rows of an attune table, as q (a pool or a transaction)
// sees them.
func count(t *testing.T, q querier, table string) int {
	t.Helper()
	var n int
	require.NoError(t, q.QueryRow(context.Background(), "SELECT count(*) FROM attune."+table).Scan(&n))
	return n
}

// TestRegisterInCallersTx: Register writes inside the caller's transaction,
// so the caller decides: rolled back, nothing is registered; committed, every
// row is there, and only then do sensor supervisors hear of it.
func TestRegisterInCallersTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps, problems := writePacks(t, t.TempDir(), twoPacks)
	require.False(t, HasErrors(problems), "%v", problems)

	t.Run("rolled back", func(t *testing.T) {
		t.Parallel()
		pool := schematest.Pool(t)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		rs := Register(ctx, tx, ps, problems)
		require.NoError(t, rs.Err())
		require.Equal(t, 2, count(t, tx, "pack"), "the transaction sees its own writes")
		require.Equal(t, 0, count(t, pool, "pack"), "others do not before it commits")
		require.NoError(t, tx.Rollback(ctx))
		for _, table := range []string{"pack", "action", "trigger", "rule"} {
			require.Equal(t, 0, count(t, pool, table), table)
		}
	})

	t.Run("committed", func(t *testing.T) {
		t.Parallel()
		url := schematest.URL(t)
		pool, err := pgxpool.New(ctx, url)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		listener, err := pgx.Connect(ctx, url)
		require.NoError(t, err)
		t.Cleanup(func() { listener.Close(context.Background()) })
		_, err = listener.Exec(ctx, "LISTEN "+pgx.Identifier{RuleChannel}.Sanitize())
		require.NoError(t, err)

		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck // a no-op once committed
		rs := Register(ctx, tx, ps, problems)
		require.NoError(t, rs.Err())
		require.Len(t, rs, 2)
		require.Equal(t, "alpha", rs[0].Pack, "results follow the order of ps, not of registration")
		require.Equal(t, 1, rs[0].Rules)
		require.Equal(t, "zeta", rs[1].Pack)
		require.Equal(t, 1, rs[1].Actions)
		require.Equal(t, 1, rs[1].Triggers)

		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err = listener.WaitForNotification(wctx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "no notification before the commit")

		require.NoError(t, tx.Commit(ctx))
		require.Equal(t, 2, count(t, pool, "pack"))
		require.Equal(t, 1, count(t, pool, "action"))
		require.Equal(t, 1, count(t, pool, "trigger"))
		require.Equal(t, 1, count(t, pool, "rule"))
		wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		require.NoError(t, err)
		require.Contains(t, []string{"alpha", "zeta"}, n.Payload)
	})
}

// TestRegisterResults: among good packs, a pack with a load error, one whose
// rule names an action registered nowhere and one whose pack.yaml does not
// load each get a result saying why they were not registered, and spoil
// neither the good packs nor the caller's transaction.
func TestRegisterResults(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"bad_load/pack.yaml":        "ref: bad_load\n",
		"bad_load/actions/a.yaml":   "name: a\nentry_point: a.sh\nrunner_type: ruby\n",
		"bad_load/actions/a.sh":     "#!/bin/sh\n",
		"bad_write/pack.yaml":       "ref: bad_write\n",
		"bad_write/actions/ok.yaml": "name: ok\nentry_point: ok.sh\n",
		"bad_write/actions/ok.sh":   "#!/bin/sh\n",
		"bad_write/rules/r.yaml":    "name: r\ntrigger_ref: zeta.tick\naction_ref: nowhere.a\n",
		"broken/pack.yaml":          "ref: Not.A.Ref\n",
		"warned/pack.yaml":          "ref: warned\n",
		"warned/actions/later.yaml": "name: later\nentry_point: not_built_yet\n",
	}
	for k, v := range twoPacks {
		files[k] = v
	}
	base := t.TempDir()
	ps, problems := writePacks(t, base, files)
	require.Len(t, ps, 5, "broken does not load")

	check := func(t *testing.T, rs Results, q querier) {
		t.Helper()
		byName := map[string]*RegisterResult{}
		var names []string
		for _, r := range rs {
			byName[r.Name()] = r
			names = append(names, r.Name())
		}
		require.Equal(t, []string{"alpha", "bad_load", "bad_write", "warned", "zeta", filepath.Join(base, "broken")}, names,
			"ps in order, then the pack that did not load")

		for _, ok := range []string{"alpha", "warned", "zeta"} {
			require.NoError(t, byName[ok].Err, ok)
		}
		require.Equal(t, 1, byName["alpha"].Rules)
		require.Equal(t, 1, byName["warned"].Actions)
		require.Len(t, byName["warned"].Problems, 1, "a warning does not stop a pack")
		require.True(t, byName["warned"].Problems[0].Warning)

		var loadErr *LoadError
		require.ErrorAs(t, byName["bad_load"].Err, &loadErr)
		require.Contains(t, byName["bad_load"].Err.Error(), `unknown runner_type "ruby"`)
		require.Len(t, byName["bad_load"].Problems, 1)
		require.Zero(t, byName["bad_load"].Actions)

		require.ErrorContains(t, byName["bad_write"].Err, `rule bad_write.r names action "nowhere.a", which is neither in pack bad_write nor registered`)
		require.False(t, errors.As(byName["bad_write"].Err, &loadErr))
		require.Zero(t, byName["bad_write"].Actions, "a failed pack counts nothing")

		broken := byName[filepath.Join(base, "broken")]
		require.Empty(t, broken.Pack)
		require.ErrorAs(t, broken.Err, &loadErr)
		require.Contains(t, broken.Err.Error(), `pack ref "Not.A.Ref"`)

		err := rs.Err()
		require.ErrorContains(t, err, "pack bad_load not registered: ")
		require.ErrorContains(t, err, "pack bad_write not registered: ")
		require.ErrorContains(t, err, "pack "+filepath.Join(base, "broken")+" not registered: ")
		require.NotContains(t, err.Error(), "pack alpha")

		rows, err := q.Query(context.Background(), "SELECT ref FROM attune.pack ORDER BY ref")
		require.NoError(t, err)
		refs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{"alpha", "warned", "zeta"}, refs, "nothing of the failed packs is written, not even their pack row")
		require.Equal(t, 2, count(t, q, "action"), "zeta.a and warned.later")
	}

	t.Run("tx", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		pool := schematest.Pool(t)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck // a no-op once committed
		rs := Register(ctx, tx, ps, problems)
		check(t, rs, tx)
		// The failures were rolled back to their savepoints: the caller's
		// transaction still works and commits the good packs.
		_, err = tx.Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		check(t, rs, pool)
	})

	t.Run("pool", func(t *testing.T) {
		t.Parallel()
		pool := schematest.Pool(t)
		check(t, RegisterPool(context.Background(), pool, ps, problems), pool)
	})
}

// TestRegisterAgain: registering a pack again disables the actions and
// rules gone from disk instead of deleting them, also when the last one of
// its kind is gone.
func TestRegisterAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	base := t.TempDir()
	files := map[string]string{
		"zeta/sensors/s.yaml": "name: s\nentry_point: s.sh\ntrigger_types: [tick]\n",
		"zeta/sensors/s.sh":   "#!/bin/sh\n",
	}
	maps.Copy(files, twoPacks)
	ps, problems := writePacks(t, base, files)
	require.NoError(t, RegisterPool(ctx, pool, ps, problems).Err())

	for _, gone := range []string{"zeta/actions/a.yaml", "zeta/sensors/s.yaml", "alpha/rules/r.yaml"} {
		require.NoError(t, os.Remove(filepath.Join(base, gone)))
	}
	ps, problems = LoadAll(base)
	rs := RegisterPool(ctx, pool, ps, problems)
	require.NoError(t, rs.Err())
	require.Equal(t, []string{"zeta.a"}, rs[1].DisabledActions)
	for _, row := range []struct{ table, ref string }{{"action", "zeta.a"}, {"sensor", "zeta.s"}, {"rule", "alpha.r"}} {
		var enabled bool
		require.NoError(t, pool.QueryRow(ctx, "SELECT enabled FROM attune."+row.table+" WHERE ref = $1", row.ref).Scan(&enabled))
		require.False(t, enabled, "%s %s is kept, disabled", row.table, row.ref)
	}
}

// TestRegisterKeepsRuleState: a rule enabled or disabled by hand keeps that
// state when its pack is registered again, and the result says so, until its
// YAML's own enabled changes; a rule gone from disk is disabled when it goes
// and takes its YAML's state when it comes back.
func TestRegisterKeepsRuleState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	base := t.TempDir()
	_, _ = writePacks(t, base, twoPacks)
	ruleFile := filepath.Join(base, "alpha/rules/r.yaml")
	setYAML := func(enabled string) {
		t.Helper()
		writeFile(t, ruleFile, "name: r\ntrigger_ref: zeta.tick\naction_ref: zeta.a\n"+enabled)
	}
	// register registers every pack and returns alpha's kept rules.
	register := func() []KeptRule {
		t.Helper()
		ps, problems := LoadAll(base)
		rs := RegisterPool(ctx, pool, ps, problems)
		require.NoError(t, rs.Err())
		require.Equal(t, "alpha", rs[0].Pack)
		require.NotNil(t, rs[0].KeptRules, "an empty list, not null, in -j")
		return rs[0].KeptRules
	}
	set := func(enabled bool) {
		t.Helper()
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := SetRuleEnabled(ctx, tx, "alpha.r", enabled)
			return err
		}))
	}
	enabled := func() bool {
		t.Helper()
		var on bool
		require.NoError(t, pool.QueryRow(ctx, "SELECT enabled FROM attune.rule WHERE ref = 'alpha.r'").Scan(&on))
		return on
	}

	require.Empty(t, register())
	require.True(t, enabled())

	set(false)
	require.Equal(t, []KeptRule{{Ref: "alpha.r", Enabled: false}}, register(), "the YAML still says enabled: true, as it did")
	require.False(t, enabled())
	require.Equal(t, []KeptRule{{Ref: "alpha.r", Enabled: false}}, register(), "and again")
	require.False(t, enabled())

	setYAML("enabled: false\n")
	require.Empty(t, register(), "the YAML now agrees")
	require.False(t, enabled())

	set(true)
	require.Equal(t, []KeptRule{{Ref: "alpha.r", Enabled: true}}, register())
	require.True(t, enabled())

	setYAML("enabled: true\n")
	require.Empty(t, register())
	require.True(t, enabled())
	setYAML("enabled: false\n")
	require.Empty(t, register())
	require.False(t, enabled(), "a change of the YAML's enabled wins")

	// Gone from disk: disabled once; enabled by hand, it stays so while
	// its file stays away; back, it takes its YAML's state.
	setYAML("")
	register()
	require.True(t, enabled())
	require.NoError(t, os.Remove(ruleFile))
	register()
	require.False(t, enabled(), "disabled when its file goes")
	set(true)
	register()
	require.True(t, enabled(), "enabled by hand while its file is gone")
	setYAML("enabled: false\n")
	require.Empty(t, register())
	require.False(t, enabled(), "back on disk, its YAML decides")
}
