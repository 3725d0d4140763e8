package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"github.com/attune-system/attune/worker"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure a Console.
type Options struct {
	Pool *pgxpool.Pool
	Log  *slog.Logger
	// Tokens are the API's tokens (ATTUNE_API_TOKENS): a session names the
	// one it logged in with, and the session key is derived from them.
	Tokens []worker.APIToken
	// SessionTTL is how long a login lasts. Defaults to 12 hours.
	SessionTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// River, when set, mounts River UI at /riverui behind the console's
	// login, read-only (see riverUI). Defaults to none.
	River *river.Client[pgx.Tx]
}

// Console serves the web console and hands every API path to the API.
type Console struct {
	opts     Options
	pool     *pgxpool.Pool
	log      *slog.Logger
	api      http.Handler
	mux      *http.ServeMux
	pages    map[string]*template.Template
	sessions *sessions
	riverui  *riverui.Handler // nil without Options.River
}

// New builds a console; Wrap puts it in front of the API.
func New(opts Options) (*Console, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.SessionTTL == 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Console{opts: opts, pool: opts.Pool, log: opts.Log, mux: http.NewServeMux(),
		sessions: newSessions(opts.Tokens, opts.SessionTTL, opts.Now)}
	c.pages = parsePages()
	if opts.River != nil {
		h, err := riverui.NewHandler(&riverui.HandlerOpts{Endpoints: riverui.NewEndpoints(opts.River, nil),
			Logger: opts.Log, Prefix: "/riverui", JobListHideArgsByDefault: true})
		if err != nil {
			return nil, fmt.Errorf("error building River UI: %w", err)
		}
		c.riverui = h
	}
	c.routes()
	return c, nil
}

// Wrap is api.Options.Wrap: the console answers its pages and hands the
// API's paths to api.
func (c *Console) Wrap(api http.Handler) http.Handler {
	c.api = api
	return c
}

// Start starts River UI's background queries until ctx is done; without
// River UI it does nothing.
func (c *Console) Start(ctx context.Context) error {
	if c.riverui == nil {
		return nil
	}
	if err := c.riverui.Start(ctx); err != nil {
		return fmt.Errorf("error starting River UI: %w", err)
	}
	return nil
}

// apiPrefixes are the paths the API answers; the console answers the rest.
var apiPrefixes = []string{"/api/", "/webhooks/", "/metrics", "/healthz", "/readyz"}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, p := range apiPrefixes {
		if strings.HasPrefix(r.URL.Path, p) {
			c.api.ServeHTTP(w, r)
			return
		}
	}
	h := w.Header()
	if strings.HasPrefix(r.URL.Path, "/riverui") {
		c.mux.ServeHTTP(w, r) // River UI's own pages set their own rules
		return
	}
	// Pages come from this origin only: no inline script, no framing.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	c.mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	}))
	c.mux.HandleFunc("GET /login", c.loginForm)
	c.mux.HandleFunc("POST /login", c.login)
	c.mux.Handle("POST /logout", c.authed(c.logout))

	c.mux.Handle("GET /{$}", c.authed(c.overview))
	c.mux.Handle("GET /executions", c.authed(c.executions))
	c.mux.Handle("GET /executions/{id}", c.authed(c.execution))
	c.mux.Handle("GET /executions/{id}/stream", c.authed(c.stream))
	c.mux.Handle("POST /executions/{id}/cancel", c.authed(c.cancel))
	c.mux.Handle("POST /executions/{id}/re-run", c.authed(c.rerun))
	c.mux.Handle("GET /actions", c.authed(c.actions))
	c.mux.Handle("GET /actions/{ref}", c.authed(c.action))
	c.mux.Handle("POST /actions/{ref}/run", c.authed(c.run))
	c.mux.Handle("GET /rules", c.authed(c.rules))
	c.mux.Handle("POST /rules/{ref}/{change}", c.authed(c.setRule))
	c.mux.Handle("GET /sensors", c.authed(c.sensors))
	c.mux.Handle("GET /workers", c.authed(c.workers))
	c.mux.Handle("GET /events", c.authed(c.events))
	if c.riverui != nil {
		c.mux.Handle("/riverui", http.RedirectHandler("/riverui/", http.StatusMovedPermanently))
		c.mux.Handle("/riverui/", c.authed(c.riverUI))
	}
	c.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.errorPage(w, r, http.StatusNotFound, "No page at "+r.URL.Path, "The menu above lists the console's pages.")
	})
}

// callAPI runs one API request in process with the session's token and
// returns its status and body. body, when not nil, is sent as JSON.
func (c *Console) callAPI(r *http.Request, s *session, method, path string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return http.StatusInternalServerError, nil
		}
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequestWithContext(r.Context(), method, path, rd)
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host // the console's own request, which the API checks as its own
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s != nil && s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	rec := httptest.NewRecorder()
	c.api.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// apiError reads the error and hint of an API error body.
func apiError(body []byte) (msg, hint string) {
	var e struct {
		Error string `json:"error"`
		Hint  string `json:"hint"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return "The API answered without an error message", ""
	}
	return e.Error, e.Hint
}

// riverUI serves River UI's pages and its reads. Its writes (cancel, delete
// or retry a River job, pause a queue) would change River's rows behind
// attune.execution's back, leaving an execution running with no job or
// running twice, so they are refused: attune's own Cancel and Re-run do
// those through the execution.
func (c *Console) riverUI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"message": "River UI is read-only in attune: cancel and re-run executions from the console's execution page"}`+"\n")
		return
	}
	c.riverui.ServeHTTP(w, r)
}
