package worker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/attune-system/attune/jobs"
)

// Config is attune's configuration, read from the environment (SPEC §2).
type Config struct {
	// DatabaseURL is the PostgreSQL database; it is created when missing and
	// the role may. Defaults to postgres://localhost:5432/attune?sslmode=disable.
	DatabaseURL string `env:"ATTUNE_DATABASE_URL" envDefault:"postgres://localhost:5432/attune?sslmode=disable"`

	// DatabaseURLFile names a file holding DatabaseURL (one trailing
	// newline trimmed), instead of the variable. Defaults to none.
	DatabaseURLFile string `env:"ATTUNE_DATABASE_URL_FILE"`

	// PacksDir is the packs base directory: {dir}/{pack}/actions/{entry_point}.
	// Defaults to ./packs.
	PacksDir string `env:"ATTUNE_PACKS_DIR" envDefault:"./packs"`

	// MaxConcurrentExecutions is how many executions one replica runs at
	// once. Defaults to 10.
	MaxConcurrentExecutions int `env:"ATTUNE_MAX_CONCURRENT_EXECUTIONS" envDefault:"10"`

	// MaxStdoutBytes is the stored size of an execution's stdout, truncation
	// notice included. Defaults to 10485760.
	MaxStdoutBytes int `env:"ATTUNE_MAX_STDOUT_BYTES" envDefault:"10485760"`

	// MaxStderrBytes is the stored size of an execution's stderr, truncation
	// notice included. Defaults to 10485760.
	MaxStderrBytes int `env:"ATTUNE_MAX_STDERR_BYTES" envDefault:"10485760"`

	// DefaultTimeout applies when neither the enqueue nor the action sets a
	// timeout. Defaults to 600s.
	DefaultTimeout time.Duration `env:"ATTUNE_DEFAULT_TIMEOUT" envDefault:"600s"`

	// KillGrace is the time between SIGTERM and SIGKILL on timeout, cancel and
	// shutdown; 0 kills at once. Defaults to 5s.
	KillGrace time.Duration `env:"ATTUNE_KILL_GRACE" envDefault:"5s"`

	// WorkerName is this replica's name in attune.worker; a replica refuses
	// to start while another with a fresh heartbeat holds it. Defaults to
	// {hostname}-{pid}-{4 random hex digits}, unique even where containers
	// repeat both hostname and pid.
	WorkerName string `env:"ATTUNE_WORKER_NAME"`

	// HeartbeatInterval is how often a worker reports it is alive. Defaults
	// to 10s.
	HeartbeatInterval time.Duration `env:"ATTUNE_HEARTBEAT_INTERVAL" envDefault:"10s"`

	// WorkerStaleAfter is how long a worker may stay silent before the others
	// declare it dead. A worker that cannot heartbeat fences itself sooner
	// (kills its executions and takes no work): after WorkerStaleAfter
	// minus KillGrace minus half HeartbeatInterval. Defaults to 30s.
	WorkerStaleAfter time.Duration `env:"ATTUNE_WORKER_STALE_AFTER" envDefault:"30s"`

	// PassthroughEnv names variables copied from the worker's environment
	// into children. Defaults to none.
	PassthroughEnv []string `env:"ATTUNE_PASSTHROUGH_ENV" envSeparator:","`

	// SecretsKey is the base64 of 32 bytes that encrypts secrets at rest.
	// Defaults to none (secrets unavailable).
	SecretsKey string `env:"ATTUNE_SECRETS_KEY"`

	// SecretsKeyFile names a file holding SecretsKey (one trailing newline
	// trimmed), instead of the variable. Defaults to none.
	SecretsKeyFile string `env:"ATTUNE_SECRETS_KEY_FILE"`

	// RunAs is user[:group], names or ids, that children run as when the
	// worker runs as root; the group defaults to the user's. Defaults to
	// none (children run as the worker).
	RunAs string `env:"ATTUNE_RUN_AS"`

	// RunAsCredential is RunAs resolved. Defaults to nil.
	RunAsCredential *syscall.Credential `env:"-"`

	// ShutdownTimeout is how long running executions may finish after
	// SIGTERM before they are killed. Defaults to 30s.
	ShutdownTimeout time.Duration `env:"ATTUNE_SHUTDOWN_TIMEOUT" envDefault:"30s"`

	// Retention is how long finished executions (those of actions without
	// a retention of their own) and old events are kept; 0 keeps them for
	// ever. Defaults to 720h (30 days).
	Retention time.Duration `env:"ATTUNE_RETENTION" envDefault:"720h"`

	// LogLevel is debug, info, warn or error. Defaults to info.
	LogLevel string `env:"ATTUNE_LOG_LEVEL" envDefault:"info"`

	// LogFormat is text or json. Defaults to text on a terminal, else json.
	LogFormat string `env:"ATTUNE_LOG_FORMAT"`

	// HTTPAddr is where attune serve listens for the API, webhooks, metrics
	// and health probes, as host:port; off disables the listener. Defaults
	// to 127.0.0.1:8080.
	HTTPAddr string `env:"ATTUNE_HTTP_ADDR" envDefault:"127.0.0.1:8080"`

	// APITokens are the bearer tokens the API accepts, comma-separated, each
	// token or name:token (the name is what logs show). Defaults to none,
	// which keeps the listener on loopback.
	APITokens []string `env:"ATTUNE_API_TOKENS" envSeparator:","`

	// MetricsPublic serves /metrics without a token. Defaults to false.
	MetricsPublic bool `env:"ATTUNE_METRICS_PUBLIC" envDefault:"false"`

	// Environ is the worker's own environment, where passthrough variables
	// and the child baseline (PATH, HOME, ...) are read from. Defaults to
	// os.Environ().
	Environ []string `env:"-"`
}

// configVars are the variables Config reads.
var configVars = func() map[string]bool {
	vars := map[string]bool{}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("env"); name != "" && name != "-" {
			vars[name] = true
		}
	}
	return vars
}()

// maxStoredOutput caps ATTUNE_MAX_STDOUT_BYTES and ATTUNE_MAX_STDERR_BYTES.
const maxStoredOutput = 256 << 20

// LoadConfig reads the configuration from environ (os.Environ() when nil).
// A bad value gives one line naming the variable, the value and what is
// allowed.
func LoadConfig(environ []string) (Config, error) {
	return load(environ, func(string) bool { return true })
}

// LoadConfigOf is LoadConfig for a command that uses only the variables
// named in uses: a bad value elsewhere is not its concern (attune version
// must not fail on ATTUNE_MAX_CONCURRENT_EXECUTIONS=abc). Variables it does
// not use keep their defaults when their value is bad.
func LoadConfigOf(environ []string, uses []string) (Config, error) {
	return load(environ, func(name string) bool { return slices.Contains(uses, name) })
}

func load(environ []string, uses func(name string) bool) (Config, error) {
	if environ == nil {
		environ = os.Environ()
	}
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: vars})
	if err != nil {
		problems := envProblems(err, vars)
		if problems == nil {
			return Config{}, err
		}
		// Parse again without the unused variables' bad values, so they
		// take their defaults.
		for _, p := range problems {
			if uses(p.name) {
				return Config{}, p.err
			}
			delete(vars, p.name)
		}
		if cfg, err = env.ParseAsWithOptions[Config](env.Options{Environment: vars}); err != nil {
			return Config{}, err
		}
	}
	cfg.Environ = environ
	if cfg.WorkerName == "" {
		host, _ := os.Hostname()
		var r [2]byte
		_, _ = rand.Read(r[:])
		cfg.WorkerName = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(r[:]))
	}
	cfg.PassthroughEnv = trimAll(cfg.PassthroughEnv)
	ps := cfg.readFiles(vars)
	if cfg.RunAs != "" {
		var err error
		if cfg.RunAsCredential, err = resolveRunAs(cfg.RunAs); err != nil {
			ps = append(ps, configProblem{"ATTUNE_RUN_AS", fmt.Errorf("ATTUNE_RUN_AS=%s is invalid: %w", cfg.RunAs, err)})
		}
	}
	for _, p := range append(ps, cfg.problems()...) {
		if uses(p.name) {
			return cfg, p.err
		}
	}
	return cfg, nil
}

// fenceAfter is how long a replica may go without a heartbeat before it
// fences itself: its processes must be dead (KillGrace after the kill
// starts) before the others may declare it dead at WorkerStaleAfter, with
// half a heartbeat to spare for the fence's own tick.
func (c *Config) fenceAfter() time.Duration {
	return max(c.WorkerStaleAfter-c.KillGrace-c.HeartbeatInterval/2, c.HeartbeatInterval/2)
}

// configProblem is one variable's bad value.
type configProblem struct {
	name string
	err  error
}

// problems lists every bad value, in the order of the checks.
func (c *Config) problems() []configProblem {
	var ps []configProblem
	bad := func(name string, value any, allowed string) {
		ps = append(ps, configProblem{name, fmt.Errorf("%s=%v is invalid: %s", name, value, allowed)})
	}
	if c.DatabaseURL == "" {
		bad("ATTUNE_DATABASE_URL", `""`, "set a PostgreSQL URL such as postgres://localhost:5432/attune?sslmode=disable")
	}
	if c.MaxConcurrentExecutions < 1 || c.MaxConcurrentExecutions > 10000 {
		bad("ATTUNE_MAX_CONCURRENT_EXECUTIONS", c.MaxConcurrentExecutions, "must be from 1 to 10000")
	}
	// The stored text is one PostgreSQL value, and invalid bytes expand to
	// three when replaced: stay well below its 1 GB limit.
	if c.MaxStdoutBytes < 1024 || c.MaxStdoutBytes > maxStoredOutput {
		bad("ATTUNE_MAX_STDOUT_BYTES", c.MaxStdoutBytes, fmt.Sprintf("must be from 1024 to %d (256 MiB)", maxStoredOutput))
	}
	if c.MaxStderrBytes < 1024 || c.MaxStderrBytes > maxStoredOutput {
		bad("ATTUNE_MAX_STDERR_BYTES", c.MaxStderrBytes, fmt.Sprintf("must be from 1024 to %d (256 MiB)", maxStoredOutput))
	}
	if c.DefaultTimeout < time.Second || c.DefaultTimeout%time.Second != 0 {
		// Timeouts are whole seconds everywhere else (timeout_seconds).
		bad("ATTUNE_DEFAULT_TIMEOUT", c.DefaultTimeout, "must be whole seconds, at least 1s, such as 600s or 10m")
	}
	if c.KillGrace < 0 {
		bad("ATTUNE_KILL_GRACE", c.KillGrace, "must be 0 or a positive duration such as 5s")
	}
	if c.HeartbeatInterval <= 0 {
		bad("ATTUNE_HEARTBEAT_INTERVAL", c.HeartbeatInterval, "must be a positive duration such as 10s")
	} else if c.WorkerStaleAfter <= c.HeartbeatInterval {
		bad("ATTUNE_WORKER_STALE_AFTER", c.WorkerStaleAfter, fmt.Sprintf("must be longer than ATTUNE_HEARTBEAT_INTERVAL (%s), e.g. three times it", c.HeartbeatInterval))
	}
	if c.ShutdownTimeout < 0 {
		bad("ATTUNE_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "must be 0 or a positive duration such as 30s")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("ATTUNE_LOG_LEVEL", c.LogLevel, "must be debug, info, warn or error")
	}
	if c.Retention < 0 {
		bad("ATTUNE_RETENTION", c.Retention.String(), "must not be negative; 0 keeps everything")
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		bad("ATTUNE_LOG_FORMAT", c.LogFormat, "must be text or json")
	}
	for _, name := range c.PassthroughEnv {
		if !validEnvName(name) {
			bad("ATTUNE_PASSTHROUGH_ENV", strings.Join(c.PassthroughEnv, ","), fmt.Sprintf("%q is not a variable name; list names like HTTP_PROXY,AWS_REGION", name))
			break
		}
		// attune's configuration holds the database URL and the secrets
		// key, libpq's variables a password: credentials never reach a
		// child. ATTUNE_ACTION_* is the children's own namespace (their
		// parameters), not configuration.
		attune := strings.HasPrefix(name, "ATTUNE_") && !strings.HasPrefix(name, "ATTUNE_ACTION_")
		if configVars[name] || attune || strings.HasPrefix(name, "PG") {
			bad("ATTUNE_PASSTHROUGH_ENV", strings.Join(c.PassthroughEnv, ","), fmt.Sprintf("%q is attune's own configuration or a database credential (ATTUNE_*, PG*) and never reaches a child", name))
			break
		}
	}
	if c.SecretsKey != "" {
		if _, err := DecodeSecretsKey(c.SecretsKey); err != nil {
			bad("ATTUNE_SECRETS_KEY", "(hidden)", err.Error())
		}
	}
	return ps
}

// readFiles reads the _FILE variants of the credentials into their fields.
// A problem is reported under the plain variable's name, which is what
// commands say they use.
func (c *Config) readFiles(vars map[string]string) []configProblem {
	var ps []configProblem
	for _, f := range []struct {
		name, file string
		dst        *string
	}{
		{"ATTUNE_DATABASE_URL", c.DatabaseURLFile, &c.DatabaseURL},
		{"ATTUNE_SECRETS_KEY", c.SecretsKeyFile, &c.SecretsKey},
	} {
		if f.file == "" {
			continue
		}
		if _, both := vars[f.name]; both {
			ps = append(ps, configProblem{f.name, fmt.Errorf("%s and %s_FILE are both set: set only one", f.name, f.name)})
			continue
		}
		b, err := os.ReadFile(f.file)
		if err != nil {
			ps = append(ps, configProblem{f.name, fmt.Errorf("%s_FILE=%s is invalid: %w", f.name, f.file, err)})
			continue
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			ps = append(ps, configProblem{f.name, fmt.Errorf("%s_FILE=%s is invalid: the file is empty", f.name, f.file)})
			continue
		}
		*f.dst = v
	}
	return ps
}

// DecodeSecretsKey decodes ATTUNE_SECRETS_KEY: base64 of exactly 32 bytes.
func DecodeSecretsKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("must be base64 of 32 random bytes (head -c32 /dev/urandom | base64)")
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("decodes to %d bytes, must be 32 (head -c32 /dev/urandom | base64)", len(key))
	}
	return key, nil
}

// KeyID is a short, non-secret fingerprint of a secrets key, for messages.
func KeyID(key []byte) string { return jobs.KeyID(key) }

// envProblems rewrites caarlos0/env's errors, which name Go fields, into
// one problem per variable naming it and its value; nil when err is not
// about values.
func envProblems(err error, vars map[string]string) []configProblem {
	var agg env.AggregateError
	if !errors.As(err, &agg) || len(agg.Errors) == 0 {
		return nil
	}
	var ps []configProblem
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			return nil
		}
		f, _ := reflect.TypeFor[Config]().FieldByName(pe.Name)
		name := f.Tag.Get("env")
		allowed := "a valid value"
		switch pe.Type {
		case reflect.TypeFor[time.Duration]():
			allowed = "a duration such as 90s or 5m"
		case reflect.TypeFor[int]():
			allowed = "a whole number"
		case reflect.TypeFor[bool]():
			allowed = "true or false"
		}
		ps = append(ps, configProblem{name, fmt.Errorf("%s=%q is invalid: must be %s", name, vars[name], allowed)})
	}
	return ps
}

func trimAll(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
