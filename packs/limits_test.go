package packs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestLoadLimits: a file over MaxFileBytes, a mapping over MaxMappingKeys
// and aliases expanding past a million values are refused with file (and
// line) quickly, where the YAML library alone took minutes; a mapping at
// the limit loads.
func TestLoadLimits(t *testing.T) {
	t.Parallel()
	// keys writes n keys under key, indented: 80,000 of them stay under
	// 1 MiB, so the key limit, not the size limit, refuses them.
	keys := func(key string, n int) string {
		var b strings.Builder
		b.WriteString(key + ":\n")
		for i := range n {
			fmt.Fprintf(&b, "  k%d: 0\n", i)
		}
		return b.String()
	}
	const head = "name: a\nentry_point: a.sh\n"
	bomb := head + "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
	for i, c := range "bcdefghi" {
		prev := string("abcdefghi"[i])
		bomb += fmt.Sprintf("%c: &%c [%s]\n", c, c, strings.TrimSuffix(strings.Repeat("*"+prev+", ", 9), ", "))
	}

	for _, tt := range []struct {
		name, content string
		size          int64 // grow the file to this many bytes
		line          int
		msg           string
	}{
		{name: "80000 keys", content: head + keys("meta", 80_000), line: 3, msg: "refused: a mapping of 80000 keys, over the limit of 10000 keys per mapping"},
		{name: "100 MB", content: head + keys("meta", 10), size: 100 << 20, msg: "refused: the file is 100 MiB, over the 1 MiB limit for a pack file; keep data out of pack YAML, or split the file"},
		{name: "just over 1 MiB", content: head, size: MaxFileBytes + 1, msg: "refused: the file is 1.0 MiB, over the 1 MiB limit"},
		{name: "alias bomb", content: bomb, line: 9, msg: "refused: its aliases expand the file to more than 1000000 values"},
		{name: "nested", content: head + "parameters:\n" + strings.ReplaceAll(keys("p", 10_001), "  ", "    "), line: 4, msg: "refused: a mapping of 10001 keys"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "p")
			writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: p\n")
			writeFile(t, filepath.Join(dir, "actions", "a.sh"), "#!/bin/sh\n")
			file := filepath.Join(dir, "actions", "a.yaml")
			writeFile(t, file, tt.content)
			if tt.size > 0 {
				require.NoError(t, os.Truncate(file, tt.size))
			}
			p, problems := Load(dir)
			requireProblems(t, []Problem{{File: file, Line: tt.line, Msg: tt.msg}}, problems)
			require.Empty(t, p.Actions)
		})
	}

	t.Run("at the limits", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "p")
		writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: p\n")
		writeFile(t, filepath.Join(dir, "actions", "a.sh"), "#!/bin/sh\n")
		writeFile(t, filepath.Join(dir, "actions", "a.yaml"), head+"tags: [a]\n"+keys("meta", MaxMappingKeys))
		p, problems := Load(dir)
		requireProblems(t, []Problem{{File: filepath.Join(dir, "actions", "a.yaml"), Line: 4, Warning: true, Msg: "unknown key meta"}}, problems)
		require.Len(t, p.Actions[0].Extra["meta"], MaxMappingKeys)

		// Refusing 80,000 keys costs at most what the file's size does
		// (8 times the 10,000 at the limit; 5 times measured): the count
		// stops the decoding. The YAML library's pairwise duplicate check
		// made 8 times the keys 64 times the work (20 s here). A ratio of
		// the fastest of three runs each, so that a loaded machine slows
		// both alike.
		over := filepath.Join(t.TempDir(), "p")
		writeFile(t, filepath.Join(over, "pack.yaml"), "ref: p\n")
		writeFile(t, filepath.Join(over, "actions", "a.sh"), "#!/bin/sh\n")
		writeFile(t, filepath.Join(over, "actions", "a.yaml"), head+keys("meta", 80_000))
		fastest := func(dir string) time.Duration {
			best := time.Duration(1<<63 - 1)
			for range 3 {
				start := time.Now()
				Load(dir)
				best = min(best, time.Since(start))
			}
			return best
		}
		atLimit, refused := fastest(dir), fastest(over)
		t.Logf("10,000 keys loaded in %s, 80,000 refused in %s", atLimit, refused)
		require.Less(t, refused, 16*atLimit, "refusing 8 times the keys grows with the file, not with its square")
	})
}

// TestDecodeValue: the linear decoder gives what the YAML library gives,
// merge keys, aliases and scalar types included, and reports a repeated key
// on its line.
func TestDecodeValue(t *testing.T) {
	t.Parallel()
	const doc = `
base: &base {a: 1, b: two, c: [x, {y: null}]}
other: &other {b: 3, d: 2.5}
m:
  <<: [*base, *other]
  a: 9
  when: 2030-01-02T15:04:05Z
  on: true
  1: one
list: [*base, ~, 0x10, "07", 1e3]
`
	var n yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(doc), &n))
	got, err := decodeValue(&n)
	require.NoError(t, err)
	got, err = jsonLike(got)
	require.NoError(t, err)
	var want any
	require.NoError(t, n.Decode(&want))
	want, err = jsonLike(want)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, map[string]any{"a": 9, "b": "two", "c": []any{"x", map[string]any{"y": nil}}, "d": 2.5,
		"when": "2030-01-02T15:04:05Z", "on": true, "1": "one"}, got.(map[string]any)["m"])

	require.NoError(t, yaml.Unmarshal([]byte("a:\n  x: 1\n  y: 2\n  x: 3\n"), &n))
	_, err = decodeValue(&n)
	require.EqualError(t, err, `line 4: key "x" repeated (first at line 2)`)
}

// TestLoadContext: loading stops at the next file once its context is
// done; the pack being read gets an error, so it is not registered half
// read, and LoadAllContext loads no further pack.
func TestLoadContext(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	_, problems := writePacks(t, base, twoPacks)
	require.Empty(t, problems)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, problems := LoadContext(ctx, filepath.Join(base, "zeta"))
	requireProblems(t, []Problem{{File: filepath.Join(base, "zeta", "triggers", "tick.yaml"), Msg: "loading stopped before this file: context canceled; the pack is not registered"}}, problems)
	require.Equal(t, p.Dir, problems[0].PackDir)
	require.Error(t, AsError(problems))

	ps, problems := LoadAllContext(ctx, base)
	require.Empty(t, ps)
	requireProblems(t, []Problem{{File: base, Msg: "loading stopped before alpha: context canceled"}}, problems)
}
