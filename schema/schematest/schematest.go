// Package schematest gives each test its own migrated attune database: a
// template database is migrated once per schema version and cloned per test
// (CREATE DATABASE ... TEMPLATE), which takes milliseconds.
//
// The server is ATTUNE_TEST_DATABASE_URL when set, else the local server at
// 127.0.0.1:5432. When neither answers, a private cluster is started from the
// installed PostgreSQL binaries (initdb, pg_ctl) in a temporary directory and
// stopped by Main when the tests end.
package schematest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/attune-system/attune/schema"
)

// DefaultURL is the server tried when ATTUNE_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://root@127.0.0.1:5432/postgres?sslmode=disable"

var (
	setupOnce sync.Once
	setupErr  error
	adminURL  string   // a URL of the server's "postgres" database
	tplName   string   // the migrated template database
	private   *cluster // a private cluster this process started, if any
)

// Main runs the tests of a package and stops a private cluster that setup may
// have started. Call it from TestMain: os.Exit(schematest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if private != nil {
		private.stop()
	}
	return code
}

// MainNoLeaks is Main, then, when the tests passed, fails the run if any
// goroutine outlived them (goleak): River clients, pgx pools and process
// goroutines must all stop with their owners. Call it from TestMain:
// os.Exit(schematest.MainNoLeaks(m)).
func MainNoLeaks(m *testing.M) int {
	code := Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}

// URL creates a fresh migrated database for t, dropped when t ends, and
// returns its URL.
func URL(tb testing.TB) string {
	tb.Helper()
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		tb.Fatal(setupErr)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("schematest: connecting to %s: %v", adminURL, err)
	}
	defer admin.Close(ctx)

	name := "attune_test_" + randomHex(6)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tplName)); err != nil {
		tb.Fatalf("schematest: cloning template: %v", err)
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		admin, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			tb.Errorf("schematest: dropping %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("schematest: dropping %s: %v", name, err)
		}
	})
	return withDatabase(adminURL, name)
}

// Pool returns a pool on a fresh migrated database for t, closed when t ends.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), URL(tb))
	if err != nil {
		tb.Fatalf("schematest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	adminURL = os.Getenv("ATTUNE_TEST_DATABASE_URL")
	if adminURL == "" {
		adminURL = DefaultURL
	}
	conn, err := connect(ctx, adminURL)
	if err != nil {
		if os.Getenv("ATTUNE_TEST_DATABASE_URL") != "" {
			return fmt.Errorf("schematest: ATTUNE_TEST_DATABASE_URL does not answer: %w", err)
		}
		c, cerr := startCluster(ctx)
		if cerr != nil {
			return fmt.Errorf("schematest: no PostgreSQL at %s (%v) and none could be started (%w); install PostgreSQL (apt-get install postgresql) or set ATTUNE_TEST_DATABASE_URL", DefaultURL, err, cerr)
		}
		private = c
		adminURL = c.url
		if conn, err = connect(ctx, adminURL); err != nil {
			return fmt.Errorf("schematest: private cluster does not answer: %w", err)
		}
	}
	defer conn.Close(ctx)
	u, err := url.Parse(adminURL)
	if err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	u.Path = "/postgres"
	adminURL = u.String()

	hash, err := migrationsHash()
	if err != nil {
		return err
	}
	tplName = "attune_test_tpl_" + hash

	// Test packages run as parallel processes: one builds the template.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7365)"); err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(7365)") //nolint:errcheck

	var ready bool
	err = conn.QueryRow(ctx, `SELECT coalesce(shobj_description(oid, 'pg_database') = 'ready', false)
		FROM pg_database WHERE datname = $1`, tplName).Scan(&ready)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("schematest: %w", err)
	}
	if ready {
		return nil
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+tplName+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+tplName); err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	pool, err := pgxpool.New(ctx, withDatabase(adminURL, tplName))
	if err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	_, err = schema.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("schematest: migrating template: %w", err)
	}
	if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+tplName+" IS 'ready'"); err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	return nil
}

func connect(ctx context.Context, u string) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pgx.Connect(cctx, u)
}

// migrationsHash names the template after the migrations, so a changed
// schema never reuses a stale template.
func migrationsHash() (string, error) {
	ms, err := schema.Migrations()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%d %s\n%s\n", m.Version, m.Name, m.SQL)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

func withDatabase(u, db string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	parsed.Path = "/" + db
	return parsed.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// IsCode reports whether err is a PostgreSQL error with SQLSTATE code.
func IsCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.EqualFold(pgErr.Code, code)
}
