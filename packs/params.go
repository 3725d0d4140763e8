package packs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"
)

// paramTypes are the types a parameter may declare, in the order error
// messages list them.
var paramTypes = []string{"string", "integer", "number", "boolean", "object", "array"}

// EnvName turns a parameter name into its ATTUNE_ACTION_ suffix: uppercased,
// any character outside [A-Z0-9_] becomes '_'.
func EnvName(param string) string {
	var b strings.Builder
	for _, r := range param {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// envNameProblem says why a parameter name cannot become an environment
// variable name, or returns "".
func envNameProblem(param string) string {
	switch {
	case param == "":
		return "a parameter name cannot be empty"
	case param[0] >= '0' && param[0] <= '9':
		return fmt.Sprintf("parameter name %q starts with a digit, so ATTUNE_ACTION_%s is not a usable variable name; start it with a letter or '_'", param, EnvName(param))
	}
	return ""
}

// Schema turns p into a JSON Schema object: type object, one property per
// parameter, required, and additionalProperties false. secret is kept as an
// annotation on its property.
func (p Params) Schema() map[string]any {
	props := make(map[string]any, len(p))
	var required []string
	for _, name := range slices.Sorted(maps.Keys(p)) {
		prm := p[name]
		s := map[string]any{"type": prm.Type}
		if prm.Description != "" {
			s["description"] = prm.Description
		}
		if prm.Default != nil {
			s["default"] = prm.Default
		}
		if len(prm.Enum) > 0 {
			s["enum"] = slices.Clone(prm.Enum)
		}
		if prm.Minimum != nil {
			s["minimum"] = *prm.Minimum
		}
		if prm.Maximum != nil {
			s["maximum"] = *prm.Maximum
		}
		if prm.Secret {
			s["secret"] = true
		}
		props[name] = s
		if prm.Required {
			required = append(required, name)
		}
	}
	schema := map[string]any{
		"type":                 "object",
		"properties":           props,
		"additionalProperties": false,
	}
	if len(required) > 0 {
		schema["required"] = required
	}
	return schema
}

// Validator checks parameter objects against one [Params], compiled once.
// It is safe for concurrent use.
type Validator struct {
	params Params
	names  []string // sorted
	schema *jsonschema.Schema
}

// Compile compiles p's schema for repeated validation.
func (p Params) Compile() (*Validator, error) {
	sch, err := cachedSchema(p.Schema())
	if err != nil {
		return nil, err
	}
	return &Validator{params: maps.Clone(p), names: slices.Sorted(maps.Keys(p)), schema: sch}, nil
}

// Validate checks params against p and returns them with defaults applied.
// The compiled schema is cached, so calling it per execution is cheap. The
// error is a *ParamsError naming each parameter and what is wrong.
func (p Params) Validate(params map[string]any) (map[string]any, error) {
	v, err := p.Compile()
	if err != nil {
		return nil, err
	}
	return v.Validate(params)
}

// Validate checks params and returns a new map with defaults applied; params
// is not modified. The error is a *ParamsError.
func (v *Validator) Validate(params map[string]any) (map[string]any, error) {
	var problems []string
	out := make(map[string]any, len(v.names))
	for _, name := range slices.Sorted(maps.Keys(params)) {
		if _, ok := v.params[name]; !ok {
			problems = append(problems, fmt.Sprintf("unknown parameter %q; %s", name, v.declared()))
			continue
		}
		out[name] = params[name]
	}
	for _, name := range v.names {
		if _, ok := out[name]; ok {
			continue
		}
		prm := v.params[name]
		switch {
		case prm.Default != nil:
			out[name] = deepCopy(prm.Default)
		case prm.Required:
			problems = append(problems, fmt.Sprintf("missing required parameter %q", name))
		}
	}

	// Validate a JSON-shaped copy: callers pass Go values (int, []string)
	// the schema library does not take.
	doc := make(map[string]any, len(out))
	for _, name := range slices.Sorted(maps.Keys(out)) {
		jv, err := toJSONValue(out[name])
		if err != nil {
			problems = append(problems, fmt.Sprintf("parameter %q: %s", name, err))
			continue
		}
		doc[name] = jv
	}
	if err := v.schema.Validate(doc); err != nil {
		problems = append(problems, describeSchemaError(err, "parameter")...)
	}
	if len(problems) > 0 {
		return nil, &ParamsError{Problems: problems}
	}
	return out, nil
}

func (v *Validator) declared() string {
	if len(v.names) == 0 {
		return "the action declares no parameters"
	}
	return "the action declares: " + strings.Join(v.names, ", ")
}

// ParamsError reports parameters that do not match their declaration, one
// problem per parameter. errors.Is(err, ErrInvalidParams) holds for it.
type ParamsError struct {
	Problems []string
}

// Error joins the problems with "; " so the message stays one line.
func (e *ParamsError) Error() string { return strings.Join(e.Problems, "; ") }

// Is reports whether target is [ErrInvalidParams].
func (e *ParamsError) Is(target error) bool { return target == ErrInvalidParams }

// ValidateAgainst checks value against a JSON Schema, such as an action's
// ResultSchema or a trigger's Parameters. The error names each failing field
// by its dotted path ("field \"greeting\": expected string, got number"). The
// compiled schema is cached.
func ValidateAgainst(schema map[string]any, value any) error {
	sch, err := cachedSchema(schema)
	if err != nil {
		return err
	}
	doc, err := toJSONValue(value)
	if err != nil {
		return err
	}
	if err := sch.Validate(doc); err != nil {
		return errors.New(strings.Join(describeSchemaError(err, "field"), "; "))
	}
	return nil
}

// schemaCache holds compiled schemas keyed by their JSON text. It is dropped
// whole when it grows large: actions are few, so that only happens when a
// caller validates against ever-new schemas.
var schemaCache struct {
	sync.Mutex
	m map[string]*jsonschema.Schema
}

const schemaCacheMax = 1024

func cachedSchema(schema map[string]any) (*jsonschema.Schema, error) {
	text, err := json.Marshal(schema)
	if err != nil {
		return nil, fmt.Errorf("error encoding schema: %w", err)
	}
	key := string(text)
	schemaCache.Lock()
	sch, ok := schemaCache.m[key]
	schemaCache.Unlock()
	if ok {
		return sch, nil
	}
	if sch, err = compileSchemaJSON(text); err != nil {
		return nil, err
	}
	schemaCache.Lock()
	if schemaCache.m == nil || len(schemaCache.m) >= schemaCacheMax {
		schemaCache.m = make(map[string]*jsonschema.Schema)
	}
	schemaCache.m[key] = sch
	schemaCache.Unlock()
	return sch, nil
}

func compileSchemaJSON(text []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("error decoding schema: %w", err)
	}
	const url = "mem:///schema.json"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("error adding schema: %w", err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON Schema: %w", err)
	}
	return sch, nil
}

// toJSONValue converts a Go value to the shapes encoding/json decodes to
// (numbers as json.Number), which is what the schema library validates.
func toJSONValue(v any) (any, error) {
	text, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("not representable as JSON: %w", err)
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(text))
}

// describeSchemaError turns a schema validation error into one message per
// failing leaf, naming the instance path with noun ("parameter", "field").
func describeSchemaError(err error, noun string) []string {
	verr, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []string{err.Error()}
	}
	var leaves []*jsonschema.ValidationError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			leaves = append(leaves, e)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(verr)

	var msgs []string
	for _, leaf := range leaves {
		at := ""
		if len(leaf.InstanceLocation) > 0 {
			at = fmt.Sprintf("%s %q: ", noun, strings.Join(leaf.InstanceLocation, "."))
		}
		var msg string
		switch k := leaf.ErrorKind.(type) {
		case *kind.Type:
			msg = fmt.Sprintf("expected %s, got %s", strings.Join(k.Want, " or "), k.Got)
		case *kind.Enum:
			msg = fmt.Sprintf("must be one of %s, got %s", displayList(k.Want), display(k.Got))
		case *kind.Minimum:
			msg = fmt.Sprintf("must be at least %s, got %s", ratString(k.Want.Float64()), ratString(k.Got.Float64()))
		case *kind.Maximum:
			msg = fmt.Sprintf("must be at most %s, got %s", ratString(k.Want.Float64()), ratString(k.Got.Float64()))
		case *kind.Required:
			if noun == "parameter" {
				continue // reported before validation, with defaults in mind
			}
			for _, m := range k.Missing {
				msgs = append(msgs, fmt.Sprintf("%smissing required %s %q", at, noun, joinPath(leaf.InstanceLocation, m)))
			}
			continue
		case *kind.AdditionalProperties:
			if noun == "parameter" {
				continue // reported before validation, with the declared list
			}
			for _, p := range k.Properties {
				msgs = append(msgs, fmt.Sprintf("%sunknown %s %q", at, noun, joinPath(leaf.InstanceLocation, p)))
			}
			continue
		default:
			// The library's own wording, without its "at '/x': " prefix.
			text := (&jsonschema.ValidationError{ErrorKind: leaf.ErrorKind}).Error()
			_, msg, _ = strings.Cut(text, ": ")
		}
		msgs = append(msgs, at+msg)
	}
	slices.Sort(msgs)
	return slices.Compact(msgs)
}

func joinPath(loc []string, name string) string {
	return strings.Join(append(slices.Clone(loc), name), ".")
}

func ratString(f float64, _ bool) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func display(v any) string {
	text, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(text)
}

func displayList(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = display(v)
	}
	return strings.Join(parts, ", ")
}

// hasType reports whether v, as decoded from YAML or JSON, is of the
// parameter type typ.
func hasType(typ string, v any) bool {
	switch typ {
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "number":
		_, ok := toFloat(v)
		return ok
	case "integer":
		switch n := v.(type) {
		case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
			return true
		case json.Number:
			_, err := n.Int64()
			return err == nil
		}
		f, ok := toFloat(v)
		return ok && f == float64(int64(f))
	}
	return false
}

// typeName names the JSON type of a decoded value for messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	if hasType("integer", v) {
		return "integer"
	}
	if _, ok := toFloat(v); ok {
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// toFloat converts any numeric value to float64.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int8:
		return float64(n), true
	case int16:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint8:
		return float64(n), true
	case uint16:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float32:
		return float64(n), true
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// deepCopy copies the maps and slices of a decoded value so a default handed
// out to one execution cannot be changed through another.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// paramKeys are the keys a parameter declaration may hold.
var paramKeys = map[string]bool{
	"type": true, "description": true, "required": true, "default": true,
	"enum": true, "minimum": true, "maximum": true, "secret": true,
}

// params reads parameter declarations: a StackStorm-style map, or a JSON
// Schema of the parameter object (see schemaParams). envChecks adds the
// checks that matter when values reach the child as ATTUNE_ACTION_*
// variables.
func (fc *fileCtx) params(n *yaml.Node, envChecks bool) Params {
	if n == nil || isNull(n) {
		return Params{}
	}
	if n = resolve(n); jsonSchemaShaped(n) {
		return fc.schemaParams(n, envChecks)
	}
	return fc.paramMap(n, envChecks)
}

// paramMap reads the map of parameter name → declaration.
func (fc *fileCtx) paramMap(n *yaml.Node, envChecks bool) Params {
	out := Params{}
	if n == nil || isNull(n) {
		return out
	}
	f := fc.fields(n, "parameters")
	if f == nil {
		return out
	}
	envNames := map[string]string{} // env name → parameter
	for _, name := range f.order {
		keyNode, valNode := f.keys[name], f.vals[name]
		if envChecks {
			if msg := envNameProblem(name); msg != "" {
				fc.errorf(keyNode, "%s", msg)
			} else if other, dup := envNames[EnvName(name)]; dup {
				fc.errorf(keyNode, "parameters %q and %q both become ATTUNE_ACTION_%s; rename one", other, name, EnvName(name))
			} else {
				envNames[EnvName(name)] = name
			}
		}
		if prm, ok := fc.param(name, keyNode, valNode); ok {
			out[name] = prm
		}
	}
	return out
}

// param reads one parameter declaration.
func (fc *fileCtx) param(name string, keyNode, n *yaml.Node) (Param, bool) {
	var prm Param
	what := fmt.Sprintf("parameter %q", name)
	f := fc.fields(n, what)
	if f == nil {
		return prm, false
	}
	failed := fc.failed
	fc.failed = false
	defer func() { fc.failed = fc.failed || failed }()

	typ, typNode := f.str("type")
	switch {
	case typ == "":
		fc.errorf(keyNode, "%s: missing type; use %s", what, orList(paramTypes))
	case !slices.Contains(paramTypes, typ):
		fc.errorf(typNode, "%s: unknown type %q; use %s", what, typ, orList(paramTypes))
	}
	prm.Type = typ
	typeOK := slices.Contains(paramTypes, typ)
	prm.Description, _ = f.str("description")
	prm.Required = f.boolean("required", false)
	prm.Secret = f.boolean("secret", false)

	if en := f.take("enum"); en != nil && !isNull(en) {
		if en.Kind != yaml.SequenceNode || len(en.Content) == 0 {
			fc.errorf(en, "%s: enum must be a non-empty list of allowed values", what)
		} else {
			for _, item := range en.Content {
				v, ok := fc.decode(item, what+" enum")
				if !ok {
					continue
				}
				if typeOK && !hasType(typ, v) {
					fc.errorf(item, "%s: enum value %s is %s, not %s", what, display(v), typeName(v), typ)
				}
				prm.Enum = append(prm.Enum, v)
			}
		}
	}
	prm.Minimum = f.number("minimum", what)
	prm.Maximum = f.number("maximum", what)
	if (prm.Minimum != nil || prm.Maximum != nil) && typeOK && typ != "integer" && typ != "number" {
		at := f.keys["minimum"]
		if at == nil {
			at = f.keys["maximum"]
		}
		fc.warnf(at, "%s: minimum and maximum apply only to integer and number parameters; ignored for %s", what, typ)
	}
	if prm.Minimum != nil && prm.Maximum != nil && *prm.Minimum > *prm.Maximum {
		fc.errorf(f.vals["maximum"], "%s: minimum %s is greater than maximum %s", what, ratString(*prm.Minimum, true), ratString(*prm.Maximum, true))
	}

	if dn := f.take("default"); dn != nil && !isNull(dn) {
		if v, ok := fc.decode(dn, what+" default"); ok {
			prm.Default = v
			if typeOK {
				if msg := checkValue(prm, v); msg != "" {
					fc.errorf(dn, "%s: default %s", what, msg)
				}
			}
		}
	}
	for _, k := range f.order {
		if !paramKeys[k] {
			fc.warnf(f.keys[k], "%s", unknownKey(what+": ", k, sortedKeys(paramKeys), ignoredKey))
		}
	}
	return prm, !fc.failed
}

// checkValue checks v against the type, enum and bounds of prm, saying what
// is wrong or "".
func checkValue(prm Param, v any) string {
	if !hasType(prm.Type, v) {
		return fmt.Sprintf("%s is %s, not %s", display(v), typeName(v), prm.Type)
	}
	if len(prm.Enum) > 0 && !slices.ContainsFunc(prm.Enum, func(e any) bool { return valuesEqual(e, v) }) {
		return fmt.Sprintf("%s is not one of the enum values %s", display(v), displayList(prm.Enum))
	}
	if f, ok := toFloat(v); ok {
		if prm.Minimum != nil && f < *prm.Minimum {
			return fmt.Sprintf("%s is below the minimum %s", display(v), ratString(*prm.Minimum, true))
		}
		if prm.Maximum != nil && f > *prm.Maximum {
			return fmt.Sprintf("%s is above the maximum %s", display(v), ratString(*prm.Maximum, true))
		}
	}
	return ""
}

// number reads an optional number.
func (f *fields) number(key, what string) *float64 {
	v := f.take(key)
	if v == nil || isNull(v) {
		return nil
	}
	var x float64
	if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!int" && v.ShortTag() != "!!float") || v.Decode(&x) != nil {
		f.fc.errorf(v, "%s: %s must be a number, got %s", what, key, nodeText(v))
		return nil
	}
	return &x
}

func sortedKeys[M ~map[string]V, V any](m M) []string { return slices.Sorted(maps.Keys(m)) }

func sortedNames(p Params) []string { return sortedKeys(p) }

func cloneMap(m map[string]any) map[string]any { return maps.Clone(m) }

// jsonSchemaShaped tells Attune's parameters, a JSON Schema of the parameter
// object, from a StackStorm-style map, where a parameter named type or
// properties would be a declaration with a type of its own.
func jsonSchemaShaped(n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		v := resolve(n.Content[i+1])
		switch n.Content[i].Value {
		case "type":
			if v.Kind != yaml.MappingNode {
				return true
			}
		case "$schema", "$ref", "allOf", "anyOf", "oneOf":
			return true
		case "properties":
			if v.Kind == yaml.MappingNode && !hasKey(v, "type") {
				return true
			}
		}
	}
	return false
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// schemaKeywords are JSON Schema keywords of the parameter object that a
// parameter map cannot say.
var schemaKeywords = []string{"$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
	"patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "minProperties", "maxProperties"}

// paramsShape is how parameters may be written, for errors.
const paramsShape = "write {type: object, properties: {NAME: {type: ..., ...}}, required: [NAME, ...]}, or the map {NAME: {type: ..., required: true}}"

// schemaParams reads parameters written as a JSON Schema of the parameter
// object (Attune's form): each property is read as a StackStorm-style
// declaration and the required list becomes required: true on each. What
// a parameter map cannot say is refused.
func (fc *fileCtx) schemaParams(n *yaml.Node, envChecks bool) Params {
	f := fc.fields(n, "parameters")
	if f == nil {
		return Params{}
	}
	refuse := func(at *yaml.Node, format string, args ...any) Params {
		fc.errorf(at, "parameters: %s, which attune's parameters cannot hold; %s", fmt.Sprintf(format, args...), paramsShape)
		return Params{}
	}
	if typ, typNode := f.str("type"); typNode != nil && typ != "object" {
		return refuse(typNode, "the schema is of type %s, not object", nodeText(typNode))
	}
	for _, k := range schemaKeywords {
		if _, key := f.takeKey(k); key != nil {
			return refuse(key, "the schema uses %s", k)
		}
	}
	f.take("$schema")
	f.take("title")
	f.take("description")
	if ap := f.take("additionalProperties"); ap != nil && !isNull(ap) {
		var allowed bool
		if ap.Kind != yaml.ScalarNode || ap.Decode(&allowed) != nil {
			return refuse(ap, "additionalProperties is a schema")
		}
		if allowed {
			fc.warnf(ap, "parameters: additionalProperties: true is ignored; attune refuses parameters the action does not declare")
		}
	}
	props := f.take("properties")
	if props != nil && !isNull(props) && props.Kind != yaml.MappingNode {
		return refuse(props, "properties is %s, not a mapping", nodeKind(props))
	}
	required, reqNode := f.stringList("required")
	f.warnUnknown()
	out := fc.paramMap(props, envChecks)
	for i, name := range required {
		prm, ok := out[name]
		if !ok {
			if props == nil || !hasKey(props, name) {
				fc.errorf(reqNode.Content[i], "parameters: required names %q, which properties does not declare", name)
			}
			continue // declared but failed: reported already
		}
		prm.Required = true
		out[name] = prm
	}
	return out
}
