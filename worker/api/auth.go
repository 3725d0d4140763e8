package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"
)

type tokenNameKey struct{}

// authenticate lets through requests whose Authorization is "Bearer " and
// one of the tokens, byte for byte. With no tokens configured the listener
// is on loopback (worker.Config.HTTP refuses anything else) and open to
// this machine's users, like a local database socket. Every token is compared, in constant
// time, whatever matched: the answer's timing tells nothing about them.
func (s *Server) authenticate(next http.Handler) http.Handler {
	sums := make([][32]byte, len(s.opts.Tokens))
	for i, t := range s.opts.Tokens {
		sums[i] = sha256.Sum256([]byte(t.Value))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := ""
		if len(sums) == 0 {
			// Open on loopback only: a page of another site that points its
			// own name at 127.0.0.1 (DNS rebinding) arrives with that name.
			if !loopbackHost(r.Host) {
				writeError(w, http.StatusForbidden, fmt.Sprintf("host %q is not a loopback name", r.Host),
					"without ATTUNE_API_TOKENS the API answers only requests to localhost or a loopback address")
				return
			}
			name = "(loopback, no tokens)"
		} else {
			h := r.Header.Get("Authorization")
			scheme, given, ok := strings.Cut(h, " ")
			if ok && strings.EqualFold(scheme, "Bearer") {
				got := sha256.Sum256([]byte(given))
				for i := range sums {
					if subtle.ConstantTimeCompare(got[:], sums[i][:]) == 1 {
						name = s.opts.Tokens[i].Name
					}
				}
			}
		}
		if name == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="attune"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid bearer token",
				"send Authorization: Bearer <token>, a token from the server's ATTUNE_API_TOKENS")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenNameKey{}, name)))
	})
}

// tokenName is the name of the token a request authenticated with, for logs.
func tokenName(r *http.Request) string {
	n, _ := r.Context().Value(tokenNameKey{}).(string)
	return n
}

// loopbackHost reports whether a request's Host names this machine's
// loopback: localhost or a loopback address, with or without a port.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
