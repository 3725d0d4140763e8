package worker

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/attune-system/attune/schema"
)

// quietRetryAfter is how long the worker's database work may fail before
// its retries log: a shorter outage is the heartbeat's to report, once.
const quietRetryAfter = 30 * time.Second

// quietRetry is the retry policy of work that waits for the database
// however long (a claim, an admission, a result): silent for
// quietRetryAfter, then a warning before each attempt naming what waits,
// so that work failing while the heartbeat succeeds is seen.
func quietRetry(log *slog.Logger, what string, args ...any) schema.RetryPolicy {
	return schema.RetryPolicy{Log: log, QuietFor: quietRetryAfter, What: what, LogArgs: args}
}

// outageMuted is log, silent while down is set: during an outage the
// heartbeat says once that the database is away and once that it is back,
// and the retries waiting for it add nothing.
func outageMuted(log *slog.Logger, down *atomic.Bool) *slog.Logger {
	return slog.New(levelFilter{log.Handler(), slog.LevelDebug, down})
}
