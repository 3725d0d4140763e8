package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Name is the PostgreSQL schema holding attune's tables and River's.
const Name = "attune"

// migrateLockKey is the advisory lock that serializes migrations, so that
// replicas starting together do not race each other's DDL.
const migrateLockKey = 0x617474756e65 // "attune"

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded SQL file, applied at most once.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("error reading embedded migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("embedded migration %q is not named NNN_name.sql", e.Name())
		}
		sql, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("error reading migration %q: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: version, Name: name, SQL: string(sql)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// MigrateResult tells which of attune's migrations a Migrate call applied.
type MigrateResult struct {
	RiverVersions []int
	Applied       []Migration
}

// Migrate brings the schema up to date: River's migrations first, then
// attune's. It is idempotent, and safe when several processes run it at once:
// they queue on an advisory lock held on a dedicated connection.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (*MigrateResult, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error connecting to migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLockKey)); err != nil {
		return nil, fmt.Errorf("error taking the migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must go even when ctx is done.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrateLockKey))
	}()

	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+Name); err != nil {
		return nil, fmt.Errorf("error creating schema %s: %w", Name, err)
	}

	res := &MigrateResult{}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Name})
	if err != nil {
		return nil, fmt.Errorf("error preparing River migrations: %w", err)
	}
	riverRes, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("error applying River migrations: %w", err)
	}
	for _, v := range riverRes.Versions {
		res.RiverVersions = append(res.RiverVersions, v.Version)
	}

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS attune.schema_migration (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("error creating attune.schema_migration: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM attune.schema_migration")
	if err != nil {
		return nil, fmt.Errorf("error reading applied migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("error reading applied migrations: %w", err)
	}
	for _, v := range versions {
		applied[v] = true
	}

	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO attune.schema_migration (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("error applying migration %03d_%s: %w", m.Version, m.Name, err)
		}
		res.Applied = append(res.Applied, m)
	}
	return res, nil
}

// ErrNoDatabase tells that PostgreSQL answered but the database is missing and
// could not be created.
var ErrNoDatabase = errors.New("database does not exist")
