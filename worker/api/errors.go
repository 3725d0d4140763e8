package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
)

// apiError is every error body: what went wrong and what to do.
type apiError struct {
	Error string `json:"error"`
	Hint  string `json:"hint,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(apiError{Error: "response cannot be encoded as JSON"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg, hint string) {
	writeJSON(w, status, apiError{Error: msg, Hint: hint})
}

// statusError carries an HTTP status out of a helper.
type statusError struct {
	status    int
	msg, hint string
}

func (e *statusError) Error() string { return e.msg }

func errorf(status int, hint, format string, args ...any) error {
	return &statusError{status: status, msg: fmt.Sprintf(format, args...), hint: hint}
}

// fail writes err: a *statusError as it says, anything else as a 500 whose
// detail goes to the log, not to the caller.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var se *statusError
	if errors.As(err, &se) {
		writeError(w, se.status, se.msg, se.hint)
		return
	}
	if r.Context().Err() != nil {
		return // the client is gone; nobody reads an answer
	}
	s.log.Error("API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error", "the server log has the details; retry later")
}

// readBody reads a capped body, turning an over-long or stalled body into
// the right status.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		return b, nil
	}
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLarge):
		return nil, errorf(http.StatusRequestEntityTooLarge, "send at most "+sizeName(limit), "request body is larger than %s", sizeName(limit))
	case errors.As(err, &netErr) && netErr.Timeout():
		return nil, errorf(http.StatusRequestTimeout, "send the whole body promptly", "request body did not arrive in time")
	}
	return nil, errorf(http.StatusBadRequest, "send the whole body", "request body could not be read: %s", err)
}

// decodeJSON reads a JSON object body into v: the content type must be
// JSON, the body one value, numbers kept as json.Number.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return errorf(http.StatusUnsupportedMediaType, "send Content-Type: application/json", "content type %q is not JSON", ct)
		}
	} else {
		return errorf(http.StatusUnsupportedMediaType, "send Content-Type: application/json", "the request has no content type; the body must be JSON")
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, `send a JSON object such as {"action": "core.echo"}`, "request body is empty")
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
			return errorf(http.StatusBadRequest, "check the JSON syntax", "request body is not valid JSON: %s", err)
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				field = "the body"
			}
			return errorf(http.StatusUnprocessableEntity, "see /api/v1/openapi.json for the expected shape", "%s must be %s, not %s", field, jsonType(typ.Type.Kind().String()), typ.Value)
		case errors.As(err, new(*time.ParseError)):
			return errorf(http.StatusUnprocessableEntity, "give times in RFC 3339, such as 2026-01-02T15:04:05Z", "a time in the body does not parse: %s", err)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return errorf(http.StatusUnprocessableEntity, "see /api/v1/openapi.json for the accepted fields", "request body has an %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return errorf(http.StatusBadRequest, "check the JSON syntax", "request body is not valid JSON: %s", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "send exactly one JSON object", "request body holds more than one JSON value")
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int32", "int64", "float64":
		return "a number"
	}
	return "another type"
}

func sizeName(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
