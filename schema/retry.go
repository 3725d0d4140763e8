package schema

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Transient reports whether err is a failure that trying the same work
// again may not meet: the database could not be reached or dropped the
// connection, is restarting, or aborted the transaction to break a
// serialization conflict or a deadlock. Statement errors (a constraint, a
// syntax error, a bad value, River's ErrNotFound) are not transient: they
// would only fail again.
//
// It is the one classification attune uses to decide whether a database
// write is retried (Retry). It does not know the caller's context: a
// context.DeadlineExceeded counts as transient (the database did not answer
// in time, for a per-attempt deadline), and Retry stops anyway once its own
// context is done. context.Canceled is never transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	// The server's word comes first, also inside a *pgconn.ConnectError: a
	// refused password or a missing database stays refused.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return transientCode(pgErr.Code)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || // could not reach the server at all
		errors.As(err, &netErr) || // refused, reset, timed out, unresolvable
		pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.SafeToRetry(err) || // failed before anything was sent
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// transientCode reports the SQLSTATEs a retry may not meet.
func transientCode(code string) bool {
	switch code {
	case "40001", // serialization_failure: the transaction lost a race
		"40P01", // deadlock_detected: it was chosen to break a deadlock
		"57P01", // admin_shutdown: terminated (fast shutdown, pg_terminate_backend)
		"57P02", // crash_shutdown: another backend crashed
		"57P03", // cannot_connect_now: starting up, shutting down, in recovery
		"57P05": // idle_session_timeout: the session was closed for idling
		return true
	}
	// 57P04 database_dropped is left out: no retry finds the database again.
	return strings.HasPrefix(code, "08") // connection_exception and its subclasses
}

// RetryPolicy says how long Retry keeps trying and what it logs meanwhile.
type RetryPolicy struct {
	// GiveUpAfter bounds the retries: a transient failure after this long
	// since the first attempt is returned. Zero means no bound: Retry tries
	// until it succeeds or its context is done.
	GiveUpAfter time.Duration
	// Log, when set, gets a warning before each wait.
	Log *slog.Logger
	// QuietFor holds the warnings back until the work has failed for this
	// long: for work whose short outages something else reports (the
	// worker's heartbeat), but whose failure going on while the database
	// answers others would otherwise go unseen.
	QuietFor time.Duration
	// What names the work in the warning ("database unavailable; retrying
	// " + What); empty for a bare "retrying".
	What string
	// LogArgs are added to the warning, after What.
	LogArgs []any
}

// The wait between attempts: the first, doubled after each attempt up to
// the last.
const (
	retryFirstDelay = 100 * time.Millisecond
	retryMaxDelay   = 5 * time.Second
)

// Retry calls fn until it returns nil or an error that is not Transient,
// ctx is done, or p.GiveUpAfter has passed; it returns fn's last error. It
// waits 100 ms before the second attempt, doubling up to 5 s. fn must be
// safe to run again after a transient failure: a whole transaction, or one
// statement, not the middle of one.
//
// A write that must survive a restart of PostgreSQL runs under a context
// that does not end when the work is interrupted (context.WithoutCancel),
// so that only the policy's bound stops it.
func Retry(ctx context.Context, p RetryPolicy, fn func() error) error {
	delay := retryFirstDelay
	start := time.Now()
	var deadline time.Time
	if p.GiveUpAfter > 0 {
		deadline = time.Now().Add(p.GiveUpAfter)
	}
	for {
		err := fn()
		if err == nil || !Transient(err) || ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) {
			return err
		}
		if p.Log != nil && time.Since(start) >= p.QuietFor {
			msg := "database unavailable; retrying"
			if p.What != "" {
				msg += " " + p.What
			}
			args := append(append(make([]any, 0, len(p.LogArgs)+4), p.LogArgs...), "err", err, "in", delay)
			p.Log.Warn(msg, args...)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		delay = min(delay*2, retryMaxDelay)
	}
}
