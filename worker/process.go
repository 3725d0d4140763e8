package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
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
	// means an empty environment. Run appends TMPDIR (replacing any given).
	Env []string
	// Stdin is written to the child's stdin, which is then closed (EOF). A
	// child that does not read it is not waited for.
	Stdin []byte
	// ParameterFile, when non-nil, is written to a 0400 file in the work
	// directory and ATTUNE_PARAMETER_FILE=<its absolute path> is appended to
	// Env.
	ParameterFile []byte
	// MaxStdout and MaxStderr bound the stored bytes per stream, truncation
	// notice included.
	MaxStdout, MaxStderr int
	// Timeout is counted from process start; 0 means none.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL to the process group
	// on timeout or cancel; 0 means SIGKILL at once.
	KillGrace time.Duration
	// OnStart, if set, is called on Run's goroutine right after the process
	// started (the timeout is already running, so keep it short).
	OnStart func(pid int, at time.Time)
	// OnOutput, if set, is called on Run's goroutine every OutputEvery
	// while the process runs and its output grew, with what is stored so
	// far. It must not block: Run waits on nothing else meanwhile.
	OnOutput    func(stdout, stderr string)
	OutputEvery time.Duration
	// WorkDirPrefix names the private work directory made under the
	// worker's TMPDIR (a random suffix follows). Defaults to "attune-exec-".
	WorkDirPrefix string
}

// Outcome says how a Run ended.
type Outcome int

const (
	// OutcomeExited: the process exited by itself; see ExitCode.
	OutcomeExited Outcome = iota
	// OutcomeSignaled: the process was killed by a signal we did not send.
	OutcomeSignaled
	// OutcomeTimedOut: Spec.Timeout expired and we killed the process group.
	OutcomeTimedOut
	// OutcomeCanceled: the context was cancelled and we killed the process
	// group (or never started it).
	OutcomeCanceled
	// OutcomeStartFailed: the process never started; see StartErr.
	OutcomeStartFailed
)

func (o Outcome) String() string {
	switch o {
	case OutcomeExited:
		return "exited"
	case OutcomeSignaled:
		return "signaled"
	case OutcomeTimedOut:
		return "timed out"
	case OutcomeCanceled:
		return "canceled"
	case OutcomeStartFailed:
		return "start failed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
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

// drainTimeout bounds how long Run reads output, and feeds stdin, after the
// process group is dead. Only a descendant that left the group (setsid) can
// still hold the pipes then; we do not wait for it.
const drainTimeout = 500 * time.Millisecond

// parameterFileName is the name of Spec.ParameterFile in the work directory.
const parameterFileName = "parameters"

// Run starts the process described by spec and waits for it. On timeout or
// when ctx is cancelled it sends SIGTERM to the process group, then SIGKILL
// after spec.KillGrace; whenever the process ends, what is left of its group
// is SIGKILLed, so no descendant outlives the execution.
func Run(ctx context.Context, spec Spec) (res Result) {
	res.ExitCode = -1
	if ctx.Err() != nil {
		res.Outcome, res.Cause, res.FinishedAt = OutcomeCanceled, context.Cause(ctx), time.Now()
		return res
	}
	fail := func(err error) Result {
		res.Outcome, res.StartErr, res.FinishedAt = OutcomeStartFailed, err, time.Now()
		return res
	}
	if !filepath.IsAbs(spec.Path) {
		// The child runs in its work dir, where a relative path means nothing.
		return fail(fmt.Errorf("binary path %q is not absolute", spec.Path))
	}

	prefix := spec.WorkDirPrefix
	if prefix == "" {
		prefix = "attune-exec-"
	}
	dir, err := os.MkdirTemp("", prefix) // 0700
	if err != nil {
		return fail(fmt.Errorf("error creating work directory: %w", err))
	}
	defer func() { res.CleanupErr = removeWorkDir(dir) }()

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
			return fail(fmt.Errorf("error writing parameter file: %w", err))
		}
		env = append(env, "ATTUNE_PARAMETER_FILE="+path)
	}
	argv := append([]string{spec.Path}, spec.Args...)
	if err := checkExecArgs(argv, env); err != nil {
		return fail(err)
	}

	p, err := startProcess(spec, argv, env, dir)
	if err != nil {
		return fail(err)
	}
	res.Pid, res.StartedAt = p.pid, p.startedAt

	// The timer counts from the start of the process (SPEC §6).
	var expired <-chan time.Time
	if spec.Timeout > 0 {
		timer := time.NewTimer(spec.Timeout - time.Since(p.startedAt))
		defer timer.Stop()
		expired = timer.C
	}
	if spec.OnStart != nil {
		spec.OnStart(p.pid, p.startedAt)
	}

	var progress <-chan time.Time
	if spec.OnOutput != nil && spec.OutputEvery > 0 {
		ticker := time.NewTicker(spec.OutputEvery)
		defer ticker.Stop()
		progress = ticker.C
	}
	var seenOut, seenErr int64

	res.Outcome = OutcomeExited
wait:
	for {
		select {
		case <-p.exited:
		case <-expired:
			res.Outcome = OutcomeTimedOut
			p.terminate(spec.KillGrace)
		case <-ctx.Done():
			res.Outcome, res.Cause = OutcomeCanceled, context.Cause(ctx)
			p.terminate(spec.KillGrace)
		case <-progress:
			out, nOut, grewOut := p.stdout.snapshot("stdout", seenOut)
			errText, nErr, grewErr := p.stderr.snapshot("stderr", seenErr)
			if grewOut || grewErr {
				if !grewOut {
					out, _ = p.stdout.text("stdout")
				}
				if !grewErr {
					errText, _ = p.stderr.text("stderr")
				}
				seenOut, seenErr = nOut, nErr
				spec.OnOutput(out, errText)
			}
			continue
		}
		break wait
	}

	state := p.reap()
	res.FinishedAt = time.Now()
	p.drain()
	res.ExitCode, res.Signal = exitStatus(state)
	if res.Signal != "" && res.Outcome == OutcomeExited {
		res.Outcome = OutcomeSignaled
	}
	res.Stdout, res.StdoutTruncated = p.stdout.text("stdout")
	res.Stderr, res.StderrTruncated = p.stderr.text("stderr")
	return res
}

// group is a started child that leads its own process group; actions and
// sensors stop it the same way.
type group struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed when the child has exited (not yet reaped)
}

// process is a started action child and the goroutines that serve it.
type process struct {
	group
	startedAt time.Time

	stdout, stderr   *capture
	stdoutR, stderrR *os.File // our ends of the output pipes
	stdinW           *os.File // our end of the stdin pipe, nil without Stdin
	io               sync.WaitGroup
}

// startProcess starts the child with pipes of our own rather than letting
// os/exec create them: with *os.File on all three, Cmd.Wait returns as soon
// as the child exits instead of waiting for pipe EOF, which a grandchild
// holding the pipes could delay indefinitely. We kill the group first and
// drain after.
func startProcess(spec Spec, argv, env []string, dir string) (_ *process, err error) {
	p := &process{
		group:  group{exited: make(chan struct{})},
		stdout: newCapture(spec.MaxStdout),
		stderr: newCapture(spec.MaxStderr),
	}
	var ours, theirs []*os.File
	defer func() {
		closeAll(theirs) // the child has its copies; ours would hide EOF
		if err != nil {
			closeAll(ours)
		}
	}()
	var stdoutW, stderrW, stdinR *os.File
	if p.stdoutR, stdoutW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, p.stdoutR), append(theirs, stdoutW)
	if p.stderrR, stderrW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, p.stderrR), append(theirs, stderrW)
	if len(spec.Stdin) > 0 {
		if stdinR, p.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("error creating pipe: %w", err)
		}
		ours, theirs = append(ours, p.stdinW), append(theirs, stdinR)
	}

	for attempt := 1; ; attempt++ {
		p.cmd = exec.Command(spec.Path, spec.Args...) // absolute: no PATH lookup
		p.cmd.Env = env
		p.cmd.Dir = dir
		p.cmd.Stdout, p.cmd.Stderr = stdoutW, stderrW
		p.cmd.SysProcAttr = sysProcAttr()
		// A backstop only: with *os.File streams os/exec starts no copying
		// goroutines, but should that change, a grandchild holding a pipe must
		// still not hang Wait.
		p.cmd.WaitDelay = max(spec.KillGrace+time.Second, 500*time.Millisecond)
		if stdinR != nil {
			p.cmd.Stdin = stdinR // else /dev/null: EOF at once
		}
		err = p.cmd.Start()
		// ETXTBSY: another goroutine forked while a binary was still open for
		// writing (golang.org/issue/22315); the window is short.
		if err == nil || !errors.Is(err, syscall.ETXTBSY) || attempt == 5 {
			break
		}
		time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
	}
	if err != nil {
		if errors.Is(err, syscall.E2BIG) {
			return nil, errArgTooLong(envSize(argv, env), err)
		}
		if uerr := explainStartError(spec.Path, err); uerr != nil {
			return nil, uerr
		}
		return nil, fmt.Errorf("error starting %s: %w", spec.Path, err)
	}
	p.startedAt = time.Now()
	p.pid = p.cmd.Process.Pid

	go func() {
		_ = waitExited(p.pid) // ECHILD cannot happen: only reap reaps
		close(p.exited)
	}()
	p.io.Add(2)
	go func() { defer p.io.Done(); p.stdout.readFrom(p.stdoutR) }()
	go func() { defer p.io.Done(); p.stderr.readFrom(p.stderrR) }()
	if p.stdinW != nil {
		p.io.Add(1)
		go func() {
			defer p.io.Done()
			// A child may exit without reading; EPIPE is its right, not our error.
			_, _ = p.stdinW.Write(spec.Stdin)
			_ = p.stdinW.Close()
		}()
	}
	return p, nil
}

// terminate stops the process group: SIGTERM, then SIGKILL after grace
// unless the child exited first. It returns once the child has exited.
func (p *group) terminate(grace time.Duration) {
	if grace > 0 {
		_ = signalGroup(p.pid, syscall.SIGTERM)
		_ = signalGroup(p.pid, syscall.SIGCONT) // a stopped process cannot act on SIGTERM
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-p.exited:
		case <-timer.C:
		}
	}
	_ = signalGroup(p.pid, syscall.SIGKILL)
	<-p.exited
}

// reap runs once the child has exited: it kills what is left of the group
// and reaps the child.
func (p *group) reap() *os.ProcessState {
	<-p.exited
	// The child is a zombie still, so its pid (the group id) is not reusable.
	_ = signalGroup(p.pid, syscall.SIGKILL)
	_ = p.cmd.Wait() // the status is in ProcessState; a non-zero exit is no error here
	return p.cmd.ProcessState
}

// drain waits for the output readers and the stdin writer, then closes our
// pipe ends. The group is dead, so EOF is imminent unless a process that left
// the group holds a pipe; we give up on it after drainTimeout.
func (p *process) drain() {
	deadline := time.Now().Add(drainTimeout)
	_ = p.stdoutR.SetReadDeadline(deadline)
	_ = p.stderrR.SetReadDeadline(deadline)
	if p.stdinW != nil {
		_ = p.stdinW.SetWriteDeadline(deadline)
	}
	p.io.Wait()
	p.stdoutR.Close()
	p.stderrR.Close()
	if p.stdinW != nil {
		p.stdinW.Close()
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

// removeWorkDir removes the work directory even when the child left
// directories without write or search permission in it.
func removeWorkDir(dir string) error {
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
