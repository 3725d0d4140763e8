package packs

import (
	"fmt"
	"maps"
	"slices"
)

// keyHints name the attune key for keys of other formats (StackStorm,
// Attune) that edit distance would not find.
var keyHints = map[string]string{
	"output_schema": "result_schema",
	"trigger":       "trigger_ref",
	"action":        "action_ref",
}

// Keys the format defines (SPEC) that the loader does not read: they are
// kept in extra for what reads them there, and not warned about.
var (
	// packMetadataKeys are StackStorm's pack.yaml metadata.
	packMetadataKeys = []string{"author", "email", "contributors", "keywords", "dependencies",
		"python_versions", "stackstorm_version", "system", "concurrency"}
	actionPolicyKeys = []string{"concurrency", "rate_limit", "retry", "retention"}
)

// allow marks keys as known without taking them: they stay in extra and
// raise no warning.
func (f *fields) allow(keys ...string) {
	if f.allowed == nil {
		f.allowed = map[string]bool{}
	}
	for _, k := range keys {
		f.allowed[k] = true
	}
}

// warnUnknown warns about each key neither taken nor allowed, naming the
// nearest known one when a typo is likely. Call it once every key has been
// taken.
func (f *fields) warnUnknown() {
	known := slices.Sorted(maps.Keys(f.used))
	for k := range f.allowed {
		known = append(known, k)
	}
	for _, k := range f.order {
		if f.used[k] || f.allowed[k] {
			continue
		}
		f.fc.warnf(f.keys[k], "%s", unknownKey(f.prefix(), k, known, keptKey))
	}
}

func (f *fields) prefix() string {
	if f.what == "the file" {
		return ""
	}
	return f.what + ": "
}

// What becomes of an unknown key, for warnings without a likely typo.
const (
	keptKey    = "it is kept but attune does not use it"
	ignoredKey = "it is ignored"
)

// unknownKey words the warning about key, which is not among known; fate is
// keptKey or ignoredKey.
func unknownKey(prefix, key string, known []string, fate string) string {
	if s := nearestKey(key, known); s != "" {
		return fmt.Sprintf("%sunknown key %s; did you mean %s?", prefix, key, s)
	}
	return fmt.Sprintf("%sunknown key %s; %s", prefix, key, fate)
}

// nearestKey returns the key of known that key most likely misspells, or "".
func nearestKey(key string, known []string) string {
	if hint, ok := keyHints[key]; ok && slices.Contains(known, hint) {
		return hint
	}
	// A third of the key's length, 1 to 3 edits: timout_seconds finds
	// timeout_seconds, pack finds nothing.
	limit := min(max(len(key)/3, 1), 3)
	best, bestDist := "", limit+1
	for _, k := range slices.Sorted(slices.Values(known)) {
		if d := editDistance(key, k, limit); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b (edits,
// insertions, deletions and swaps of neighbours), or limit+1 when it is
// more than limit. Keys are short: the quadratic table is cheap.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit+1)
}
