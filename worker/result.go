package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Bounds of result parsing (output_format json, yaml, jsonl). A child's
// stdout is read as its result in the worker, on the worker's CPU, so what
// the child prints must not cost more than its size says: the text is
// bounded, every step is linear in it, and parsing stops at the
// execution's deadline.
const (
	// maxResultBytes bounds the stdout read as a result; past it the result
	// is null and stdout stays, as for any stdout that does not parse.
	maxResultBytes = 16 << 20
	// maxResultValues bounds the values a YAML document may expand to
	// through aliases (a "billion laughs" document is small).
	maxResultValues = 1 << 20
	// maxResultDepth bounds nesting, which recursion pays for in stack.
	maxResultDepth = 1000
)

// errResultBudget: the document expands past maxResultValues or
// maxResultDepth.
var errResultBudget = errors.New("result too large once aliases are expanded, or nested too deep")

// decodeYAMLResult parses a YAML document into values jsonb can hold.
//
// yaml.v3's decoding into Go values checks mapping keys for duplicates
// pairwise, quadratic in the keys of one mapping (80,000 keys cost
// minutes), and cannot be interrupted. So the text is parsed only into
// yaml.Node (the scanner and parser are linear), and the nodes are turned
// into values here: duplicates found with a map, aliases expanded within a
// budget, the context checked as it goes.
func decodeYAMLResult(ctx context.Context, text string) (any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 {
		return nil, errors.New("empty document")
	}
	c := &yamlConverter{ctx: ctx, budget: maxResultValues}
	return c.value(&doc, 0)
}

type yamlConverter struct {
	ctx    context.Context
	budget int
}

func (c *yamlConverter) value(n *yaml.Node, depth int) (any, error) {
	if depth > maxResultDepth {
		return nil, errResultBudget
	}
	c.budget--
	if c.budget < 0 {
		return nil, errResultBudget
	}
	if c.budget%4096 == 0 {
		if err := c.ctx.Err(); err != nil {
			return nil, err
		}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.value(n.Content[0], depth+1)
	case yaml.AliasNode:
		return c.value(n.Alias, depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, item := range n.Content {
			v, err := c.value(item, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		if err := c.mapping(n, out, depth); err != nil {
			return nil, err
		}
		return out, nil
	case yaml.ScalarNode:
		return scalarValue(n)
	}
	return nil, fmt.Errorf("line %d: unknown YAML node", n.Line)
}

// mapping adds n's pairs to out; merge keys (<<) add the pairs of the
// mappings they name, which keys of n itself override.
func (c *yamlConverter) mapping(n *yaml.Node, out map[string]any, depth int) error {
	var merges []*yaml.Node
	own := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: a mapping key must be a scalar to be stored as JSON", k.Line)
		}
		if own[k.Value] {
			return fmt.Errorf("line %d: mapping key %q already defined", k.Line, k.Value)
		}
		own[k.Value] = true
		val, err := c.value(v, depth+1)
		if err != nil {
			return err
		}
		out[k.Value] = val
	}
	for _, m := range merges {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		var sources []*yaml.Node
		switch m.Kind {
		case yaml.MappingNode:
			sources = []*yaml.Node{m}
		case yaml.SequenceNode:
			sources = m.Content
		default:
			return fmt.Errorf("line %d: a merge key (<<) takes a mapping or a list of mappings", m.Line)
		}
		for _, src := range sources {
			if src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				return fmt.Errorf("line %d: a merge key (<<) takes a mapping or a list of mappings", src.Line)
			}
			merged := map[string]any{}
			if err := c.mapping(src, merged, depth+1); err != nil {
				return err
			}
			for k, v := range merged {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
		}
	}
	return nil
}

// scalarValue resolves a scalar as yaml.v3 would, in JSON's terms: numbers
// as json.Number, as the rest of attune keeps them.
func scalarValue(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!str", "!!binary":
		return n.Value, nil
	case "!!null":
		return nil, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	switch t := v.(type) {
	case int:
		return json.Number(strconv.Itoa(t)), nil
	case int64:
		return json.Number(strconv.FormatInt(t, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(t, 10)), nil
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return nil, fmt.Errorf("line %d: %s has no JSON form", n.Line, n.Value)
		}
		return json.Number(strconv.FormatFloat(t, 'g', -1, 64)), nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	}
	return v, nil
}
