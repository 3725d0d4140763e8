package packs

import (
	"fmt"
	"math"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkSchema reports a schema the validator cannot compile.
func (fc *fileCtx) checkSchema(n *yaml.Node, what string, schema map[string]any) {
	if _, err := cachedSchema(schema); err != nil {
		fc.errorf(n, "%s is not a valid JSON Schema: %s", what, oneLine(err.Error()))
	}
}

// jsonLike converts decoded YAML to values encoding/json can store.
func jsonLike(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			c, err := jsonLike(e)
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			c, err := jsonLike(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = c
		}
		return out, nil
	case []any:
		for i, e := range v {
			c, err := jsonLike(e)
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
		return v, nil
	case time.Time:
		return v.Format(time.RFC3339Nano), nil
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("%v cannot be stored as JSON", v)
		}
	}
	return v, nil
}

// isJSONSchema tells a JSON Schema from a flat map of property → schema (or
// StackStorm-style parameter map).
func isJSONSchema(m map[string]any) bool {
	if _, ok := m["type"].(string); ok {
		return true
	}
	for _, k := range []string{"$schema", "$ref", "allOf", "anyOf", "oneOf"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	if props, ok := m["properties"].(map[string]any); ok {
		// A property named "properties" would carry a type of its own.
		_, isDecl := props["type"].(string)
		return !isDecl
	}
	return false
}

// flatToSchema returns m when it is a JSON Schema, and otherwise treats it
// as a flat property → schema map (Attune's output), where a property may
// say `required: true`.
func flatToSchema(m map[string]any, strict bool) map[string]any {
	if isJSONSchema(m) {
		return m
	}
	props := make(map[string]any, len(m))
	var required []string
	for _, name := range sortedKeys(m) {
		prop, ok := m[name].(map[string]any)
		if !ok {
			props[name] = m[name]
			continue
		}
		if req, ok := prop["required"].(bool); ok {
			prop = cloneMap(prop)
			delete(prop, "required")
			if req {
				required = append(required, name)
			}
		}
		props[name] = prop
	}
	schema := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		schema["required"] = required
	}
	if strict {
		schema["additionalProperties"] = false
	}
	return schema
}
