package worker

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/attune-system/attune/worker/process"
)

// secretMask replaces every secret value in what attune stores of an
// execution: stdout, stderr, result and error, live output included.
const secretMask = "********"

// minMaskedLen is the shortest value masked: masking "on" or "1" would
// garble every output and hide nothing worth hiding.
const minMaskedLen = 4

// maxEncodedLen bounds the values whose encodings (base64, URL escapes,
// shell quoting) are masked besides the value and its JSON escapes: the
// automaton costs memory per byte of pattern, and a long value (a PEM key)
// is printed as it is, not base64-encoded.
const maxEncodedLen = 4 << 10

// masker finds every secret value, and the forms a child is likely to
// print it in (maskPatterns), in one pass over a text: an Aho-Corasick
// automaton, so the cost is linear in the text whatever the number of
// secrets. Where matches overlap or touch, their union becomes one mask, so
// no byte of any match survives. A nil *masker masks nothing.
type masker struct {
	root [256]int32 // children of the root (state 0) by byte; 0 when none
	// Per state: the failure link, the depth (length of the state's
	// string), the length of the longest pattern that ends at it (0 when
	// none), and its first child; most states of a trie of long values
	// have exactly one.
	fail, depth, out []int32
	edgeByte         []byte
	edge             []int32
	more             map[int32][]acEdge // further children of branching states
}

type acEdge struct {
	b  byte
	to int32
}

// newSecretMasker builds the masker of the secret values an execution's
// child receives; nil when none is long enough to mask.
func newSecretMasker(secrets map[string]any) *masker {
	return newMasker(maskPatterns(secretValues(secrets)))
}

// secretValues lists the texts of secret values as a child receives them:
// strings as they are, numbers as their digits, objects and arrays as
// compact JSON and each of their leaves. Booleans and null are not secret
// in any useful sense.
func secretValues(secrets map[string]any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case string:
			out = append(out, t)
		case json.Number:
			out = append(out, t.String())
		case float64:
			out = append(out, strconv.FormatFloat(t, 'f', -1, 64))
		case int:
			out = append(out, strconv.Itoa(t))
		case int64:
			out = append(out, strconv.FormatInt(t, 10))
		case map[string]any:
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	for _, v := range secrets {
		walk(v)
		switch v.(type) {
		case map[string]any, []any:
			if b, err := json.Marshal(v); err == nil {
				out = append(out, string(b))
			}
		}
	}
	return out
}

// maskPatterns returns each value with the encodings of it that a child
// commonly prints: JSON string escapes (Go's, with and without HTML
// escaping, and Python's ASCII-only \uXXXX), the stored text of a value
// that is not valid UTF-8, and for values up to maxEncodedLen the dotenv
// delivery's shell quoting, URL escapes, and base64 (standard and URL
// alphabets, padded, and at each of the three alignments it can have
// inside a longer base64 text, such as user:password in a Basic header).
func maskPatterns(values []string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if len(p) >= minMaskedLen && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, v := range values {
		if len(v) < minMaskedLen {
			continue
		}
		add(v)
		if s, _ := process.Sanitize([]byte(v), 3*len(v)); s != v {
			add(s)
		}
		html, plain := jsonEscapes(v)
		add(html)
		add(plain)
		add(asciiJSON(plain))
		if len(v) > maxEncodedLen {
			continue
		}
		add(strings.ReplaceAll(v, "'", `'\''`))
		add(url.QueryEscape(v))
		add(url.PathEscape(v))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			add(enc.EncodeToString([]byte(v)))
			for shift := range 3 {
				add(base64Core(enc.WithPadding(base64.NoPadding), v, shift))
			}
		}
	}
	return out
}

// jsonEscapes is v as inside a JSON string: Go's default (<, >, & as
// \u003c…) and without HTML escaping (most other encoders).
func jsonEscapes(v string) (html, plain string) {
	b, _ := json.Marshal(v)
	html = string(b[1 : len(b)-1])
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return html, string(b[1 : len(b)-1])
}

// asciiJSON rewrites the non-ASCII characters of a JSON string body as
// \uXXXX escapes, as Python's json.dumps does by default.
func asciiJSON(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			sb.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&sb, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&sb, `\u%04x`, r)
		}
	}
	return sb.String()
}

// base64Core is the part of v's base64 that does not depend on what
// surrounds v when it starts shift bytes into a 3-byte group: the
// characters whose 6 bits all come from v.
func base64Core(enc *base64.Encoding, v string, shift int) string {
	buf := make([]byte, shift+len(v))
	copy(buf[shift:], v)
	s := enc.EncodeToString(buf)
	first := (8*shift + 5) / 6
	last := (8*(shift+len(v)) - 6) / 6 // inclusive
	if last < first {
		return ""
	}
	return s[first : last+1]
}

// newMasker builds the automaton of patterns; nil when there are none.
func newMasker(patterns []string) *masker {
	if len(patterns) == 0 {
		return nil
	}
	m := &masker{fail: []int32{0}, depth: []int32{0}, out: []int32{0}, edgeByte: []byte{0}, edge: []int32{0}}
	for _, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			next := m.child(s, p[i])
			if next == 0 {
				next = m.addChild(s, p[i])
			}
			s = next
		}
		m.out[s] = int32(len(p))
	}
	// Failure links breadth first, so a state's link is done before its
	// children's; out becomes the longest pattern that is a suffix.
	queue := make([]int32, 0, len(m.fail))
	for b := range 256 {
		if c := m.root[b]; c != 0 {
			queue = append(queue, c) // fail = 0
		}
	}
	for i := 0; i < len(queue); i++ {
		u := queue[i]
		m.children(u, func(b byte, v int32) {
			f := m.fail[u]
			for {
				if c := m.child(f, b); c != 0 {
					m.fail[v] = c
					break
				}
				if f == 0 {
					break
				}
				f = m.fail[f]
			}
			m.out[v] = max(m.out[v], m.out[m.fail[v]])
			queue = append(queue, v)
		})
	}
	return m
}

func (m *masker) addChild(u int32, b byte) int32 {
	v := int32(len(m.fail))
	m.fail = append(m.fail, 0)
	m.depth = append(m.depth, m.depth[u]+1)
	m.out = append(m.out, 0)
	m.edgeByte = append(m.edgeByte, 0)
	m.edge = append(m.edge, 0)
	switch {
	case u == 0:
		m.root[b] = v
	case m.edge[u] == 0:
		m.edgeByte[u], m.edge[u] = b, v
	default:
		if m.more == nil {
			m.more = map[int32][]acEdge{}
		}
		m.more[u] = append(m.more[u], acEdge{b, v})
	}
	return v
}

// child is u's child by b, 0 when none.
func (m *masker) child(u int32, b byte) int32 {
	if u == 0 {
		return m.root[b]
	}
	if m.edge[u] == 0 {
		return 0
	}
	if m.edgeByte[u] == b {
		return m.edge[u]
	}
	for _, e := range m.more[u] {
		if e.b == b {
			return e.to
		}
	}
	return 0
}

func (m *masker) children(u int32, fn func(b byte, v int32)) {
	if m.edge[u] != 0 {
		fn(m.edgeByte[u], m.edge[u])
	}
	for _, e := range m.more[u] {
		fn(e.b, e.to)
	}
}

// How mask treats the end of a text, where a value may be cut short.
const (
	endFinal = iota // the whole text: nothing follows
	endLive         // output so far: what may be the start of a value is held back
	endCut          // cut at a size limit: what may be the start of a value is masked
)

// mask replaces every match in s, and by end what may be a match cut
// short at its end. It allocates only when there is something to mask.
func (m *masker) mask(s string, end int) string {
	if m == nil || s == "" {
		return s
	}
	type span struct{ start, end int }
	var (
		sb      strings.Builder
		emitted int    // s[:emitted] is written to sb
		pending []span // disjoint, by start; a later match may still join them
		head    int    // pending[:head] are written
		found   bool
		state   int32
	)
	flush := func(upTo int) { // write the pending spans that end before upTo
		for head < len(pending) && pending[head].end < upTo {
			p := pending[head]
			sb.WriteString(s[emitted:p.start])
			sb.WriteString(secretMask)
			emitted = p.end
			head++
		}
		if head == len(pending) {
			pending, head = pending[:0], 0
		}
	}
	push := func(st, en int) {
		if !found {
			found = true
			sb.Grow(len(s))
		}
		for len(pending) > head && pending[len(pending)-1].end >= st {
			last := pending[len(pending)-1]
			st, en = min(st, last.start), max(en, last.end)
			pending = pending[:len(pending)-1]
		}
		pending = append(pending, span{st, en})
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		for {
			if c := m.child(state, b); c != 0 {
				state = c
				break
			}
			if state == 0 {
				break
			}
			state = m.fail[state]
		}
		if n := int(m.out[state]); n > 0 {
			push(i+1-n, i+1)
		}
		// No later match starts before the longest suffix that may begin
		// one.
		if found {
			flush(i + 1 - int(m.depth[state]))
		}
	}
	tail := len(s) - int(m.depth[state]) // s[tail:] may be a value cut short
	switch {
	case end == endCut && tail < len(s):
		push(tail, len(s))
	case end == endLive && tail < len(s):
		if !found {
			return s[:tail]
		}
		// Spans that start in the held-back tail may yet grow.
		for len(pending) > head && pending[len(pending)-1].start >= tail {
			pending = pending[:len(pending)-1]
		}
		flush(len(s) + 1)
		if emitted < tail {
			sb.WriteString(s[emitted:tail])
		}
		return sb.String()
	}
	if !found {
		return s
	}
	flush(len(s) + 1)
	sb.WriteString(s[emitted:])
	return sb.String()
}

// text masks a whole text.
func (m *masker) text(s string) string { return m.mask(s, endFinal) }

// stream masks a stream's stored text, live (while the child runs) or
// final, and keeps it within limit bytes, the truncation notice included:
// a value shorter than the mask makes the text longer. A text cut at the
// limit has its possible partial value at the cut masked.
func (m *masker) stream(s string, truncated, live bool, name string, limit int) (string, bool) {
	if m == nil {
		return s, truncated
	}
	notice := truncationNotice(name)
	body := s
	if truncated || (live && strings.HasSuffix(s, notice)) {
		body, truncated = strings.TrimSuffix(s, notice), true
	}
	end := endFinal
	switch {
	case truncated:
		end = endCut
	case live:
		end = endLive
	}
	masked := m.mask(body, end)
	if !truncated && len(masked) <= limit {
		return masked, false
	}
	if len(notice) > limit {
		return "", true // as process does with a limit this small
	}
	if len(masked)+len(notice) > limit {
		n := limit - len(notice)
		for n > 0 && !utf8.RuneStart(masked[n]) {
			n--
		}
		masked = masked[:n]
	}
	return masked + notice, true
}

// truncationNotice is what process appends to a stream cut at its limit
// (SPEC §6); TestMaskTruncationNoticeMatchesProcess keeps the two equal.
func truncationNotice(stream string) string {
	return "\n\n[OUTPUT TRUNCATED: " + stream + " exceeded size limit]\n"
}

// value masks a parsed result: strings and keys, and numbers whose digits
// hold a secret (those become the mask string).
func (m *masker) value(v any) any {
	if m == nil {
		return v
	}
	switch t := v.(type) {
	case string:
		return m.text(t)
	case json.Number:
		if s := m.text(t.String()); s != t.String() {
			return s
		}
	case float64:
		s := strconv.FormatFloat(t, 'f', -1, 64)
		if masked := m.text(s); masked != s {
			return masked
		}
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = m.value(x)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[m.text(k)] = m.value(x)
		}
		return out
	}
	return v
}
