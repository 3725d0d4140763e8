package schema_test

import (
	"context"
	"fmt"
	neturl "net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/schema/schematest"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ms, err := schema.Migrations()
	require.NoError(t, err)
	latest := ms[len(ms)-1].Version

	t.Run("Current", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, schema.Check(ctx, schematest.Pool(t)))
	})
	t.Run("Older", func(t *testing.T) {
		t.Parallel()
		pool := schematest.Pool(t)
		_, err := pool.Exec(ctx, "DELETE FROM attune.schema_migration WHERE version = $1", latest)
		require.NoError(t, err)
		err = schema.Check(ctx, pool)
		require.ErrorIs(t, err, schema.ErrNotMigrated)
		require.ErrorContains(t, err, fmt.Sprintf("schema is at version %d, this attune needs %d: run attune migrate", ms[len(ms)-2].Version, latest))
	})
	t.Run("Newer", func(t *testing.T) {
		t.Parallel()
		pool := schematest.Pool(t)
		_, err := pool.Exec(ctx, "INSERT INTO attune.schema_migration (version, name) VALUES ($1, 'future')", latest+1)
		require.NoError(t, err)
		err = schema.Check(ctx, pool)
		require.ErrorIs(t, err, schema.ErrNotMigrated)
		require.ErrorContains(t, err, fmt.Sprintf("schema is at version %d, newer than this attune (%d)", latest+1, latest))
	})
	t.Run("RiverBehind", func(t *testing.T) {
		t.Parallel()
		pool := schematest.Pool(t)
		_, err := pool.Exec(ctx, "DELETE FROM attune.river_migration WHERE version = (SELECT max(version) FROM attune.river_migration)")
		require.NoError(t, err)
		err = schema.Check(ctx, pool)
		require.ErrorIs(t, err, schema.ErrNotMigrated)
		require.ErrorContains(t, err, "River's tables are not at this attune's version")
	})
}

func TestConnectNeverCreates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, err := neturl.Parse(schematest.URL(t))
	require.NoError(t, err)
	u.Path = "/attune_never_created"
	_, err = schema.Connect(ctx, u.String(), 1)
	require.ErrorIs(t, err, schema.ErrNoDatabase)
	require.ErrorContains(t, err, `"attune_never_created"`)

	pool := schematest.Pool(t)
	var exists bool
	require.NoError(t, pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'attune_never_created')").Scan(&exists))
	require.False(t, exists)
}
