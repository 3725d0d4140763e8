package packs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A string in a rule's action_params may embed {{ path }} expressions, where
// path is a dotted path into the context [TemplateContext] builds:
//
//	{{ event.id }}  {{ event.trigger }}  {{ event.payload.x.y }}  {{ rule.ref }}
//
// A numeric segment indexes a list (event.payload.hosts.0). There are no
// filters and no escapes; a lone "}}" is plain text.

// templateFields lists the fields each root of a template path offers.
var templateFields = map[string][]string{
	"event": {"id", "trigger", "payload"},
	"rule":  {"ref"},
}

var pathSegment = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// TemplateContext builds the context [RenderParams] expects for an event
// that fired a rule.
func TemplateContext(eventID int64, triggerRef string, payload map[string]any, ruleRef string) map[string]any {
	return map[string]any{
		"event": map[string]any{"id": eventID, "trigger": triggerRef, "payload": payload},
		"rule":  map[string]any{"ref": ruleRef},
	}
}

// RenderParams renders the templates in params, nested objects and lists
// included, against ctx (see [TemplateContext]). A value that is exactly one
// {{ expr }} (spaces around allowed) takes the value expr points at, keeping
// its JSON type; a template inside a longer string is replaced by its text:
// strings as they are, null as nothing, anything else as compact JSON. A path
// that ctx does not hold is an error naming it. params is not modified.
func RenderParams(params map[string]any, ctx map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(params))
	for _, k := range sortedKeys(params) {
		v, err := renderValue(params[k], ctx)
		if err != nil {
			return nil, fmt.Errorf("parameter %q: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

// ValidateTemplates reports the template syntax errors in params (unclosed
// braces, paths that are not event.* or rule.*) without rendering anything.
func ValidateTemplates(params map[string]any) error {
	var errs []error
	for _, k := range sortedKeys(params) {
		walkStrings(params[k], k, func(path, s string) {
			if _, err := parseTemplate(s); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
			}
		})
	}
	return errors.Join(errs...)
}

func walkStrings(v any, path string, fn func(path, s string)) {
	switch v := v.(type) {
	case string:
		fn(path, v)
	case map[string]any:
		for _, k := range sortedKeys(v) {
			walkStrings(v[k], path+"."+k, fn)
		}
	case []any:
		for i, e := range v {
			walkStrings(e, path+"["+strconv.Itoa(i)+"]", fn)
		}
	}
}

// checkTemplates reports template syntax errors in a YAML value, with the
// line of each offending string.
func (fc *fileCtx) checkTemplates(n *yaml.Node, path string) {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			fc.checkTemplates(n.Content[i+1], path+"."+n.Content[i].Value)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			fc.checkTemplates(e, path+"["+strconv.Itoa(i)+"]")
		}
	case yaml.ScalarNode:
		if n.ShortTag() != "!!str" {
			return
		}
		if _, err := parseTemplate(n.Value); err != nil {
			fc.errorf(n, "%s: %s", path, err)
		}
	}
}

func renderValue(v any, ctx map[string]any) (any, error) {
	switch v := v.(type) {
	case string:
		return renderString(v, ctx)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			r, err := renderValue(e, ctx)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			r, err := renderValue(e, ctx)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

func renderString(s string, ctx map[string]any) (any, error) {
	parts, err := parseTemplate(s)
	if err != nil {
		return nil, err
	}
	var exprs []templatePart
	for _, p := range parts {
		if p.path != nil {
			exprs = append(exprs, p)
		} else if strings.TrimSpace(p.text) != "" {
			exprs = append(exprs, p)
		}
	}
	if len(exprs) == 1 && exprs[0].path != nil {
		v, err := lookupPath(ctx, exprs[0].path)
		if err != nil {
			return nil, fmt.Errorf("{{ %s }}: %w", exprs[0].expr, err)
		}
		return deepCopy(v), nil
	}
	var b strings.Builder
	for _, p := range parts {
		if p.path == nil {
			b.WriteString(p.text)
			continue
		}
		v, err := lookupPath(ctx, p.path)
		if err != nil {
			return nil, fmt.Errorf("{{ %s }}: %w", p.expr, err)
		}
		b.WriteString(stringify(v))
	}
	return b.String(), nil
}

// templatePart is literal text, or an expression when path is set.
type templatePart struct {
	text string
	expr string
	path []string
}

func parseTemplate(s string) ([]templatePart, error) {
	var parts []templatePart
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			if s != "" {
				parts = append(parts, templatePart{text: s})
			}
			return parts, nil
		}
		if i > 0 {
			parts = append(parts, templatePart{text: s[:i]})
		}
		j := strings.Index(s[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("unclosed %q in %q; close it with \"}}\"", "{{", s)
		}
		expr := strings.TrimSpace(s[i+2 : i+2+j])
		path, err := parsePath(expr)
		if err != nil {
			return nil, err
		}
		parts = append(parts, templatePart{expr: expr, path: path})
		s = s[i+2+j+2:]
	}
}

func parsePath(expr string) ([]string, error) {
	const hint = "templates may use event.id, event.trigger, event.payload.<field> and rule.ref"
	if expr == "" {
		return nil, fmt.Errorf("empty {{ }}; %s", hint)
	}
	path := strings.Split(expr, ".")
	for _, seg := range path {
		if !pathSegment.MatchString(seg) {
			return nil, fmt.Errorf("{{ %s }} is not a dotted path; %s", expr, hint)
		}
	}
	fields, ok := templateFields[path[0]]
	switch {
	case !ok:
		return nil, fmt.Errorf("{{ %s }}: unknown name %q; %s", expr, path[0], hint)
	case len(path) == 1 || !slices.Contains(fields, path[1]):
		return nil, fmt.Errorf("{{ %s }}: %s has no such field; %s", expr, path[0], hint)
	case len(path) > 2 && path[1] != "payload":
		return nil, fmt.Errorf("{{ %s }}: %s.%s has no fields; %s", expr, path[0], path[1], hint)
	}
	return path, nil
}

// missingError reports a path a value does not hold.
type missingError struct{ msg string }

func (e *missingError) Error() string { return e.msg }

// lookupPath follows path through maps and lists. It returns a *missingError
// when the path leads nowhere.
func lookupPath(root any, path []string) (any, error) {
	cur := root
	for i, seg := range path {
		at := strings.Join(path[:i], ".")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[seg]
			if !ok {
				if at == "" {
					return nil, &missingError{fmt.Sprintf("%q is not set", seg)}
				}
				return nil, &missingError{fmt.Sprintf("%s has no field %q", at, seg)}
			}
			cur = v
		case []any:
			idx, err := strconv.Atoi(seg)
			if err != nil || idx < 0 || idx >= len(c) {
				return nil, &missingError{fmt.Sprintf("%s has no element %s (it has %d)", at, seg, len(c))}
			}
			cur = c[idx]
		default:
			return nil, &missingError{fmt.Sprintf("%s is %s, so it has no field %q", at, typeName(cur), seg)}
		}
	}
	return cur, nil
}

// stringify renders a value inside a longer string.
func stringify(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}
