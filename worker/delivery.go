package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker/process"
)

// paramEnv renders non-secret parameters as ATTUNE_ACTION_{NAME} variables:
// strings as is, numbers and booleans as JSON text, null as empty, objects
// and arrays as compact JSON.
func paramEnv(params map[string]any, decls packs.Params) ([]string, error) {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var env []string
	for _, k := range names {
		if decls[k].Secret {
			continue
		}
		var s string
		switch v := params[k].(type) {
		case nil:
		case string:
			s = v
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("parameter %q cannot be encoded: %w", k, err)
			}
			s = string(b)
		}
		env = append(env, "ATTUNE_ACTION_"+packs.EnvName(k)+"="+s)
	}
	return env, nil
}

// encodeDocument renders parameters (with secrets) for stdin or file
// delivery in the action's parameter_format.
func encodeDocument(doc map[string]any, format string) ([]byte, error) {
	switch format {
	case "", packs.FormatJSON:
		b, err := json.Marshal(doc)
		return append(b, '\n'), err
	case packs.FormatYAML:
		return yaml.Marshal(yamlNumbers(doc))
	case packs.FormatDotenv:
		flat := map[string]string{}
		if err := flatten("", doc, flat); err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(flat))
		for k := range flat {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var buf bytes.Buffer
		for _, k := range keys {
			fmt.Fprintf(&buf, "%s=%s\n", k, singleQuote(flat[k]))
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("unknown parameter_format %q", format)
}

// yamlNumbers replaces each json.Number in v with a plain YAML scalar of
// its digits: yaml would quote it as a string, and a float64 would lose
// digits.
func yamlNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}
	case []any:
		out := make([]any, len(t))
		for i, vv := range t {
			out[i] = yamlNumbers(vv)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, vv := range t {
			out[k] = yamlNumbers(vv)
		}
		return out
	}
	return v
}

// flatten turns nested objects into dotted keys for dotenv; arrays are
// indexed (a.0, a.1).
func flatten(prefix string, v any, out map[string]string) error {
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch t := v.(type) {
	case map[string]any:
		for k, vv := range t {
			if err := flatten(join(k), vv, out); err != nil {
				return err
			}
		}
	case []any:
		for i, vv := range t {
			if err := flatten(join(strconv.Itoa(i)), vv, out); err != nil {
				return err
			}
		}
	case nil:
		out[prefix] = ""
	case string:
		out[prefix] = t
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		out[prefix] = string(b)
	}
	return nil
}

// singleQuote quotes for dotenv the POSIX-shell way: 'it'\”s'.
func singleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseResult reads an exited-0 child's stdout as the action's output_format.
// It reports ok=false when stdout holds no result in that format, is
// larger than maxResultBytes, or ctx ends first (see result.go).
func parseResult(ctx context.Context, stdout, format string) (any, bool) {
	if len(stdout) > maxResultBytes {
		return nil, false
	}
	v, ok := parseResultRaw(ctx, stdout, format)
	if !ok {
		return nil, false
	}
	return withoutNUL(v), true
}

// decodeJSON decodes one JSON document, numbers kept as json.Number so that
// integers past 2^53 keep their digits in the stored result.
func decodeJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: data after the value")
	}
	return v, nil
}

// withoutNUL replaces NUL characters in strings and keys with U+FFFD, as in
// stdout: JSON may spell them (\u0000), jsonb refuses them.
func withoutNUL(v any) any {
	switch t := v.(type) {
	case string:
		return strings.ReplaceAll(t, "\x00", process.Replacement)
	case []any:
		for i := range t {
			t[i] = withoutNUL(t[i])
		}
	case map[string]any:
		for k, vv := range t {
			if strings.IndexByte(k, 0) >= 0 {
				delete(t, k)
				k = strings.ReplaceAll(k, "\x00", process.Replacement)
			}
			t[k] = withoutNUL(vv)
		}
	}
	return v
}

func parseResultRaw(ctx context.Context, stdout, format string) (any, bool) {
	trimmed := strings.TrimSpace(stdout)
	if trimmed == "" {
		return nil, false
	}
	switch format {
	case "", packs.FormatJSON:
		if v, err := decodeJSON(trimmed); err == nil {
			return v, true
		}
		last := trimmed[strings.LastIndexByte(trimmed, '\n')+1:]
		if v, err := decodeJSON(last); err == nil {
			return v, true
		}
	case packs.FormatYAML:
		if v, err := decodeYAMLResult(ctx, trimmed); err == nil {
			return v, true
		}
	case packs.FormatJSONL:
		var items []any
		for _, line := range strings.Split(trimmed, "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			if ctx.Err() != nil {
				return nil, false
			}
			v, err := decodeJSON(line)
			if err != nil {
				return nil, false
			}
			items = append(items, v)
		}
		return items, true
	}
	return nil, false
}
