package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/attune-system/attune/worker"
)

const (
	sessionCookie = "attune_session"
	loginCookie   = "attune_login" // the login form's CSRF token, before a session exists
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
)

// sessions signs and checks session cookies. A cookie is
// "name|expiry|nonce" and its HMAC: stateless, so any replica with the same
// ATTUNE_API_TOKENS accepts it and a restart logs nobody out. The key is
// derived from the token values, so removing a token from the
// configuration ends every session at once.
type sessions struct {
	key    []byte
	tokens map[string]string // name → value
	ttl    time.Duration
	now    func() time.Time
}

// session is a logged-in browser.
type session struct {
	name  string // the token's name, for the page and the logs
	token string // its value, for the API calls
	nonce string
	csrf  string
}

// openName is the session name when no tokens are configured: the API is
// open on loopback, and so is the console.
const openName = "(loopback, no tokens)"

func newSessions(tokens []worker.APIToken, ttl time.Duration, now func() time.Time) *sessions {
	s := &sessions{tokens: map[string]string{}, ttl: ttl, now: now}
	mac := hmac.New(sha256.New, []byte("attune console session key"))
	for _, t := range tokens {
		s.tokens[t.Name] = t.Value
		mac.Write([]byte(t.Name + "\x00" + t.Value + "\x00"))
	}
	if len(tokens) == 0 {
		// Nothing to derive from: sessions last as long as the process.
		mac.Write([]byte(rand.Text()))
	}
	s.key = mac.Sum(nil)
	return s
}

func (s *sessions) sign(msg string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// nameOf finds which token value is, comparing every one in constant time.
func (s *sessions) nameOf(value string) string {
	name := ""
	got := sha256.Sum256([]byte(value))
	for n, v := range s.tokens {
		want := sha256.Sum256([]byte(v))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			name = n
		}
	}
	return name
}

// cookie is a new session's cookie for the token called name.
func (s *sessions) cookie(r *http.Request, name string) *http.Cookie {
	exp := s.now().Add(s.ttl)
	payload := url.PathEscape(name) + "|" + strconv.FormatInt(exp.Unix(), 10) + "|" + rand.Text()
	return &http.Cookie{Name: sessionCookie, Value: payload + "|" + s.sign("session|"+payload),
		Path: "/", Expires: exp, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode}
}

// get reads a valid session from r, or nil.
func (s *sessions) get(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	parts := strings.Split(ck.Value, "|")
	if len(parts) != 4 {
		return nil
	}
	payload := strings.Join(parts[:3], "|")
	if !hmac.Equal([]byte(parts[3]), []byte(s.sign("session|"+payload))) {
		return nil
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || s.now().Unix() >= exp {
		return nil
	}
	name, err := url.PathUnescape(parts[0])
	if err != nil {
		return nil
	}
	sess := &session{name: name, nonce: parts[2], csrf: s.sign("csrf|" + parts[2])}
	if name != openName || len(s.tokens) > 0 {
		v, ok := s.tokens[name]
		if !ok {
			return nil
		}
		sess.token = v
	}
	return sess
}

// checkCSRF reports whether r carries the session's CSRF token, in the form
// field or the header.
func (sess *session) checkCSRF(r *http.Request) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && hmac.Equal([]byte(got), []byte(sess.csrf))
}

type sessionKey struct{}

func sessionOf(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// authed lets through requests with a valid session: a page without one
// goes to the login form, anything else is refused. A POST must also carry
// the CSRF token.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := c.sessions.get(r)
		if sess == nil {
			if r.Method == http.MethodGet && r.Header.Get("Accept") != "text/event-stream" {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.errorPage(w, r, http.StatusUnauthorized, "You are not logged in", "Log in with an API token first.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if !sess.checkCSRF(r) {
				c.errorPage(w, r, http.StatusForbidden, "This request has no valid CSRF token",
					"Use the console's own forms; reload the page and try again.")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	})
}

// safeNext keeps a post-login redirect on this site.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, r, http.StatusOK, "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, problem string) {
	tok := rand.Text()
	if ck, err := r.Cookie(loginCookie); err == nil && len(ck.Value) == len(tok) {
		tok = ck.Value // another try keeps the form's token
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/login", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	c.render(w, r, status, "login", "Log in", map[string]any{
		"Next": safeNext(r.FormValue("next")), "Problem": problem, "LoginCSRF": tok, "Open": len(c.opts.Tokens) == 0,
	})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	ck, err := r.Cookie(loginCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostFormValue(csrfField))) != 1 {
		c.errorPage(w, r, http.StatusForbidden, "This login has no valid CSRF token", "Open the login page again and submit its form.")
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	name := openName
	if len(c.opts.Tokens) > 0 {
		// The API's own check decides, so a console login is exactly as good
		// as a bearer token.
		if status, _ := c.callAPI(r, &session{token: token}, "GET", "/api/v1/workers", nil); token == "" || status != http.StatusOK {
			c.log.Warn("console login refused", "remote", r.RemoteAddr)
			c.showLogin(w, r, http.StatusUnauthorized, "That token is not accepted. Use one of the server's ATTUNE_API_TOKENS.")
			return
		}
		name = c.sessions.nameOf(token)
	}
	c.log.Info("console login", "token", name, "remote", r.RemoteAddr)
	http.SetCookie(w, c.sessions.cookie(r, name))
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Path: "/login", MaxAge: -1})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// Name is the session's token name, for the page header.
func (sess *session) Name() string { return sess.name }
