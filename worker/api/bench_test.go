package api_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkCreateExecution is POST /api/v1/executions through a loopback
// listener into a real database, from parallel keep-alive clients (no
// worker runs, so it measures the enqueue path alone):
//
//	go test ./worker/api -run '^$' -bench CreateExecution -benchtime 5s -cpu 2 -count 1
func BenchmarkCreateExecution(b *testing.B) {
	tb := setup(b)
	body := []byte(`{"action": "t.echo", "parameters": {"name": "bench", "n": 3}}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(8) // 8 clients per GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", tb.base+"/api/v1/executions", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	client.CloseIdleConnections()
}
