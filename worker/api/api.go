package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/worker"
)

// Body caps: API calls carry parameters, webhooks whole event payloads
// (GitHub sends up to 25 MB, but a jsonb event that large helps nobody).
const (
	maxAPIBody     = 1 << 20
	maxWebhookBody = 5 << 20
)

// Options configure a Server.
type Options struct {
	Pool *pgxpool.Pool
	Log  *slog.Logger
	// Tokens are the accepted bearer tokens (ATTUNE_API_TOKENS).
	Tokens []worker.APIToken
	// MetricsPublic serves /metrics without a token.
	MetricsPublic bool
	// SecretsKey decrypts webhook secrets; nil when ATTUNE_SECRETS_KEY is unset.
	SecretsKey []byte
	// Metrics is the registry /metrics serves; nil serves none.
	Metrics *Metrics
	// RiverRunning reports whether this replica's River client runs, for
	// /readyz; nil counts as running.
	RiverRunning func() bool
	// Wrap, when set, builds the listener's handler around the API's: the
	// web console serves its pages and hands the API's routes on.
	Wrap func(api http.Handler) http.Handler
	// Timeouts; zero values take the defaults below.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

// Server is the HTTP surface of one replica.
type Server struct {
	opts    Options
	pool    *pgxpool.Pool
	log     *slog.Logger
	mux     *http.ServeMux
	routes  []route
	doc     map[string]any // the OpenAPI document
	http    *http.Server
	metrics *Metrics

	// stopping ends log streams when the listener shuts down: Shutdown
	// waits for handlers, and a stream would otherwise never end.
	stopping     chan struct{}
	stoppingOnce sync.Once
	draining     atomic.Bool
}

// New builds the handler tree of one replica.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	// Headers come fast or not at all; bodies are capped at a few MB, which
	// even a slow link sends within the read timeout. Log streams lift the
	// write deadline for themselves.
	def(&opts.ReadHeaderTimeout, 10*time.Second)
	def(&opts.ReadTimeout, 30*time.Second)
	def(&opts.WriteTimeout, 60*time.Second)
	def(&opts.IdleTimeout, 2*time.Minute)
	s := &Server{opts: opts, pool: opts.Pool, log: opts.Log, mux: http.NewServeMux(),
		metrics: opts.Metrics, stopping: make(chan struct{})}
	s.routes = s.routeTable()
	s.doc = buildDocument(s.routes)
	for _, rt := range s.routes {
		h := http.Handler(rt.handler)
		if !rt.public && !(rt.path == "/metrics" && opts.MetricsPublic) {
			h = s.authenticate(h)
		}
		s.mux.Handle(rt.method+" "+rt.muxPath(), h)
	}
	handler := http.Handler(s)
	if opts.Wrap != nil {
		handler = opts.Wrap(s)
	}
	handler = crossOriginProtected(handler)
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
	}
	return s
}

// ServeHTTP answers routes from the table, and unknown routes and methods
// with a JSON error instead of net/http's plain text.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("API handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
			writeError(w, http.StatusInternalServerError, "internal error", "the server log has the details")
		}
	}()
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		ctx, end := startSpan(r, pattern)
		defer end()
		s.mux.ServeHTTP(w, r.WithContext(ctx)) // sets the path values Handler does not
		return
	}
	// No route: let the mux decide between 404 and 405 (and set Allow),
	// then answer in JSON.
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if allow := probe.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	switch probe.status {
	case http.StatusMethodNotAllowed:
		writeError(w, probe.status, r.Method+" is not allowed on "+r.URL.Path, "allowed: "+probe.header.Get("Allow"))
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		http.Redirect(w, r, probe.header.Get("Location"), probe.status)
	default:
		writeError(w, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path, "GET /api/v1/openapi.json lists the routes")
	}
}

// statusProbe records what a handler would answer, writing nothing.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *statusProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}

// Drain makes /readyz answer 503 from now on, so load balancers and
// orchestrators stop sending work while the replica shuts down; every
// route still answers.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting connections, ends log streams, and waits for
// the requests in flight until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	s.stoppingOnce.Do(func() { close(s.stopping) })
	return s.http.Shutdown(ctx)
}

// crossOriginProtected refuses state-changing requests a browser sends for
// another site's page (net/http's CrossOriginProtection: Sec-Fetch-Site,
// else Origin against Host). Without tokens the API is open on loopback,
// and a page could otherwise POST a re-run or a rule toggle from any tab;
// clients that are not browsers (curl, GitHub's webhooks) send neither
// header and pass.
func crossOriginProtected(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused",
			"a page of another site may not change anything here; call the API from a client, or from the console")
	}))
	return cop.Handler(next)
}
