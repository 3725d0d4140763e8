package jobs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// listColumns are executionColumns without the output, which lists (and
// GetFacts) leave out: a page of 50 could otherwise be a gigabyte.
var listColumns = strings.Replace(executionColumns, "stdout, stderr,", "NULL::text AS stdout, NULL::text AS stderr,", 1)

// PageFilter narrows ListPage. Zero fields do not filter.
type PageFilter struct {
	ActionRef string
	Status    string
	RuleRef   string
	// PackRef keeps the executions of that pack's actions.
	PackRef string
	// Since and Until bound created_at: Since <= created_at < Until.
	Since, Until time.Time
	// Before is the cursor: only ids below it (the previous page's last id).
	Before int64
	// Limit is the page size; 0 means 50.
	Limit int
}

// ListPage returns one page of executions, newest first, without their
// stdout and stderr (Get reads those), and the cursor of the next page: 0
// when this is the last.
func ListPage(ctx context.Context, db Querier, f PageFilter) ([]*Execution, int64, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	where, args := f.where()
	// One row more than asked tells whether another page follows.
	rows, err := db.Query(ctx, `SELECT `+listColumns+` FROM attune.execution WHERE `+where+
		` ORDER BY id DESC LIMIT $8`, append(args, f.Limit+1)...)
	if err != nil {
		return nil, 0, fmt.Errorf("error listing executions: %w", err)
	}
	defer rows.Close()
	out := []*Execution{}
	for rows.Next() {
		e, err := scanExecution(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("error listing executions: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("error listing executions: %w", err)
	}
	var next int64
	if len(out) > f.Limit {
		out = out[:f.Limit]
		next = out[len(out)-1].ID
	}
	return out, next, nil
}

// Count is how many executions f matches, cursor and limit aside: what a
// list shows as "showing 50 of 1,234".
func Count(ctx context.Context, db Querier, f PageFilter) (int64, error) {
	f.Before = 0
	where, args := f.where()
	var n int64
	if err := db.QueryRow(ctx, "SELECT count(*) FROM attune.execution WHERE "+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("error counting executions: %w", err)
	}
	return n, nil
}

// CountByStatus counts the executions f matches by status, f's status,
// cursor and limit aside: the counts beside a filtered list.
func CountByStatus(ctx context.Context, db Querier, f PageFilter) (map[string]int, error) {
	f.Before, f.Status = 0, ""
	where, args := f.where()
	rows, err := db.Query(ctx, "SELECT status, count(*)::int FROM attune.execution WHERE "+where+" GROUP BY status", args...)
	if err != nil {
		return nil, fmt.Errorf("error counting executions: %w", err)
	}
	out := map[string]int{}
	var status string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error { out[status] = n; return nil }); err != nil {
		return nil, fmt.Errorf("error counting executions: %w", err)
	}
	return out, nil
}

// where is f's condition on attune.execution and its arguments $1 to $7.
func (f PageFilter) where() (string, []any) {
	var since, until *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	if !f.Until.IsZero() {
		until = &f.Until
	}
	return `($1 = '' OR action_ref = $1) AND ($2 = '' OR status = $2) AND ($3 = '' OR rule_ref = $3)
			AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)
			AND ($6 = 0 OR id < $6) AND ($7 = '' OR split_part(action_ref, '.', 1) = $7)`,
		[]any{f.ActionRef, f.Status, f.RuleRef, since, until, f.Before, f.PackRef}
}

// ValidStatus reports whether s is one of the execution statuses.
func ValidStatus(s string) bool {
	switch s {
	case StatusRequested, StatusScheduled, StatusRunning, StatusCanceling:
		return true
	}
	return Finished(s)
}
