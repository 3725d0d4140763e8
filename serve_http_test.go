//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

const serveToken = "serve-test-token-0123456789"

// httpAddr waits for replica r's "HTTP listening" line and returns its
// base URL.
func (b *replicaBundle) httpAddr(t *testing.T, r *replica) string {
	t.Helper()
	re := regexp.MustCompile(`"msg":"HTTP listening","addr":"([^"]+)"`)
	var addr string
	b.eventually(t, 10*time.Second, "replica "+r.name+" listening", func() bool {
		if m := re.FindStringSubmatch(r.logs.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return "http://" + addr
}

func httpDo(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+serveToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), "%s", raw)
	return resp.StatusCode, out
}

// TestServeHTTP runs attune serve with its listener: the API enqueues an
// execution the replica runs, a second replica on the same port stops with
// one line, and SIGTERM stops the listener with the worker.
func TestServeHTTP(t *testing.T) {
	t.Parallel()
	b := setupReplicas(t, schematest.URL(t))
	r := b.start(t, "http-1", "ATTUNE_API_TOKENS=ci:"+serveToken)
	base := b.httpAddr(t, r)
	require.NotContains(t, r.logs.String(), serveToken, "tokens never appear in logs")

	status, ready := httpDo(t, "GET", base+"/readyz", "")
	require.Equal(t, 200, status, "%v", ready)
	out := filepath.Join(b.work, "out")
	status, e := httpDo(t, "POST", base+"/api/v1/executions", fmt.Sprintf(`{"action": "r.append", "parameters": {"out": %q}}`, out))
	require.Equal(t, 201, status, "%v", e)
	id := int64(e["id"].(float64))
	b.eventually(t, 20*time.Second, "execution completed", func() bool {
		_, e := httpDo(t, "GET", fmt.Sprintf("%s/api/v1/executions/%d", base, id), "")
		return e["status"] == "completed"
	})
	status, _ = httpDo(t, "GET", base+"/api/v1/workers", "")
	require.Equal(t, 200, status)

	t.Run("PortInUse", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, b.bin, "serve")
		cmd.Env = b.env("http-2", "ATTUNE_HTTP_ADDR="+strings.TrimPrefix(base, "http://"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		require.Error(t, err)
		line := strings.TrimSpace(stderr.String())
		line = line[strings.LastIndex(line, "\n")+1:]
		require.Contains(t, line, "attune: ATTUNE_HTTP_ADDR="+strings.TrimPrefix(base, "http://"))
		require.Contains(t, line, "already in use")
		require.Regexp(t, `such as ATTUNE_HTTP_ADDR=127\.0\.0\.1:\d+`, line)
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.worker WHERE name = 'http-2'").Scan(&n))
		require.Zero(t, n, "the second replica stopped before registering")
	})

	t.Run("PublicWithoutTokens", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, b.bin, "serve")
		cmd.Env = b.env("http-3", "ATTUNE_HTTP_ADDR=0.0.0.0:0")
		outb, err := cmd.CombinedOutput()
		require.Error(t, err)
		require.Contains(t, string(outb), "ATTUNE_API_TOKENS is empty")
		require.Equal(t, 1, strings.Count(strings.TrimSpace(string(outb)), "\n")+1, "one line: %s", outb)
	})

	// SIGTERM: the listener closes and the process exits cleanly.
	r.signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	require.NoError(t, r.err, "logs:\n%s", r.logs.String())
	_, err := http.Get(base + "/healthz")
	require.Error(t, err, "the listener is closed")
}

// TestServeTraces: with OTEL_EXPORTER_OTLP_ENDPOINT set, attune serve
// exports its spans over OTLP/HTTP to an in-process receiver.
func TestServeTraces(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got [][]byte
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" {
			mu.Lock()
			got = append(got, body)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()

	b := setupReplicas(t, schematest.URL(t))
	r := b.start(t, "trace-1", "ATTUNE_API_TOKENS=ci:"+serveToken, "OTEL_EXPORTER_OTLP_ENDPOINT="+receiver.URL,
		"OTEL_BSP_SCHEDULE_DELAY=100")
	base := b.httpAddr(t, r)
	status, e := httpDo(t, "POST", base+"/api/v1/executions", fmt.Sprintf(`{"action": "r.append", "parameters": {"out": %q}}`, filepath.Join(b.work, "out")))
	require.Equal(t, 201, status, "%v", e)
	b.eventually(t, 20*time.Second, "spans exported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		all := bytes.Join(got, nil)
		for _, name := range []string{"POST /api/v1/executions", "attune.enqueue", "attune.execution", "attune.process", "attune.complete"} {
			if !bytes.Contains(all, []byte(name)) {
				return false
			}
		}
		return bytes.Contains(all, []byte("trace-1")) // service.instance.id
	})
}
