package packs

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var (
	// packRefPattern is what a pack ref may look like: lowercase, no dots.
	packRefPattern = regexp.MustCompile(`^[a-z0-9_-]+$`)
	// namePattern is what the name of an action, sensor, trigger or rule may
	// look like; the dot is the separator of {pack}.{name}.
	namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// fullRefPattern is a {pack}.{name} ref.
	fullRefPattern = regexp.MustCompile(`^[a-z0-9_-]+\.[A-Za-z0-9_-]+$`)
)

// Bounds an action may set, those of attune.enqueue's options; past them
// the row could not even be stored.
const (
	maxTimeoutSeconds = 604800
	maxRetries        = 999
)

// LoadAll loads every subdirectory of base that holds a pack.yaml, in name
// order; other entries (testdata, Go source folders, files) are skipped. One
// bad pack does not stop the others; a pack whose ref another one already
// took is reported and left out.
func LoadAll(base string) ([]*Pack, []Problem) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, []Problem{{File: base, Msg: fmt.Sprintf("cannot read the packs directory: %s", pathErr(err))}}
	}
	var (
		packs    []*Pack
		problems []Problem
		seen     = make(map[string]string) // pack ref → its pack.yaml
	)
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "pack.yaml")); err != nil {
			continue
		}
		p, ps := Load(dir)
		problems = append(problems, ps...)
		if p == nil {
			continue
		}
		file := filepath.Join(dir, "pack.yaml")
		if first, dup := seen[p.Ref]; dup {
			problems = append(problems, Problem{File: file, Line: p.refLine,
				Msg: fmt.Sprintf("duplicate pack ref %q, already used by %s; only the first is loaded", p.Ref, first)})
			continue
		}
		seen[p.Ref] = file
		packs = append(packs, p)
	}
	return packs, problems
}

// Load reads one pack directory. It returns the pack, holding every item
// that loaded cleanly, and all problems, errors and warnings. A bad item file
// is skipped and the rest loads. When pack.yaml itself is missing or invalid
// the pack is nil; its items are still checked when its ref is usable, so
// every mistake is reported at once.
//
// Problem.File paths start with dir as given; the File and Dir fields of what
// loads are absolute.
func Load(dir string) (*Pack, []Problem) {
	l := &loader{dir: dir}
	p := l.load()
	return p, l.problems
}

// loader holds the state of loading one pack.
type loader struct {
	dir      string // as given, for problems
	absDir   string
	realDir  string // absDir with symlinks resolved, for confinement
	ref      string
	problems []Problem

	// refs defined by any file, loaded or not, by kind; a ref whose file
	// failed is in here too, so references to it raise no second error.
	defined map[string]map[string]string // kind → ref → display file
	pack    *Pack
}

func (l *loader) load() *Pack {
	abs, err := filepath.Abs(l.dir)
	if err != nil {
		l.problems = append(l.problems, Problem{File: l.dir, Msg: fmt.Sprintf("cannot resolve the pack directory: %s", err)})
		return nil
	}
	l.absDir = abs
	packFile := filepath.Join(l.dir, "pack.yaml")
	if _, err := os.Stat(packFile); errors.Is(err, fs.ErrNotExist) {
		l.problems = append(l.problems, Problem{File: packFile, Msg: "pack.yaml not found; every pack directory needs one with its ref, label, description and version"})
		return nil
	}
	if l.realDir, err = filepath.EvalSymlinks(abs); err != nil {
		l.problems = append(l.problems, Problem{File: l.dir, Msg: fmt.Sprintf("cannot resolve the pack directory: %s", pathErr(err))})
		return nil
	}

	fc, f := l.open(packFile)
	if f == nil {
		return nil
	}
	p := &Pack{Dir: abs, File: filepath.Join(abs, "pack.yaml")}
	ref, refNode := f.str("ref")
	if ref == "" {
		// StackStorm's pack.yaml may give only a name, which is then the ref.
		ref, refNode = f.str("name")
	}
	switch {
	case ref == "":
		fc.errorf(nil, "missing ref; give the pack a lowercase ref without dots, such as %q", suggestRef(filepath.Base(abs)))
	case !packRefPattern.MatchString(ref):
		fc.errorf(refNode, "pack ref %q must be lowercase letters, digits, '_' or '-' (no dots), such as %q", ref, suggestRef(ref))
		ref = ""
	}
	p.Ref, p.refLine = ref, line(refNode)
	p.Label, _ = f.str("label")
	p.Description, _ = f.str("description")
	p.Version, _ = f.str("version")
	f.take("name") // StackStorm's display name; the ref is what counts
	if ref != "" && ref != filepath.Base(abs) {
		fc.warnf(refNode, "pack ref %q differs from its directory name %q; workers look for entry points under {ATTUNE_PACKS_DIR}/%s/", ref, filepath.Base(abs), ref)
	}
	// Other pack.yaml keys (author, email, dependencies, ...) are metadata
	// attune does not use.
	if ref == "" {
		return nil
	}
	l.ref = ref
	l.pack = p
	l.defined = map[string]map[string]string{"action": {}, "sensor": {}, "trigger": {}, "rule": {}}

	// Triggers first, then actions and sensors, then rules: the later ones
	// are checked against what the pack itself defines.
	l.loadKind("triggers", l.loadTrigger)
	l.loadKind("actions", l.loadAction)
	l.loadKind("sensors", l.loadSensor)
	l.loadKind("rules", l.loadRule)
	if fc.failed {
		return nil
	}
	return p
}

// loadKind loads each YAML file of {pack}/{sub}/. Subdirectories and other
// files (entry points, sources) are not items.
func (l *loader) loadKind(sub string, load func(display, abs string)) {
	entries, err := os.ReadDir(filepath.Join(l.absDir, sub))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		l.problems = append(l.problems, Problem{File: filepath.Join(l.dir, sub), Msg: fmt.Sprintf("cannot read: %s", pathErr(err))})
		return
	}
	for _, e := range entries {
		name := e.Name()
		if ext := filepath.Ext(name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		abs := filepath.Join(l.absDir, sub, name)
		if fi, err := os.Stat(abs); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		load(filepath.Join(l.dir, sub, name), abs)
	}
}

// identity reads name and ref of an item and checks they agree: the ref is
// always {pack}.{name}, derived when absent. node is where the ref (or name)
// was written.
func (l *loader) identity(fc *fileCtx, f *fields, kind string) (name, ref string, node *yaml.Node) {
	name, nameNode := f.str("name")
	ref, refNode := f.str("ref")
	prefix := l.ref + "."
	switch {
	case name == "" && ref == "":
		fc.errorf(nil, "missing name; give the %s a name (its ref is %s{name})", kind, prefix)
		return "", "", nil
	case name == "" && strings.HasPrefix(ref, prefix):
		name, nameNode = strings.TrimPrefix(ref, prefix), refNode
	case name == "":
		fc.errorf(refNode, "ref %q must start with the pack ref, as in %q", ref, prefix+refName(ref))
		return "", "", nil
	}
	if !namePattern.MatchString(name) {
		fc.errorf(nameNode, "%s name %q may hold only letters, digits, '_' and '-'", kind, name)
		return "", "", nil
	}
	want := prefix + name
	if ref != "" && ref != want {
		fc.errorf(refNode, "ref %q must be %q ({pack}.{name})", ref, want)
		return "", "", nil
	}
	node = refNode
	if node == nil {
		node = nameNode
	}
	return name, want, node
}

// define records ref as defined by file and reports a duplicate. It returns
// false for a duplicate.
func (l *loader) define(fc *fileCtx, kind, ref string, node *yaml.Node) bool {
	if ref == "" {
		return true
	}
	if first, dup := l.defined[kind][ref]; dup {
		fc.errorf(node, "duplicate %s ref %q, already defined in %s", kind, ref, first)
		return false
	}
	l.defined[kind][ref] = fc.file
	return true
}

func (l *loader) loadAction(file, abs string) {
	fc, f := l.open(file)
	if f == nil {
		return
	}
	a := &Action{PackRef: l.ref, File: abs, ParameterDelivery: DeliveryEnv, ParameterFormat: FormatJSON, OutputFormat: FormatJSON}
	var refNode *yaml.Node
	a.Name, a.Ref, refNode = l.identity(fc, f, "action")
	l.define(fc, "action", a.Ref, refNode)
	a.Label, _ = f.str("label")
	a.Description, _ = f.str("description")
	a.Enabled = f.boolean("enabled", true)
	a.RunnerType, a.EntryPoint, a.Path = l.runnable(fc, f, "actions")
	a.Parameters = fc.params(f.take("parameters"), true)

	rs, rsNode := f.object("result_schema")
	out, outNode := f.object("output")
	switch {
	case rs != nil && out != nil:
		fc.warnf(outNode, "both result_schema and output given; output is ignored")
	case rs == nil:
		rs, rsNode = out, outNode
	}
	if rs != nil {
		a.ResultSchema = flatToSchema(rs, false)
		fc.checkSchema(rsNode, "result_schema", a.ResultSchema)
	}

	timeout, tNode := f.integer("timeout_seconds")
	if alias, aNode := f.integer("timeout"); aNode != nil {
		if tNode != nil {
			fc.warnf(aNode, "both timeout_seconds and timeout given; timeout is ignored")
		} else {
			timeout, tNode = alias, aNode
		}
	}
	switch {
	case timeout < 0:
		fc.errorf(tNode, "timeout_seconds must not be negative, got %d; leave it out to use the default", timeout)
	case timeout > maxTimeoutSeconds:
		// The bound of attune.enqueue's timeout_seconds option (7 days).
		fc.errorf(tNode, "timeout_seconds must be at most %d (7 days), got %d", maxTimeoutSeconds, timeout)
		timeout = 0
	}
	a.TimeoutSeconds = timeout
	a.ParameterDelivery = f.oneOf("parameter_delivery", DeliveryEnv, DeliveryEnv, DeliveryStdin, DeliveryFile)
	a.ParameterFormat = f.oneOf("parameter_format", FormatJSON, FormatJSON, FormatDotenv, FormatYAML)
	a.OutputFormat = f.oneOf("output_format", FormatJSON, FormatJSON, FormatText, FormatYAML, FormatJSONL)
	retries, rNode := f.integer("max_retries")
	switch {
	case retries < 0:
		fc.errorf(rNode, "max_retries must not be negative, got %d", retries)
	case retries > maxRetries:
		// attune.enqueue's max_attempts option goes up to 1000.
		fc.errorf(rNode, "max_retries must be at most %d, got %d", maxRetries, retries)
		retries = 0
	}
	a.MaxRetries = retries
	a.Tags, _ = f.stringList("tags")
	a.Extra = f.extra()
	if !fc.failed {
		l.pack.Actions = append(l.pack.Actions, a)
	}
}

func (l *loader) loadSensor(file, abs string) {
	fc, f := l.open(file)
	if f == nil {
		return
	}
	s := &Sensor{PackRef: l.ref, File: abs}
	var refNode *yaml.Node
	s.Name, s.Ref, refNode = l.identity(fc, f, "sensor")
	l.define(fc, "sensor", s.Ref, refNode)
	s.Description, _ = f.str("description")
	s.Enabled = f.boolean("enabled", true)
	s.RunnerType, s.EntryPoint, s.Path = l.runnable(fc, f, "sensors")
	types, typesNode := f.stringList("trigger_types")
	for i, t := range types {
		if !strings.Contains(t, ".") {
			t = l.ref + "." + t
		}
		n := typesNode.Content[i]
		switch {
		case !fullRefPattern.MatchString(t):
			fc.errorf(n, "trigger type %q is not a trigger ref such as core.intervaltimer", t)
		case strings.HasPrefix(t, l.ref+".") && l.defined["trigger"][t] == "":
			fc.errorf(n, "trigger type %q is not defined in this pack's triggers/", t)
		}
		s.TriggerTypes = append(s.TriggerTypes, t)
	}
	if len(types) == 0 {
		fc.warnf(refNode, "sensor has no trigger_types, so no rule can ever start it")
	}
	s.Parameters = fc.params(f.take("parameters"), true)
	s.Extra = f.extra()
	if !fc.failed {
		l.pack.Sensors = append(l.pack.Sensors, s)
	}
}

func (l *loader) loadTrigger(file, abs string) {
	fc, f := l.open(file)
	if f == nil {
		return
	}
	t := &Trigger{PackRef: l.ref, File: abs}
	var refNode *yaml.Node
	t.Name, t.Ref, refNode = l.identity(fc, f, "trigger")
	l.define(fc, "trigger", t.Ref, refNode)
	t.Description, _ = f.str("description")

	if node := f.take("parameters"); node != nil && !isNull(node) {
		m, ok := fc.decodeObject(node, "parameters")
		switch {
		case !ok:
		case isJSONSchema(m):
			t.Parameters = m
			fc.checkSchema(node, "parameters", m)
		default:
			// A StackStorm-style parameter map, checked like an action's.
			t.Parameters = fc.params(node, false).Schema()
		}
	}
	ps, psNode := f.object("payload_schema")
	out, outNode := f.object("output")
	switch {
	case ps != nil && out != nil:
		fc.warnf(outNode, "both payload_schema and output given; output is ignored")
	case ps == nil:
		ps, psNode = out, outNode
	}
	if ps != nil {
		t.PayloadSchema = flatToSchema(ps, false)
		fc.checkSchema(psNode, "payload_schema", t.PayloadSchema)
	}
	t.Extra = f.extra()
	if !fc.failed {
		l.pack.Triggers = append(l.pack.Triggers, t)
	}
}

func (l *loader) loadRule(file, abs string) {
	fc, f := l.open(file)
	if f == nil {
		return
	}
	r := &Rule{PackRef: l.ref, File: abs}
	var refNode *yaml.Node
	r.Name, r.Ref, refNode = l.identity(fc, f, "rule")
	l.define(fc, "rule", r.Ref, refNode)
	r.Description, _ = f.str("description")
	r.Enabled = f.boolean("enabled", true)

	var trigNode, actNode *yaml.Node
	r.TriggerRef, trigNode = f.str("trigger_ref")
	r.ActionRef, actNode = f.str("action_ref")
	l.checkRuleRef(fc, "trigger", r.TriggerRef, trigNode, "core.intervaltimer")
	l.checkRuleRef(fc, "action", r.ActionRef, actNode, l.ref+".my_action")

	var tpNode *yaml.Node
	r.TriggerParams, tpNode = f.object("trigger_params")
	if r.TriggerParams == nil {
		r.TriggerParams = map[string]any{}
	}
	if t := l.trigger(r.TriggerRef); t != nil && t.Parameters != nil {
		if err := ValidateAgainst(t.Parameters, r.TriggerParams); err != nil {
			fc.errorf(tpNode, "trigger_params do not fit trigger %s: %s", t.Ref, err)
		}
	}
	if err := checkTimerParams(r.TriggerRef, r.TriggerParams); err != nil {
		fc.errorf(tpNode, "trigger_params: %s", err)
	}
	if err := checkWebhookParams(r.TriggerRef, r.TriggerParams); err != nil {
		fc.errorf(tpNode, "trigger_params: %s", err)
	}

	r.Conditions = fc.conditions(f.take("conditions"))
	if crit, critKey := f.takeKey("criteria"); crit != nil {
		if r.Conditions != nil {
			fc.errorf(critKey, "give conditions or criteria, not both")
		}
		r.Conditions = append(r.Conditions, fc.criteria(crit)...)
	}
	if r.Conditions == nil {
		r.Conditions = []Condition{}
	}

	apNode := f.take("action_params")
	r.ActionParams, _ = f.decodeObjectNode(apNode, "action_params")
	if r.ActionParams == nil {
		r.ActionParams = map[string]any{}
	}
	if apNode != nil {
		fc.checkTemplates(apNode, "action_params")
	}
	if a := l.action(r.ActionRef); a != nil && apNode != nil && apNode.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(apNode.Content); i += 2 {
			k := apNode.Content[i]
			if _, ok := a.Parameters[k.Value]; !ok {
				fc.errorf(k, "action_params: unknown parameter %q; %s declares: %s", k.Value, a.Ref, strings.Join(sortedNames(a.Parameters), ", "))
			}
		}
	}
	r.Extra = f.extra()
	if !fc.failed {
		l.pack.Rules = append(l.pack.Rules, r)
	}
}

// checkRuleRef checks a rule's trigger_ref or action_ref. A ref into another
// pack is left for registration to check.
func (l *loader) checkRuleRef(fc *fileCtx, kind, ref string, node *yaml.Node, example string) {
	key := kind + "_ref"
	switch {
	case ref == "" && node == nil:
		fc.errorf(nil, "missing %s; name the %s to use, such as %q", key, kind, example)
	case !fullRefPattern.MatchString(ref):
		fc.errorf(node, "%s %q must be a full ref such as %q", key, ref, example)
	case strings.HasPrefix(ref, l.ref+".") && l.defined[kind][ref] == "":
		fc.errorf(node, "%s %q: this pack defines no such %s", key, ref, kind)
	}
}

func (l *loader) trigger(ref string) *Trigger {
	for _, t := range l.pack.Triggers {
		if t.Ref == ref {
			return t
		}
	}
	return nil
}

func (l *loader) action(ref string) *Action {
	for _, a := range l.pack.Actions {
		if a.Ref == ref {
			return a
		}
	}
	return nil
}

// runnable reads runner_type and entry_point and resolves the entry point
// inside {pack}/{sub}/.
func (l *loader) runnable(fc *fileCtx, f *fields, sub string) (runner, entryPoint, path string) {
	runner, runnerNode := f.str("runner_type")
	entryPoint, epNode := f.str("entry_point")
	switch runner {
	case "":
		runner = detectRunner(entryPoint)
	case RunnerNative, RunnerShell, RunnerPython, RunnerNode:
	default:
		fc.errorf(runnerNode, "unknown runner_type %q; use native, shell, python or node", runner)
	}
	if entryPoint == "" {
		if epNode == nil || isNull(epNode) {
			fc.errorf(epNode, "missing entry_point; name the file in %s/ to run", sub)
		}
		return runner, "", ""
	}
	path, warning, err := resolveEntryPoint(l.absDir, l.realDir, sub, entryPoint, runner)
	switch {
	case err != nil:
		fc.errorf(epNode, "%s", err)
	case warning != "":
		fc.warnf(epNode, "%s", warning)
	}
	return runner, entryPoint, path
}

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
	data, err := os.ReadFile(file)
	if err != nil {
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

// extra decodes the keys nobody took, in file order.
func (f *fields) extra() map[string]any {
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
	var v any
	if err := n.Decode(&v); err != nil {
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
	v, err := jsonLike(v)
	if err != nil {
		fc.errorf(n, "%s: %s", what, err)
		return nil, false
	}
	return v, true
}

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

// pathErr drops the path an *fs.PathError repeats, since the problem already
// names the file.
func pathErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func suggestRef(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "my_pack"
	}
	return b.String()
}

func refName(ref string) string {
	if i := strings.LastIndexByte(ref, '.'); i >= 0 {
		return ref[i+1:]
	}
	return ref
}
