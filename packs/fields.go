package packs

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fileCtx is one YAML file being loaded.
type fileCtx struct {
	l      *loader
	file   string // as displayed
	failed bool   // an error was reported: the item is not loaded
}

func (fc *fileCtx) errorf(n *yaml.Node, format string, args ...any) {
	fc.failed = true
	fc.l.problems = append(fc.l.problems, Problem{File: fc.file, Line: line(n), Msg: fmt.Sprintf(format, args...)})
}

func (fc *fileCtx) warnf(n *yaml.Node, format string, args ...any) {
	fc.l.problems = append(fc.l.problems, Problem{File: fc.file, Line: line(n), Msg: fmt.Sprintf(format, args...), Warning: true})
}

var yamlLineError = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// open reads and parses file, reporting what stops it.
func (l *loader) open(file string) (*fileCtx, *fields) {
	fc := &fileCtx{l: l, file: file}
	data, err := readBounded(file)
	var tooBig *fileTooBigError
	switch {
	case errors.As(err, &tooBig):
		fc.errorf(nil, "%s", tooBig)
		return fc, nil
	case err != nil:
		fc.errorf(nil, "cannot read: %s", pathErr(err))
		return fc, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		n, msg := yamlErrorLine(err)
		if n != nil && strings.HasPrefix(msg, "did not find expected") {
			// yaml v3 reports parser (not scanner) errors with the 0-based
			// line of the construct being parsed; make it 1-based, within
			// the file.
			n.Line = min(n.Line+1, strings.Count(strings.TrimRight(string(data), "\n"), "\n")+1)
		}
		fc.errorf(n, "YAML syntax error: %s", msg)
		return fc, nil
	}
	if n, msg := checkLimits(&doc); n != nil {
		fc.errorf(n, "%s", msg)
		return fc, nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		fc.errorf(nil, "the file is empty")
		return fc, nil
	}
	return fc, fc.fields(doc.Content[0], "the file")
}

// yamlErrorLine splits "yaml: line N: msg" into a node carrying the line and
// the message.
func yamlErrorLine(err error) (*yaml.Node, string) {
	text := err.Error()
	if m := yamlLineError.FindStringSubmatch(strings.TrimPrefix(text, "yaml: ")); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &yaml.Node{Line: n}, m[2]
	}
	return nil, strings.TrimPrefix(text, "yaml: ")
}

// fields reads the keys of one YAML mapping, remembering which were used so
// the rest can go to Extra.
type fields struct {
	fc    *fileCtx
	what  string
	keys  map[string]*yaml.Node
	vals  map[string]*yaml.Node
	order []string
	used  map[string]bool
	// allowed are keys known but not read; see allow.
	allowed map[string]bool
}

// fields wraps the mapping n. It reports and returns nil when n is not a
// mapping or repeats a key. Merge keys (<<) are honoured.
func (fc *fileCtx) fields(n *yaml.Node, what string) *fields {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		fc.errorf(n, "%s must be a mapping of keys to values, got %s", what, nodeKind(n))
		return nil
	}
	f := &fields{fc: fc, what: what, keys: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}, used: map[string]bool{}}
	var merges []*yaml.Node
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, resolve(v))
			continue
		}
		if k.Kind != yaml.ScalarNode {
			fc.errorf(k, "%s: keys must be plain strings", what)
			ok = false
			continue
		}
		if first, dup := f.keys[k.Value]; dup {
			fc.errorf(k, "%s: key %q repeated (first at line %d)", what, k.Value, first.Line)
			ok = false
			continue
		}
		f.keys[k.Value], f.vals[k.Value] = k, resolve(v)
		f.order = append(f.order, k.Value)
	}
	// Explicit keys win over merged ones, whatever their order.
	for _, m := range merges {
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, src := range srcs {
			src = resolve(src)
			if src.Kind != yaml.MappingNode {
				fc.errorf(src, "%s: << must merge a mapping", what)
				ok = false
				continue
			}
			for i := 0; i+1 < len(src.Content); i += 2 {
				k := src.Content[i]
				if _, have := f.keys[k.Value]; !have && k.Kind == yaml.ScalarNode {
					f.keys[k.Value], f.vals[k.Value] = k, resolve(src.Content[i+1])
					f.order = append(f.order, k.Value)
				}
			}
		}
	}
	if !ok {
		return nil
	}
	return f
}

// take returns the value of key, or nil, and marks it used.
func (f *fields) take(key string) *yaml.Node {
	v, _ := f.takeKey(key)
	return v
}

func (f *fields) takeKey(key string) (val, keyNode *yaml.Node) {
	f.used[key] = true
	return f.vals[key], f.keys[key]
}

// str reads a scalar as written ("1.0" stays "1.0"). Null is "".
func (f *fields) str(key string) (string, *yaml.Node) {
	v := f.take(key)
	if v == nil || isNull(v) {
		return "", v
	}
	if v.Kind != yaml.ScalarNode {
		f.fc.errorf(v, "%s must be a string, got %s", key, nodeKind(v))
		return "", v
	}
	return v.Value, v
}

func (f *fields) boolean(key string, def bool) bool {
	v := f.take(key)
	if v == nil || isNull(v) {
		return def
	}
	var b bool
	if v.Kind != yaml.ScalarNode || v.Decode(&b) != nil {
		f.fc.errorf(v, "%s must be true or false, got %s", key, nodeText(v))
		return def
	}
	return b
}

// integer reads an integer; the node is nil when the key is absent.
func (f *fields) integer(key string) (int, *yaml.Node) {
	v := f.take(key)
	if v == nil || isNull(v) {
		return 0, nil
	}
	var i int
	// Check the tag: yaml v3 would truncate 1.5 into an int.
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&i) != nil {
		f.fc.errorf(v, "%s must be a whole number, got %s", key, nodeText(v))
		return 0, v
	}
	return i, v
}

// oneOf reads a string that must be one of allowed, def when absent.
func (f *fields) oneOf(key, def string, allowed ...string) string {
	s, n := f.str(key)
	if s == "" {
		return def
	}
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	f.fc.errorf(n, "unknown %s %q; use %s", key, s, orList(allowed))
	return def
}

// stringList reads a list of strings.
func (f *fields) stringList(key string) ([]string, *yaml.Node) {
	v := f.take(key)
	if v == nil || isNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		f.fc.errorf(v, "%s must be a list of strings, got %s", key, nodeKind(v))
		return nil, nil
	}
	out := make([]string, 0, len(v.Content))
	for i, item := range v.Content {
		item = resolve(item)
		v.Content[i] = item
		if item.Kind != yaml.ScalarNode || isNull(item) {
			f.fc.errorf(item, "%s must be a list of strings, got %s", key, nodeKind(item))
			return nil, nil
		}
		out = append(out, item.Value)
	}
	return out, v
}

// object reads a mapping as decoded JSON-like values; nil when absent.
func (f *fields) object(key string) (map[string]any, *yaml.Node) {
	v := f.take(key)
	return f.decodeObjectNode(v, key)
}

func (f *fields) decodeObjectNode(v *yaml.Node, key string) (map[string]any, *yaml.Node) {
	if v == nil || isNull(v) {
		return nil, v
	}
	m, _ := f.fc.decodeObject(v, key)
	return m, v
}

// extra decodes the keys nobody took, in file order, and warns about the
// unknown ones.
func (f *fields) extra() map[string]any {
	f.warnUnknown()
	var out map[string]any
	for _, k := range f.order {
		if f.used[k] {
			continue
		}
		v, ok := f.fc.decode(f.vals[k], k)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]any)
		}
		out[k] = v
	}
	return out
}

// decode turns a node into JSON-like values: map[string]any, []any, string,
// bool, int, float64, nil. Timestamps become RFC 3339 strings.
func (fc *fileCtx) decode(n *yaml.Node, what string) (any, bool) {
	v, err := decodeValue(n)
	if err != nil {
		var ne *nodeError
		if errors.As(err, &ne) {
			fc.errorf(ne.node, "%s: %s", what, ne.msg)
			return nil, false
		}
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			at, msg := yamlErrorLine(errors.New(te.Errors[0]))
			if at == nil {
				at = n
			}
			fc.errorf(at, "%s: %s", what, msg)
			return nil, false
		}
		fc.errorf(n, "%s: %s", what, err)
		return nil, false
	}
	v, err = jsonLike(v)
	if err != nil {
		fc.errorf(n, "%s: %s", what, err)
		return nil, false
	}
	return v, true
}

// decodeValue decodes n as the YAML library does into an any, merge keys
// honoured, in time linear in the values it holds: the library compares
// every pair of keys of a mapping to find repeated ones. Scalars are left to
// the library, one by one.
func decodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return decodeValue(n.Content[0])
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, &nodeError{n, "unknown alias " + n.Value}
		}
		return decodeValue(n.Alias) // checkLimits bounds the expansion
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := decodeValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		keyLines := make(map[string]int, len(n.Content)/2)
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolve(n.Content[i])
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				merges = append(merges, resolve(n.Content[i+1]))
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, &nodeError{n.Content[i], "keys must be plain strings"}
			}
			if first, dup := keyLines[k.Value]; dup {
				return nil, &nodeError{n.Content[i], fmt.Sprintf("key %q repeated (first at line %d)", k.Value, first)}
			}
			keyLines[k.Value] = n.Content[i].Line
			v, err := decodeValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		// Explicit keys win over merged ones, and earlier merged mappings
		// over later ones.
		for _, m := range merges {
			srcs := []*yaml.Node{m}
			if m.Kind == yaml.SequenceNode {
				srcs = m.Content
			}
			for _, src := range srcs {
				if resolve(src).Kind != yaml.MappingNode {
					return nil, &nodeError{src, "<< must merge a mapping"}
				}
				v, err := decodeValue(src)
				if err != nil {
					return nil, err
				}
				for k, e := range v.(map[string]any) {
					if _, have := out[k]; !have {
						out[k] = e
					}
				}
			}
		}
		return out, nil
	}
	var v any
	err := n.Decode(&v)
	return v, err
}

// nodeError is a decoding error at node.
type nodeError struct {
	node *yaml.Node
	msg  string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.node.Line, e.msg) }

func (fc *fileCtx) decodeObject(n *yaml.Node, what string) (map[string]any, bool) {
	if n.Kind != yaml.MappingNode {
		fc.errorf(n, "%s must be a mapping, got %s", what, nodeKind(n))
		return nil, false
	}
	v, ok := fc.decode(n, what)
	if !ok {
		return nil, false
	}
	m, _ := v.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return m, true
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func line(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	return n.Line
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

func nodeText(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return nodeKind(n)
}

// orList renders "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
