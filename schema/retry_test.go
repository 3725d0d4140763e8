package schema_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/schema/schematest"
)

func requireCode(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, code, pgErr.Code, pgErr.Message)
}

// A connection the server terminates (pg_terminate_backend, as a fast
// shutdown does to every session) fails with 57P01, and so do its later
// statements' errors count as transient.
func TestTransientTerminatedConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := schematest.URL(t)
	victim, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer victim.Close(ctx)
	admin, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer admin.Close(ctx)

	var killed bool
	require.NoError(t, admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", victim.PgConn().PID()).Scan(&killed))
	require.True(t, killed)

	_, err = victim.Exec(ctx, "SELECT 1")
	require.Error(t, err)
	requireCode(t, err, "57P01")
	require.True(t, schema.Transient(err), "%v", err)
	require.True(t, schema.Transient(fmt.Errorf("error writing: %w", err)), "wrapped")

	// The connection is gone: what comes next is a closed connection.
	_, err = victim.Exec(ctx, "SELECT 1")
	require.Error(t, err)
	require.True(t, schema.Transient(err), "%v", err)
}

// Two transactions that update the same row, the first in REPEATABLE READ
// with its snapshot taken before the second commits: 40001.
func TestTransientSerializationFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, "CREATE TABLE race (id int PRIMARY KEY, v int); INSERT INTO race VALUES (1, 0)")
	require.NoError(t, err)

	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	var v int
	require.NoError(t, tx.QueryRow(ctx, "SELECT v FROM race WHERE id = 1").Scan(&v)) // the snapshot
	_, err = pool.Exec(ctx, "UPDATE race SET v = v + 1 WHERE id = 1")
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "UPDATE race SET v = v + 1 WHERE id = 1")
	requireCode(t, err, "40001")
	require.True(t, schema.Transient(err))
}

// Two transactions that lock two rows in opposite orders: PostgreSQL
// aborts one of them with 40P01.
func TestTransientDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, "CREATE TABLE pair (id int PRIMARY KEY); INSERT INTO pair VALUES (1), (2)")
	require.NoError(t, err)

	txs := make([]pgx.Tx, 2)
	for i := range txs {
		txs[i], err = pool.Begin(ctx)
		require.NoError(t, err)
		defer txs[i].Rollback(ctx) //nolint:errcheck
		_, err = txs[i].Exec(ctx, "SELECT * FROM pair WHERE id = $1 FOR UPDATE", i+1)
		require.NoError(t, err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range txs {
		wg.Go(func() {
			_, errs[i] = txs[i].Exec(ctx, "SELECT * FROM pair WHERE id = $1 FOR UPDATE", 2-i)
			if errs[i] != nil {
				_ = txs[i].Rollback(ctx) // frees the other
			}
		})
	}
	wg.Wait()
	deadlock := errs[0]
	if deadlock == nil {
		deadlock = errs[1]
	}
	requireCode(t, deadlock, "40P01")
	require.True(t, schema.Transient(deadlock))
}

// Failing to reach a server is transient; a server that refuses the
// database for good is not.
func TestTransientConnect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	_, err = pgx.Connect(ctx, "postgres://root@"+addr+"/x?sslmode=disable&connect_timeout=5")
	require.Error(t, err)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.True(t, schema.Transient(err), "%v", err)

	u, err := url.Parse(schematest.URL(t))
	require.NoError(t, err)
	u.Path = "/attune_no_such_database"
	_, err = pgx.Connect(ctx, u.String())
	requireCode(t, err, "3D000")
	require.False(t, schema.Transient(err), "%v", err)
}

// Statement errors, and the caller's own cancel, are not transient.
func TestTransientStatementErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, "CREATE TABLE one (id int PRIMARY KEY); INSERT INTO one VALUES (1)")
	require.NoError(t, err)

	for sql, code := range map[string]string{
		"SELEC 1":                      "42601", // syntax_error
		"INSERT INTO one VALUES (1)":   "23505", // unique_violation
		"SELECT 1 / 0":                 "22012", // division_by_zero
		"SELECT * FROM no_such_table":  "42P01", // undefined_table
		"SELECT attune.enqueue('x.y')": "42704", // attune's unknown action
	} {
		_, err := pool.Exec(ctx, sql)
		requireCode(t, err, code)
		require.False(t, schema.Transient(err), "%s: %v", sql, err)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = pool.Exec(cancelled, "SELECT 1")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, schema.Transient(err), "%v", err)

	// A statement cut short by a deadline: the database did not answer in
	// time, which a later attempt may not meet (Retry stops by itself when
	// its own context is done).
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = pool.Exec(short, "SELECT pg_sleep(5)")
	require.Error(t, err)
	require.True(t, pgconn.Timeout(err), "%v", err)
	require.True(t, schema.Transient(err), "%v", err)
}

// Errors no test server produces on demand, built as the net and pgconn
// packages build them.
func TestTransientClassification(t *testing.T) {
	t.Parallel()
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	pipe := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("something else"), false},
		{reset, true},
		{fmt.Errorf("error writing: %w", reset), true},
		{pipe, true},
		{syscall.ECONNRESET, true},
		{syscall.EPIPE, true},
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("reading: %w", io.EOF), true},
		{&pgconn.PgError{Code: "57P01"}, true},  // admin_shutdown
		{&pgconn.PgError{Code: "57P02"}, true},  // crash_shutdown
		{&pgconn.PgError{Code: "57P03"}, true},  // cannot_connect_now
		{&pgconn.PgError{Code: "57P05"}, true},  // idle_session_timeout
		{&pgconn.PgError{Code: "57P04"}, false}, // database_dropped
		{&pgconn.PgError{Code: "57014"}, false}, // query_canceled (statement_timeout)
		{&pgconn.PgError{Code: "08006"}, true},  // connection_failure
		{&pgconn.PgError{Code: "08P01"}, true},  // protocol_violation
		{&pgconn.PgError{Code: "40001"}, true},
		{&pgconn.PgError{Code: "40P01"}, true},
		{&pgconn.PgError{Code: "28P01"}, false}, // invalid_password
		{context.Canceled, false},
		{fmt.Errorf("x: %w", context.Canceled), false},
	} {
		require.Equal(t, c.want, schema.Transient(c.err), "%#v", c.err)
	}
}

var errTransient = &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}

func TestRetryUntilSuccess(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	calls := 0
	start := time.Now()
	err := schema.Retry(context.Background(), schema.RetryPolicy{
		GiveUpAfter: time.Minute, Log: slog.New(slog.NewTextHandler(&logs, nil)),
		What: "event", LogArgs: []any{"sensor", "s.x"},
	}, func() error {
		if calls++; calls < 3 {
			return errTransient
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls)
	// 100 ms, then 200 ms.
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.Contains(t, logs.String(), `msg="database unavailable; retrying event" sensor=s.x`)
	require.Contains(t, logs.String(), "in=200ms")
}

// QuietFor holds the warnings back while the failures are younger than it.
func TestRetryQuietFor(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		quiet time.Duration
		logs  int
	}{{time.Hour, 0}, {0, 2}} {
		var logs bytes.Buffer
		calls := 0
		err := schema.Retry(context.Background(), schema.RetryPolicy{
			Log: slog.New(slog.NewTextHandler(&logs, nil)), QuietFor: c.quiet, What: "claim",
		}, func() error {
			if calls++; calls < 3 {
				return errTransient
			}
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, c.logs, strings.Count(logs.String(), "retrying claim"), "QuietFor %s:\n%s", c.quiet, logs.String())
	}
}

func TestRetryStopsAtPermanentError(t *testing.T) {
	t.Parallel()
	calls := 0
	permanent := &pgconn.PgError{Code: "23505"}
	err := schema.Retry(context.Background(), schema.RetryPolicy{}, func() error {
		calls++
		return permanent
	})
	require.ErrorIs(t, err, permanent)
	require.Equal(t, 1, calls)
}

func TestRetryGivesUpAfterBound(t *testing.T) {
	t.Parallel()
	calls := 0
	start := time.Now()
	err := schema.Retry(context.Background(), schema.RetryPolicy{GiveUpAfter: 200 * time.Millisecond}, func() error {
		calls++
		return errTransient
	})
	require.ErrorIs(t, err, errTransient)
	// Attempts at 0, 100 ms, 300 ms (past the bound: returned).
	require.Equal(t, 3, calls)
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestRetryStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	calls := 0
	start := time.Now()
	err := schema.Retry(ctx, schema.RetryPolicy{}, func() error { // no bound: only ctx stops it
		calls++
		return errTransient
	})
	require.ErrorIs(t, err, errTransient, "the last error, not the context's")
	// Attempts at 0 and 100 ms; the wait for 300 ms ends with ctx.
	require.Equal(t, 2, calls)
	require.Less(t, time.Since(start), time.Second)
}
