package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema/schematest"
	"github.com/attune-system/attune/worker"
	"github.com/attune-system/attune/worker/api"
)

func TestMain(m *testing.M) {
	os.Exit(schematest.MainNoLeaks(m))
}

// testToken is the token every test server accepts, as "ci".
const testToken = "0123456789abcdef0123456789abcdef"

// secretsKey encrypts the test secret store.
var secretsKey = bytes.Repeat([]byte{7}, 32)

// testPack is registered as ref "t" beside the core pack.
var testPack = map[string]string{
	"pack.yaml": "ref: t\nlabel: Test\ndescription: actions for the API tests\nversion: 1.0.0\n",

	"actions/echo.yaml": `name: echo
ref: t.echo
runner_type: shell
entry_point: echo.sh
parameters:
  name:
    type: string
    required: true
  n:
    type: integer
    default: 1
`,
	"actions/echo.sh": "#!/bin/sh\nprintf '{\"name\": \"%s\", \"n\": %s}\\n' \"$ATTUNE_ACTION_NAME\" \"$ATTUNE_ACTION_N\"\n",

	// traceparent returns the trace context its process got.
	"actions/traceparent.yaml": "name: traceparent\nref: t.traceparent\nrunner_type: shell\nentry_point: traceparent.sh\n",
	"actions/traceparent.sh":   "#!/bin/sh\nprintf '{\"traceparent\": \"%s\"}\\n' \"$TRACEPARENT\"\n",

	"actions/disabled.yaml": "name: disabled\nref: t.disabled\nenabled: false\nrunner_type: shell\nentry_point: echo.sh\n",

	"actions/secret.yaml": `name: secret
ref: t.secret
runner_type: shell
entry_point: echo.sh
parameters:
  password:
    type: string
    secret: true
`,

	// ticks writes a numbered line to stdout and stderr every 100 ms.
	"actions/ticks.yaml": `name: ticks
ref: t.ticks
runner_type: shell
entry_point: ticks.sh
output_format: text
parameters:
  count:
    type: integer
    default: 15
`,
	"actions/ticks.sh": "#!/bin/sh\ni=1\nwhile [ $i -le $ATTUNE_ACTION_COUNT ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.1; done\n",

	"actions/flood.yaml": "name: flood\nref: t.flood\nrunner_type: shell\nentry_point: flood.sh\noutput_format: text\n",
	"actions/flood.sh":   "#!/bin/sh\nhead -c 20000 /dev/zero | tr '\\0' x\n",

	"actions/hang.yaml": "name: hang\nref: t.hang\nrunner_type: shell\nentry_point: hang.sh\n",
	"actions/hang.sh":   "#!/bin/sh\nexec sleep 1000\n",

	// ticker emits one t.tick event a second while it runs; its rule is
	// disabled until TestSensorMetrics enables it over the API.
	"triggers/tick.yaml":  "name: tick\n",
	"sensors/ticker.yaml": "name: ticker\nrunner_type: shell\nentry_point: ticker.sh\ntrigger_types: [t.tick]\n",
	"sensors/ticker.sh":   "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"{\\\"trigger_ref\\\": \\\"t.tick\\\", \\\"payload\\\": {\\\"n\\\": $i}}\"; sleep 1; done\n",
	"rules/on_tick.yaml":  "name: on_tick\nref: t.on_tick\nenabled: false\ntrigger_ref: t.tick\naction_ref: t.echo\naction_params:\n  name: \"tick {{ event.payload.n }}\"\n",

	"rules/hook_open.yaml": `name: hook_open
ref: t.hook_open
trigger_ref: core.webhook
trigger_params:
  path: open/push
action_ref: t.echo
action_params:
  name: "{{ event.payload.body.who }}"
`,
	"rules/hook_signed.yaml": `name: hook_signed
ref: t.hook_signed
trigger_ref: core.webhook
trigger_params:
  path: github
  secret: gh_secret
conditions:
  - field: event.payload.headers.x-github-event
    operator: equals
    value: push
action_ref: t.echo
action_params:
  name: "{{ event.payload.body.repository.name }}"
`,
	"rules/hook_other.yaml": `name: hook_other
ref: t.hook_other
trigger_ref: core.webhook
trigger_params:
  path: other
  secret: other_secret
action_ref: t.echo
action_params:
  name: other
`,
	"rules/hook_nokey.yaml": `name: hook_nokey
ref: t.hook_nokey
trigger_ref: core.webhook
trigger_params:
  path: missing-secret
  secret: not_stored
action_ref: t.echo
action_params:
  name: x
`,
	"rules/hook_disabled.yaml": `name: hook_disabled
ref: t.hook_disabled
enabled: false
trigger_ref: core.webhook
trigger_params:
  path: disabled
action_ref: t.echo
action_params:
  name: x
`,
}

// testBundle is a fresh database with the core and test packs, and an API
// server on a real loopback port.
type testBundle struct {
	ctx     context.Context
	pool    *pgxpool.Pool
	url     string
	packDir string
	base    string // http://127.0.0.1:port
	server  *api.Server
	metrics *api.Metrics
	log     *lockedBuffer
}

func setup(t testing.TB, tweak ...func(*api.Options)) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := schematest.URL(t)
	pool, err := pgxpool.New(ctx, url+"&pool_max_conns=20")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	base := t.TempDir()
	writePack(t, filepath.Join(base, "t"), testPack)
	core, err := filepath.Abs("../../packs/core")
	require.NoError(t, err)
	for _, dir := range []string{core, filepath.Join(base, "t")} {
		p, problems := packs.Load(dir)
		require.NoError(t, packs.AsError(problems))
		require.NoError(t, packs.RegisterPool(ctx, pool, []*packs.Pack{p}, problems).Err())
	}
	for name, value := range map[string]string{"gh_secret": "It's a Secret to Everybody", "other_secret": "another one"} {
		ref, err := jobs.NewSecretRef(name, "", "")
		require.NoError(t, err)
		require.NoError(t, jobs.SetSecret(ctx, pool, secretsKey, ref, []byte(value)))
	}

	lb := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", lb.String())
		}
	})
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := &testBundle{ctx: ctx, pool: pool, url: url, packDir: base, log: lb,
		metrics: api.NewMetrics(pool, log, "api-test")}
	tokens, err := worker.ParseAPITokens([]string{"ci:" + testToken})
	require.NoError(t, err)
	opts := api.Options{Pool: pool, Log: log, Tokens: tokens, SecretsKey: secretsKey, Metrics: b.metrics}
	for _, fn := range tweak {
		fn(&opts)
	}
	b.server = api.New(opts)
	l, err := api.Listen("127.0.0.1:0")
	require.NoError(t, err)
	b.base = "http://" + l.Addr().String()
	mctx, stopMetrics := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.metrics.Run(mctx) }()
	go func() {
		defer wg.Done()
		if err := b.server.Serve(l); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, b.server.Shutdown(sctx))
		stopMetrics()
		wg.Wait()
	})
	return b
}

// startWorker runs a replica on the bundle's database, its finished
// executions counted by the bundle's metrics; stopped when t ends.
func (b *testBundle) startWorker(t *testing.T) *worker.Server {
	t.Helper()
	cfg, err := worker.LoadConfig([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"ATTUNE_DATABASE_URL=" + b.url, "ATTUNE_PACKS_DIR=" + b.packDir,
		"ATTUNE_KILL_GRACE=1s", "ATTUNE_SHUTDOWN_TIMEOUT=2s", "ATTUNE_WORKER_NAME=api-test",
		"ATTUNE_MAX_STDOUT_BYTES=4096", "ATTUNE_SECRETS_KEY=" + base64.StdEncoding.EncodeToString(secretsKey),
	})
	require.NoError(t, err)
	pool, err := pgxpool.New(b.ctx, b.url+"&pool_max_conns=8")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	srv, err := worker.NewServer(cfg, pool, slog.New(slog.NewTextHandler(b.log, nil)))
	require.NoError(t, err)
	srv.OnFinish(b.metrics.Finished)
	srv.OnEvent(b.metrics.Event)
	watch := b.metrics.WatchRiver(srv.Client())
	wctx, stopWatch := context.WithCancel(b.ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); watch(wctx) }()
	require.NoError(t, srv.Start(b.ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
		stopWatch()
		<-watched
	})
	return srv
}

// reply is a decoded answer.
type reply struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// call sends a request with the test token; body may be nil, a string
// (sent as is) or anything else (sent as JSON). headers are name, value
// pairs; "Authorization", "" sends none.
func (b *testBundle) call(t *testing.T, method, path string, body any, headers ...string) reply {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch v := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(v), "application/json"
	case []byte:
		rd, ct = bytes.NewReader(v), "application/json"
	default:
		j, err := json.Marshal(v)
		require.NoError(t, err)
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(b.ctx, method, b.base+path, rd)
	require.NoError(t, err)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" { // net/http sends req.Host, not a Host header
			req.Host = headers[i+1]
			continue
		}
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out := reply{status: resp.StatusCode, header: resp.Header}
	out.body, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(out.body, &out.json), "body %s", out.body)
	}
	return out
}

// requireError checks an error answer: the status and a JSON error with a
// message containing want.
func requireError(t *testing.T, r reply, status int, want string) {
	t.Helper()
	require.Equal(t, status, r.status, "body %s", r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	msg, _ := r.json["error"].(string)
	require.NotEmpty(t, msg, "body %s", r.body)
	require.Contains(t, msg, want)
}

func writePack(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		require.NoError(t, os.WriteFile(path, []byte(content), mode))
	}
}

// waitStatus polls until execution id is finished and returns it.
func waitFinished(t testing.TB, pool *pgxpool.Pool, id int64) *jobs.Execution {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, err := jobs.Get(context.Background(), pool, id)
		require.NoError(t, err)
		if jobs.Finished(e.Status) {
			return e
		}
		require.True(t, time.Now().Before(deadline), "execution %d still %s", id, e.Status)
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
