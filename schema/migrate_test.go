package schema_test

import (
	"context"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/schema/schematest"
)

func TestMain(m *testing.M) { os.Exit(schematest.Main(m)) }

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t) // already migrated once, as a template clone

	res, err := schema.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Empty(t, res.Applied, "a second migrate applies nothing")
	require.Empty(t, res.RiverVersions)
}

func TestMigrateConcurrentReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := schematest.URL(t)

	// Start from an empty database, as replicas on a fresh install would.
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(ctx, "DROP SCHEMA attune CASCADE")
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			p, err := pgxpool.New(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer p.Close()
			_, errs[i] = schema.Migrate(ctx, p)
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM attune.schema_migration").Scan(&n))
	ms, err := schema.Migrations()
	require.NoError(t, err)
	require.Equal(t, len(ms), n)
}

func TestSeededRuntimes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)

	var (
		name, desc, typ string
		dist, inst      string
	)
	err := pool.QueryRow(ctx, `SELECT name, description, runtime_type, distributions::text, installation::text
		FROM attune.runtime WHERE ref = 'core.action.native'`).Scan(&name, &desc, &typ, &dist, &inst)
	require.NoError(t, err)
	require.Equal(t, "Native Action Runtime", name)
	require.Equal(t, "Execute actions as native compiled binaries", desc)
	require.Equal(t, "action", typ)
	require.JSONEq(t, `["native"]`, dist)
	require.JSONEq(t, `{"method": "binary", "description": "Native executable - no runtime installation required"}`, inst)

	var refs []string
	rows, err := pool.Query(ctx, "SELECT ref FROM attune.runtime ORDER BY ref")
	require.NoError(t, err)
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		refs = append(refs, r)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{
		"core.action.native", "core.action.nodejs", "core.action.python3", "core.action.shell",
		"core.sensor.native", "core.sensor.nodejs", "core.sensor.python3", "core.sensor.shell",
	}, refs)
}

func TestOpenCreatesMissingDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := schematest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()

	u, err := neturl.Parse(url)
	require.NoError(t, err)
	u.Path += "_new"
	p, err := schema.Open(ctx, u.String(), 2)
	require.NoError(t, err)
	p.Close()
	_, err = pool.Exec(ctx, "DROP DATABASE "+strings.TrimPrefix(u.Path, "/")+" WITH (FORCE)")
	require.NoError(t, err)
}

// A database an earlier attune migrated (up to 004) takes 005: the state
// machine's functions replace the ones 002 and 004 created, and executions
// enqueued before it move through the new ones.
func TestMigrateUpgradesFrom004(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, "DROP SCHEMA attune CASCADE")
	require.NoError(t, err)

	// What schema.Migrate did before 005 existed.
	ms, err := schema.Migrations()
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "CREATE SCHEMA attune")
	require.NoError(t, err)
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema.Name})
	require.NoError(t, err)
	_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE attune.schema_migration (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	for _, m := range ms {
		if m.Version > 4 {
			break
		}
		_, err := pool.Exec(ctx, m.SQL)
		require.NoError(t, err, "migration %d", m.Version)
		_, err = pool.Exec(ctx, "INSERT INTO attune.schema_migration (version, name) VALUES ($1, $2)", m.Version, m.Name)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO attune.pack (ref) VALUES ('p');
		INSERT INTO attune.action (ref, pack_ref, name, runner_type, entry_point, path) VALUES ('p.a', 'p', 'a', 'shell', 'a.sh', '/bin/true')`)
	require.NoError(t, err)
	var before int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT attune.enqueue('p.a')").Scan(&before))

	res, err := schema.Migrate(ctx, pool)
	require.NoError(t, err)
	var applied []int
	for _, m := range res.Applied {
		applied = append(applied, m.Version)
	}
	ms, err = schema.Migrations()
	require.NoError(t, err)
	var want []int // every migration after 004: versions may leave gaps
	for _, m := range ms {
		if m.Version > 4 {
			want = append(want, m.Version)
		}
	}
	require.Equal(t, want, applied)

	var src string
	require.NoError(t, pool.QueryRow(ctx, "SELECT prosrc FROM pg_proc WHERE oid = 'attune.enqueue(text, jsonb, jsonb)'::regprocedure").Scan(&src))
	require.Contains(t, src, "attune.wake_workers", "attune.enqueue is 005's")
	var after int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT attune.enqueue('p.a', '{}', '{}')").Scan(&after))
	require.Greater(t, after, before)
	for _, id := range []int64{before, after} {
		var status string
		var changed bool
		require.NoError(t, pool.QueryRow(ctx, "SELECT status, changed FROM attune.cancel_execution($1)", id).Scan(&status, &changed))
		require.Equal(t, "cancelled", status)
		require.True(t, changed)
	}
}
