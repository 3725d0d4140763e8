package worker

import (
	"log/slog"
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
