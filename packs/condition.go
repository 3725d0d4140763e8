package packs

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Condition operators.
const (
	OpEquals      = "equals"
	OpNotEquals   = "not_equals"
	OpContains    = "contains"
	OpGreaterThan = "greater_than"
	OpLessThan    = "less_than"
	OpMatches     = "matches"
)

var operators = []string{OpEquals, OpNotEquals, OpContains, OpGreaterThan, OpLessThan, OpMatches}

// fieldPrefixes are the spellings of "the event payload" a condition field
// may start with: Attune's event.payload, the short payload, and
// StackStorm's trigger. They all mean the same.
var fieldPrefixes = []string{"event.payload", "payload", "trigger"}

// criteriaOps maps StackStorm criteria types to condition operators.
var criteriaOps = map[string]string{
	"equals": OpEquals, "eq": OpEquals,
	"nequals": OpNotEquals, "neq": OpNotEquals,
	"contains":    OpContains,
	"greaterthan": OpGreaterThan, "gt": OpGreaterThan,
	"lessthan": OpLessThan, "lt": OpLessThan,
	"regex": OpMatches, "matchregex": OpMatches,
}

// Match reports whether the event payload satisfies c. Field is a dotted
// path into the payload, written event.payload.x, payload.x or trigger.x (the
// three prefixes are the same); a numeric segment indexes a list, and the
// bare prefix is the whole payload.
//
// A field the payload does not hold never satisfies a condition, whatever
// the operator. equals and not_equals compare JSON values (1 equals 1.0);
// contains looks for a substring in a string, an element in a list or a key
// in an object; greater_than and less_than compare two numbers or two
// strings; matches applies the regular expression Value (RE2, unanchored) to
// a string, number or boolean. An error means the condition cannot be
// evaluated, such as greater_than between a string and a number.
func (c Condition) Match(payload map[string]any) (bool, error) {
	path, err := conditionPath(c.Field)
	if err != nil {
		return false, err
	}
	got, err := lookupPath(payload, path)
	if err != nil {
		var me *missingError
		if errors.As(err, &me) {
			return false, nil
		}
		return false, err
	}
	switch c.Operator {
	case OpEquals:
		return valuesEqual(got, c.Value), nil
	case OpNotEquals:
		return !valuesEqual(got, c.Value), nil
	case OpContains:
		switch g := got.(type) {
		case string:
			return strings.Contains(g, stringify(c.Value)), nil
		case []any:
			return slices.ContainsFunc(g, func(e any) bool { return valuesEqual(e, c.Value) }), nil
		case map[string]any:
			k, ok := c.Value.(string)
			if !ok {
				return false, fmt.Errorf("condition on %s: contains on an object needs a key (string), got %s", c.Field, typeName(c.Value))
			}
			_, has := g[k]
			return has, nil
		}
		return false, fmt.Errorf("condition on %s: contains needs a string, list or object, got %s", c.Field, typeName(got))
	case OpGreaterThan, OpLessThan:
		cmp, err := compareValues(got, c.Value)
		if err != nil {
			return false, fmt.Errorf("condition on %s: %s: %w", c.Field, c.Operator, err)
		}
		if c.Operator == OpGreaterThan {
			return cmp > 0, nil
		}
		return cmp < 0, nil
	case OpMatches:
		pattern, ok := c.Value.(string)
		if !ok {
			return false, fmt.Errorf("condition on %s: matches needs a regular expression (string), got %s", c.Field, typeName(c.Value))
		}
		re, err := compileRegexp(pattern)
		if err != nil {
			return false, fmt.Errorf("condition on %s: %w", c.Field, err)
		}
		switch got.(type) {
		case map[string]any, []any:
			return false, fmt.Errorf("condition on %s: matches needs a string, got %s", c.Field, typeName(got))
		}
		return re.MatchString(stringify(got)), nil
	}
	return false, fmt.Errorf("unknown condition operator %q; use %s", c.Operator, orList(operators))
}

// Match reports whether the event payload satisfies every condition of r.
// A rule without conditions matches every event.
func (r *Rule) Match(payload map[string]any) (bool, error) {
	for _, c := range r.Conditions {
		ok, err := c.Match(payload)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// conditionPath strips the payload prefix from a condition field.
func conditionPath(field string) ([]string, error) {
	for _, prefix := range fieldPrefixes {
		if field == prefix {
			return nil, nil
		}
		rest, ok := strings.CutPrefix(field, prefix+".")
		if !ok {
			continue
		}
		path := strings.Split(rest, ".")
		for _, seg := range path {
			if !pathSegment.MatchString(seg) {
				return nil, fmt.Errorf("condition field %q is not a dotted path such as event.payload.status", field)
			}
		}
		return path, nil
	}
	return nil, fmt.Errorf(`condition field %q must start with "event.payload.", "payload." or "trigger." (e.g. event.payload.status)`, field)
}

var regexpCache sync.Map // pattern → *regexp.Regexp

func compileRegexp(pattern string) (*regexp.Regexp, error) {
	if re, ok := regexpCache.Load(pattern); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", pattern, err)
	}
	regexpCache.Store(pattern, re)
	return re, nil
}

// valuesEqual compares decoded JSON values, numbers by value whatever their
// Go type.
func valuesEqual(a, b any) bool {
	if fa, ok := toFloat(a); ok {
		fb, ok := toFloat(b)
		return ok && fa == fb
	}
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !valuesEqual(av, bv) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !valuesEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	case nil, string, bool:
		return a == b
	}
	return reflect.DeepEqual(a, b)
}

// compareValues orders two numbers or two strings.
func compareValues(a, b any) (int, error) {
	if fa, ok := toFloat(a); ok {
		if fb, ok := toFloat(b); ok {
			switch {
			case fa < fb:
				return -1, nil
			case fa > fb:
				return 1, nil
			}
			return 0, nil
		}
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return strings.Compare(sa, sb), nil
		}
	}
	return 0, fmt.Errorf("cannot order %s against %s; compare two numbers or two strings", typeName(a), typeName(b))
}

// checkCondition checks what can be checked before any event arrives. It
// names the part at fault: "field", "operator" or "value".
func checkCondition(c Condition) (part string, err error) {
	if _, err := conditionPath(c.Field); err != nil {
		return "field", err
	}
	switch c.Operator {
	case OpEquals, OpNotEquals, OpContains:
	case OpGreaterThan, OpLessThan:
		if _, isNum := toFloat(c.Value); !isNum {
			if _, isStr := c.Value.(string); !isStr {
				return "value", fmt.Errorf("%s needs a number or a string to compare with, got %s", c.Operator, typeName(c.Value))
			}
		}
	case OpMatches:
		pattern, ok := c.Value.(string)
		if !ok {
			return "value", fmt.Errorf("matches needs a regular expression (string), got %s", typeName(c.Value))
		}
		if _, err := compileRegexp(pattern); err != nil {
			return "value", fmt.Errorf("matches: %w", err)
		}
	default:
		return "operator", fmt.Errorf("unknown operator %q; use %s", c.Operator, orList(operators))
	}
	return "", nil
}

// conditions reads a rule's conditions: a list of {field, operator, value}.
func (fc *fileCtx) conditions(n *yaml.Node) []Condition {
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		fc.errorf(n, "conditions must be a list of {field, operator, value}, got %s", nodeKind(n))
		return nil
	}
	out := []Condition{}
	for _, item := range n.Content {
		f := fc.fields(item, "a condition")
		if f == nil {
			continue
		}
		var c Condition
		var nodes = map[string]*yaml.Node{"": resolve(item)}
		c.Field, nodes["field"] = f.str("field")
		c.Operator, nodes["operator"] = f.str("operator")
		if vn := f.take("value"); vn != nil {
			nodes["value"] = vn
			c.Value, _ = fc.decode(vn, "condition value")
		}
		switch {
		case c.Field == "":
			fc.errorf(item, "condition: missing field, such as event.payload.status")
			continue
		case c.Operator == "":
			fc.errorf(item, "condition: missing operator; use %s", orList(operators))
			continue
		}
		if part, err := checkCondition(c); err != nil {
			at := nodes[part]
			if at == nil {
				at = nodes[""]
			}
			fc.errorf(at, "condition on %s: %s", c.Field, err)
		}
		for _, k := range f.order {
			if !f.used[k] {
				fc.warnf(f.keys[k], "condition: unknown key %q ignored", k)
			}
		}
		out = append(out, c)
	}
	return out
}

// criteria converts StackStorm's criteria ({field: {type, pattern}}) to
// conditions.
func (fc *fileCtx) criteria(n *yaml.Node) []Condition {
	if isNull(n) {
		return nil
	}
	f := fc.fields(n, "criteria")
	if f == nil {
		return nil
	}
	out := []Condition{}
	for _, field := range f.order {
		cf := fc.fields(f.vals[field], fmt.Sprintf("criteria %q", field))
		if cf == nil {
			continue
		}
		typ, typNode := cf.str("type")
		op, ok := criteriaOps[typ]
		if !ok {
			fc.errorf(typNode, "criteria %q: type %q has no attune equivalent; write conditions with one of %s", field, typ, orList(operators))
			continue
		}
		c := Condition{Field: field, Operator: op}
		vn := cf.take("pattern")
		if vn != nil {
			c.Value, _ = fc.decode(vn, "criteria pattern")
		}
		if part, err := checkCondition(c); err != nil {
			at := f.keys[field]
			if part == "value" && vn != nil {
				at = vn
			}
			fc.errorf(at, "criteria %q: %s", field, err)
		}
		out = append(out, c)
	}
	return out
}
