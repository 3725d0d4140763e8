package worker

import (
	"bytes"
	"context"
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
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/attune-system/attune/schema/schematest"
)

// The test binary poses as a pack binary, like the helper commands of Go's
// os/exec tests: run with ATTUNE_ACTION_HELPER=<mode> in its environment it
// behaves as described below and exits instead of running tests. Tests in
// this package (the process tests here, the database tests later) get such a
// child from helperSpec.
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
//	worker          act as a worker: Run a "hang" child, passing
//	                ATTUNE_ACTION_PIDFILE on, and wait (tests that children
//	                die with their worker)
const (
	helperEnv      = "ATTUNE_ACTION_HELPER"
	pidfileEnv     = "ATTUNE_ACTION_PIDFILE"
	grandchildEnv  = "ATTUNE_ACTION_GRANDCHILD"
	floodBytesEnv  = "ATTUNE_ACTION_BYTES"
	floodStreamEnv = "ATTUNE_ACTION_STREAM"
	signalEnv      = "ATTUNE_ACTION_SIGNAL"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		// syscall.Exit, not os.Exit: under -race, os.Exit sleeps a second
		// (GORACE atexit_sleep_ms) and every helper would take that long.
		syscall.Exit(runHelper(mode))
	}
	// Database tests need schematest.Main, which stops a private cluster
	// it may have started; goleak checks what the tests left behind after.
	code := schematest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// helperSpec returns a Spec that runs the test binary in helper mode, with
// an environment of exactly ATTUNE_ACTION_HELPER and env.
func helperSpec(t testing.TB, mode string, env ...string) Spec {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	return Spec{
		Path:      self,
		Env:       append([]string{helperEnv + "=" + mode}, env...),
		MaxStdout: 1 << 20,
		MaxStderr: 1 << 20,
		Timeout:   20 * time.Second, // a backstop: no test should get near it
		KillGrace: time.Second,
	}
}

// waitPidfile waits until the helper wrote path and returns its pids.
func waitPidfile(t testing.TB, path string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return parsePids(t, b)
		}
		require.ErrorIs(t, err, os.ErrNotExist)
		require.True(t, time.Now().Before(deadline), "pidfile %s not written in time", path)
		time.Sleep(5 * time.Millisecond)
	}
}

// readPidfile returns the pids in a pidfile the helper must have written.
func readPidfile(t testing.TB, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return parsePids(t, b)
}

func parsePids(t testing.TB, b []byte) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	require.NotEmpty(t, pids)
	return pids
}

// waitGone waits until none of pids is alive and returns how long that
// took. A zombie counts as gone: it runs no code, and whoever inherited it
// (init) reaps it in its own time.
func waitGone(t testing.TB, within time.Duration, pids ...int) time.Duration {
	t.Helper()
	start := time.Now()
	for _, pid := range pids {
		for alive(pid) {
			require.Less(t, time.Since(start), within, "process %d still alive", pid)
			time.Sleep(2 * time.Millisecond)
		}
	}
	return time.Since(start)
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may contain
	// spaces or parentheses itself.
	_, rest, ok := bytes.Cut(stat[bytes.LastIndexByte(stat, ')')+1:], []byte(" "))
	return !ok || len(rest) == 0 || (rest[0] != 'Z' && rest[0] != 'X')
}

func runHelper(mode string) int {
	if mode == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	}
	gmode := os.Getenv(grandchildEnv)
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
	if path := os.Getenv(pidfileEnv); path != "" && mode != "worker" {
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
	case "worker":
		self, _ := os.Executable()
		res := Run(context.Background(), Spec{
			Path: self,
			Env:  []string{helperEnv + "=hang", pidfileEnv + "=" + os.Getenv(pidfileEnv)},
		})
		fmt.Println(res.Outcome) // never reached: the test kills us
		return 0
	}
	fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", mode)
	return 98
}

func hang() {
	for {
		time.Sleep(time.Hour) // not select{}: the runtime would call that a deadlock
	}
}

// startGrandchild re-executes the test binary in mode, sharing our stdout and
// stderr, and waits until it is ready (has written its pidfile).
func startGrandchild(mode string, setsid bool) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	ready := filepath.Join(os.TempDir(), fmt.Sprintf("grandchild-%d", os.Getpid()))
	env := []string{helperEnv + "=" + mode, pidfileEnv + "=" + ready}
	for _, kv := range os.Environ() {
		if !hasKey(kv, helperEnv) && !hasKey(kv, pidfileEnv) && !hasKey(kv, grandchildEnv) {
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
	n, err := strconv.ParseInt(orDefault(os.Getenv(floodBytesEnv), "1073741824"), 10, 64)
	if err != nil {
		return 2
	}
	var outs []*os.File
	switch os.Getenv(floodStreamEnv) {
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

// selfKill dies by a signal. Go turns a SIGSEGV, even one sent with kill(2),
// into a crash with exit status 2, so the handler is first reset to the
// default with a raw rt_sigaction (an all-zero struct is SIG_DFL, no flags,
// no mask on every Linux ABI).
func selfKill() int {
	sig := syscall.SIGSEGV
	if name := os.Getenv(signalEnv); name != "" {
		sig = unix.SignalNum(name)
		if sig == 0 {
			return 2
		}
	}
	// No core file: the dump would only slow the test down.
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	var act [64]byte
	_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(10 * time.Second)
	return 1
}

func printJSON(v any) int {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		return 1
	}
	return 0
}
