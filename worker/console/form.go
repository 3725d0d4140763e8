package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
)

// field is one input of an action's run form, built from its parameter
// declaration.
type field struct {
	Name, Type, Description string
	Widget                  string // text, number, checkbox, select, password, json
	Required, Secret        bool
	Value                   string // the input's value: the default, or what was posted
	Checked                 bool
	Options                 []option
	Min, Max                *float64
	Step                    string
	Problem                 string
}

type option struct {
	Value, Label string
	Selected     bool
}

// formFields builds the run form of a: required parameters first, then by
// name; values are the defaults, or posted's when the form comes back.
func formFields(a *jobs.Action, posted url.Values) []field {
	var decl packs.Params
	_ = json.Unmarshal(a.Parameters, &decl)
	names := slices.Sorted(maps.Keys(decl))
	slices.SortStableFunc(names, func(x, y string) int {
		switch {
		case decl[x].Required == decl[y].Required:
			return 0
		case decl[x].Required:
			return -1
		}
		return 1
	})
	out := make([]field, 0, len(names))
	for _, name := range names {
		p := decl[name]
		f := field{Name: name, Type: p.Type, Description: p.Description, Secret: p.Secret, Min: p.Minimum, Max: p.Maximum,
			Required: p.Required && p.Default == nil}
		def := ""
		if p.Default != nil && !p.Secret {
			def = jsonText(p.Default, p.Type)
		}
		switch {
		case len(p.Enum) > 0:
			f.Widget = "select"
			if !f.Required {
				f.Options = append(f.Options, option{Value: "", Label: "(not set)"})
			}
			for _, v := range p.Enum {
				b, _ := json.Marshal(v)
				f.Options = append(f.Options, option{Value: string(b), Label: jsonText(v, "")})
			}
			def = ""
			if p.Default != nil {
				b, _ := json.Marshal(p.Default)
				def = string(b)
			}
		case p.Secret:
			f.Widget = "password"
		case p.Type == "boolean":
			f.Widget = "checkbox"
			f.Checked = p.Default == true
		case p.Type == "integer" || p.Type == "number":
			f.Widget, f.Step = "number", "1"
			if p.Type == "number" {
				f.Step = "any"
			}
		case p.Type == "object" || p.Type == "array":
			f.Widget = "json"
		default:
			f.Widget = "text"
		}
		f.Value = def
		if posted != nil {
			f.Value = posted.Get("p." + name)
			f.Checked = posted.Get("p."+name) == "true"
		}
		for i := range f.Options {
			f.Options[i].Selected = f.Options[i].Value == f.Value
		}
		out = append(out, f)
	}
	return out
}

// jsonText is a default or enum value as its input shows it: strings bare,
// anything else as JSON (indented for objects and arrays).
func jsonText(v any, typ string) string {
	if s, ok := v.(string); ok {
		return s
	}
	var b []byte
	if typ == "object" || typ == "array" {
		b, _ = json.MarshalIndent(v, "", "  ")
	} else {
		b, _ = json.Marshal(v)
	}
	return string(b)
}

// formParameters turns the posted fields into the parameters object the
// API takes. An empty optional input is left out, so the action's default
// applies; the API checks types, ranges and required parameters.
func formParameters(fields []field) (map[string]any, string) {
	params := map[string]any{}
	var problems []string
	for i := range fields {
		f := &fields[i]
		if f.Widget == "checkbox" {
			params[f.Name] = f.Checked
			continue
		}
		if strings.TrimSpace(f.Value) == "" && f.Widget != "text" && f.Widget != "password" {
			continue
		}
		if f.Value == "" {
			continue
		}
		switch f.Widget {
		case "text", "password":
			params[f.Name] = f.Value
		default: // number, select and json inputs hold JSON
			dec := json.NewDecoder(bytes.NewReader([]byte(f.Value)))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil || dec.More() {
				f.Problem = fmt.Sprintf("%s is not valid JSON", f.Name)
				if f.Widget == "number" {
					f.Problem = fmt.Sprintf("%s must be a number", f.Name)
				}
				problems = append(problems, f.Problem)
				continue
			}
			params[f.Name] = v
		}
	}
	return params, strings.Join(problems, "; ")
}
