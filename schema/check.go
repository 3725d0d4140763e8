package schema

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// ErrNotMigrated tells that a database lacks attune's schema or holds an
// older (or newer) version of it than this binary's.
var ErrNotMigrated = errors.New("schema is not at this attune's version")

// Check verifies, with reads only, that pool's database holds attune's and
// River's schema at exactly this binary's versions. Commands that only use
// the database call it instead of Migrate: a newer CLI on a laptop must not
// upgrade production ahead of its replicas, and a role allowed only SELECT
// must still be able to list executions.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	want := ms[len(ms)-1].Version
	db := pool.Config().ConnConfig.Database

	var installed bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('attune.schema_migration') IS NOT NULL").Scan(&installed); err != nil {
		return fmt.Errorf("error looking for attune's schema: %w", err)
	}
	var have *int
	if installed {
		if err := pool.QueryRow(ctx, "SELECT max(version) FROM attune.schema_migration").Scan(&have); err != nil {
			return fmt.Errorf("error reading attune's schema version: %w", err)
		}
	}
	switch {
	case have == nil:
		return fmt.Errorf("%w: no attune schema in database %q: run attune migrate", ErrNotMigrated, db)
	case *have < want:
		return fmt.Errorf("%w: schema is at version %d, this attune needs %d: run attune migrate", ErrNotMigrated, *have, want)
	case *have > want:
		return fmt.Errorf("%w: schema is at version %d, newer than this attune (%d): use the attune release that migrated it", ErrNotMigrated, *have, want)
	}

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Name})
	if err != nil {
		return fmt.Errorf("error preparing River's migrator: %w", err)
	}
	res, err := migrator.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("error reading River's schema version: %w", err)
	}
	if !res.OK {
		return fmt.Errorf("%w: River's tables are not at this attune's version (%v): run attune migrate", ErrNotMigrated, res.Messages)
	}
	return nil
}
