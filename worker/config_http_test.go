package worker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigHTTP(t *testing.T) {
	t.Parallel()
	tok := "0123456789abcdef0123"
	http := func(t *testing.T, env ...string) (string, []APIToken, error) {
		t.Helper()
		cfg, err := LoadConfig(env)
		require.NoError(t, err, "the HTTP settings are checked by serve, not by every command")
		return cfg.HTTP()
	}
	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		addr, tokens, err := http(t)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1:8080", addr)
		require.Empty(t, tokens)
		cfg, _ := LoadConfig(nil)
		require.False(t, cfg.MetricsPublic)
	})
	t.Run("Off", func(t *testing.T) {
		t.Parallel()
		addr, _, err := http(t, "ATTUNE_HTTP_ADDR=off")
		require.NoError(t, err)
		require.Empty(t, addr)
	})
	t.Run("LoopbackWithoutTokens", func(t *testing.T) {
		t.Parallel()
		for _, a := range []string{"127.0.0.1:9000", "[::1]:9000", "localhost:9000", "127.0.0.2:0"} {
			addr, _, err := http(t, "ATTUNE_HTTP_ADDR="+a)
			require.NoError(t, err, a)
			require.Equal(t, a, addr)
		}
	})
	t.Run("PublicNeedsTokens", func(t *testing.T) {
		t.Parallel()
		for _, a := range []string{":8080", "0.0.0.0:8080", "[::]:8080", "10.0.0.1:8080", "example.com:80"} {
			_, _, err := http(t, "ATTUNE_HTTP_ADDR="+a)
			require.ErrorContains(t, err, "ATTUNE_API_TOKENS is empty", a)
			require.NotContains(t, err.Error(), "\n")
			_, tokens, err := http(t, "ATTUNE_HTTP_ADDR="+a, "ATTUNE_API_TOKENS="+tok)
			require.NoError(t, err, a)
			require.Len(t, tokens, 1)
		}
	})
	t.Run("BadAddr", func(t *testing.T) {
		t.Parallel()
		for _, a := range []string{"8080", "localhost", "127.0.0.1:http", "127.0.0.1:99999"} {
			_, _, err := http(t, "ATTUNE_HTTP_ADDR="+a)
			require.ErrorContains(t, err, "ATTUNE_HTTP_ADDR=", a)
		}
	})
	t.Run("Tokens", func(t *testing.T) {
		t.Parallel()
		_, tokens, err := http(t, "ATTUNE_API_TOKENS= ci:"+tok+" ,"+tok+"x\n,,")
		require.NoError(t, err)
		require.Equal(t, []APIToken{{Name: "ci", Value: tok}, {Name: "token2", Value: tok + "x"}}, tokens)
		for env, want := range map[string]string{
			"ATTUNE_API_TOKENS=short":                     "at least 16",
			"ATTUNE_API_TOKENS=ci:short":                  "at least 16",
			"ATTUNE_API_TOKENS=b@d:" + tok:                "name before ':'",
			"ATTUNE_API_TOKENS=ci:" + tok + ",ci:" + tok:  "used twice",
			"ATTUNE_API_TOKENS=ci:" + tok[:8] + " " + tok: "spaces",
		} {
			_, _, err := http(t, env)
			require.ErrorContains(t, err, want, env)
			require.NotContains(t, err.Error(), tok, "a token never appears in an error")
			require.True(t, strings.HasPrefix(err.Error(), "ATTUNE_API_TOKENS"))
		}
	})
}
