package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type procBundle struct {
	dir     string // private to the test
	pidfile string // for ATTUNE_ACTION_PIDFILE
}

func setupProc(t *testing.T) *procBundle {
	t.Helper()
	dir := t.TempDir()
	return &procBundle{dir: dir, pidfile: filepath.Join(dir, "pids")}
}

func TestRun(t *testing.T) {
	t.Parallel()

	ctx := context.Background()

	t.Run("ExitCodeAndStderr", func(t *testing.T) {
		t.Parallel()

		res := Run(ctx, helperSpec(t, "exit3"))
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, 3, res.ExitCode)
		require.Empty(t, res.Signal)
		require.Empty(t, res.Stdout)
		require.Equal(t, "starting\nworking\nboom: last line\n", res.Stderr)
		require.False(t, res.StderrTruncated)
		require.NoError(t, res.StartErr)
		require.NoError(t, res.CleanupErr)
	})

	t.Run("StdoutAndOnStart", func(t *testing.T) {
		t.Parallel()

		var startedPid int
		var startedAt time.Time
		spec := helperSpec(t, "json")
		spec.OnStart = func(pid int, at time.Time) { startedPid, startedAt = pid, at }
		before := time.Now()
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, 0, res.ExitCode)
		require.Equal(t, "{\"ok\": true, \"n\": 3}\n", res.Stdout)
		require.Positive(t, res.Pid)
		require.Equal(t, res.Pid, startedPid)
		require.Equal(t, res.StartedAt, startedAt)
		require.False(t, res.StartedAt.Before(before))
		require.False(t, res.FinishedAt.Before(res.StartedAt))
	})

	t.Run("Signaled", func(t *testing.T) {
		t.Parallel()

		for _, tt := range []struct {
			signal string
			code   int
		}{
			{"", 128 + 11}, // SIGSEGV by default
			{"SIGABRT", 128 + 6},
			{"SIGKILL", 128 + 9},
		} {
			res := Run(ctx, helperSpec(t, "selfkill", signalEnv+"="+tt.signal))
			want := tt.signal
			if want == "" {
				want = "SIGSEGV"
			}
			require.Equal(t, OutcomeSignaled, res.Outcome, want)
			require.Equal(t, tt.code, res.ExitCode, want)
			require.Equal(t, want, res.Signal)
		}
	})

	t.Run("EnvironmentIsExactlyGivenPlusTMPDIR", func(t *testing.T) {
		t.Parallel()

		require.NotEmpty(t, os.Getenv("PATH"), "the test needs a PATH to prove it is not inherited")
		spec := helperSpec(t, "env", "ATTUNE_CANARY=tweet", "EMPTY=", "TMPDIR=/elsewhere", "LANG=C.UTF-8")
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)

		var got map[string]string
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &got))
		tmpdir := got["TMPDIR"]
		require.True(t, filepath.IsAbs(tmpdir), tmpdir)
		require.NotEqual(t, "/elsewhere", tmpdir)
		require.Equal(t, map[string]string{
			helperEnv:       "env",
			"ATTUNE_CANARY": "tweet",
			"EMPTY":         "",
			"LANG":          "C.UTF-8",
			"TMPDIR":        tmpdir,
		}, got)
	})

	t.Run("NilEnvironmentIsEmpty", func(t *testing.T) {
		t.Parallel()

		res := Run(ctx, Spec{Path: "/usr/bin/env", MaxStdout: 4096, MaxStderr: 4096})
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
		require.Regexp(t, `^TMPDIR=/\S+\n$`, res.Stdout)
	})

	t.Run("StdinDeliveredThenEOF", func(t *testing.T) {
		t.Parallel()

		input := []byte(strings.Repeat("line of input\n", 100_000)) // 1.4 MB, far more than a pipe holds
		spec := helperSpec(t, "stdin")
		spec.MaxStdout = 2 << 20
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Empty(t, res.Stdout, "no Stdin: /dev/null, EOF at once")

		spec.Stdin = input
		res = Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
		require.Equal(t, 0, res.ExitCode)
		require.Equal(t, string(input), res.Stdout)
	})

	t.Run("StdinNotRead", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "json")
		spec.Stdin = make([]byte, 8<<20)
		start := time.Now()
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, 0, res.ExitCode)
		require.Less(t, time.Since(start), 5*time.Second)
	})

	t.Run("ParameterFile", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "paramfile", "ATTUNE_PARAMETER_FILE=/stale/path")
		spec.ParameterFile = []byte("name: 'world'\ncount: '3'\n")
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)

		var got struct{ Path, Content, Mode, Dir string }
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &got))
		require.Equal(t, string(spec.ParameterFile), got.Content)
		require.Equal(t, "0400", got.Mode)
		require.Equal(t, got.Dir, filepath.Dir(got.Path), "the file lives in the work dir")
		require.NoFileExists(t, got.Path)
		require.NoDirExists(t, got.Dir)
	})

	t.Run("WorkDirPrivateAndRemoved", func(t *testing.T) {
		t.Parallel()

		res := Run(ctx, helperSpec(t, "pwd"))
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)

		var got struct{ Wd, Tmpdir, Mode string }
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &got))
		require.Equal(t, got.Wd, got.Tmpdir)
		require.Equal(t, "0700", got.Mode)
		require.NoDirExists(t, got.Wd)
	})

	t.Run("WorkDirRemovedAfterTimeout", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		spec := helperSpec(t, "hang-grandchild", pidfileEnv+"="+b.pidfile)
		spec.Timeout = time.Second
		var workDir string
		spec.OnStart = func(pid int, _ time.Time) {
			workDir, _ = os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		}
		res := Run(ctx, spec)
		require.Equal(t, OutcomeTimedOut, res.Outcome)
		require.NoError(t, res.CleanupErr)
		require.Contains(t, workDir, "attune-exec-")
		require.NoDirExists(t, workDir)
	})

	t.Run("WorkDirRemovedDespiteReadOnlyDirs", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "readonly")
		var workDir string
		spec.OnStart = func(pid int, _ time.Time) {
			workDir, _ = os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		}
		res := Run(ctx, spec)
		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		require.NoError(t, res.CleanupErr)
		require.Contains(t, workDir, "attune-exec-")
		require.NoDirExists(t, workDir)
	})

	t.Run("Script", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		script := filepath.Join(b.dir, "hello.sh")
		require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho \"hello $1 from $(pwd)\"\n"), 0o755))
		res := Run(ctx, Spec{Path: script, Args: []string{"world"}, MaxStdout: 4096, MaxStderr: 4096})
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
		require.Regexp(t, `^hello world from /\S+/attune-exec-o\d+\.\d+-\d+\n$`, res.Stdout)

		// Interpreter + script, as the lead runs shell actions.
		res = Run(ctx, Spec{Path: "/bin/sh", Args: []string{script, "again"}, MaxStdout: 4096, MaxStderr: 4096})
		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
		require.Contains(t, res.Stdout, "hello again from ")
	})

	t.Run("CanceledBeforeStart", func(t *testing.T) {
		t.Parallel()

		cause := errors.New("operator said no")
		cctx, cancel := context.WithCancelCause(ctx)
		cancel(cause)
		res := Run(cctx, helperSpec(t, "json"))
		require.Equal(t, OutcomeCanceled, res.Outcome)
		require.ErrorIs(t, res.Cause, cause)
		require.Equal(t, -1, res.ExitCode)
		require.Zero(t, res.Pid)
	})
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()

	ctx := context.Background()

	t.Run("SIGTERMKillsTheGroup", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		spec := helperSpec(t, "hang-grandchild", pidfileEnv+"="+b.pidfile)
		spec.Timeout = time.Second // ample for the helper and its grandchild to start
		spec.KillGrace = 5 * time.Second
		res := Run(ctx, spec)
		pids := readPidfile(t, b.pidfile)
		require.Len(t, pids, 2)
		gone := waitGone(t, 5*time.Second, pids...)

		require.Equal(t, OutcomeTimedOut, res.Outcome)
		require.Equal(t, "SIGTERM", res.Signal, "hang dies of SIGTERM, no need to wait for the grace")
		require.Equal(t, 128+15, res.ExitCode)
		elapsed := res.FinishedAt.Sub(res.StartedAt)
		require.GreaterOrEqual(t, elapsed, spec.Timeout)
		require.Less(t, elapsed, spec.Timeout+spec.KillGrace)
		t.Logf("timeout to all processes gone: %s (reaped after %s, grandchild gone %s later)",
			res.FinishedAt.Add(gone).Sub(res.StartedAt.Add(spec.Timeout)), elapsed-spec.Timeout, gone)
	})

	t.Run("SIGKILLAfterKillGrace", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		spec := helperSpec(t, "ignore-term", pidfileEnv+"="+b.pidfile, grandchildEnv+"=ignore-term")
		spec.Timeout = time.Second
		spec.KillGrace = 500 * time.Millisecond
		res := Run(ctx, spec)
		pids := readPidfile(t, b.pidfile)
		require.Len(t, pids, 2)
		waitGone(t, 5*time.Second, pids...)

		require.Equal(t, OutcomeTimedOut, res.Outcome)
		require.Equal(t, "SIGKILL", res.Signal)
		require.Equal(t, 128+9, res.ExitCode)
		elapsed := res.FinishedAt.Sub(res.StartedAt)
		require.GreaterOrEqual(t, elapsed, spec.Timeout+spec.KillGrace)
		require.Less(t, elapsed, spec.Timeout+spec.KillGrace+3*time.Second)
		t.Logf("timeout %s + grace %s: reaped after %s", spec.Timeout, spec.KillGrace, elapsed)
	})

	t.Run("ZeroKillGraceIsSIGKILLAtOnce", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		spec := helperSpec(t, "ignore-term", pidfileEnv+"="+b.pidfile)
		spec.Timeout = time.Second
		spec.KillGrace = 0
		res := Run(ctx, spec)
		waitGone(t, 5*time.Second, readPidfile(t, b.pidfile)...)

		require.Equal(t, OutcomeTimedOut, res.Outcome)
		require.Equal(t, "SIGKILL", res.Signal)
		elapsed := res.FinishedAt.Sub(res.StartedAt)
		require.GreaterOrEqual(t, elapsed, spec.Timeout)
		require.Less(t, elapsed, spec.Timeout+time.Second)
	})
}

func TestRunCancel(t *testing.T) {
	t.Parallel()

	// runUntilReady starts Run in a goroutine and returns once the helper
	// wrote its pidfile (its signal dispositions are in place).
	runUntilReady := func(t *testing.T, ctx context.Context, spec Spec, pidfile string) (<-chan Result, []int) {
		t.Helper()
		done := make(chan Result, 1)
		go func() { done <- Run(ctx, spec) }()
		return done, waitPidfile(t, pidfile)
	}

	t.Run("KillsTheGroup", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		cause := errors.New("operator canceled")
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		spec := helperSpec(t, "hang-grandchild", pidfileEnv+"="+b.pidfile)
		done, pids := runUntilReady(t, ctx, spec, b.pidfile)
		require.Len(t, pids, 2)

		cancel(cause)
		res := <-done
		waitGone(t, 5*time.Second, pids...)
		require.Equal(t, OutcomeCanceled, res.Outcome)
		require.ErrorIs(t, res.Cause, cause)
		require.Equal(t, "SIGTERM", res.Signal)
		require.Equal(t, 128+15, res.ExitCode)
	})

	t.Run("SIGKILLAfterKillGrace", func(t *testing.T) {
		t.Parallel()

		b := setupProc(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		spec := helperSpec(t, "ignore-term", pidfileEnv+"="+b.pidfile, grandchildEnv+"=ignore-term")
		spec.KillGrace = 500 * time.Millisecond
		done, pids := runUntilReady(t, ctx, spec, b.pidfile)

		canceledAt := time.Now()
		cancel()
		res := <-done
		waitGone(t, 5*time.Second, pids...)
		require.Equal(t, OutcomeCanceled, res.Outcome)
		require.ErrorIs(t, res.Cause, context.Canceled)
		require.Equal(t, "SIGKILL", res.Signal)
		require.GreaterOrEqual(t, res.FinishedAt.Sub(canceledAt), spec.KillGrace)
		require.Less(t, res.FinishedAt.Sub(canceledAt), spec.KillGrace+3*time.Second)
	})
}

func TestRunGrandchildren(t *testing.T) {
	t.Parallel()

	ctx := context.Background()

	t.Run("KilledWhenTheChildExits", func(t *testing.T) {
		t.Parallel()

		// The grandchild holds stdout open and would sleep forever: it must
		// neither delay Run nor outlive it.
		b := setupProc(t)
		start := time.Now()
		res := Run(ctx, helperSpec(t, "orphan", pidfileEnv+"="+b.pidfile))
		returned := time.Now()
		pids := readPidfile(t, b.pidfile)
		require.Len(t, pids, 2)
		waitGone(t, 5*time.Second, pids...)

		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, 0, res.ExitCode)
		require.Equal(t, "bye\n", res.Stdout)
		require.Less(t, returned.Sub(res.FinishedAt), DefaultDrainTimeout, "output must end with the group kill, not the drain timeout")
		t.Logf("Run took %s, of which %s after the child was reaped", returned.Sub(start), returned.Sub(res.FinishedAt))
	})

	t.Run("EscapedDoesNotHangRun", func(t *testing.T) {
		t.Parallel()

		// Without containment beyond the group (TestContainment has it), a
		// grandchild that left the process group (setsid) is out of reach of
		// the group kill; Run gives up on its pipe after DefaultDrainTimeout.
		b := setupProc(t)
		spec := helperSpec(t, "escape", pidfileEnv+"="+b.pidfile)
		spec.Detached = true
		res := Run(ctx, spec)
		returned := time.Now()
		pids := readPidfile(t, b.pidfile)
		require.Len(t, pids, 2)
		t.Cleanup(func() {
			_ = syscall.Kill(pids[1], syscall.SIGKILL)
			waitGone(t, 5*time.Second, pids[1])
		})

		require.Equal(t, OutcomeExited, res.Outcome)
		require.Equal(t, "bye\n", res.Stdout)
		require.GreaterOrEqual(t, returned.Sub(res.FinishedAt), DefaultDrainTimeout)
		require.Less(t, returned.Sub(res.FinishedAt), DefaultDrainTimeout+2*time.Second)
		require.True(t, alive(pids[1]), "the escaped grandchild is beyond the group kill")
	})
}

// TestRunChildDiesWithWorker kills a worker (the test binary in "worker"
// mode, running Run) with SIGKILL and expects the kernel to kill its child
// (Pdeathsig).
func TestRunChildDiesWithWorker(t *testing.T) {
	t.Parallel()

	b := setupProc(t)
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self)
	cmd.Env = []string{helperEnv + "=worker", pidfileEnv + "=" + b.pidfile, "TMPDIR=" + b.dir}
	require.NoError(t, cmd.Start())
	pids := waitPidfile(t, b.pidfile)
	require.Len(t, pids, 1)

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	waitGone(t, 5*time.Second, pids[0])
}

func TestRunStartFailures(t *testing.T) {
	t.Parallel()

	b := setupProc(t)
	write := func(name string, content []byte, mode os.FileMode) string {
		path := filepath.Join(b.dir, name)
		require.NoError(t, os.WriteFile(path, content, mode))
		return path
	}
	missing := filepath.Join(b.dir, "missing")
	notExec := write("not-exec", []byte("#!/bin/sh\n"), 0o644)
	garbage := write("garbage", []byte("just some text\n"), 0o755)
	arch, machine := otherArch()
	foreign := write("foreign", elfHeader(machine, 0, 2), 0o755)
	noInterp := write("no-interp", []byte("#!/nonexistent/interpreter -x\n"), 0o755)
	bigValue := "ATTUNE_ACTION_BLOB=" + strings.Repeat("x", 200<<10)
	var manyValues []string
	for i := range 64 {
		manyValues = append(manyValues, fmt.Sprintf("ATTUNE_ACTION_P%d=%s", i, strings.Repeat("y", 120<<10)))
	}

	for _, tt := range []struct {
		name    string
		spec    Spec
		want    string
		wantErr error
	}{
		{"Missing", Spec{Path: missing}, "Binary not found: " + missing, ErrBinaryNotFound},
		{"NotExecutable", Spec{Path: notExec}, "Binary is not executable: " + notExec, ErrNotExecutable},
		{"Directory", Spec{Path: b.dir}, "Binary is not executable: " + b.dir, ErrNotExecutable},
		{"NoHeader", Spec{Path: garbage}, "Binary is not a program this machine can run: " + garbage + " (no ELF header and no #! line)", ErrNotProgram},
		{"ForeignELF", Spec{Path: foreign}, fmt.Sprintf("Binary is built for %s (ELF), but this worker runs ", arch), ErrWrongArch},
		{"MissingInterpreter", Spec{Path: noInterp}, "Interpreter not found: /nonexistent/interpreter (named by " + noInterp + "); install it or fix the #! line", ErrInterpreterNotFound},
		{"EnvValueTooLong", Spec{Path: "/bin/true", Env: []string{bigValue}},
			fmt.Sprintf("Parameters are too large for the environment (%d bytes); set `parameter_delivery: stdin` (or `file`) in the action", len(bigValue)), ErrArgTooLong},
		{"EnvTooLarge", Spec{Path: "/bin/true", Env: manyValues}, "Parameters are too large for the environment (", ErrArgTooLong},
		{"EnvNUL", Spec{Path: "/bin/true", Env: []string{"ATTUNE_ACTION_X=a\x00b"}}, "Parameter ATTUNE_ACTION_X contains a NUL byte", ErrEnvNUL},
		{"RelativePath", Spec{Path: "bin/true"}, `binary path "bin/true" is not absolute`, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			res := Run(context.Background(), tt.spec)
			require.Equal(t, OutcomeStartFailed, res.Outcome)
			require.Equal(t, -1, res.ExitCode)
			require.Zero(t, res.Pid)
			require.Error(t, res.StartErr)
			require.True(t, strings.HasPrefix(res.StartErr.Error(), tt.want), "got %q\nwant prefix %q", res.StartErr, tt.want)
			if tt.wantErr != nil {
				require.ErrorIs(t, res.StartErr, tt.wantErr)
			}
		})
	}
}

func BenchmarkRunTrue(b *testing.B) {
	spec := Spec{Path: "/bin/true", MaxStdout: 1 << 20, MaxStderr: 1 << 20, Timeout: 10 * time.Second, KillGrace: time.Second}
	for b.Loop() {
		if res := Run(context.Background(), spec); res.Outcome != OutcomeExited || res.ExitCode != 0 {
			b.Fatalf("unexpected result: %+v", res)
		}
	}
}

func TestOutput(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	out, err := Output(ctx, helperSpec(t, "json"))
	require.NoError(t, err)
	require.Equal(t, "{\"ok\": true, \"n\": 3}\n", out)

	out, err = Output(ctx, helperSpec(t, "exit3"))
	require.EqualError(t, err, "exited with code 3")
	require.Equal(t, "starting\nworking\nboom: last line\n", out, "stderr follows stdout")

	spec := helperSpec(t, "json")
	spec.MaxStdout, spec.MaxStderr = 0, 0
	out, err = Output(ctx, spec)
	require.NoError(t, err)
	require.Equal(t, "{\"ok\": true, \"n\": 3}\n", out, "zero limits mean the default, not nothing")

	missing := filepath.Join(t.TempDir(), "missing")
	_, err = Output(ctx, Spec{Path: missing})
	require.ErrorIs(t, err, ErrBinaryNotFound)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = Output(cctx, helperSpec(t, "json"))
	require.ErrorIs(t, err, context.Canceled)
}

func TestResultErr(t *testing.T) {
	t.Parallel()

	res := Run(context.Background(), helperSpec(t, "selfkill", signalEnv+"=SIGABRT"))
	require.EqualError(t, res.Err(), "killed by signal SIGABRT (exit code 134)")

	spec := helperSpec(t, "hang")
	spec.Timeout, spec.KillGrace = 100*time.Millisecond, 0
	require.EqualError(t, Run(context.Background(), spec).Err(), "timed out")
}
