package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// githubSign signs body as GitHub does: HMAC-SHA256 of the raw body under
// the webhook secret, hex, prefixed "sha256=".
func githubSign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	b := setup(t)
	count := func(t *testing.T, table string) int {
		t.Helper()
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM "+table).Scan(&n))
		return n
	}
	// GitHub's own example delivery, trimmed.
	push := []byte(`{"ref": "refs/heads/main", "repository": {"name": "attune", "id": 123456789012345678}, "sender": {"login": "octocat"}}`)
	const ghSecret = "It's a Secret to Everybody"

	t.Run("Open", func(t *testing.T) {
		r := b.call(t, "POST", "/webhooks/open/push?x=1&y=2&y=3", `{"who": "open"}`, "Authorization", "", "X-Request-Id", "r1")
		require.Equal(t, http.StatusAccepted, r.status, "body %s", r.body)
		require.Len(t, r.json["executions"], 1)
		eventID := int64(r.json["event_id"].(float64))
		e, err := jobs.Get(b.ctx, b.pool, int64(r.json["executions"].([]any)[0].(float64)))
		require.NoError(t, err)
		require.JSONEq(t, `{"name": "open"}`, string(e.Parameters))
		require.Equal(t, "t.hook_open", *e.RuleRef)
		require.Equal(t, eventID, *e.EventID)
		var payload map[string]any
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT payload FROM attune.event WHERE id = $1 AND trigger_ref = 'core.webhook' AND sensor_ref IS NULL", eventID).Scan(&payload))
		require.Equal(t, "open/push", payload["path"])
		require.Equal(t, map[string]any{"who": "open"}, payload["body"])
		require.Equal(t, map[string]any{"x": "1", "y": []any{"2", "3"}}, payload["query"])
		require.Equal(t, "r1", payload["headers"].(map[string]any)["x-request-id"])
		require.NotContains(t, payload["headers"], "authorization")
	})

	t.Run("TextBody", func(t *testing.T) {
		r := b.call(t, "POST", "/webhooks/open/push", "who=text\x00\xff", "Content-Type", "application/x-www-form-urlencoded")
		require.Equal(t, http.StatusAccepted, r.status, "body %s", r.body)
		require.Len(t, r.json["skipped"], 1, "the template names a field a text body does not have")
		var body string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT payload->>'body' FROM attune.event WHERE id = $1", int64(r.json["event_id"].(float64))).Scan(&body))
		require.Equal(t, "who=text\uFFFD\uFFFD", body)
	})

	t.Run("SignedLikeGitHub", func(t *testing.T) {
		r := b.call(t, "POST", "/webhooks/github", push, "Authorization", "",
			"X-GitHub-Event", "push", "X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"X-Hub-Signature-256", githubSign(ghSecret, push))
		require.Equal(t, http.StatusAccepted, r.status, "body %s", r.body)
		require.Len(t, r.json["executions"], 1)
		e, err := jobs.Get(b.ctx, b.pool, int64(r.json["executions"].([]any)[0].(float64)))
		require.NoError(t, err)
		require.JSONEq(t, `{"name": "attune"}`, string(e.Parameters))
		var id string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT payload->'body'->'repository'->>'id' FROM attune.event WHERE id = $1", int64(r.json["event_id"].(float64))).Scan(&id))
		require.Equal(t, "123456789012345678", id, "large integers keep their digits")

		// A ping matches no condition: an event, no execution.
		ping := []byte(`{"zen": "Keep it logically awesome."}`)
		r = b.call(t, "POST", "/webhooks/github", ping, "X-GitHub-Event", "ping", "X-Hub-Signature-256", githubSign(ghSecret, ping))
		require.Equal(t, http.StatusAccepted, r.status, "body %s", r.body)
		require.Empty(t, r.json["executions"])
		var rules string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT rules::text FROM attune.event WHERE id = $1", int64(r.json["event_id"].(float64))).Scan(&rules))
		require.JSONEq(t, `[{"rule": "t.hook_signed", "not_matched": true}]`, rules, "the event records what its rules did")
	})

	t.Run("Refused", func(t *testing.T) {
		events, execs := count(t, "attune.event"), count(t, "attune.execution")
		otherSig := githubSign("another one", push)
		for name, tc := range map[string]struct {
			path, sig string
			body      []byte
			status    int
		}{
			"MissingSignature":  {"/webhooks/github", "", push, 401},
			"WrongSecret":       {"/webhooks/github", githubSign("guess", push), push, 401},
			"OtherBody":         {"/webhooks/github", githubSign(ghSecret, push), []byte(`{"ref": "refs/heads/evil"}`), 401},
			"NotHex":            {"/webhooks/github", "sha256=zz", push, 401},
			"SHA1":              {"/webhooks/github", "sha1=" + githubSign(ghSecret, push)[7:], push, 401},
			"ReplayedOtherPath": {"/webhooks/github", otherSig, push, 401},
			"ReplayedToOther":   {"/webhooks/other", githubSign(ghSecret, push), push, 401},
			"UnknownPath":       {"/webhooks/nope", "", push, 404},
			"DisabledRule":      {"/webhooks/disabled", "", push, 404},
			"BadPathCharacters": {"/webhooks/a%20b", "", push, 404},
			"SecretNotStored":   {"/webhooks/missing-secret", githubSign("x", push), push, 500},
		} {
			t.Run(name, func(t *testing.T) {
				r := b.call(t, "POST", tc.path, tc.body, "Authorization", "", "X-GitHub-Event", "push", "X-Hub-Signature-256", tc.sig)
				require.Equal(t, tc.status, r.status, "body %s", r.body)
				require.NotEmpty(t, r.json["error"])
				require.NotContains(t, string(r.body), "not_stored", "secret names stay in the log")
			})
		}
		// The signed one for /webhooks/other is accepted there.
		r := b.call(t, "POST", "/webhooks/other", push, "X-Hub-Signature-256", otherSig)
		require.Equal(t, http.StatusAccepted, r.status, "body %s", r.body)
		require.Equal(t, events+1, count(t, "attune.event"), "refused requests stored nothing")
		require.Equal(t, execs+1, count(t, "attune.execution"))
	})

	t.Run("TooLarge", func(t *testing.T) {
		events := count(t, "attune.event")
		big := bytes.Repeat([]byte("x"), 50<<20)
		r := b.call(t, "POST", "/webhooks/open/push", big, "Authorization", "")
		requireError(t, r, http.StatusRequestEntityTooLarge, "larger than 5 MiB")
		require.Equal(t, events, count(t, "attune.event"))
	})

	t.Run("Metrics", func(t *testing.T) {
		r := b.call(t, "GET", "/metrics", nil)
		require.Equal(t, 200, r.status)
		m := string(r.body)
		require.Contains(t, m, `attune_webhook_requests_total{outcome="accepted"}`)
		require.Regexp(t, `attune_webhook_requests_total\{outcome="bad_signature"\} [1-9]`, m)
		require.Regexp(t, `attune_webhook_requests_total\{outcome="unknown_path"\} [1-9]`, m)
		require.Regexp(t, `attune_webhook_requests_total\{outcome="too_large"\} 1`, m)
		require.Regexp(t, `attune_events_total\{trigger="core.webhook"\} [1-9]`, m)
		require.Regexp(t, `attune_rule_firings_total\{trigger="core.webhook"\} [1-9]`, m)
		require.Regexp(t, `attune_rule_skips_total\{trigger="core.webhook"\} 1`, m)
	})
	_ = context.Background
}
