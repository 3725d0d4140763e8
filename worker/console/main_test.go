package console_test

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

	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema/schematest"
	"github.com/attune-system/attune/worker"
	"github.com/attune-system/attune/worker/api"
	"github.com/attune-system/attune/worker/console"
)

func TestMain(m *testing.M) {
	os.Exit(schematest.MainNoLeaks(m))
}

// testToken is the token every test server accepts, as "ci".
const testToken = "0123456789abcdef0123456789abcdef"

var secretsKey = bytes.Repeat([]byte{7}, 32)

// testPack is registered as ref "t" beside the core pack: an action with
// every kind of parameter, one that ticks for the live output, and a
// webhook rule for events.
var testPack = map[string]string{
	"pack.yaml": "ref: t\nlabel: Test\ndescription: actions for the console tests\nversion: 1.0.0\n",

	"actions/form.yaml": `name: form
ref: t.form
description: Takes one parameter of each kind and echoes them.
runner_type: shell
entry_point: form.sh
parameters:
  name:
    type: string
    required: true
    description: Who to greet.
  n:
    type: integer
    default: 2
    minimum: 1
  ratio:
    type: number
  loud:
    type: boolean
    default: true
  color:
    type: string
    enum: [red, green, blue]
    default: green
  extra:
    type: object
  tags:
    type: array
  password:
    type: string
    secret: true
`,
	// Secret parameters come on stdin as JSON; the result says whether the
	// password arrived without printing it.
	"actions/form.sh": `#!/bin/sh
read -r secrets
case "$secrets" in *'"password":"hunter2"'*) got=true ;; *) got=false ;; esac
printf '{"greeting": "hello %s", "n": %s, "color": "%s", "loud": %s, "got_secret": %s}\n' "$ATTUNE_ACTION_NAME" "$ATTUNE_ACTION_N" "$ATTUNE_ACTION_COLOR" "$ATTUNE_ACTION_LOUD" "$got"
`,

	// ticks writes a numbered line to stdout every 200 ms.
	"actions/ticks.yaml": `name: ticks
ref: t.ticks
runner_type: shell
entry_point: ticks.sh
output_format: text
parameters:
  count:
    type: integer
    default: 300
`,
	"actions/ticks.sh": "#!/bin/sh\ni=1\nwhile [ $i -le $ATTUNE_ACTION_COUNT ]; do echo \"tick $i\"; i=$((i+1)); sleep 0.2; done\n",

	"actions/fail.yaml": "name: fail\nref: t.fail\nrunner_type: shell\nentry_point: fail.sh\noutput_format: text\n",
	"actions/fail.sh":   "#!/bin/sh\necho 'something broke' >&2\nexit 3\n",

	"actions/flood.yaml": "name: flood\nref: t.flood\nrunner_type: shell\nentry_point: flood.sh\noutput_format: text\n",
	"actions/flood.sh":   "#!/bin/sh\nhead -c 20000 /dev/zero | tr '\\0' x\n",

	"rules/hook.yaml": `name: hook
ref: t.hook
description: Greets whoever a push webhook names.
trigger_ref: core.webhook
trigger_params:
  path: push
action_ref: t.form
action_params:
  name: "{{ event.payload.body.who }}"
`,
}

// testBundle is a fresh database with the core and test packs, a worker,
// and the API with the console on a real loopback port.
type testBundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
	url  string
	base string // http://127.0.0.1:port
	log  *lockedBuffer
}

func setup(t testing.TB) *testBundle {
	t.Helper()
	return setupTokens(t, "ci:"+testToken)
}

// setupTokens is setup with these ATTUNE_API_TOKENS entries; none is the
// open loopback mode.
func setupTokens(t testing.TB, entries ...string) *testBundle {
	t.Helper()
	ctx := context.Background()
	url := schematest.URL(t)
	pool, err := pgxpool.New(ctx, url+"&pool_max_conns=20")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	packDir := t.TempDir()
	writePack(t, filepath.Join(packDir, "t"), testPack)
	core, err := filepath.Abs("../../packs/core")
	require.NoError(t, err)
	for _, dir := range []string{core, filepath.Join(packDir, "t")} {
		p, problems := packs.Load(dir)
		require.NoError(t, packs.AsError(problems))
		require.NoError(t, packs.RegisterPool(ctx, pool, []*packs.Pack{p}, problems).Err())
	}

	lb := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", lb.String())
		}
	})
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := &testBundle{ctx: ctx, pool: pool, url: url, log: lb}

	cfg, err := worker.LoadConfig([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"ATTUNE_DATABASE_URL=" + url, "ATTUNE_PACKS_DIR=" + packDir,
		"ATTUNE_KILL_GRACE=1s", "ATTUNE_SHUTDOWN_TIMEOUT=2s", "ATTUNE_WORKER_NAME=console-test",
		"ATTUNE_MAX_STDOUT_BYTES=4096",
		"ATTUNE_SECRETS_KEY=" + base64.StdEncoding.EncodeToString(secretsKey),
	})
	require.NoError(t, err)
	wpool, err := pgxpool.New(ctx, url+"&pool_max_conns=8")
	require.NoError(t, err)
	t.Cleanup(wpool.Close)
	srv, err := worker.NewServer(cfg, wpool, log)
	require.NoError(t, err)
	require.NoError(t, srv.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
	})

	tokens, err := worker.ParseAPITokens(entries)
	require.NoError(t, err)
	cons, err := console.New(console.Options{Pool: pool, Log: log, Tokens: tokens, River: srv.Client()})
	require.NoError(t, err)
	uictx, stopUI := context.WithCancel(ctx)
	t.Cleanup(stopUI)
	require.NoError(t, cons.Start(uictx))
	server := api.New(api.Options{Pool: pool, Log: log, Tokens: tokens, SecretsKey: secretsKey, Wrap: cons.Wrap})
	l, err := api.Listen("127.0.0.1:0")
	require.NoError(t, err)
	b.base = "http://" + l.Addr().String()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := server.Serve(l); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, server.Shutdown(sctx))
		wg.Wait()
	})
	return b
}

// apiCall sends an API request with the test token and decodes the JSON
// answer.
func (b *testBundle) apiCall(t testing.TB, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(b.ctx, method, b.base+path, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &out), "body %s", raw)
	return resp.StatusCode, out
}

// enqueue starts an execution over the API and returns its id.
func (b *testBundle) enqueue(t testing.TB, action string, params map[string]any) int64 {
	t.Helper()
	status, body := b.apiCall(t, "POST", "/api/v1/executions", map[string]any{"action": action, "parameters": params})
	require.Equal(t, http.StatusCreated, status, "body %v", body)
	return int64(body["id"].(float64))
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
