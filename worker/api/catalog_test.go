package api_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCatalog(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("Actions", func(t *testing.T) {
		r := b.call(t, "GET", "/api/v1/actions", nil)
		require.Equal(t, 200, r.status)
		var refs []string
		for _, a := range r.json["actions"].([]any) {
			refs = append(refs, a.(map[string]any)["ref"].(string))
		}
		require.Contains(t, refs, "t.echo")
		r = b.call(t, "GET", "/api/v1/actions?pack=nope", nil)
		require.Equal(t, []any{}, r.json["actions"])
		r = b.call(t, "GET", "/api/v1/actions/t.echo", nil)
		require.Equal(t, 200, r.status)
		require.Equal(t, "shell", r.json["runner_type"])
		require.Contains(t, r.json["parameters"], "name")
		requireError(t, b.call(t, "GET", "/api/v1/actions/t.nope", nil), 404, "t.nope")
	})

	t.Run("Rules", func(t *testing.T) {
		r := b.call(t, "GET", "/api/v1/rules", nil)
		require.Equal(t, 200, r.status)
		require.Len(t, r.json["rules"], 6)
		r = b.call(t, "POST", "/api/v1/rules/t.hook_disabled/enable", nil)
		require.Equal(t, 200, r.status, "body %s", r.body)
		require.Equal(t, true, r.json["changed"])
		require.Equal(t, true, r.json["rule"].(map[string]any)["enabled"])
		r = b.call(t, "POST", "/api/v1/rules/t.hook_disabled/enable", nil)
		require.Equal(t, false, r.json["changed"])
		r = b.call(t, "POST", "/api/v1/rules/t.hook_disabled/disable", nil)
		require.Equal(t, true, r.json["changed"])
		require.Equal(t, false, r.json["rule"].(map[string]any)["enabled"])
		requireError(t, b.call(t, "POST", "/api/v1/rules/t.nope/enable", nil), 404, "t.nope")
		requireError(t, b.call(t, "GET", "/api/v1/rules/t.hook_open/enable", nil), 405, "not allowed")
	})

	t.Run("SensorsTriggersWorkers", func(t *testing.T) {
		r := b.call(t, "GET", "/api/v1/sensors", nil)
		require.Equal(t, 200, r.status)
		require.Equal(t, "core.timer_sensor", r.json["sensors"].([]any)[0].(map[string]any)["ref"])
		require.Equal(t, "stopped", r.json["sensors"].([]any)[0].(map[string]any)["status"])
		r = b.call(t, "GET", "/api/v1/triggers", nil)
		require.Equal(t, 200, r.status)
		var refs []string
		for _, tr := range r.json["triggers"].([]any) {
			refs = append(refs, tr.(map[string]any)["ref"].(string))
		}
		require.Contains(t, refs, "core.webhook")
		r = b.call(t, "GET", "/api/v1/workers", nil)
		require.Equal(t, 200, r.status)
		require.Equal(t, []any{}, r.json["workers"])
	})

	t.Run("Events", func(t *testing.T) {
		for i := range 5 {
			_, err := b.pool.Exec(b.ctx, "INSERT INTO attune.event (trigger_ref, payload) VALUES ($1, $2)", "core.intervaltimer", fmt.Sprintf(`{"i": %d}`, i))
			require.NoError(t, err)
		}
		r := b.call(t, "GET", "/api/v1/events?limit=3", nil)
		require.Equal(t, 200, r.status)
		require.Len(t, r.json["events"], 3)
		next := r.json["next_cursor"].(string)
		r = b.call(t, "GET", "/api/v1/events?limit=3&cursor="+next, nil)
		require.Len(t, r.json["events"], 2)
		require.Nil(t, r.json["next_cursor"])
		r = b.call(t, "GET", "/api/v1/events?trigger=core.webhook", nil)
		require.Equal(t, []any{}, r.json["events"])
		requireError(t, b.call(t, "GET", "/api/v1/events?limit=x", nil), 400, "limit")
	})
}

// TestOpenAPI walks every operation of the document against the server:
// each answers one of its documented statuses, none is an unknown route,
// and every schema reference resolves.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.call(t, "GET", "/api/v1/openapi.json", nil, "Authorization", "")
	require.Equal(t, 200, r.status)
	doc := r.json
	require.Equal(t, "3.0.3", doc["openapi"])
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for _, m := range regexp.MustCompile(`"\$ref":"#/components/schemas/([A-Za-z]+)"`).FindAllStringSubmatch(string(r.body), -1) {
		require.Contains(t, schemas, m[1])
	}

	var id int64
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT attune.enqueue('t.echo', '{"name": "doc"}')`).Scan(&id))
	values := map[string]string{"{id}": strconv.FormatInt(id, 10), "{ref}": "t.echo", "{path}": "open/push"}
	bodies := map[string]any{"createExecution": map[string]any{"action": "t.echo", "parameters": map[string]any{"name": "x"}},
		"webhook": map[string]any{"who": "doc"}}
	paths := doc["paths"].(map[string]any)
	var ops []string
	for path, item := range paths {
		for method, op := range item.(map[string]any) {
			op := op.(map[string]any)
			ops = append(ops, strings.ToUpper(method)+" "+path)
			url := path
			for k, v := range values {
				url = strings.ReplaceAll(url, k, v)
			}
			if strings.HasPrefix(path, "/api/v1/rules/") {
				url = strings.ReplaceAll(path, "{ref}", "t.hook_open")
			}
			t.Run(op["operationId"].(string), func(t *testing.T) {
				resp := b.call(t, strings.ToUpper(method), url, bodies[op["operationId"].(string)])
				documented := op["responses"].(map[string]any)
				require.Contains(t, documented, strconv.Itoa(resp.status), "%s %s answered %d: %s", method, url, resp.status, resp.body)
				require.NotContains(t, string(resp.body), "no route")
				if resp.status < 300 && resp.json != nil {
					// The answer has the documented schema's required fields.
					content := documented[strconv.Itoa(resp.status)].(map[string]any)["content"].(map[string]any)
					sch := content["application/json"].(map[string]any)["schema"].(map[string]any)
					if name, ok := sch["$ref"].(string); ok {
						s := schemas[strings.TrimPrefix(name, "#/components/schemas/")].(map[string]any)
						for _, req := range asStrings(s["required"]) {
							require.Contains(t, resp.json, req, "%s: %s", op["operationId"], resp.body)
						}
						// And declares every field the answer has, in
						// lists too: the document must not lag the code.
						requireDeclared(t, schemas, s, resp.json, op["operationId"].(string))
					}
				}
				// Token routes refuse a request without one.
				if _, secured := op["security"]; secured {
					unauth := b.call(t, strings.ToUpper(method), url, bodies[op["operationId"].(string)], "Authorization", "")
					require.Equal(t, 401, unauth.status)
				}
			})
		}
	}
	sort.Strings(ops)
	require.Len(t, ops, 20, "%v", ops)
}

func asStrings(v any) []string {
	var out []string
	b, _ := json.Marshal(v)
	_ = json.Unmarshal(b, &out)
	return out
}

// requireDeclared checks that every key of v is a property of schema sch,
// following $refs into objects and array items.
func requireDeclared(t *testing.T, schemas map[string]any, sch map[string]any, v any, where string) {
	t.Helper()
	if r, ok := sch["$ref"].(string); ok {
		sch = schemas[strings.TrimPrefix(r, "#/components/schemas/")].(map[string]any)
	}
	switch v := v.(type) {
	case map[string]any:
		props, ok := sch["properties"].(map[string]any)
		if !ok {
			return // a free-form object
		}
		for k, x := range v {
			p, ok := props[k].(map[string]any)
			require.True(t, ok, "%s: field %q is not in the document", where, k)
			requireDeclared(t, schemas, p, x, where+"."+k)
		}
	case []any:
		if items, ok := sch["items"].(map[string]any); ok {
			for _, x := range v {
				requireDeclared(t, schemas, items, x, where+"[]")
			}
		}
	}
}
