package packs

import (
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// Bounds on one pack file, checked before anything reads its values, so a
// hostile or mistaken file (a generated data dump, an alias bomb) is refused
// in time linear in its size: the YAML library's decoding checks each
// mapping for repeated keys in quadratic time, and walking an alias bomb
// takes exponential time.
const (
	// MaxFileBytes is the largest pack file read; pack YAML describes
	// items, it does not carry data.
	MaxFileBytes = 1 << 20
	// MaxMappingKeys is the most keys one YAML mapping may hold.
	MaxMappingKeys = 10_000
	// maxValues is the most values a file may hold once its aliases are
	// expanded; 1 MiB of YAML holds about half a million without them.
	maxValues = 1_000_000
)

// checkLimits returns the node and message of the first bound doc breaks,
// or nil. It visits each node once: an alias counts the values it stands
// for without walking them again.
func checkLimits(doc *yaml.Node) (*yaml.Node, string) {
	sizes := map[*yaml.Node]int{} // values below each node, aliases expanded
	var (
		badNode *yaml.Node
		badMsg  string
	)
	// at is where to report n: the key holding it when there is one, as a
	// block mapping's own line is that of its first key.
	var size func(n, at *yaml.Node) int
	size = func(n, at *yaml.Node) int {
		if s, done := sizes[n]; done {
			return s
		}
		sizes[n] = maxValues + 1 // in progress: an alias cycle counts as too many
		s := 1
		switch n.Kind {
		case yaml.AliasNode:
			if n.Alias != nil {
				s = size(n.Alias, n)
			}
		case yaml.MappingNode, yaml.SequenceNode, yaml.DocumentNode:
			if n.Kind == yaml.MappingNode && len(n.Content)/2 > MaxMappingKeys && badNode == nil {
				badNode = at
				badMsg = fmt.Sprintf("refused: a mapping of %d keys, over the limit of %d keys per mapping", len(n.Content)/2, MaxMappingKeys)
			}
			for i, c := range n.Content {
				if badNode != nil {
					break
				}
				cAt := c
				if n.Kind == yaml.MappingNode && i%2 == 1 {
					cAt = n.Content[i-1]
				}
				s = min(s+size(c, cAt), maxValues+1)
			}
		}
		if s > maxValues && badNode == nil {
			badNode = at
			badMsg = fmt.Sprintf("refused: its aliases expand the file to more than %d values", maxValues)
		}
		sizes[n] = s
		return s
	}
	size(doc, doc)
	return badNode, badMsg
}

// fileTooBigError refuses a file over MaxFileBytes.
type fileTooBigError struct {
	size int64 // at least this many bytes
}

func (e *fileTooBigError) Error() string {
	return fmt.Sprintf("refused: the file is %s, over the %s limit for a pack file; keep data out of pack YAML, or split the file",
		byteSize(e.size), byteSize(MaxFileBytes))
}

// readBounded reads file, refusing one over MaxFileBytes before reading it
// (or, for a file growing meanwhile, once past the bound).
func readBounded(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxFileBytes {
		return nil, &fileTooBigError{fi.Size()}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, &fileTooBigError{int64(len(data))}
	}
	return data, nil
}

// byteSize renders n as people read sizes: 1 MiB, 100.0 MiB, 512 bytes.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
