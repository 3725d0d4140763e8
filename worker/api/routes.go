package api

import "net/http"

// route is one entry of the table that both the mux and the OpenAPI
// document are built from, so the document cannot drift from the server.
type route struct {
	method, path string // path as OpenAPI writes it
	id, summary  string
	public       bool    // no token needed
	query        []param // query parameters
	body         string  // request schema name, "" for none
	ok           int     // success status
	resp         string  // success schema name; "" for none
	respType     string  // success content type; "" for application/json
	errors       []int   // documented error statuses (401 added for token routes)
	handler      http.HandlerFunc
}

// param is a query parameter.
type param struct {
	name, typ, desc string
	enum            []string
}

// muxPath is the ServeMux pattern path: a webhook path may have slashes.
func (rt route) muxPath() string {
	if rt.path == "/webhooks/{path}" {
		return "/webhooks/{path...}"
	}
	return rt.path
}

func (s *Server) routeTable() []route {
	const v1 = "/api/v1"
	page := []param{
		{name: "limit", typ: "integer", desc: "page size, 1 to 1000 (default 50)"},
		{name: "cursor", typ: "string", desc: "next_cursor of the previous page"},
	}
	execFilters := append([]param{
		{name: "status", typ: "string", desc: "only this status", enum: statuses},
		{name: "action", typ: "string", desc: "only this action ref"},
		{name: "rule", typ: "string", desc: "only executions this rule enqueued"},
		{name: "since", typ: "string", desc: "created at or after this RFC 3339 time"},
		{name: "until", typ: "string", desc: "created before this RFC 3339 time"},
	}, page...)
	return []route{
		{method: "POST", path: v1 + "/executions", id: "createExecution", summary: "Enqueue an execution of an action (as attune.enqueue does)",
			body: "ExecutionRequest", ok: 201, resp: "Execution", errors: []int{400, 404, 409, 413, 415, 422}, handler: s.createExecution},
		{method: "GET", path: v1 + "/executions", id: "listExecutions", summary: "List executions, newest first (without stdout and stderr)",
			query: execFilters, ok: 200, resp: "ExecutionPage", errors: []int{400}, handler: s.listExecutions},
		{method: "GET", path: v1 + "/executions/{id}", id: "getExecution", summary: "Read one execution",
			ok: 200, resp: "Execution", errors: []int{400, 404}, handler: s.getExecution},
		{method: "POST", path: v1 + "/executions/{id}/cancel", id: "cancelExecution", summary: "Cancel a queued or running execution",
			ok: 200, resp: "CancelResult", errors: []int{400, 404}, handler: s.cancelExecution},
		{method: "POST", path: v1 + "/executions/{id}/re-run", id: "rerunExecution", summary: "Enqueue the same action with the same parameters and options again",
			ok: 201, resp: "Execution", errors: []int{400, 404, 409, 422}, handler: s.rerunExecution},
		{method: "GET", path: v1 + "/executions/{id}/logs", id: "getExecutionLogs",
			summary: "An execution's stdout and stderr; with Accept: text/event-stream, a live stream of new output that ends with the final status",
			query:   []param{{name: "stream", typ: "string", desc: "only this stream", enum: []string{"stdout", "stderr"}}},
			ok:      200, resp: "Logs", errors: []int{400, 404}, handler: s.executionLogs},
		{method: "GET", path: v1 + "/actions", id: "listActions", summary: "List registered actions",
			query: []param{{name: "pack", typ: "string", desc: "only this pack's actions"}}, ok: 200, resp: "ActionList", handler: s.listActions},
		{method: "GET", path: v1 + "/actions/{ref}", id: "getAction", summary: "Read one action",
			ok: 200, resp: "Action", errors: []int{404}, handler: s.getAction},
		{method: "GET", path: v1 + "/rules", id: "listRules", summary: "List rules", ok: 200, resp: "RuleList", handler: s.listRules},
		{method: "POST", path: v1 + "/rules/{ref}/enable", id: "enableRule", summary: "Enable a rule; running sensors learn it at once",
			ok: 200, resp: "RuleChange", errors: []int{404}, handler: s.setRule(true)},
		{method: "POST", path: v1 + "/rules/{ref}/disable", id: "disableRule", summary: "Disable a rule; running sensors learn it at once",
			ok: 200, resp: "RuleChange", errors: []int{404}, handler: s.setRule(false)},
		{method: "GET", path: v1 + "/sensors", id: "listSensors", summary: "List sensors, with the replica running each",
			ok: 200, resp: "SensorList", handler: s.listSensors},
		{method: "GET", path: v1 + "/triggers", id: "listTriggers", summary: "List triggers", ok: 200, resp: "TriggerList", handler: s.listTriggers},
		{method: "GET", path: v1 + "/events", id: "listEvents", summary: "List events, newest first",
			query: append([]param{{name: "trigger", typ: "string", desc: "only this trigger ref"}}, page...),
			ok:    200, resp: "EventPage", errors: []int{400}, handler: s.listEvents},
		{method: "GET", path: v1 + "/workers", id: "listWorkers", summary: "List workers (replicas) with heartbeat age and running executions",
			ok: 200, resp: "WorkerList", handler: s.listWorkers},
		{method: "GET", path: v1 + "/openapi.json", id: "openapi", summary: "This document", public: true,
			ok: 200, resp: "", handler: s.openAPI},
		{method: "POST", path: "/webhooks/{path}", id: "webhook", public: true,
			summary: "Turn the request into a core.webhook event and fire the rules on this path; signed with X-Hub-Signature-256 when the rule names a secret (the path may hold slashes)",
			body:    "Any", ok: 202, resp: "WebhookResult", errors: []int{401, 404, 413}, handler: s.webhook},
		{method: "GET", path: "/metrics", id: "metrics", summary: "Prometheus metrics (a token is needed unless ATTUNE_METRICS_PUBLIC=true)",
			ok: 200, respType: "text/plain", handler: s.serveMetrics},
		{method: "GET", path: "/healthz", id: "healthz", summary: "200 while the process runs", public: true,
			ok: 200, resp: "Health", handler: s.healthz},
		{method: "GET", path: "/readyz", id: "readyz", summary: "200 when the database answers, migrations are current and River runs; else 503 naming the failing check",
			public: true, ok: 200, resp: "Health", errors: []int{503}, handler: s.readyz},
	}
}
