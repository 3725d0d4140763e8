package worker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/worker/process"
)

func TestMaskReplacesValuesAndEncodings(t *testing.T) {
	t.Parallel()
	secret := `pa"ss<wörd>`
	m := newSecretMasker(map[string]any{"password": secret, "pin": json.Number("4321"), "short": "abc", "flag": true})
	html, plain := jsonEscapes(secret)
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	basic := base64.StdEncoding.EncodeToString([]byte("bob:" + secret)) // at another alignment
	for _, tc := range []struct{ in, want string }{
		{"pw=" + secret + "!", "pw=********!"},
		{`{"password":"` + html + `"}`, `{"password":"********"}`},
		{`{"password": "` + plain + `"}`, `{"password": "********"}`},
		{`{"password": "` + asciiJSON(plain) + `"}`, `{"password": "********"}`},
		{"b64 " + b64 + " end", "b64 ******** end"},
		{"pin 4321 and abc and true", "pin ******** and abc and true"},
		{secret + secret, "********"}, // touching matches are one
		{"no secret here", "no secret here"},
	} {
		require.Equal(t, tc.want, m.text(tc.in), "masking %q", tc.in)
	}
	got := m.text("Authorization: Basic " + basic)
	require.NotContains(t, got, basic)
	require.True(t, strings.HasPrefix(got, "Authorization: Basic "), got)
	require.Contains(t, got, secretMask)

	require.Nil(t, newSecretMasker(map[string]any{"short": "abc", "flag": true}), "nothing to mask")
	var none *masker
	require.Equal(t, "x", none.text("x"))
}

func TestMaskOverlappingValuesLeaveNothing(t *testing.T) {
	t.Parallel()
	m := newMasker([]string{"abcdef", "defghi", "xyzw"})
	require.Equal(t, "[********]", m.text("[abcdefghi]"))
	require.Equal(t, "-********-********-", m.text("-abcdef-defghi-"))
	require.Equal(t, "********", m.text("xyzwxyzw"))
}

// TestMaskMatchesNaive compares the automaton with the obvious quadratic
// masking (every byte inside any occurrence of any pattern is masked, a
// run of them becoming one mask) on random texts over a tiny alphabet,
// where matches overlap all the time.
func TestMaskMatchesNaive(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abc"[rng.IntN(3)]
		}
		return string(b)
	}
	for range 2000 {
		var patterns []string
		for range 1 + rng.IntN(4) {
			patterns = append(patterns, word(4+rng.IntN(4)))
		}
		text := word(rng.IntN(60))
		require.Equal(t, naiveMask(text, patterns), newMasker(patterns).text(text), "patterns %q text %q", patterns, text)
	}
}

func naiveMask(s string, patterns []string) string {
	covered := make([]bool, len(s)+1)
	for _, p := range patterns {
		for i := 0; i+len(p) <= len(s); i++ {
			if s[i:i+len(p)] == p {
				// Touching matches merge, as one mask: mark the gap between.
				for j := i; j < i+len(p); j++ {
					covered[j] = true
				}
			}
		}
	}
	var sb strings.Builder
	for i := 0; i < len(s); {
		if !covered[i] {
			sb.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && covered[i] {
			i++
		}
		sb.WriteString(secretMask)
	}
	return sb.String()
}

// TestMaskLiveHoldsBackAPartialValue: output published while the child
// runs never shows the start of a value it has not finished printing; once
// it has, the value is masked whole.
func TestMaskLiveHoldsBackAPartialValue(t *testing.T) {
	t.Parallel()
	m := newMasker([]string{"hunter22"})
	require.Equal(t, "login: ", m.mask("login: hunt", endLive))
	require.Equal(t, "login: ******** ok", m.mask("login: hunter22 ok", endLive))
	require.Equal(t, "a ******** ", m.mask("a hunter22 hun", endLive))
	require.Equal(t, "login: hunt", m.mask("login: hunt", endFinal), "a finished text keeps what is not a value")
	require.Equal(t, "login: ********", m.mask("login: hunt", endCut), "a text cut at its limit masks what may be a value")

	// Chunk by chunk, as published once a second: no snapshot holds more
	// than a masked secret.
	full := "x hunter22 y hunter22"
	for i := range len(full) + 1 {
		got := m.mask(full[:i], endLive)
		require.NotContains(t, got, "hunt", "snapshot %q", full[:i])
		require.True(t, strings.HasPrefix(m.text(full), got), "snapshot %q gave %q", full[:i], got)
	}
}

func TestMaskStreamKeepsTheLimit(t *testing.T) {
	t.Parallel()
	m := newMasker([]string{"abcd"})
	notice := truncationNotice("stdout")
	text := strings.Repeat("abcd ", 40) // 200 bytes; masked 360
	got, truncated := m.stream(text, false, false, "stdout", 300)
	require.True(t, truncated)
	require.LessOrEqual(t, len(got), 300)
	require.True(t, strings.HasSuffix(got, notice), got)
	require.NotContains(t, got, "abcd")

	// Cut by process at the limit in the middle of a value.
	cut := "data abc" + notice
	got, truncated = m.stream(cut, true, false, "stdout", 1000)
	require.True(t, truncated)
	require.Equal(t, "data ********"+notice, got)

	got, truncated = m.stream("live abc"+notice, false, true, "stdout", 1000)
	require.True(t, truncated)
	require.Equal(t, "live ********"+notice, got)
}

// TestMaskTruncationNoticeMatchesProcess: the notice stream() keeps within
// the limit is the one process appends.
func TestMaskTruncationNoticeMatchesProcess(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	res := process.Run(context.Background(), process.Spec{
		Path: sh, Args: []string{"-c", "printf %0300d 0"}, MaxStdout: 100, MaxStderr: 100,
	})
	require.True(t, res.StdoutTruncated, "%+v", res)
	require.True(t, strings.HasSuffix(res.Stdout, truncationNotice("stdout")), res.Stdout)
}

// TestMaskLinear: a long repetitive value over a text of the same byte is
// where naive matching turns quadratic; the automaton stays linear.
func TestMaskLinear(t *testing.T) {
	t.Parallel()
	m := newMasker([]string{strings.Repeat("a", 4096) + "b", strings.Repeat("a", 4000)})
	text := strings.Repeat("a", 8<<20)
	require.Equal(t, secretMask, m.text(text))
	require.Equal(t, secretMask, m.mask(text, endLive))
}

func TestMaskResultValue(t *testing.T) {
	t.Parallel()
	m := newMasker([]string{"s3cret", "987654"})
	v := map[string]any{"token": "s3cret", "s3cret-key": []any{"x s3cret", json.Number("987654"), json.Number("12")}, "ok": true}
	require.Equal(t, map[string]any{"token": secretMask, "********-key": []any{"x " + secretMask, secretMask, json.Number("12")}, "ok": true}, m.value(v))
}
