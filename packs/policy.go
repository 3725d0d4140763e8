package packs

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"
)

// Policy holds an action's (or, for Concurrency, a pack's) policy blocks,
// as stored in attune.action.policy and attune.pack.policy and enforced by
// schema/migrations/011_policy.sql. Durations are stored as milliseconds
// ("2000ms"), the form attune._policy_interval reads.
type Policy struct {
	Concurrency *Concurrency `json:"concurrency,omitempty"`
	RateLimit   *RateLimit   `json:"rate_limit,omitempty"`
	Retry       *Retry       `json:"retry,omitempty"`
	// Retention is how long finished executions of the action are kept;
	// empty for ATTUNE_RETENTION, "0ms" to keep them for ever.
	Retention string `json:"retention,omitempty"`
}

// Concurrency is `concurrency: {limit, key, on_limit}`: at most Limit
// executions run at once across replicas, per rendered Key.
type Concurrency struct {
	Limit   int    `json:"limit"`
	Key     string `json:"key,omitempty"`
	OnLimit string `json:"on_limit"`
}

// RateLimit is `rate_limit: {count, per, key}`: at most Count starts in any
// window of length Per, per rendered Key.
type RateLimit struct {
	Count int    `json:"count"`
	Per   string `json:"per"`
	Key   string `json:"key,omitempty"`
}

// Retry is `retry: {max, delay, backoff, max_delay, on}`.
type Retry struct {
	Max      int      `json:"max"`
	Delay    string   `json:"delay,omitempty"`
	Backoff  string   `json:"backoff"`
	MaxDelay string   `json:"max_delay,omitempty"`
	On       []string `json:"on,omitempty"`
}

// What a policy block may say.
var (
	onLimitValues = []string{"queue", "cancel"}
	backoffValues = []string{"constant", "linear", "exponential"}
	retryOnValues = []string{"failed", "timeout", "abandoned"}
)

// actionPolicy reads an action's policy blocks; declared are its
// parameters, which keys may name. It sets a.MaxRetries from retry.max.
func (fc *fileCtx) actionPolicy(f *fields, a *Action) Policy {
	var p Policy
	p.Concurrency = fc.concurrency(f, a.Parameters)
	if n := f.take("rate_limit"); n != nil && !isNull(n) {
		if g := fc.fields(n, "rate_limit"); g != nil {
			r := &RateLimit{}
			var cn *yaml.Node
			r.Count, cn = g.integer("count")
			if cn == nil || r.Count < 1 {
				fc.errorf(orNode(cn, n), "rate_limit.count must be a whole number of at least 1, got %s", shown(cn))
			}
			r.Per = fc.duration(g, "rate_limit.per", "per", true, false)
			r.Key = fc.policyKey(g, "rate_limit", a.Parameters)
			fc.unknownKeys(g, "rate_limit", "count", "per", "key")
			p.RateLimit = r
		}
	}
	if n, kn := f.takeKey("retry"); n != nil && !isNull(n) {
		if g := fc.fields(n, "retry"); g != nil {
			r := &Retry{}
			var mn *yaml.Node
			r.Max, mn = g.integer("max")
			switch {
			case mn == nil:
				fc.errorf(n, "retry.max is missing; give the number of retries after the first attempt, such as 3")
			case r.Max < 0 || r.Max > maxRetries:
				fc.errorf(mn, "retry.max must be from 0 to %d, got %d", maxRetries, r.Max)
			}
			r.Delay = fc.duration(g, "retry.delay", "delay", false, false)
			r.Backoff = g.oneOf("backoff", "constant", backoffValues...)
			r.MaxDelay = fc.duration(g, "retry.max_delay", "max_delay", false, false)
			on, onNode := g.stringList("on")
			for i, s := range on {
				if !contains(retryOnValues, s) {
					fc.errorf(onNode.Content[i], "retry.on: unknown outcome %q; use %s", s, orList(retryOnValues))
				}
			}
			r.On = on
			fc.unknownKeys(g, "retry", "max", "delay", "backoff", "max_delay", "on")
			if a.MaxRetries != 0 && a.MaxRetries != r.Max {
				fc.warnf(kn, "both max_retries (%d) and retry.max (%d) given; retry.max is used", a.MaxRetries, r.Max)
			}
			a.MaxRetries = r.Max
			p.Retry = r
		}
	}
	if _, n := f.str("retention"); n != nil && !isNull(n) {
		p.Retention = fc.durationNode(n, "retention")
	}
	return p
}

// packPolicy reads pack.yaml's concurrency block. A pack-wide key may name
// only parameters every action of the pack declares; that is checked when
// the actions are loaded (checkPackKey).
func (fc *fileCtx) packPolicy(f *fields) Policy {
	return Policy{Concurrency: fc.concurrency(f, nil)}
}

func (fc *fileCtx) concurrency(f *fields, declared Params) *Concurrency {
	n := f.take("concurrency")
	if n == nil || isNull(n) {
		return nil
	}
	g := fc.fields(n, "concurrency")
	if g == nil {
		return nil
	}
	c := &Concurrency{}
	var ln *yaml.Node
	c.Limit, ln = g.integer("limit")
	if ln == nil || c.Limit < 1 {
		fc.errorf(orNode(ln, n), "concurrency.limit must be a whole number of at least 1, got %s; leave the block out for no limit", shown(ln))
	}
	c.OnLimit = g.oneOf("on_limit", "queue", onLimitValues...)
	if declared != nil {
		c.Key = fc.policyKey(g, "concurrency", declared)
	} else {
		c.Key, _ = g.str("key")
		fc.checkKeySyntax(g.vals["key"], "concurrency", c.Key)
	}
	fc.unknownKeys(g, "concurrency", "limit", "key", "on_limit")
	return c
}

// keyRef matches one {{ parameters.NAME }} of a key template.
var keyRef = regexp.MustCompile(`\{\{\s*([^}]*?)\s*\}\}`)

// keyParams returns the parameter names a key template uses, or an error
// for any other {{ }} expression.
func keyParams(key string) ([]string, error) {
	var names []string
	for _, m := range keyRef.FindAllStringSubmatch(key, -1) {
		name, ok := strings.CutPrefix(m[1], "parameters.")
		if !ok || !pathSegment.MatchString(name) {
			return nil, fmt.Errorf("{{ %s }} is not a parameter; a key may use only {{ parameters.NAME }}", m[1])
		}
		names = append(names, name)
	}
	return names, nil
}

func (fc *fileCtx) checkKeySyntax(n *yaml.Node, block, key string) []string {
	names, err := keyParams(key)
	if err != nil {
		fc.errorf(n, "%s.key: %s", block, err)
	}
	return names
}

func (fc *fileCtx) policyKey(g *fields, block string, declared Params) string {
	key, n := g.str("key")
	for _, name := range fc.checkKeySyntax(n, block, key) {
		if _, ok := declared[name]; !ok {
			list := "it declares no parameters"
			if len(declared) > 0 {
				list = "it declares: " + strings.Join(sortedNames(declared), ", ")
			}
			fc.errorf(n, "%s.key names unknown parameter %q; %s", block, name, list)
		}
	}
	return key
}

// checkPackKey checks that the pack-wide concurrency key names only
// parameters the action declares.
func (fc *fileCtx) checkPackKey(pack *Policy, a *Action, at *yaml.Node) {
	if pack == nil || pack.Concurrency == nil {
		return
	}
	names, _ := keyParams(pack.Concurrency.Key)
	for _, name := range names {
		if _, ok := a.Parameters[name]; !ok {
			fc.errorf(at, "pack.yaml's concurrency.key names parameter %q, which action %s does not declare", name, a.Ref)
		}
	}
}

func (fc *fileCtx) unknownKeys(g *fields, block string, known ...string) {
	for _, k := range g.order {
		if !contains(known, k) {
			fc.errorf(g.keys[k], "%s: unknown key %q; use %s", block, k, orList(known))
		}
	}
}

// duration reads a duration key of a block, stored as milliseconds.
func (fc *fileCtx) duration(g *fields, what, key string, required, zeroOK bool) string {
	v := g.take(key)
	if v == nil || isNull(v) {
		if required {
			fc.errorf(nil, "%s is missing; give a duration such as 1m", what)
		}
		return ""
	}
	s := fc.durationNode(v, what)
	if s == "0ms" && !zeroOK {
		fc.errorf(v, "%s must be longer than 0", what)
	}
	return s
}

func (fc *fileCtx) durationNode(v *yaml.Node, what string) string {
	d, err := ParseDuration(v.Value)
	if v.Kind != yaml.ScalarNode || err != nil {
		fc.errorf(v, "%s must be a duration such as 90s, 5m, 12h or 7d, got %s", what, nodeText(v))
		return ""
	}
	if d < 0 {
		fc.errorf(v, "%s must not be negative, got %s", what, v.Value)
		return ""
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// ParseDuration reads a Go duration ("90s", "1h30m") that may also count
// days ("7d", "1d12h"), as policy blocks and ATTUNE_RETENTION write them.
// A bare "0" is zero.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "0":
		return 0, nil
	case "", "-":
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	neg := strings.HasPrefix(s, "-")
	rest := strings.TrimPrefix(s, "-")
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i > 0 {
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, rest[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil || d < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
	}
	if neg {
		return -(days + d), nil
	}
	return days + d, nil
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

func shown(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	return nodeText(n)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writePolicies stores the policy blocks of p and its actions, after
// writePack wrote their rows.
func writePolicies(ctx context.Context, tx pgx.Tx, p *Pack) error {
	b, err := json.Marshal(p.Policy)
	if err != nil {
		return fmt.Errorf("%s: %w", p.File, err)
	}
	if _, err := tx.Exec(ctx, "UPDATE attune.pack SET policy = $2 WHERE ref = $1", p.Ref, b); err != nil {
		return fmt.Errorf("error writing the policy of pack %s: %w", p.Ref, err)
	}
	for _, a := range p.Actions {
		b, err := json.Marshal(a.Policy)
		if err != nil {
			return fmt.Errorf("%s: %w", a.File, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE attune.action SET policy = $2 WHERE ref = $1", a.Ref, b); err != nil {
			return fmt.Errorf("%s: error writing the policy of action %s: %w", a.File, a.Ref, err)
		}
	}
	return nil
}
