package api

import (
	"net/http"
	"strconv"
	"strings"
)

// openAPI serves the OpenAPI 3 document, built from the route table.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.doc)
}

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func buildDocument(routes []route) map[string]any {
	paths := map[string]any{}
	for _, rt := range routes {
		item, _ := paths[rt.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.path] = item
		}
		op := map[string]any{"operationId": rt.id, "summary": rt.summary}
		var params []any
		for _, seg := range strings.Split(rt.path, "/") {
			if strings.HasPrefix(seg, "{") {
				name := strings.Trim(seg, "{}")
				typ := "string"
				if name == "id" {
					typ = "integer"
				}
				params = append(params, map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": typ}})
			}
		}
		for _, p := range rt.query {
			sch := map[string]any{"type": p.typ}
			if p.enum != nil {
				sch["enum"] = p.enum
			}
			params = append(params, map[string]any{"name": p.name, "in": "query", "description": p.desc, "schema": sch})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.body != "" {
			op["requestBody"] = map[string]any{"required": rt.body != "Any", "content": map[string]any{
				"application/json": map[string]any{"schema": ref(rt.body)}}}
		}
		resp := map[string]any{}
		okBody := map[string]any{"description": http.StatusText(rt.ok)}
		switch {
		case rt.respType != "":
			okBody["content"] = map[string]any{rt.respType: map[string]any{"schema": map[string]any{"type": "string"}}}
		case rt.resp != "":
			okBody["content"] = map[string]any{"application/json": map[string]any{"schema": ref(rt.resp)}}
		default:
			okBody["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
		}
		if rt.id == "getExecutionLogs" {
			okBody["content"].(map[string]any)["text/event-stream"] = map[string]any{"schema": map[string]any{"type": "string",
				"description": "events stdout and stderr (data: a JSON string of new output), reset (data: the stream whose text follows again whole), then end (data: the final status)"}}
		}
		resp[strconv.Itoa(rt.ok)] = okBody
		errs := rt.errors
		if !rt.public {
			errs = append(errs, http.StatusUnauthorized)
		}
		for _, code := range errs {
			resp[strconv.Itoa(code)] = map[string]any{"description": http.StatusText(code),
				"content": map[string]any{"application/json": map[string]any{"schema": ref("Error")}}}
		}
		op["responses"] = resp
		if !rt.public {
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		}
		item[strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "attune", "version": "1",
			"description": "attune serve's HTTP API. Errors are {\"error\", \"hint\"}. Routes other than webhooks, health and this document need Authorization: Bearer <token> (ATTUNE_API_TOKENS)."},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         schemas(),
		},
	}
}

func obj(props map[string]any, required ...string) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if required != nil {
		o["required"] = required
	}
	return o
}

func list(key, item string, paged bool) map[string]any {
	props := map[string]any{key: map[string]any{"type": "array", "items": ref(item)}}
	if paged {
		props["next_cursor"] = map[string]any{"type": "string", "nullable": true}
	}
	return obj(props, key)
}

var (
	str      = map[string]any{"type": "string"}
	nstr     = map[string]any{"type": "string", "nullable": true}
	integer  = map[string]any{"type": "integer"}
	ninteger = map[string]any{"type": "integer", "nullable": true}
	boolean  = map[string]any{"type": "boolean"}
	anyObj   = map[string]any{"type": "object"}
	any_     = map[string]any{}
	ts       = map[string]any{"type": "string", "format": "date-time"}
	nts      = map[string]any{"type": "string", "format": "date-time", "nullable": true}
	strs     = map[string]any{"type": "array", "items": str}
	ints     = map[string]any{"type": "array", "items": integer}
)

func schemas() map[string]any {
	return map[string]any{
		"Error": obj(map[string]any{"error": str, "hint": str}, "error"),
		"Any":   any_,
		"ExecutionRequest": obj(map[string]any{
			"action":     str,
			"parameters": anyObj,
			"options": obj(map[string]any{"timeout_seconds": integer, "priority": map[string]any{"type": "integer", "minimum": 1, "maximum": 4},
				"scheduled_at": ts, "max_attempts": integer}),
		}, "action"),
		"Execution": obj(map[string]any{
			"id": integer, "action_ref": str, "status": map[string]any{"type": "string", "enum": statuses},
			"parameters": anyObj, "result": any_, "exit_code": ninteger, "stdout": nstr, "stderr": nstr,
			"stdout_truncated": boolean, "stderr_truncated": boolean, "error": nstr, "worker": nstr,
			"attempt": integer, "max_attempts": integer, "priority": integer, "timeout_seconds": ninteger, "rule_ref": nstr,
			"event_id": ninteger, "created_at": ts, "scheduled_at": nts, "started_at": nts, "finished_at": nts,
			"waiting_reason": nstr, "next_attempt_at": nts,
		}, "id", "action_ref", "status"),
		"ExecutionPage": list("executions", "Execution", true),
		"CancelResult":  obj(map[string]any{"id": integer, "status": str, "previous_status": str}, "id", "status", "previous_status"),
		"Logs": obj(map[string]any{"id": integer, "status": str, "stdout": str, "stderr": str,
			"stdout_truncated": boolean, "stderr_truncated": boolean}, "id", "status"),
		"Action": obj(map[string]any{"ref": str, "pack_ref": str, "name": str, "label": str, "description": str,
			"enabled": boolean, "runner_type": str, "entry_point": str, "parameters": anyObj, "result_schema": any_,
			"timeout_seconds": ninteger, "parameter_delivery": str, "parameter_format": str, "output_format": str,
			"max_retries": integer, "tags": strs, "updated": ts}, "ref"),
		"ActionList": list("actions", "Action", false),
		"Rule": obj(map[string]any{"id": integer, "ref": str, "pack_ref": str, "description": str, "enabled": boolean,
			"trigger_ref": str, "trigger_params": anyObj, "conditions": map[string]any{"type": "array"}, "action_ref": str,
			"action_params": anyObj, "updated": ts}, "ref"),
		"RuleList":   list("rules", "Rule", false),
		"RuleChange": obj(map[string]any{"rule": ref("Rule"), "changed": boolean}, "rule", "changed"),
		"Sensor": obj(map[string]any{"ref": str, "pack_ref": str, "description": str, "enabled": boolean,
			"runner_type": str, "entry_point": str, "trigger_types": strs, "status": str, "worker": nstr,
			"restarts": integer, "last_error": nstr, "updated": ts}, "ref"),
		"SensorList":  list("sensors", "Sensor", false),
		"Trigger":     obj(map[string]any{"ref": str, "pack_ref": str, "description": str, "parameters": anyObj, "payload_schema": any_}, "ref"),
		"TriggerList": list("triggers", "Trigger", false),
		"Event":       obj(map[string]any{"id": integer, "trigger_ref": str, "sensor_ref": nstr, "payload": anyObj, "rules": map[string]any{"type": "array", "items": anyObj}, "created_at": ts}, "id"),
		"EventPage":   list("events", "Event", true),
		"Worker": obj(map[string]any{"name": str, "hostname": str, "pid": integer, "status": str, "capabilities": anyObj,
			"started_at": ts, "heartbeat_at": ts, "heartbeat_age_seconds": map[string]any{"type": "number"}, "running": integer}, "name"),
		"WorkerList":    list("workers", "Worker", false),
		"WebhookResult": obj(map[string]any{"event_id": integer, "executions": ints, "skipped": strs}, "event_id", "executions"),
		"Health": obj(map[string]any{"status": str, "checks": map[string]any{"type": "object", "additionalProperties": str},
			"failing": str}, "status"),
	}
}
