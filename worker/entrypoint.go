package worker

import (
	"fmt"
	"os"
	"path/filepath"
)

// packFolder returns the folder an entry point must stay in when it runs:
// the pack's actions/ (or sensors/, as sub says) above path, the path
// registration resolved. It is the nearest ancestor named sub whose parent
// holds a pack.yaml, so an entry point in actions/actions/ is still held to
// the pack's own folder. process.Start resolves the entry point again right
// before it runs and refuses one that leads out of it.
func packFolder(path, sub string) (string, error) {
	for dir := filepath.Dir(path); ; {
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("entry point %s is not in a pack's %s/ folder; run `attune pack register` again", path, sub)
		}
		if filepath.Base(dir) == sub {
			if _, err := os.Stat(filepath.Join(parent, "pack.yaml")); err == nil {
				return dir, nil
			}
		}
		dir = parent
	}
}
