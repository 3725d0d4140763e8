package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrOutsideRoot: the entry point resolves, symlinks followed, to a file
// outside the folder it must stay in (Spec.EntryRoot).
var ErrOutsideRoot = errors.New("entry point is outside its folder")

// confine resolves entry, symlinks followed, and returns the real path when
// it lies within root (resolved too); else a user-facing error wrapping
// ErrOutsideRoot.
//
// Registration checked the same, but a pack's files may change after it: an
// entry point replaced by a link to a file elsewhere would run that file.
// Checking right before the fork, and running the resolved path rather than
// the one that was checked, narrows the window to the moment between this
// resolution and execve: someone who may write in the pack's folder can
// still swap a directory on the resolved path for a link in that instant.
// Closing it for good would take exec'ing an open descriptor (execveat with
// AT_EMPTY_PATH), which breaks #! scripts, whose interpreter gets a
// /dev/fd path it cannot reopen once the descriptor is closed on exec.
func confine(entry, root string) (string, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", &userError{msg: fmt.Sprintf("Cannot resolve the folder of entry point %s: %v", entry, err), kind: ErrOutsideRoot, cause: err}
	}
	real, err := filepath.EvalSymlinks(entry)
	if err != nil {
		if fi, lerr := os.Lstat(entry); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			// A dangling link: whatever it names could appear before execve.
			return "", &userError{msg: fmt.Sprintf("Entry point %s is a link that leads nowhere: %v", entry, err), kind: ErrOutsideRoot, cause: err}
		}
		// Missing: the binary checks that follow say so in their words.
		return entry, nil
	}
	if rel, err := filepath.Rel(realRoot, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", &userError{
			msg:  fmt.Sprintf("Entry point %s resolves to %s, outside its pack's folder %s; it changed after registration: restore it, then run `attune pack register` again", entry, real, realRoot),
			kind: ErrOutsideRoot,
		}
	}
	return real, nil
}
