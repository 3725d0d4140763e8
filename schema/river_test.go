package schema_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/schema/schematest"
)

// riverSQLFiles are the files of attune's that touch River's tables: the
// state machine, the migrations that amend it, and the policies' trigger.
var riverSQLFiles = []string{"005_state_machine.sql", "009_settle.sql", "011_policy.sql", "012_sql_traceparent.sql",
	"015_lost_retries.sql", "016_policy_fixes.sql", "017_claim_many.sql", "018_policy_seats.sql", "019_policy_handover.sql",
	"020_policy_lookups.sql"}

// riverSQLFile names riverSQLFiles in messages.
var riverSQLFile = strings.Join(riverSQLFiles, " or ")

// riverSchemaVersion is River's migration version that riverSQLFile was
// written against; the file states the same number.
const riverSchemaVersion = 8

// riverName matches the names of River's tables, types and notification
// channels.
var riverName = regexp.MustCompile(`\briver_(job|queue|leader|migration|notification|client|insert)\w*`)

// riverMigrations returns the text of each of riverSQLFiles.
func riverMigrations(t *testing.T) []string {
	t.Helper()
	var texts []string
	for _, name := range riverSQLFiles {
		b, err := os.ReadFile(filepath.Join("migrations", name))
		require.NoError(t, err)
		texts = append(texts, string(b))
	}
	return texts
}

// TestRiverSchemaVersionPinned fails when River's latest migration moves
// past the version attune's SQL on River's tables was written for. When it
// does: read River's new migrations, check every statement of
// schema/migrations/005_state_machine.sql that names a river_ table against
// them (a new migration may amend that file's functions with CREATE OR
// REPLACE), then raise the number in both places.
func TestRiverSchemaVersionPinned(t *testing.T) {
	t.Parallel()
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), &rivermigrate.Config{Schema: schema.Name})
	require.NoError(t, err)
	all := migrator.AllVersions()
	require.NotEmpty(t, all)
	latest := all[len(all)-1].Version

	for i, sql := range riverMigrations(t) {
		m := regexp.MustCompile(`(?m)^-- River schema version: (\d+)$`).FindStringSubmatch(sql)
		require.NotNil(t, m, "%s states no \"-- River schema version: N\" line", riverSQLFiles[i])
		pinned, _ := strconv.Atoi(m[1])
		require.Equal(t, riverSchemaVersion, pinned, "%s and this test pin different River versions", riverSQLFiles[i])
	}
	require.Equal(t, riverSchemaVersion, latest,
		"River's schema is now at migration %d, but schema/migrations/%s was written for %d: review its river_ statements against River's migrations %d to %d, then raise the pinned version in that file and in this test",
		latest, riverSQLFile, riverSchemaVersion, riverSchemaVersion+1, latest)
}

// TestRiverSQLInOneFile fails when River's tables or channels are named
// outside schema/migrations/005_state_machine.sql: in attune's Go code, or
// in a database function the migrations define elsewhere. Applied
// migrations are history: later ones replace their functions.
func TestRiverSQLInOneFile(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if riverName.MatchString(line) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s:%d names River's schema (%s); that SQL belongs in schema/migrations/%s", rel, i+1,
					riverName.FindString(line), riverSQLFile)
			}
		}
		return nil
	})
	require.NoError(t, err)

	// The live functions of a migrated database: those that name River's
	// schema are all (re)defined in the one file.
	ctx := context.Background()
	pool := schematest.Pool(t)
	rows, err := pool.Query(ctx, `SELECT p.proname FROM pg_proc p
		WHERE p.pronamespace = 'attune'::regnamespace AND p.proname NOT LIKE 'river\_%' AND p.prosrc ~ 'river_'`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, names, "attune.enqueue inserts River jobs")
	sql := strings.Join(riverMigrations(t), "\n")
	for _, name := range names {
		require.Regexp(t, `(?m)^CREATE (OR REPLACE )?FUNCTION attune\.`+regexp.QuoteMeta(name)+`\(`, sql,
			"function attune.%s names River's schema but is not defined in %s", name, strings.Join(riverSQLFiles, ", "))
	}
}
