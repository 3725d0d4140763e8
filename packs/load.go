package packs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

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
	// secretNamePattern is a secret-store name (attune secret set NAME).
	secretNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)
)

// IsPackRef reports whether ref is a well-formed pack ref.
func IsPackRef(ref string) bool { return packRefPattern.MatchString(ref) }

// IsFullRef reports whether ref is a well-formed {pack}.{name} ref.
func IsFullRef(ref string) bool { return fullRefPattern.MatchString(ref) }

// IsSecretName reports whether name is a well-formed secret-store name.
func IsSecretName(name string) bool { return secretNamePattern.MatchString(name) }

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
	return LoadAllContext(context.Background(), base)
}

// LoadAllContext is [LoadAll] stopping early when ctx is done: the packs
// not loaded by then are left out, and the pack being loaded gets an error,
// so that nothing registers it half read.
func LoadAllContext(ctx context.Context, base string) ([]*Pack, []Problem) {
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
		if err := ctx.Err(); err != nil {
			problems = append(problems, Problem{File: base, Msg: fmt.Sprintf("loading stopped before %s: %s", e.Name(), err)})
			break
		}
		p, ps := LoadContext(ctx, dir)
		problems = append(problems, ps...)
		if p == nil {
			continue
		}
		file := filepath.Join(dir, "pack.yaml")
		if first, dup := seen[p.Ref]; dup {
			problems = append(problems, Problem{File: file, Line: p.refLine, PackDir: p.Dir,
				Msg: fmt.Sprintf("duplicate pack ref %q, already used by %s; only the first is loaded", p.Ref, first)})
			continue
		}
		seen[p.Ref] = file
		packs = append(packs, p)
	}
	problems = append(problems, checkCrossPackParams(packs)...)
	return packs, problems
}

// checkCrossPackParams checks the action_params of each rule naming an
// action of another pack among ps, which loading its own pack could not. A
// rule that fails is left out of its pack, whose problems now hold an
// error, as if its file had failed to load.
func checkCrossPackParams(ps []*Pack) []Problem {
	actions := map[string]*Action{}
	for _, p := range ps {
		for _, a := range p.Actions {
			actions[a.Ref] = a
		}
	}
	var problems []Problem
	for _, p := range ps {
		rules := p.Rules[:0]
		for _, r := range p.Rules {
			a := actions[r.ActionRef]
			if a == nil || a.PackRef == p.Ref {
				rules = append(rules, r)
				continue
			}
			pps := checkActionParams(a.Parameters, a.Ref, r.ActionParams)
			for _, pp := range pps {
				problems = append(problems, Problem{File: r.displayFile, Line: r.paramLine(pp.param), Msg: pp.msg, PackDir: p.Dir})
			}
			if len(pps) == 0 {
				rules = append(rules, r)
			}
		}
		p.Rules = rules
	}
	return problems
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
	return LoadContext(context.Background(), dir)
}

// LoadContext is [Load] stopping at the next file once ctx is done; the
// pack then has an error saying so, and is not registered.
func LoadContext(ctx context.Context, dir string) (*Pack, []Problem) {
	l := &loader{ctx: ctx, dir: dir}
	p := l.load()
	packDir := l.absDir
	if packDir == "" {
		packDir = dir // the directory could not be made absolute
	}
	for i := range l.problems {
		l.problems[i].PackDir = packDir
	}
	return p, l.problems
}

// loader holds the state of loading one pack.
type loader struct {
	ctx      context.Context
	stopped  bool   // ctx was done: the files left were not read
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
	f.allow(packMetadataKeys...)
	f.warnUnknown()
	p.Policy = fc.packPolicy(f)
	if ref != "" && ref != filepath.Base(abs) {
		fc.warnf(refNode, "pack ref %q differs from its directory name %q; workers look for entry points under {ATTUNE_PACKS_DIR}/%s/", ref, filepath.Base(abs), ref)
	}
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
		if l.stopped {
			return
		}
		if err := l.ctx.Err(); err != nil {
			// Each file is bounded (limits.go), so checking between files
			// is prompt enough.
			l.stopped = true
			l.problems = append(l.problems, Problem{File: filepath.Join(l.dir, sub, name),
				Msg: fmt.Sprintf("loading stopped before this file: %s; the pack is not registered", err)})
			return
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
	f.allow(actionPolicyKeys...)
	a.Policy = fc.actionPolicy(f, a)
	fc.checkPackKey(&l.pack.Policy, a, refNode)
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

	apNode, apKey := f.takeKey("action_params")
	failed := fc.failed
	fc.failed = false
	r.ActionParams, _ = f.decodeObjectNode(apNode, "action_params")
	paramsOK := !fc.failed
	fc.failed = fc.failed || failed
	if r.ActionParams == nil {
		r.ActionParams = map[string]any{}
	}
	r.displayFile, r.paramsLine, r.paramLines = file, line(apKey), map[string]int{}
	if apKey == nil {
		r.paramsLine = line(actNode)
	}
	if apNode != nil {
		fc.checkTemplates(apNode, "action_params")
		if apNode.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(apNode.Content); i += 2 {
				r.paramLines[apNode.Content[i].Value] = apNode.Content[i].Line
			}
		}
	}
	// An action of another pack is checked by LoadAll when it loads that
	// pack too, else by registration against the database.
	if a := l.action(r.ActionRef); a != nil && paramsOK {
		for _, pp := range checkActionParams(a.Parameters, a.Ref, r.ActionParams) {
			fc.errorf(&yaml.Node{Line: r.paramLine(pp.param)}, "%s", pp.msg)
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
