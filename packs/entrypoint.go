package packs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// detectRunner picks the runner of an entry point without a runner_type:
// .sh shell, .py python, .js node, anything else native.
func detectRunner(entryPoint string) string {
	switch strings.ToLower(filepath.Ext(entryPoint)) {
	case ".sh":
		return RunnerShell
	case ".py":
		return RunnerPython
	case ".js":
		return RunnerNode
	}
	return RunnerNative
}

// resolveEntryPoint confines entryPoint to {pack}/{sub}/, symlinks followed,
// and returns its absolute path. absDir is the pack directory, realDir the
// same with symlinks resolved. A missing file, or a native binary without an
// execute bit, is only a warning: the binary may be deployed later.
func resolveEntryPoint(absDir, realDir, sub, entryPoint, runner string) (path, warning string, err error) {
	if filepath.IsAbs(entryPoint) {
		return "", "", fmt.Errorf("entry_point %q is an absolute path; give a path relative to the pack's %s/ folder", entryPoint, sub)
	}
	clean := filepath.Clean(entryPoint)
	switch {
	case clean == ".":
		return "", "", fmt.Errorf("entry_point %q names the %s/ folder itself; name a file in it", entryPoint, sub)
	case clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)):
		return "", "", fmt.Errorf("entry_point %q leads out of the pack's %s/ folder; keep the file inside it", entryPoint, sub)
	}

	root := filepath.Join(realDir, sub)
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", "", fmt.Errorf("cannot resolve the pack's %s/ folder: %s", sub, pathErr(err))
	}
	if !within(realRoot, realDir) {
		return "", "", fmt.Errorf("the pack's %s/ folder is a link to %s, outside the pack", sub, realRoot)
	}

	target := filepath.Join(realRoot, clean)
	real, err := filepath.EvalSymlinks(target)
	if errors.Is(err, fs.ErrNotExist) {
		// A dangling link may still point out of the pack.
		if dest, err := os.Readlink(target); err == nil {
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(filepath.Dir(target), dest)
			}
			if !within(filepath.Clean(dest), realRoot) {
				return "", "", fmt.Errorf("entry_point %q is a link to %s, outside the pack's %s/ folder", entryPoint, dest, sub)
			}
		}
		return filepath.Join(absDir, sub, clean), fmt.Sprintf("entry point %s not found; build or deploy it before the %s runs", filepath.Join(sub, clean), itemKind(sub)), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("cannot resolve entry_point %q: %s", entryPoint, pathErr(err))
	}
	if !within(real, realRoot) {
		return "", "", fmt.Errorf("entry_point %q resolves to %s, outside the pack's %s/ folder", entryPoint, real, sub)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", "", fmt.Errorf("cannot stat entry_point %q: %s", entryPoint, pathErr(err))
	}
	switch {
	case fi.IsDir():
		return "", "", fmt.Errorf("entry_point %q is a directory; name the file to run", entryPoint)
	case !fi.Mode().IsRegular():
		return "", "", fmt.Errorf("entry_point %q is not a regular file", entryPoint)
	case runner == RunnerNative && fi.Mode().Perm()&0o111 == 0:
		// Scripts run as an argument of their interpreter and need no
		// execute bit; a native binary does.
		return real, fmt.Sprintf("entry point %s is not executable; chmod +x it", filepath.Join(sub, clean)), nil
	}
	return real, "", nil
}

// within reports whether path is root or below it. Both must be clean.
func within(path, root string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func itemKind(sub string) string {
	if sub == "sensors" {
		return "sensor"
	}
	return "action"
}
