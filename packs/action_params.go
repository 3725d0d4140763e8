package packs

import (
	"fmt"
	"strings"
)

// paramProblem is one way a rule's action_params do not fit its action;
// param is the parameter it is about, "" for the whole of action_params.
type paramProblem struct {
	param string
	msg   string
}

// checkActionParams checks the literal values of a rule's action_params
// against the parameters declared by action ref: names, types, enum, bounds
// and required ones present. A value holding a {{ template }} is only known
// once rendered, where it is checked again when the rule fires, so here it
// only counts as present.
func checkActionParams(declared Params, ref string, actionParams map[string]any) []paramProblem {
	var out []paramProblem
	for _, name := range sortedKeys(actionParams) {
		prm, ok := declared[name]
		if !ok {
			names := "no parameters"
			if len(declared) > 0 {
				names = strings.Join(sortedNames(declared), ", ")
			}
			out = append(out, paramProblem{name, fmt.Sprintf("action_params: unknown parameter %q; %s declares: %s", name, ref, names)})
			continue
		}
		v := actionParams[name]
		if hasTemplate(v) {
			continue
		}
		// The parameter alone: whether the others are there is checked
		// below, knowing templates.
		prm.Required = false
		if _, err := (Params{name: prm}).Validate(map[string]any{name: v}); err != nil {
			out = append(out, paramProblem{name, fmt.Sprintf("action_params do not fit action %s: %s", ref, err)})
		}
	}
	for _, name := range sortedNames(declared) {
		prm := declared[name]
		if _, given := actionParams[name]; !given && prm.Required && prm.Default == nil {
			out = append(out, paramProblem{"", fmt.Sprintf("action_params do not fit action %s: missing required parameter %q", ref, name)})
		}
	}
	return out
}

// hasTemplate reports whether v, or anything inside it, is a string holding
// a {{ }} expression.
func hasTemplate(v any) bool {
	found := false
	walkStrings(v, "", func(_, s string) {
		if found {
			return
		}
		parts, err := parseTemplate(s)
		if err != nil {
			found = true // a broken template is reported on its own
			return
		}
		for _, p := range parts {
			if p.path != nil {
				found = true
				return
			}
		}
	})
	return found
}

// paramLine is the line to report a problem of rule r's action_params on:
// that of the parameter when known, else that of action_params (or of
// action_ref when there are none).
func (r *Rule) paramLine(param string) int {
	if n, ok := r.paramLines[param]; ok {
		return n
	}
	return r.paramsLine
}
