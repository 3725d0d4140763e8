package packs

import (
	"errors"
	"fmt"
	"strings"
)

// Runner types an action or sensor may declare in runner_type.
const (
	RunnerNative = "native"
	RunnerShell  = "shell"
	RunnerPython = "python"
	RunnerNode   = "node"
)

// Ways a child receives its parameters (parameter_delivery).
const (
	DeliveryEnv   = "env"
	DeliveryStdin = "stdin"
	DeliveryFile  = "file"
)

// Document formats for parameter_format and output_format.
const (
	FormatJSON   = "json"
	FormatDotenv = "dotenv"
	FormatYAML   = "yaml"
	FormatText   = "text"
	FormatJSONL  = "jsonl"
)

// Pack is one pack directory as loaded from disk.
type Pack struct {
	Ref, Label, Description, Version string

	Dir  string // absolute
	File string // path of pack.yaml, absolute

	Actions  []*Action
	Sensors  []*Sensor
	Triggers []*Trigger
	Rules    []*Rule

	// Policy is pack.yaml's concurrency block, a limit over all its
	// actions together (see [Policy]).
	Policy Policy

	refLine int // where pack.yaml sets the ref, for duplicates across packs
}

// Param declares one parameter of an action or sensor, StackStorm style.
type Param struct {
	Type        string   `json:"type"` // string|integer|number|boolean|object|array
	Description string   `json:"description,omitempty"`
	Required    bool     `json:"required,omitempty"`
	Default     any      `json:"default,omitempty"`
	Enum        []any    `json:"enum,omitempty"`
	Minimum     *float64 `json:"minimum,omitempty"`
	Maximum     *float64 `json:"maximum,omitempty"`
	Secret      bool     `json:"secret,omitempty"`
}

// Params maps parameter names to their declarations. It marshals to JSON as
// the StackStorm-style map stored in attune.action.parameters.
type Params map[string]Param

// Action is one actions/{name}.yaml.
type Action struct {
	Ref, Name, PackRef, Label, Description string

	// Enabled defaults to true.
	Enabled bool
	// RunnerType is native, shell, python or node. When the YAML leaves it
	// out it is detected from the entry point's extension: .sh shell, .py
	// python, .js node, anything else native.
	RunnerType string
	// EntryPoint is the entry_point as written, relative to actions/.
	EntryPoint string
	// Path is the absolute path of the entry point inside {pack}/actions/,
	// symlinks resolved when it exists.
	Path       string
	Parameters Params
	// ResultSchema is a JSON Schema for the result. Attune's flat `output`
	// map (property → schema) is converted to {"type": "object",
	// "properties": ...}.
	ResultSchema map[string]any
	// TimeoutSeconds is timeout_seconds (alias timeout); 0 means unset.
	TimeoutSeconds int
	// ParameterDelivery is env (the default), stdin or file.
	ParameterDelivery string
	// ParameterFormat is json (the default), dotenv or yaml.
	ParameterFormat string
	// OutputFormat is json (the default), text, yaml or jsonl.
	OutputFormat string
	MaxRetries   int
	Tags         []string
	// Policy holds the concurrency, rate_limit, retry and retention blocks.
	Policy Policy
	// Extra holds the keys attune does not know, as decoded.
	Extra map[string]any
	// File is the absolute path of the YAML file.
	File string
}

// Sensor is one sensors/{name}.yaml.
type Sensor struct {
	Ref, Name, PackRef, Description string

	// Enabled defaults to true.
	Enabled bool
	// RunnerType, EntryPoint and Path work as for [Action], inside
	// {pack}/sensors/.
	RunnerType, EntryPoint, Path string
	// TriggerTypes are the trigger refs the sensor emits; a bare name is
	// qualified with the sensor's pack.
	TriggerTypes []string
	Parameters   Params
	Extra        map[string]any
	File         string
}

// Trigger is one triggers/{name}.yaml.
type Trigger struct {
	Ref, Name, PackRef, Description string

	// Parameters is the JSON Schema of a rule's trigger_params. A
	// StackStorm-style parameter map is accepted in the YAML and converted.
	Parameters map[string]any
	// PayloadSchema is the JSON Schema of the event payload (alias output).
	PayloadSchema map[string]any
	Extra         map[string]any
	File          string
}

// Rule is one rules/{name}.yaml: when an event of TriggerRef satisfies every
// condition, ActionRef is enqueued with ActionParams rendered against the
// event (see [RenderParams]).
type Rule struct {
	Ref, Name, PackRef, Description string

	// Enabled defaults to true.
	Enabled       bool
	TriggerRef    string
	TriggerParams map[string]any
	Conditions    []Condition
	ActionRef     string
	ActionParams  map[string]any
	Extra         map[string]any
	File          string

	// Where the YAML says what, for problems found once the rule's action
	// is known: the file as displayed, the line of each action_params key,
	// and that of action_params itself (action_ref when absent).
	displayFile string
	paramLines  map[string]int
	paramsLine  int
}

// Condition is one entry of a rule's conditions; see [Condition.Match].
type Condition struct {
	Field    string `json:"field"`
	Operator string `json:"operator"`
	Value    any    `json:"value"`
}

// Problem is one load error or warning: it names the file and the line when
// the YAML parser gives one (Line 0 when it does not).
type Problem struct {
	File    string
	Line    int
	Msg     string
	Warning bool
	// PackDir is the absolute directory of the pack the problem belongs to,
	// the [Pack.Dir] of that pack when it loaded; empty when the problem
	// belongs to no pack (a packs directory that cannot be read). The loader
	// sets it, so a caller can tell which packs a problem spoils (see
	// [Register]) without walking the disk again. It is a directory, not a
	// ref: a broken pack.yaml may give no ref, and two directories may
	// claim the same one.
	PackDir string
}

// Error formats p as "file:line: msg", "file: msg" without a line, with
// "warning: " before the message of a warning.
func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// LoadError collects the problems of a load that had errors.
type LoadError struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns each problem as an error.
func (e *LoadError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// AsError returns a *LoadError holding every problem in ps, warnings
// included, when at least one is an error, and nil otherwise.
func AsError(ps []Problem) error {
	if !HasErrors(ps) {
		return nil
	}
	return &LoadError{Problems: ps}
}

// HasErrors reports whether any problem is not a warning.
func HasErrors(ps []Problem) bool {
	for _, p := range ps {
		if !p.Warning {
			return true
		}
	}
	return false
}

// ErrInvalidParams is matched (errors.Is) by every *ParamsError.
var ErrInvalidParams = errors.New("invalid parameters")
