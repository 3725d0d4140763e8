package worker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig([]string{"PATH=/bin"})
	require.NoError(t, err)
	require.Equal(t, "postgres://localhost:5432/attune?sslmode=disable", cfg.DatabaseURL)
	require.Equal(t, "./packs", cfg.PacksDir)
	require.Equal(t, 10, cfg.MaxConcurrentExecutions)
	require.Equal(t, 10485760, cfg.MaxStdoutBytes)
	require.Equal(t, 10485760, cfg.MaxStderrBytes)
	require.Equal(t, 600*time.Second, cfg.DefaultTimeout)
	require.Equal(t, 5*time.Second, cfg.KillGrace)
	require.Equal(t, 10*time.Second, cfg.HeartbeatInterval)
	require.Equal(t, 30*time.Second, cfg.WorkerStaleAfter)
	require.Equal(t, 30*time.Second, cfg.ShutdownTimeout)
	require.Empty(t, cfg.PassthroughEnv)
	require.NotEmpty(t, cfg.WorkerName)
}

func TestLoadConfigValues(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig([]string{
		"ATTUNE_KILL_GRACE=0", "ATTUNE_DEFAULT_TIMEOUT=5m", "ATTUNE_PASSTHROUGH_ENV=HTTP_PROXY, AWS_REGION",
		"ATTUNE_WORKER_NAME=w1", "ATTUNE_SECRETS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	})
	require.NoError(t, err)
	require.Zero(t, cfg.KillGrace)
	require.Equal(t, 5*time.Minute, cfg.DefaultTimeout)
	require.Equal(t, []string{"HTTP_PROXY", "AWS_REGION"}, cfg.PassthroughEnv)
	require.Equal(t, "w1", cfg.WorkerName)
}

func TestLoadConfigBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ env, want string }{
		{"ATTUNE_KILL_GRACE=soon", `ATTUNE_KILL_GRACE="soon" is invalid: must be a duration such as 90s or 5m`},
		{"ATTUNE_MAX_CONCURRENT_EXECUTIONS=ten", `ATTUNE_MAX_CONCURRENT_EXECUTIONS="ten" is invalid: must be a whole number`},
		{"ATTUNE_MAX_CONCURRENT_EXECUTIONS=0", "ATTUNE_MAX_CONCURRENT_EXECUTIONS=0 is invalid: must be from 1 to 10000"},
		{"ATTUNE_MAX_STDOUT_BYTES=10", "ATTUNE_MAX_STDOUT_BYTES=10 is invalid: must be from 1024 to 268435456"},
		{"ATTUNE_MAX_STDERR_BYTES=1000000000", "ATTUNE_MAX_STDERR_BYTES=1000000000 is invalid: must be from 1024 to 268435456"},
		{"ATTUNE_PASSTHROUGH_ENV=HOME,ATTUNE_DATABASE_URL", `"ATTUNE_DATABASE_URL" is attune's own configuration or a database credential`},
		{"ATTUNE_DEFAULT_TIMEOUT=-1s", "ATTUNE_DEFAULT_TIMEOUT=-1s is invalid: must be whole seconds, at least 1s"},
		{"ATTUNE_DEFAULT_TIMEOUT=1ms", "ATTUNE_DEFAULT_TIMEOUT=1ms is invalid: must be whole seconds, at least 1s"},
		{"ATTUNE_DEFAULT_TIMEOUT=1.5s", "ATTUNE_DEFAULT_TIMEOUT=1.5s is invalid: must be whole seconds, at least 1s"},
		{"ATTUNE_KILL_GRACE=-5s", "ATTUNE_KILL_GRACE=-5s is invalid"},
		{"ATTUNE_WORKER_STALE_AFTER=5s", "ATTUNE_WORKER_STALE_AFTER=5s is invalid: must be longer than ATTUNE_HEARTBEAT_INTERVAL (10s)"},
		{"ATTUNE_LOG_LEVEL=loud", "ATTUNE_LOG_LEVEL=loud is invalid: must be debug, info, warn or error"},
		{"ATTUNE_LOG_FORMAT=xml", "ATTUNE_LOG_FORMAT=xml is invalid: must be text or json"},
		{"ATTUNE_PASSTHROUGH_ENV=A,B-C", `"B-C" is not a variable name`},
		{"ATTUNE_SECRETS_KEY=c2hvcnQ=", "ATTUNE_SECRETS_KEY=(hidden) is invalid: decodes to 5 bytes, must be 32"},
		{"ATTUNE_SECRETS_KEY=%%%", "ATTUNE_SECRETS_KEY=(hidden) is invalid: must be base64 of 32 random bytes"},
	} {
		_, err := LoadConfig([]string{tc.env})
		require.Error(t, err, tc.env)
		require.Contains(t, err.Error(), tc.want, tc.env)
		require.NotContains(t, err.Error(), "\n", "one line")
	}
}

func TestLoadConfigOf(t *testing.T) {
	t.Parallel()
	environ := []string{"ATTUNE_MAX_CONCURRENT_EXECUTIONS=abc", "ATTUNE_KILL_GRACE=-1s", "ATTUNE_DATABASE_URL=postgres://db/x"}
	cfg, err := LoadConfigOf(environ, []string{"ATTUNE_DATABASE_URL"})
	require.NoError(t, err)
	require.Equal(t, "postgres://db/x", cfg.DatabaseURL)
	require.Equal(t, 10, cfg.MaxConcurrentExecutions, "an unused bad value keeps its default")

	_, err = LoadConfigOf(environ, []string{"ATTUNE_KILL_GRACE"})
	require.EqualError(t, err, "ATTUNE_KILL_GRACE=-1s is invalid: must be 0 or a positive duration such as 5s")
	_, err = LoadConfigOf(environ, []string{"ATTUNE_MAX_CONCURRENT_EXECUTIONS"})
	require.EqualError(t, err, `ATTUNE_MAX_CONCURRENT_EXECUTIONS="abc" is invalid: must be a whole number`)
	_, err = LoadConfig(environ)
	require.Error(t, err)
}

func TestLoadConfigCredentialFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	urlFile, keyFile := filepath.Join(dir, "url"), filepath.Join(dir, "key")
	require.NoError(t, os.WriteFile(urlFile, []byte("postgres://u:pw@db/x\n"), 0o600))
	require.NoError(t, os.WriteFile(keyFile, []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 0o600))
	cfg, err := LoadConfig([]string{"ATTUNE_DATABASE_URL_FILE=" + urlFile, "ATTUNE_SECRETS_KEY_FILE=" + keyFile})
	require.NoError(t, err)
	require.Equal(t, "postgres://u:pw@db/x", cfg.DatabaseURL)
	require.Equal(t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", cfg.SecretsKey)

	_, err = LoadConfig([]string{"ATTUNE_DATABASE_URL_FILE=" + urlFile, "ATTUNE_DATABASE_URL=postgres://db/y"})
	require.EqualError(t, err, "ATTUNE_DATABASE_URL and ATTUNE_DATABASE_URL_FILE are both set: set only one")
	_, err = LoadConfig([]string{"ATTUNE_SECRETS_KEY_FILE=" + filepath.Join(dir, "missing")})
	require.ErrorContains(t, err, "ATTUNE_SECRETS_KEY_FILE="+filepath.Join(dir, "missing")+" is invalid")
	require.NoError(t, os.WriteFile(keyFile, []byte("c2hvcnQ=\n"), 0o600))
	_, err = LoadConfig([]string{"ATTUNE_SECRETS_KEY_FILE=" + keyFile})
	require.ErrorContains(t, err, "ATTUNE_SECRETS_KEY=(hidden) is invalid: decodes to 5 bytes")
}

func TestLoadConfigRefusesCredentialPassthrough(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"PGPASSWORD", "PGHOST", "ATTUNE_SECRETS_KEY_FILE", "ATTUNE_ANYTHING"} {
		_, err := LoadConfig([]string{"ATTUNE_PASSTHROUGH_ENV=HOME," + name})
		require.ErrorContains(t, err, fmt.Sprintf("%q is attune's own configuration or a database credential", name))
		require.NotContains(t, err.Error(), "\n")
	}
}

func TestLoadConfigRunAs(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		_, err := LoadConfig([]string{"ATTUNE_RUN_AS=nobody"})
		require.ErrorContains(t, err, "only a worker running as root")
		return
	}
	cfg, err := LoadConfig([]string{"ATTUNE_RUN_AS=nobody"})
	require.NoError(t, err)
	require.EqualValues(t, 65534, cfg.RunAsCredential.Uid)
	cfg, err = LoadConfig([]string{"ATTUNE_RUN_AS=65534:0"})
	require.NoError(t, err)
	require.EqualValues(t, 0, cfg.RunAsCredential.Gid)
	for _, bad := range []string{"no-such-user-here", "nobody:no-such-group", "root"} {
		_, err := LoadConfig([]string{"ATTUNE_RUN_AS=" + bad})
		require.ErrorContains(t, err, "ATTUNE_RUN_AS="+bad+" is invalid", bad)
	}
}
