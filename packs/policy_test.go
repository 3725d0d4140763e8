package packs

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func policyPack(t *testing.T, packYAML string, actions map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pol")
	writeFile(t, filepath.Join(dir, "pack.yaml"), packYAML)
	writeFile(t, filepath.Join(dir, "actions", "run.sh"), "true\n")
	for name, body := range actions {
		writeFile(t, filepath.Join(dir, "actions", name), body)
	}
	return dir
}

func TestLoadPolicies(t *testing.T) {
	t.Parallel()
	dir := policyPack(t, "ref: pol\nconcurrency: {limit: 4, key: \"{{ parameters.host }}\"}\n", map[string]string{
		"deploy.yaml": `name: deploy
entry_point: run.sh
max_retries: 1
parameters:
  host: {type: string}
concurrency:
  limit: 2
  key: "{{ parameters.host }}"
  on_limit: cancel
rate_limit: {count: 10, per: 1m}
retry: {max: 3, delay: 2s, backoff: exponential, max_delay: 5m, on: [failed, timeout]}
retention: 7d
`,
	})
	p, problems := Load(dir)
	requireProblems(t, []Problem{{File: filepath.Join(dir, "actions", "deploy.yaml"), Line: 11, Warning: true,
		Msg: "both max_retries (1) and retry.max (3) given; retry.max is used"}}, problems)
	require.Equal(t, &Concurrency{Limit: 4, Key: "{{ parameters.host }}", OnLimit: "queue"}, p.Policy.Concurrency)
	a := p.Actions[0]
	require.Equal(t, 3, a.MaxRetries)
	require.Equal(t, Policy{
		Concurrency: &Concurrency{Limit: 2, Key: "{{ parameters.host }}", OnLimit: "cancel"},
		RateLimit:   &RateLimit{Count: 10, Per: "60000ms"},
		Retry:       &Retry{Max: 3, Delay: "2000ms", Backoff: "exponential", MaxDelay: "300000ms", On: []string{"failed", "timeout"}},
		Retention:   "604800000ms",
	}, a.Policy)
	require.Nil(t, a.Extra, "policy blocks are not extra keys")
}

func TestLoadPoliciesInvalid(t *testing.T) {
	t.Parallel()
	dir := policyPack(t, "ref: pol\nconcurrency: {limit: 1, key: \"{{ parameters.region }}\"}\n", map[string]string{
		"bad.yaml": `name: bad
entry_point: run.sh
parameters:
  host: {type: string}
concurrency:
  limit: 0
  key: "{{ parameters.hots }}"
  on_limit: drop
rate_limit: {count: 10, per: soon, burst: 2}
retry: {max: 3, backoff: random, on: [failed, crashed]}
retention: -1d
`,
	})
	_, problems := Load(dir)
	file := filepath.Join(dir, "actions", "bad.yaml")
	requireProblems(t, []Problem{
		{File: file, Line: 6, Msg: "concurrency.limit must be a whole number of at least 1, got \"0\""},
		{File: file, Line: 8, Msg: "unknown on_limit \"drop\"; use queue or cancel"},
		{File: file, Line: 7, Msg: "concurrency.key names unknown parameter \"hots\"; it declares: host"},
		{File: file, Line: 9, Msg: "rate_limit.per must be a duration such as 90s, 5m, 12h or 7d, got \"soon\""},
		{File: file, Line: 9, Msg: "rate_limit: unknown key \"burst\"; use count, per or key"},
		{File: file, Line: 10, Msg: "unknown backoff \"random\"; use constant, linear or exponential"},
		{File: file, Line: 10, Msg: "retry.on: unknown outcome \"crashed\"; use failed, timeout or abandoned"},
		{File: file, Line: 11, Msg: "retention must not be negative, got -1d"},
		{File: file, Line: 1, Msg: "pack.yaml's concurrency.key names parameter \"region\", which action pol.bad does not declare"},
	}, problems)
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"0": 0, "720h": 720 * time.Hour, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second, "-1d": -24 * time.Hour,
	} {
		got, err := ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "soon", "1x", "d"} {
		_, err := ParseDuration(in)
		require.Error(t, err, in)
	}
}
