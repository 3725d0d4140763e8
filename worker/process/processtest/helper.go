// Package processtest lets a test binary pose as the programs that tests
// run as children, like the helper commands of Go's os/exec tests, so that
// process tests need no fixtures on disk beyond the test binary itself and
// exercise real processes, signals and pipes. Every package whose tests
// start children (package process, and package worker, whose actions are
// this binary) calls ServeHelper first in its TestMain; the waiting and
// liveness helpers for those children live here too, so there is one set.
//
// Run with ATTUNE_ACTION_HELPER=<mode> in its environment, the test binary
// behaves as described below and exits instead of running tests.
//
// Environment read by the helper:
//
//	ATTUNE_ACTION_HELPER      the mode (below)
//	ATTUNE_ACTION_PIDFILE     when set, the helper writes its pid, then its
//	                          grandchild's pid if it has one, one per line,
//	                          once it is ready (signal dispositions set, the
//	                          grandchild ready too); written atomically
//	ATTUNE_ACTION_GRANDCHILD  start a grandchild in this mode first (sharing
//	                          stdout and stderr, in our process group)
//	ATTUNE_ACTION_BYTES       flood: how many bytes (default 1<<30)
//	ATTUNE_ACTION_STREAM      flood: stdout (default), stderr or both
//	ATTUNE_ACTION_SIGNAL      selfkill: the signal (default SIGSEGV)
//
// Modes:
//
//	hang            sleep forever
//	hang-grandchild hang with a grandchild that hangs (ATTUNE_ACTION_GRANDCHILD=hang)
//	ignore-term     ignore SIGTERM, then hang
//	orphan          start a hanging grandchild holding stdout, print "bye", exit 0
//	escape          like orphan, but the grandchild calls setsid: it leaves
//	                our process group, which no group kill reaches
//	flood           write ATTUNE_ACTION_BYTES bytes quickly, then exit 0
//	badbytes        print invalid UTF-8 and NUL bytes on stdout and stderr
//	selfkill        kill itself with SIGSEGV (or ATTUNE_ACTION_SIGNAL)
//	exit3           print lines on stderr, the last "boom: last line", exit 3
//	env             print the environment as a JSON object, exit 0
//	stdin           copy stdin to stdout
//	json            print {"ok": true, "n": 3}, exit 0
//	echo            print ATTUNE_ACTION_BIG on stdout as is, exit 0
//	fail            print ATTUNE_ACTION_BIG on stderr as is, exit 3
//	paramfile       print {"path","content","mode","dir"} of ATTUNE_PARAMETER_FILE as JSON
//	pwd             print {"wd","tmpdir","mode"} (mode of the working dir) as JSON
//	readonly        leave read-only directories (0500) with files in the
//	                work dir, exit 0 (the work dir must still be removed)
//
// A package may add modes of its own (package process adds "worker", which
// needs process.Run; this package must not import process, whose own tests
// import it).
package processtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The environment variables the helper reads.
const (
	HelperEnv      = "ATTUNE_ACTION_HELPER"
	PidfileEnv     = "ATTUNE_ACTION_PIDFILE"
	GrandchildEnv  = "ATTUNE_ACTION_GRANDCHILD"
	FloodBytesEnv  = "ATTUNE_ACTION_BYTES"
	FloodStreamEnv = "ATTUNE_ACTION_STREAM"
	SignalEnv      = "ATTUNE_ACTION_SIGNAL"
)

// ServeHelper returns at once unless this process was started as a helper
// (ATTUNE_ACTION_HELPER is set); then it runs the mode and exits. extra
// adds modes (an exit code each); they get no pidfile or grandchild from
// ServeHelper and handle the environment themselves.
func ServeHelper(extra map[string]func() int) {
	mode := os.Getenv(HelperEnv)
	if mode == "" {
		return
	}
	code := 0
	if fn, ok := extra[mode]; ok {
		code = fn()
	} else {
		code = runHelper(mode)
	}
	// syscall.Exit, not os.Exit: under -race, os.Exit sleeps a second
	// (GORACE atexit_sleep_ms) and every helper would take that long.
	syscall.Exit(code)
}

func runHelper(mode string) int {
	if mode == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	}
	gmode := os.Getenv(GrandchildEnv)
	if gmode == "" && (mode == "hang-grandchild" || mode == "orphan" || mode == "escape") {
		gmode = "hang"
	}
	pids := []int{os.Getpid()}
	if gmode != "" {
		gpid, err := startGrandchild(gmode, mode == "escape")
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 99
		}
		pids = append(pids, gpid)
	}
	if path := os.Getenv(PidfileEnv); path != "" {
		if err := writePidfile(path, pids); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 99
		}
	}

	switch mode {
	case "hang", "hang-grandchild", "ignore-term":
		hang()
	case "orphan", "escape":
		fmt.Println("bye")
		return 0
	case "flood":
		return flood()
	case "badbytes":
		os.Stdout.Write([]byte("ok \xff\xfe bad \x00 nul \xe2\x82 cut\n"))
		os.Stderr.Write([]byte("err \x00\xc3\x28 end\n"))
		return 0
	case "selfkill":
		return selfKill()
	case "exit3":
		fmt.Fprint(os.Stderr, "starting\nworking\nboom: last line\n")
		return 3
	case "env":
		envMap := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			envMap[k] = v
		}
		return printJSON(envMap)
	case "stdin":
		if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
			return 1
		}
		return 0
	case "json":
		fmt.Println(`{"ok": true, "n": 3}`)
		return 0
	case "echo":
		fmt.Println(os.Getenv("ATTUNE_ACTION_BIG"))
		return 0
	case "fail":
		fmt.Fprintln(os.Stderr, os.Getenv("ATTUNE_ACTION_BIG"))
		return 3
	case "paramfile":
		path := os.Getenv("ATTUNE_PARAMETER_FILE")
		content, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fi, err := os.Stat(path)
		if err != nil {
			return 1
		}
		wd, _ := os.Getwd()
		return printJSON(map[string]string{"path": path, "content": string(content), "mode": fmt.Sprintf("%04o", fi.Mode().Perm()), "dir": wd})
	case "pwd":
		wd, _ := os.Getwd()
		fi, err := os.Stat(wd)
		if err != nil {
			return 1
		}
		return printJSON(map[string]string{"wd": wd, "tmpdir": os.Getenv("TMPDIR"), "mode": fmt.Sprintf("%04o", fi.Mode().Perm())})
	case "readonly":
		if err := os.MkdirAll("ro/sub", 0o700); err != nil {
			return 1
		}
		for _, f := range []string{"ro/file", "ro/sub/file"} {
			if err := os.WriteFile(f, []byte("x"), 0o400); err != nil {
				return 1
			}
		}
		if os.Chmod("ro/sub", 0o500) != nil || os.Chmod("ro", 0o500) != nil {
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", mode)
	return 98
}

// hang sleeps forever.
func hang() {
	for {
		time.Sleep(time.Hour) // not select{}: the runtime would call that a deadlock
	}
}

// startGrandchild re-executes the test binary in mode, sharing our stdout and
// stderr, and waits until it is ready (has written its pidfile). It uses
// os/exec directly: sharing our own stdio and leaving the group (setsid) are
// what the process package exists to prevent.
func startGrandchild(mode string, setsid bool) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	ready := filepath.Join(os.TempDir(), fmt.Sprintf("grandchild-%d", os.Getpid()))
	env := []string{HelperEnv + "=" + mode, PidfileEnv + "=" + ready}
	for _, kv := range os.Environ() {
		if !hasKey(kv, HelperEnv) && !hasKey(kv, PidfileEnv) && !hasKey(kv, GrandchildEnv) {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(self)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return cmd.Process.Pid, nil
		}
	}
	return 0, errors.New("grandchild not ready in time")
}

func hasKey(kv, key string) bool {
	return strings.HasPrefix(kv, key+"=")
}

func writePidfile(path string, pids []int) error {
	var b strings.Builder
	for _, pid := range pids {
		fmt.Fprintln(&b, pid)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path) // readers never see half a file
}

func flood() int {
	n, err := strconv.ParseInt(orDefault(os.Getenv(FloodBytesEnv), "1073741824"), 10, 64)
	if err != nil {
		return 2
	}
	var outs []*os.File
	switch os.Getenv(FloodStreamEnv) {
	case "", "stdout":
		outs = []*os.File{os.Stdout}
	case "stderr":
		outs = []*os.File{os.Stderr}
	case "both":
		outs = []*os.File{os.Stdout, os.Stderr}
	}
	chunk := bytes.Repeat([]byte("flood flood flood flood flood flood flood flood flood flood flood\n"), 16384) // ~1 MiB
	for _, out := range outs {
		for left := n; left > 0; {
			b := chunk[:min(int64(len(chunk)), left)]
			if _, err := out.Write(b); err != nil {
				return 1
			}
			left -= int64(len(b))
		}
	}
	return 0
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func printJSON(v any) int {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		return 1
	}
	return 0
}
