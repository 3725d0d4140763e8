package worker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/worker/process"
)

// Runtimes maps each runner type this replica can run to its interpreter
// ("" for native binaries).
type Runtimes map[string]string

// DetectRuntimes finds the interpreters on path (the worker's PATH): native
// always, shell when /bin/sh exists, python when python3 is found, node when
// node is found.
func DetectRuntimes(path string) Runtimes {
	rt := Runtimes{packs.RunnerNative: ""}
	if _, err := os.Stat("/bin/sh"); err == nil {
		rt[packs.RunnerShell] = "/bin/sh"
	}
	for runner, name := range map[string]string{packs.RunnerPython: "python3", packs.RunnerNode: "node"} {
		if p, err := lookPath(name, path); err == nil {
			rt[runner] = p
		}
	}
	return rt
}

// Names lists the runner types in a stable order.
func (r Runtimes) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lookPath is exec.LookPath against an explicit PATH value, so the
// worker's configured environment decides, not the process's.
func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// command turns an action's entry point into argv: the binary alone for
// native actions, interpreter + script otherwise. A shell script with its
// own #! line runs through that line (the kernel reads it) when executable.
func (r Runtimes) command(runner, path string) (prog string, args []string, err error) {
	interp, ok := r[runner]
	if !ok {
		return "", nil, fmt.Errorf("runtime %q is not available on this worker", runner)
	}
	if runner == packs.RunnerNative {
		return path, nil, process.CheckBinary(path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, process.NotFound(path, err)
	}
	if runner == packs.RunnerShell && st.Mode()&0o111 != 0 && hasShebang(path) {
		return path, nil, process.CheckBinary(path)
	}
	return interp, []string{path}, nil
}

func hasShebang(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).Peek(2)
	return bytes.Equal(line, []byte("#!"))
}

// baseEnv is the child's environment before attune's own variables: PATH
// HOME LANG TZ and LC_* from the worker, then the passthrough names.
// Nothing else of the worker's environment reaches a child.
func baseEnv(environ, passthrough []string) []string {
	keep := map[string]bool{"PATH": true, "HOME": true, "LANG": true, "TZ": true}
	for _, n := range passthrough {
		keep[n] = true
	}
	var env []string
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "TMPDIR" {
			continue
		}
		if keep[k] || strings.HasPrefix(k, "LC_") {
			env = append(env, kv)
		}
	}
	return env
}
