package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker"
)

// webhookHeaders are the request headers a webhook event keeps: what tells
// senders and deliveries apart, never credentials or signatures.
var webhookHeaders = []string{
	"Content-Type", "User-Agent", "X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID",
	"X-GitHub-Hook-Installation-Target-Type", "X-GitLab-Event", "X-Event-Key", "X-Request-Id",
}

// Webhook outcomes, the values of attune_webhook_requests_total's label.
const (
	webhookAccepted     = "accepted"
	webhookUnknownPath  = "unknown_path"
	webhookBadSignature = "bad_signature"
	webhookTooLarge     = "too_large"
	webhookBadRequest   = "bad_request"
	webhookError        = "error"
)

func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	outcome := webhookError
	defer func() { s.metrics.webhook(outcome) }()
	path := r.PathValue("path")
	if !packs.WebhookPathPattern.MatchString(path) {
		outcome = webhookUnknownPath
		s.fail(w, r, errorf(http.StatusNotFound, "the path is the trigger_params.path of a core.webhook rule", "no webhook at /webhooks/%s", path))
		return
	}
	body, err := readBody(w, r, maxWebhookBody)
	if err != nil {
		outcome = webhookBadRequest
		var se *statusError
		if errors.As(err, &se) && se.status == http.StatusRequestEntityTooLarge {
			outcome = webhookTooLarge
		}
		s.fail(w, r, err)
		return
	}
	res, err := worker.DispatchWebhook(r.Context(), s.pool, s.log, s.opts.SecretsKey, worker.Webhook{
		Path: path, Body: body, Signature: r.Header.Get(worker.SignatureHeader),
		Payload: webhookPayload(r, path, body),
	})
	switch {
	case errors.Is(err, worker.ErrNoWebhook):
		outcome = webhookUnknownPath
		s.fail(w, r, errorf(http.StatusNotFound, "the path is the trigger_params.path of an enabled core.webhook rule", "no webhook at /webhooks/%s", path))
		return
	case errors.Is(err, worker.ErrBadSignature):
		outcome = webhookBadSignature
		s.log.Warn("webhook refused: bad or missing signature", "path", path, "remote", r.RemoteAddr)
		s.fail(w, r, errorf(http.StatusUnauthorized, "sign the exact body with HMAC-SHA256 under the webhook's secret: X-Hub-Signature-256: sha256=<hex>", "%s", err))
		return
	case errors.Is(err, worker.ErrWebhookSecret):
		s.fail(w, r, errorf(http.StatusInternalServerError, "the server log says why; an operator must fix the webhook's secret", "webhook is misconfigured"))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	outcome = webhookAccepted
	s.metrics.event(packs.WebhookTrigger, len(res.Executions), len(res.Skipped))
	s.log.Info("webhook", "path", path, "event_id", res.EventID, "executions", res.Executions, "skipped", len(res.Skipped))
	writeJSON(w, http.StatusAccepted, res)
}

// webhookPayload is the event payload: the body parsed as JSON when it is
// JSON, else as text; selected headers; the query.
func webhookPayload(r *http.Request, path string, body []byte) map[string]any {
	headers := map[string]any{}
	for _, h := range webhookHeaders {
		if v := r.Header.Get(h); v != "" {
			headers[strings.ToLower(h)] = clean(v)
		}
	}
	query := map[string]any{}
	for k, vs := range r.URL.Query() {
		if len(vs) == 1 {
			query[clean(k)] = clean(vs[0])
		} else {
			list := make([]any, len(vs))
			for i, v := range vs {
				list[i] = clean(v)
			}
			query[clean(k)] = list
		}
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var parsed any
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		if err := dec.Decode(&parsed); err != nil || dec.More() {
			parsed = clean(string(body))
		} else {
			parsed = cleanValue(parsed)
		}
	} else if len(body) > 0 {
		parsed = clean(string(body))
	}
	return map[string]any{
		"path": path, "body": parsed, "headers": headers, "query": query,
		"content_type": ct, "received_at": time.Now().UTC().Format(time.RFC3339Nano),
	}
}

// clean makes a string storable in jsonb: valid UTF-8 and no NUL.
func clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func cleanValue(v any) any {
	switch v := v.(type) {
	case string:
		return clean(v)
	case []any:
		for i := range v {
			v[i] = cleanValue(v[i])
		}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[clean(k)] = cleanValue(x)
		}
		return out
	}
	return v
}
