package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OutputTail is what a log follower reads: one execution's status and the
// part of each stream after what it already has, without reading the whole
// stored output again.
type OutputTail struct {
	Status          string
	ExitCode        *int
	Error           *string
	StdoutTruncated bool
	StderrTruncated bool
	// Stdout and Stderr are the text after the given offsets.
	Stdout, Stderr string
	// StdoutSame and StderrSame report whether the stored text still starts
	// with what the follower has (its MD5 matched): output only grows while
	// an execution runs, except where the truncation notice replaces the
	// last bytes kept.
	StdoutSame, StderrSame bool
}

// TailOutput reads execution id's output after the first stdoutFrom and
// stderrFrom characters, whose hex MD5 sums the follower passes.
func TailOutput(ctx context.Context, db Querier, id int64, stdoutFrom int, stdoutMD5 string, stderrFrom int, stderrMD5 string) (*OutputTail, error) {
	var t OutputTail
	err := db.QueryRow(ctx, `SELECT status, exit_code, error, stdout_truncated, stderr_truncated,
			substr(coalesce(stdout, ''), $2 + 1), substr(coalesce(stderr, ''), $4 + 1),
			$2 = 0 OR md5(left(coalesce(stdout, ''), $2)) = $3, $4 = 0 OR md5(left(coalesce(stderr, ''), $4)) = $5
		FROM attune.execution WHERE id = $1`, id, stdoutFrom, stdoutMD5, stderrFrom, stderrMD5).
		Scan(&t.Status, &t.ExitCode, &t.Error, &t.StdoutTruncated, &t.StderrTruncated, &t.Stdout, &t.Stderr,
			&t.StdoutSame, &t.StderrSame)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d (attune execution list shows recent ones)", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("error reading execution %d's output: %w", id, err)
	}
	return &t, nil
}
