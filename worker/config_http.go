package worker

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// HTTPOff is the ATTUNE_HTTP_ADDR value that disables the listener.
const HTTPOff = "off"

// minTokenLen keeps guessable tokens out: 16 characters is 96 bits of
// base64 or 64 of hex, the least a bearer token on a network should carry.
const minTokenLen = 16

// APIToken is one accepted bearer token. Name is what logs show; Value never
// appears in a log or an error.
type APIToken struct {
	Name  string
	Value string
}

// HTTP checks the listener's settings, which only attune serve uses, and
// returns the address to bind ("" when ATTUNE_HTTP_ADDR is off) and the
// accepted tokens.
func (c *Config) HTTP() (addr string, tokens []APIToken, err error) {
	tokens, err = ParseAPITokens(c.APITokens)
	if err != nil {
		return "", nil, err
	}
	addr = strings.TrimSpace(c.HTTPAddr)
	if strings.EqualFold(addr, HTTPOff) {
		return "", tokens, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("ATTUNE_HTTP_ADDR=%q is invalid: must be host:port such as 127.0.0.1:8080 or :8080, or off", c.HTTPAddr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", nil, fmt.Errorf("ATTUNE_HTTP_ADDR=%q is invalid: port must be a number from 0 to 65535", c.HTTPAddr)
	}
	if len(tokens) == 0 && !loopback(host) {
		return "", nil, fmt.Errorf("ATTUNE_HTTP_ADDR=%q is not a loopback address and ATTUNE_API_TOKENS is empty: anyone who can reach it could run actions; set ATTUNE_API_TOKENS or listen on 127.0.0.1", c.HTTPAddr)
	}
	return addr, tokens, nil
}

// loopback reports whether host only ever answers this machine. An empty
// host binds every interface.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// ParseAPITokens reads ATTUNE_API_TOKENS entries: token or name:token.
// Surrounding white space (a trailing newline from a file) is dropped.
func ParseAPITokens(entries []string) ([]APIToken, error) {
	var out []APIToken
	names := map[string]bool{}
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, value, named := strings.Cut(e, ":")
		if !named {
			name, value = fmt.Sprintf("token%d", i+1), e
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case named && !validTokenName(name):
			return nil, fmt.Errorf("ATTUNE_API_TOKENS entry %d is invalid: the name before ':' must be letters, digits, _ . - such as ci:TOKEN", i+1)
		case len(value) < minTokenLen:
			return nil, fmt.Errorf("ATTUNE_API_TOKENS entry %d (%s) is invalid: a token must be at least %d characters; make one with openssl rand -hex 32", i+1, name, minTokenLen)
		case strings.ContainsAny(value, " \t,"):
			return nil, fmt.Errorf("ATTUNE_API_TOKENS entry %d (%s) is invalid: a token cannot hold spaces or commas", i+1, name)
		case names[name]:
			return nil, fmt.Errorf("ATTUNE_API_TOKENS entry %d is invalid: the name %s is used twice", i+1, name)
		}
		names[name] = true
		out = append(out, APIToken{Name: name, Value: value})
	}
	return out, nil
}

func validTokenName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
