package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
)

// Listen binds addr (ATTUNE_HTTP_ADDR). A port in use is one line naming the
// variable and a port to use for a second replica on this host.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		host, port, _ := net.SplitHostPort(addr)
		next := "8081"
		if n, perr := strconv.Atoi(port); perr == nil && n > 0 && n < 65535 {
			next = strconv.Itoa(n + 1)
		}
		return nil, fmt.Errorf("ATTUNE_HTTP_ADDR=%s: the port is already in use (another attune serve on this host?); give this replica another port, such as ATTUNE_HTTP_ADDR=%s, or off", addr, net.JoinHostPort(host, next))
	}
	return nil, fmt.Errorf("ATTUNE_HTTP_ADDR=%s cannot be bound: %w", addr, err)
}

// Serve answers connections on l until Shutdown; it returns nil after a
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.log.Info("HTTP listening", "addr", l.Addr().String(), "tokens", len(s.opts.Tokens))
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
