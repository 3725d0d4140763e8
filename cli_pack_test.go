package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// TestCLIRegisterAcrossPacks: registering a directory of packs does not
// depend on their names' order when a rule names another pack's action, -j
// prints snake_case fields, and a rule's action_params are checked against
// an action of another pack.
func TestCLIRegisterAcrossPacks(t *testing.T) {
	t.Parallel()
	b := &cliBundle{ctx: context.Background(), url: schematest.URL(t), packs: t.TempDir()}
	write := func(path, body string) { b.writeFile(t, path, body) }
	// alpha sorts first, but its rule needs zeta's trigger and action.
	write("alpha/pack.yaml", "ref: alpha\n")
	write("alpha/rules/r.yaml", "name: r\ntrigger_ref: zeta.tick\naction_ref: zeta.a\naction_params: {n: 1}\n")
	write("zeta/pack.yaml", "ref: zeta\n")
	write("zeta/triggers/tick.yaml", "name: tick\n")
	write("zeta/actions/a.yaml", "name: a\nentry_point: a.sh\nparameters:\n  n: {type: integer}\n")
	write("zeta/actions/a.sh", "#!/bin/sh\n")

	var res []map[string]any
	b.okJSON(t, &res, "pack", "register")
	require.Len(t, res, 2)
	for _, r := range res {
		require.Equal(t, []string{"actions", "disabled_actions", "kept_rules", "pack", "rules", "sensors", "triggers"}, sortedKeys(r))
	}
	require.ElementsMatch(t, []any{"alpha", "zeta"}, []any{res[0]["pack"], res[1]["pack"]})

	// A parameter zeta.a does not declare: every event would fail to
	// enqueue, so registration refuses the rule.
	write("alpha/rules/r.yaml", "name: r\ntrigger_ref: zeta.tick\naction_ref: zeta.a\naction_params: {bogus: 1}\n")
	r := b.attune(t, "pack", "register", filepath.Join(b.packs, "alpha"))
	require.Error(t, r.err)
	require.Contains(t, r.stderr, `rule alpha.r: action_params: unknown parameter "bogus"; zeta.a declares: n`)
	require.Equal(t, "attune: 1 pack(s) not registered", r.line())

	// Nothing to register is an error, not silence.
	r = b.attuneWith(t, b.env("ATTUNE_PACKS_DIR="+t.TempDir()), "", "-j", "pack", "register")
	require.Error(t, r.err)
	require.Empty(t, r.stdout)
}

// TestCLIRegisterBadAmongGood: in a directory of packs, a pack with a load
// error and one whose pack.yaml does not load are reported and not
// registered, the good pack still is, and the command fails naming how many
// did not make it.
func TestCLIRegisterBadAmongGood(t *testing.T) {
	t.Parallel()
	b := &cliBundle{ctx: context.Background(), url: schematest.URL(t), packs: t.TempDir()}
	write := func(path, body string) { b.writeFile(t, path, body) }
	write("bad/pack.yaml", "ref: bad\n")
	write("bad/actions/a.yaml", "name: a\nentry_point: a.sh\nrunner_type: ruby\n")
	write("bad/actions/a.sh", "#!/bin/sh\n")
	write("broken/pack.yaml", "ref: Not.A.Ref\n")
	write("good/pack.yaml", "ref: good\n")
	write("good/actions/a.yaml", "name: a\nentry_point: a.sh\n")
	write("good/actions/a.sh", "#!/bin/sh\n")

	r := b.attune(t, "pack", "register")
	require.Error(t, r.err)
	require.Equal(t, "registered pack good: 1 actions, 0 sensors, 0 triggers, 0 rules\n", r.stdout)
	require.Contains(t, r.stderr, filepath.Join(b.packs, "bad", "actions", "a.yaml")+`:3: unknown runner_type "ruby"`)
	require.Contains(t, r.stderr, "pack bad not registered: fix the errors above\n")
	require.Contains(t, r.stderr, "pack "+filepath.Join(b.packs, "broken")+" not registered: fix the errors above\n")
	require.Equal(t, "attune: 2 pack(s) not registered", r.line())
}

func TestCLIPackListAndCheck(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	// pack list and action list after registering again.
	b.ok(t, "pack", "register", filepath.Join(b.packs, "c"))
	require.Regexp(t, `(?m)^c\s+0\.1\.0\s+4\s+CLI tests$`, b.ok(t, "pack", "list"))
	var actions []map[string]any
	b.okJSON(t, &actions, "action", "list", "--pack", "c")
	require.Len(t, actions, 5)
	require.Equal(t, []string{"description", "enabled", "pack", "parameters", "ref", "runner_type"}, sortedKeys(actions[0]))

	// pack check of a good pack, then of a broken one.
	require.Contains(t, b.ok(t, "pack", "check", filepath.Join(b.packs, "c")), "pack c: 5 actions, 0 sensors, 0 triggers, 0 rules: OK")
	broken := filepath.Join(t.TempDir(), "broken")
	require.NoError(t, os.MkdirAll(filepath.Join(broken, "actions"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "pack.yaml"), []byte("ref: broken\nversion: 1\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "actions", "bad.yaml"), []byte("name: bad\nentry_point: bad.sh\nparameters:\n  n:\n    type: integr\n"), 0o644))
	r := b.attune(t, "pack", "check", broken)
	require.Error(t, r.err)
	require.NotZero(t, exitCode(r.err))
	require.Regexp(t, regexp.QuoteMeta(filepath.Join(broken, "actions", "bad.yaml"))+`:5: .*integr`, r.stderr)
	require.Contains(t, r.line(), "has 1 error(s)")
	r = b.attune(t, "-j", "pack", "check", broken)
	require.Error(t, r.err)
	var check struct {
		OK       bool `json:"ok"`
		Problems []struct {
			File    string `json:"file"`
			Line    int    `json:"line"`
			Message string `json:"message"`
			Warning bool   `json:"warning"`
		} `json:"problems"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &check), r.stdout)
	require.False(t, check.OK)
	require.Len(t, check.Problems, 2, "the missing entry point (a warning) and the bad type")
	require.True(t, check.Problems[0].Warning)
	require.Equal(t, 2, check.Problems[0].Line)
	require.False(t, check.Problems[1].Warning)
	require.Equal(t, filepath.Join(broken, "actions", "bad.yaml"), check.Problems[1].File)
	require.Equal(t, 5, check.Problems[1].Line)
	require.Contains(t, check.Problems[1].Message, "integr")
}

// writeFile writes body to path below the bundle's packs directory,
// executable, creating the directories.
func (b *cliBundle) writeFile(t *testing.T, path, body string) {
	t.Helper()
	path = filepath.Join(b.packs, path)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
}

// TestCLIPackInterrupted: with its context cancelled (SIGINT, SIGTERM),
// pack check and pack register stop reading, say so, and register nothing.
func TestCLIPackInterrupted(t *testing.T) {
	t.Parallel()
	b := &cliBundle{ctx: context.Background(), url: schematest.URL(t), packs: t.TempDir()}
	for name, body := range cliPack {
		path := filepath.Join(b.packs, "c", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, args := range [][]string{{"pack", "check", filepath.Join(b.packs, "c")}, {"pack", "register"}} {
		var stdout, stderr bytes.Buffer
		err := runWithEnv(ctx, args, b.env(), strings.NewReader(""), &stdout, &stderr)
		require.Error(t, err, "attune %v", args)
		require.Regexp(t, `^attune: pack (check|register) interrupted`, "attune: "+oneLine(err))
		require.Empty(t, stdout.String())
	}
	pool, err := pgxpool.New(context.Background(), b.url)
	require.NoError(t, err)
	defer pool.Close()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM attune.pack").Scan(&n))
	require.Zero(t, n)
}
