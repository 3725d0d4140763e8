package schema

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects a pool to url, creating the database first when it is
// missing and the role may create it. maxConns sizes the pool; 0 keeps pgx's
// default. Only the commands that install (migrate, serve, demo) use it:
// the others Connect, so a typo'd URL never creates a database.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	return open(ctx, url, maxConns, true)
}

// Connect connects a pool to url's existing database; a missing database is
// an error saying so (ErrNoDatabase).
func Connect(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	return open(ctx, url, maxConns, false)
}

func open(ctx context.Context, url string, maxConns int32, create bool) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("ATTUNE_DATABASE_URL is not a valid PostgreSQL URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if create {
		if err := ensureDatabase(ctx, cfg.ConnConfig); err != nil {
			return nil, err
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, describeConnectError(cfg.ConnConfig, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
			return nil, fmt.Errorf("%w: %q at %s:%d; check ATTUNE_DATABASE_URL, or create it with attune migrate",
				ErrNoDatabase, cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port)
		}
		return nil, describeConnectError(cfg.ConnConfig, err)
	}
	return pool, nil
}

// ensureDatabase creates cfg's database when connecting fails because it
// does not exist.
func ensureDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return describeConnectError(cfg, err)
	}

	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err = pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("database %q does not exist and connecting to database \"postgres\" to create it failed: %w", cfg.Database, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database: a concurrent start won
		return fmt.Errorf("%w: %q, and creating it failed (%w); create it or grant CREATEDB to role %q", ErrNoDatabase, cfg.Database, err, cfg.User)
	}
	return nil
}

// describeConnectError turns a connection failure into a line that says what
// to do.
func describeConnectError(cfg *pgx.ConnConfig, err error) error {
	var netErr *net.OpError
	if errors.As(err, &netErr) {
		return fmt.Errorf("cannot reach PostgreSQL at %s:%d (%w); start it, or point ATTUNE_DATABASE_URL at a running server", cfg.Host, cfg.Port, err)
	}
	return fmt.Errorf("cannot connect to database %q at %s:%d as %q: %w", cfg.Database, cfg.Host, cfg.Port, cfg.User, err)
}
