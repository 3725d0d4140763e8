package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
)

// queryAll runs sql and collects its rows into T by column position. An
// empty result is an empty slice, so -j prints [] rather than null.
func queryAll[T any](ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) ([]T, error) {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[T])
	if list == nil {
		list = []T{}
	}
	return list, err
}

// print writes v as JSON with -j, else calls table.
func (a *app) print(v any, table func(w *tabwriter.Writer)) error {
	if a.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// listCommand is a read-only table over one query.
func (a *app) listCommand(use, short, sql string, headers []string, withLimit bool) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: a.withDB(func(ctx context.Context, pool *pgxpool.Pool, _ []string) error {
			args := []any{}
			if withLimit {
				if limit < 1 || limit > 10000 {
					return usageError{fmt.Errorf("--limit %d is invalid: use 1 to 10000", limit)}
				}
				args = append(args, limit)
			}
			rows, err := pool.Query(ctx, sql, args...)
			if err != nil {
				return err
			}
			list, err := pgx.CollectRows(rows, pgx.RowToMap)
			if err != nil {
				return err
			}
			if list == nil {
				list = []map[string]any{}
			}
			return a.print(list, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, strings.ToUpper(strings.Join(headers, "\t")))
				for _, r := range list {
					cells := make([]string, len(headers))
					for i, h := range headers {
						cells[i] = cell(r[h])
					}
					fmt.Fprintln(w, strings.Join(cells, "\t"))
				}
			})
		}),
	}
	if withLimit {
		cmd.Flags().IntVar(&limit, "limit", 50, "at most this many")
	}
	return cmd
}

func cell(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case time.Time:
		return tableTime(t)
	case string:
		return truncate(t, 60)
	case []any, map[string]any:
		b, _ := json.Marshal(t)
		return truncate(string(b), 60)
	}
	return fmt.Sprint(v)
}

// tableTime is the one format of times in tables: local time with its
// zone, to the second. -j prints RFC 3339 with the full precision.
func tableTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

// ago renders an age in seconds as "3.2s ago", "5m ago", "2h ago".
func ago(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100*time.Millisecond).String() + " ago"
	case d < time.Hour:
		return d.Round(time.Second).String() + " ago"
	}
	return d.Round(time.Minute).String() + " ago"
}
