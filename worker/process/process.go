package process

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes one child process.
type Spec struct {
	// Path is the absolute path of the program to exec: the binary, or the
	// interpreter for scripts. It is also argv[0].
	Path string
	// Args are the arguments after argv[0], e.g. the script path for an
	// interpreter.
	Args []string
	// Env is the complete environment, KEY=VALUE. Nothing is inherited: nil
	// means an empty environment. Start appends TMPDIR (replacing any given).
	Env []string
	// Stdin is written to the child's stdin, which is then closed (EOF). A
	// child that does not read it is not waited for.
	Stdin []byte
	// StdinPipe keeps the child's stdin open for the caller to write through
	// Handle.Stdin while the child runs, for input that is not known at
	// start (a sensor's rule changes). It excludes Stdin; with neither, the
	// child reads /dev/null.
	StdinPipe bool
	// ParameterFile, when non-nil, is written to a 0400 file in the work
	// directory and ATTUNE_PARAMETER_FILE=<its absolute path> is appended to
	// Env.
	ParameterFile []byte
	// MaxStdout and MaxStderr bound the stored bytes per stream, truncation
	// notice included.
	MaxStdout, MaxStderr int
	// ReadStdout and ReadStderr, when set, consume the stream instead of
	// the bounded capture (which then stays empty): each runs on a goroutine
	// of its own with our end of the pipe and must return at EOF or at the
	// first read error. Wait waits for them.
	ReadStdout, ReadStderr func(io.Reader)
	// DrainTimeout bounds how long Wait goes on reading output, and feeding
	// stdin, once the process group is dead; reads and writes fail after
	// it. Only a descendant that left the group (setsid) can hold the pipes
	// open that long. Defaults to DefaultDrainTimeout.
	DrainTimeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL to the process group
	// when Run stops the process on timeout or cancel (a caller of Start
	// passes it to Terminate); 0 means SIGKILL at once. Start also sizes
	// os/exec's WaitDelay backstop from it.
	KillGrace time.Duration
	// EntryPoint, when set, is the file this child is for, a pack's entry
	// point: Path itself (a binary, a #! script) or one of Args (a script
	// for its interpreter). Right before the process starts, it is resolved
	// with symlinks followed and must lie within EntryRoot, else the child
	// does not start (ErrOutsideRoot); the resolved path is what runs.
	EntryPoint, EntryRoot string
	// WorkDirPrefix names the private work directory made under the
	// worker's TMPDIR (a random suffix follows). Defaults to "attune-exec-".
	WorkDirPrefix string

	// Credential, when set, is the user and groups the child runs as (the
	// worker must be root); its work directory and parameter file are
	// made its own.
	Credential *syscall.Credential

	// Detached lets descendants that leave the process group live on: no
	// cgroup, no subreaper kill. For a tool whose job is to start a daemon
	// (pg_ctl start calls setsid); actions and sensors never set it.
	Detached bool
	// noCgroup contains the child as where cgroups are not available.
	noCgroup bool

	// The fields below are Run's; Start ignores them.

	// Timeout is counted from process start; 0 means none.
	Timeout time.Duration
	// OnStart, if set, is called on Run's goroutine right after the process
	// started (the timeout is already running, so keep it short).
	OnStart func(pid int, at time.Time)
	// OnOutput, if set, is called on Run's goroutine every OutputEvery
	// while the process runs and what is stored of its output changed, with
	// the stored text of each stream that changed (nil for one that did
	// not). Output dropped past a cap changes nothing: a capped stream is
	// handed over once more, with its truncation notice, and then never
	// again. It must not block: Run waits on nothing else meanwhile.
	OnOutput    func(stdout, stderr *string)
	OutputEvery time.Duration
}

// Result is what became of one child process.
type Result struct {
	Outcome Outcome
	// ExitCode is the exit status, 128+signal when the process was killed by
	// a signal, -1 when it never started.
	ExitCode int
	// Signal names the signal that killed the process ("SIGSEGV"), else "".
	Signal string
	// Stdout and Stderr are valid UTF-8 with NULs and invalid bytes replaced
	// by U+FFFD, each at most Max* bytes including the truncation notice.
	Stdout, Stderr                   string
	StdoutTruncated, StderrTruncated bool
	// StartErr, when Outcome is OutcomeStartFailed, is a user-facing error
	// wrapping one of the Err* sentinels where one applies.
	StartErr error
	// Cause, when Outcome is OutcomeCanceled, is context.Cause of Run's ctx.
	Cause error
	// CleanupErr is set when the work directory could not be removed; worth
	// logging, it does not change the execution's result.
	CleanupErr error
	Pid        int
	// StartedAt is when the process started (zero if it never did);
	// FinishedAt when it was reaped.
	StartedAt, FinishedAt time.Time
}

// DefaultDrainTimeout is Spec.DrainTimeout's default: ample for copying
// what is left in a pipe, short enough that a descendant that escaped the
// group does not noticeably delay the result.
const DefaultDrainTimeout = 500 * time.Millisecond

// parameterFileName is the name of Spec.ParameterFile in the work directory.
const parameterFileName = "parameters"

// Handle is a started child, the leader of a process group of its own, and
// the goroutines that serve its pipes. Wait must be called exactly once: it
// reaps the child and releases everything. Terminate may be called any
// number of times before Wait, never after: once the child is reaped its
// pid may belong to a stranger.
type Handle struct {
	cmd       *exec.Cmd
	pid       int
	startedAt time.Time
	dir       string
	drain     time.Duration
	jail      *jail // what contains the child's descendants beyond its group

	// exited is closed when the child has exited. Where the platform can
	// wait without reaping, the child is still a zombie then, so its pid
	// (the group id) cannot be reused until Wait reaps it.
	exited chan struct{}
	// reaped is set, before exited closes, when waiting for the exit had to
	// reap the child (no WNOWAIT on this platform).
	reaped bool

	stdout, stderr   *capture
	stdoutR, stderrR *os.File // our ends of the output pipes
	stdinW           *os.File // our end of the stdin pipe, nil without Stdin or StdinPipe
	io               sync.WaitGroup
}

// Start starts the process described by spec in a private work directory
// (its working directory and TMPDIR, removed by Wait), as the leader of a
// new process group, and returns at once. The error is user-facing and
// wraps one of the Err* sentinels where one applies.
func Start(spec Spec) (_ *Handle, err error) {
	if !filepath.IsAbs(spec.Path) {
		// The child runs in its work dir, where a relative path means nothing.
		return nil, fmt.Errorf("binary path %q is not absolute", spec.Path)
	}
	if spec.StdinPipe && len(spec.Stdin) > 0 {
		return nil, errors.New("Spec.Stdin and Spec.StdinPipe exclude each other")
	}

	prefix := spec.WorkDirPrefix
	if prefix == "" {
		prefix = "attune-exec-"
	}
	// The owner tag lets the next worker on this host remove the directory
	// should this one die without cleaning up (kill -9).
	dir, err := os.MkdirTemp("", prefix+ownerTag()) // 0700
	if err != nil {
		return nil, fmt.Errorf("error creating work directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = RemoveWorkDir(dir) // the start error is what matters
		}
	}()

	if c := spec.Credential; c != nil {
		if err := os.Chown(dir, int(c.Uid), int(c.Gid)); err != nil {
			return nil, fmt.Errorf("error giving the work directory to uid %d: %w", c.Uid, err)
		}
	}

	env := make([]string, 0, len(spec.Env)+2) // non-nil: nil would inherit ours
	for _, kv := range spec.Env {
		if hasKey(kv, "TMPDIR") || (spec.ParameterFile != nil && hasKey(kv, "ATTUNE_PARAMETER_FILE")) {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "TMPDIR="+dir)
	if spec.ParameterFile != nil {
		path := filepath.Join(dir, parameterFileName)
		if err := os.WriteFile(path, spec.ParameterFile, 0o400); err != nil {
			return nil, fmt.Errorf("error writing parameter file: %w", err)
		}
		if c := spec.Credential; c != nil {
			if err := os.Chown(path, int(c.Uid), int(c.Gid)); err != nil {
				return nil, fmt.Errorf("error giving the parameter file to uid %d: %w", c.Uid, err)
			}
		}
		env = append(env, "ATTUNE_PARAMETER_FILE="+path)
	}
	if spec.EntryPoint != "" {
		real, err := confine(spec.EntryPoint, spec.EntryRoot)
		if err != nil {
			return nil, err
		}
		spec.Args = slices.Clone(spec.Args)
		for i, a := range spec.Args {
			if a == spec.EntryPoint {
				spec.Args[i] = real
			}
		}
		if spec.Path == spec.EntryPoint {
			spec.Path = real
		}
	}
	argv := append([]string{spec.Path}, spec.Args...)
	if err := checkExecArgs(argv, env); err != nil {
		return nil, err
	}

	j, err := newJail(dir, spec.Detached, spec.noCgroup)
	if err != nil {
		return nil, err
	}
	h := &Handle{
		jail:   j,
		dir:    dir,
		drain:  cmp.Or(spec.DrainTimeout, DefaultDrainTimeout),
		exited: make(chan struct{}),
		stdout: newCapture(spec.MaxStdout),
		stderr: newCapture(spec.MaxStderr),
	}
	if err := h.start(spec, argv, env); err != nil {
		j.failed()
		return nil, err
	}
	return h, nil
}

// start starts the child with pipes of our own rather than letting os/exec
// create them: with *os.File on all three, Cmd.Wait returns as soon as the
// child exits instead of waiting for pipe EOF, which a grandchild holding
// the pipes could delay indefinitely. We kill the group first and drain
// after.
func (h *Handle) start(spec Spec, argv, env []string) (err error) {
	var ours, theirs []*os.File
	defer func() {
		closeAll(theirs) // the child has its copies; ours would hide EOF
		if err != nil {
			closeAll(ours)
		}
	}()
	var stdoutW, stderrW, stdinR *os.File
	if h.stdoutR, stdoutW, err = os.Pipe(); err != nil {
		return fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, h.stdoutR), append(theirs, stdoutW)
	if h.stderrR, stderrW, err = os.Pipe(); err != nil {
		return fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, h.stderrR), append(theirs, stderrW)
	if len(spec.Stdin) > 0 || spec.StdinPipe {
		if stdinR, h.stdinW, err = os.Pipe(); err != nil {
			return fmt.Errorf("error creating pipe: %w", err)
		}
		ours, theirs = append(ours, h.stdinW), append(theirs, stdinR)
	}

	for attempt := 1; ; attempt++ {
		h.cmd = exec.Command(spec.Path, spec.Args...) // absolute: no PATH lookup
		h.cmd.Env = env
		h.cmd.Dir = h.dir
		h.cmd.Stdout, h.cmd.Stderr = stdoutW, stderrW
		h.cmd.SysProcAttr = sysProcAttr()
		h.cmd.SysProcAttr.Credential = spec.Credential
		h.jail.apply(h.cmd.SysProcAttr)
		// A backstop only: with *os.File streams os/exec starts no copying
		// goroutines, but should that change, a grandchild holding a pipe must
		// still not hang Wait.
		h.cmd.WaitDelay = max(spec.KillGrace+time.Second, 500*time.Millisecond)
		if stdinR != nil {
			h.cmd.Stdin = stdinR // else /dev/null: EOF at once
		}
		// Until the leader is registered, the reaper of adopted processes
		// must not take it for one of them.
		lockFork()
		// The run starts at the fork: exec and the child's own start are
		// part of it, and a child quicker than Start's return would
		// otherwise seem to take no time.
		h.startedAt = time.Now()
		err = h.cmd.Start()
		if err == nil {
			h.jail.started(h.cmd.Process.Pid)
		}
		unlockFork()
		// ETXTBSY: another goroutine forked while a binary was still open for
		// writing (golang.org/issue/22315); the window is short.
		if err == nil || !errors.Is(err, syscall.ETXTBSY) || attempt == 5 {
			break
		}
		time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
	}
	if err != nil {
		if errors.Is(err, syscall.E2BIG) {
			return errArgTooLong(envSize(argv, env), err)
		}
		if uerr := explainStartError(spec.Path, err); uerr != nil {
			return uerr
		}
		return fmt.Errorf("error starting %s: %w", spec.Path, err)
	}
	h.pid = h.cmd.Process.Pid

	go func() {
		h.reaped = waitExited(h.cmd)
		close(h.exited)
	}()
	h.io.Add(2)
	go func() { defer h.io.Done(); consume(h.stdoutR, spec.ReadStdout, h.stdout) }()
	go func() { defer h.io.Done(); consume(h.stderrR, spec.ReadStderr, h.stderr) }()
	if len(spec.Stdin) > 0 {
		h.io.Add(1)
		go func() {
			defer h.io.Done()
			// A child may exit without reading; EPIPE is its right, not our error.
			_, _ = h.stdinW.Write(spec.Stdin)
			_ = h.stdinW.Close()
		}()
	}
	return nil
}

// consume hands r to read, or captures it when read is nil.
func consume(r io.Reader, read func(io.Reader), c *capture) {
	if read != nil {
		read(r)
		return
	}
	c.readFrom(r)
}

// Pid is the child's pid, which is also its process group id.
func (h *Handle) Pid() int { return h.pid }

// StartedAt is when the child started.
func (h *Handle) StartedAt() time.Time { return h.startedAt }

// Dir is the child's work directory.
func (h *Handle) Dir() string { return h.dir }

// Exited is closed when the child has exited; Wait then returns promptly.
func (h *Handle) Exited() <-chan struct{} { return h.exited }

// Stdin is our end of the child's stdin with Spec.StdinPipe, else nil.
// Writes fail once the child is gone (EPIPE) or Wait gave up draining;
// closing it sends EOF; Wait closes it.
func (h *Handle) Stdin() io.WriteCloser {
	if h.stdinW == nil {
		return nil
	}
	return h.stdinW
}

// Terminate stops the process group: SIGTERM, then SIGKILL after grace
// unless the child exited first (0: SIGKILL at once). It returns once the
// child has exited.
func (h *Handle) Terminate(grace time.Duration) {
	if grace > 0 {
		_ = signalGroup(h.pid, syscall.SIGTERM)
		_ = signalGroup(h.pid, syscall.SIGCONT) // a stopped process cannot act on SIGTERM
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-h.exited:
		case <-timer.C:
		}
	}
	_ = signalGroup(h.pid, syscall.SIGKILL)
	<-h.exited
}

// Wait waits for the child to exit, SIGKILLs what is left of its group (no
// descendant outlives it), reaps it, finishes reading its output and
// removes its work directory. Outcome is OutcomeExited or OutcomeSignaled.
func (h *Handle) Wait() Result {
	state, exitedAt := h.reap()
	res := Result{Outcome: OutcomeExited, Pid: h.pid, StartedAt: h.startedAt, FinishedAt: exitedAt}
	h.drainPipes()
	res.ExitCode, res.Signal = exitStatus(state)
	if res.Signal != "" {
		res.Outcome = OutcomeSignaled
	}
	res.Stdout, res.StdoutTruncated = h.stdout.text("stdout")
	res.Stderr, res.StderrTruncated = h.stderr.text("stderr")
	res.CleanupErr = RemoveWorkDir(h.dir)
	return res
}

// reap runs once the child has exited: it kills what is left of the group
// and reaps the child.
func (h *Handle) reap() (_ *os.ProcessState, exitedAt time.Time) {
	<-h.exited
	// The process's end is its exit: killing what it left behind (a /proc
	// walk without a cgroup) takes longer on a busy host, and is not its run.
	exitedAt = time.Now()
	// Unless the platform had to reap it already, the child is a zombie
	// still, so its pid (the group id) is not reusable.
	_ = signalGroup(h.pid, syscall.SIGKILL)
	// Then the descendants that left the group (contain_linux.go).
	h.jail.killAll(h.pid, h.pid, h.dir)
	if !h.reaped {
		_ = h.cmd.Wait() // the status is in ProcessState; a non-zero exit is no error here
	}
	h.jail.released(h.pid)
	return h.cmd.ProcessState, exitedAt
}

// drainPipes waits for the output readers and the stdin writer, then closes
// our pipe ends. The group is dead, so EOF is imminent unless a process
// that left the group holds a pipe; we give up on it after the drain
// timeout.
func (h *Handle) drainPipes() {
	deadline := time.Now().Add(h.drain)
	_ = h.stdoutR.SetReadDeadline(deadline)
	_ = h.stderrR.SetReadDeadline(deadline)
	if h.stdinW != nil {
		_ = h.stdinW.SetWriteDeadline(deadline)
	}
	h.io.Wait()
	h.stdoutR.Close()
	h.stderrR.Close()
	if h.stdinW != nil {
		h.stdinW.Close()
	}
}

// checkExecArgs refuses, before exec, what execve would refuse with E2BIG or
// os/exec with an error that means nothing to a user.
func checkExecArgs(argv, env []string) error {
	for _, kv := range env {
		if len(kv)+1 > maxArgStrlen {
			return errArgTooLong(len(kv), nil)
		}
		if strings.IndexByte(kv, 0) >= 0 {
			name, _, _ := strings.Cut(kv, "=")
			return &userError{
				msg:  fmt.Sprintf("Parameter %s contains a NUL byte, which the environment cannot hold; set `parameter_delivery: stdin` (or `file`) in the action", name),
				kind: ErrEnvNUL,
			}
		}
	}
	for _, a := range argv {
		if len(a)+1 > maxArgStrlen {
			return fmt.Errorf("argument of %d bytes is too long for execve: %w", len(a), ErrArgTooLong)
		}
	}
	return nil
}

func errArgTooLong(size int, cause error) error {
	return &userError{
		msg:   fmt.Sprintf("Parameters are too large for the environment (%d bytes); set `parameter_delivery: stdin` (or `file`) in the action", size),
		kind:  ErrArgTooLong,
		cause: cause,
	}
}

// envSize is what argv and env occupy in execve's accounting (each string
// and its NUL; the pointer arrays are left out).
func envSize(argv, env []string) int {
	n := 0
	for _, s := range argv {
		n += len(s) + 1
	}
	for _, s := range env {
		n += len(s) + 1
	}
	return n
}

func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

func hasKey(kv, key string) bool {
	return strings.HasPrefix(kv, key) && len(kv) > len(key) && kv[len(key)] == '='
}

// RemoveWorkDir removes a work directory even when the child left
// directories without write or search permission in it.
func RemoveWorkDir(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("error removing work directory: %w", err)
	}
	return nil
}
