package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/worker"
	"github.com/attune-system/attune/worker/api"
	"github.com/attune-system/attune/worker/console"
)

// httpListener is serve's HTTP side: bound before the worker starts, so a
// port in use stops serve before it takes any work, and shut down after
// the worker drained.
type httpListener struct {
	server   *api.Server
	listener net.Listener
	metrics  *api.Metrics
	console  *console.Console
	started  atomic.Bool // the worker started: River runs unless it stopped since

	watchRiver func(ctx context.Context)

	stopMetrics context.CancelFunc
	wg          sync.WaitGroup
}

// listenHTTP checks ATTUNE_HTTP_ADDR and ATTUNE_API_TOKENS and binds the
// port; it returns nil when the listener is off.
func (a *app) listenHTTP(pool *pgxpool.Pool, srv *worker.Server) (*httpListener, error) {
	addr, tokens, err := a.cfg.HTTP()
	if err != nil || addr == "" {
		return nil, err
	}
	var key []byte
	if a.cfg.SecretsKey != "" {
		if key, err = worker.DecodeSecretsKey(a.cfg.SecretsKey); err != nil {
			return nil, fmt.Errorf("ATTUNE_SECRETS_KEY %w", err)
		}
	}
	l, err := api.Listen(addr)
	if err != nil {
		return nil, err
	}
	cons, err := console.New(console.Options{Pool: pool, Log: srv.OutageMuted(a.log), Tokens: tokens, River: srv.Client()})
	if err != nil {
		return nil, errors.Join(err, l.Close())
	}
	h := &httpListener{listener: l, metrics: api.NewMetrics(pool, a.log, a.cfg.WorkerName), console: cons}
	srv.OnFinish(h.metrics.Finished)
	srv.OnEvent(h.metrics.Event)
	h.watchRiver = h.metrics.WatchRiver(srv.Client())
	h.server = api.New(api.Options{
		Pool: pool, Log: a.log, Tokens: tokens, MetricsPublic: a.cfg.MetricsPublic, SecretsKey: key, Metrics: h.metrics,
		Wrap: cons.Wrap,
		RiverRunning: func() bool {
			select {
			case <-srv.Client().Stopped():
				return false
			default:
				return h.started.Load()
			}
		},
	})
	return h, nil
}

// serve answers requests until stop; call once the worker started.
func (h *httpListener) serve(a *app) {
	if h == nil {
		return
	}
	h.started.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	h.stopMetrics = cancel
	if err := h.console.Start(ctx); err != nil {
		a.log.Error("River UI did not start; the console runs without it", "err", err)
	}
	h.wg.Add(3)
	go func() {
		defer h.wg.Done()
		h.metrics.Run(ctx)
	}()
	go func() {
		defer h.wg.Done()
		h.watchRiver(ctx)
	}()
	go func() {
		defer h.wg.Done()
		if err := h.server.Serve(h.listener); err != nil {
			a.log.Error("HTTP listener failed; the worker keeps running", "err", err)
		}
	}()
}

// drain makes /readyz fail while the worker stops; requests are still
// answered.
func (h *httpListener) drain() {
	if h != nil {
		h.server.Drain()
	}
}

// stop lets requests in flight finish until ctx is done, then closes the
// listener for good.
func (h *httpListener) stop(ctx context.Context) error {
	if h == nil {
		return nil
	}
	err := h.server.Shutdown(ctx)
	if !h.started.Load() {
		err = errors.Join(err, h.listener.Close()) // never served
	}
	if h.stopMetrics != nil {
		h.stopMetrics()
	}
	h.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("error stopping the HTTP listener: %w", err)
	}
	return nil
}

// setupTracing exports traces when the OTel SDK's variables ask for it; the
// returned func flushes what is buffered.
func (a *app) setupTracing(ctx context.Context) (func(), error) {
	shutdown, err := worker.SetupTracing(ctx, a.environ, a.cfg.WorkerName, a.log)
	if err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			a.log.Warn("flushing traces failed", "err", err)
		}
	}, nil
}
