package process

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStart covers what Start offers beyond Run: a stdin kept open for the
// caller, output handed to the caller's readers, Terminate and Wait called
// by the caller, and a drain timeout of its choosing (the sensor's needs).
func TestStart(t *testing.T) {
	t.Parallel()

	t.Run("StdinPipeAndReaders", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "stdin")
		spec.StdinPipe = true
		var got bytes.Buffer // written by the reader, read after Wait
		spec.ReadStdout = func(r io.Reader) { _, _ = io.Copy(&got, r) }
		h, err := Start(spec)
		require.NoError(t, err)
		_, err = io.WriteString(h.Stdin(), "first\n")
		require.NoError(t, err)
		_, err = io.WriteString(h.Stdin(), "second\n")
		require.NoError(t, err)
		require.NoError(t, h.Stdin().Close()) // EOF: the helper exits
		res := h.Wait()

		require.Equal(t, OutcomeExited, res.Outcome, res.Stderr)
		require.Equal(t, 0, res.ExitCode)
		require.Equal(t, "first\nsecond\n", got.String())
		require.Empty(t, res.Stdout, "a stream given to a reader is not captured")
		require.NoDirExists(t, h.Dir())
	})

	t.Run("TerminateThenWait", func(t *testing.T) {
		t.Parallel()

		pidfile := filepath.Join(t.TempDir(), "pids")
		h, err := Start(helperSpec(t, "hang-grandchild", pidfileEnv+"="+pidfile))
		require.NoError(t, err)
		pids := waitPidfile(t, pidfile)
		require.Len(t, pids, 2)
		require.Equal(t, h.Pid(), pids[0])
		select {
		case <-h.Exited():
			t.Fatal("exited before Terminate")
		default:
		}

		h.Terminate(5 * time.Second)
		<-h.Exited() // Terminate returns once the child exited
		res := h.Wait()
		waitGone(t, 5*time.Second, pids...)
		require.Equal(t, OutcomeSignaled, res.Outcome)
		require.Equal(t, "SIGTERM", res.Signal)
		require.Equal(t, 128+15, res.ExitCode)
		require.Equal(t, h.StartedAt(), res.StartedAt)
		require.NoDirExists(t, h.Dir())
	})

	t.Run("DrainTimeout", func(t *testing.T) {
		t.Parallel()

		// The escaped grandchild holds stdout: the reader gets its error
		// after DrainTimeout, not at EOF.
		pidfile := filepath.Join(t.TempDir(), "pids")
		spec := helperSpec(t, "escape", pidfileEnv+"="+pidfile)
		spec.DrainTimeout = 200 * time.Millisecond
		spec.Detached = true // else the grandchild dies with the child
		var readErr error
		spec.ReadStdout = func(r io.Reader) { _, readErr = io.Copy(io.Discard, r) }
		h, err := Start(spec)
		require.NoError(t, err)
		<-h.Exited()
		before := time.Now()
		res := h.Wait()
		waited := time.Since(before)
		pids := readPidfile(t, pidfile)
		t.Cleanup(func() {
			_ = syscall.Kill(pids[1], syscall.SIGKILL)
			waitGone(t, 5*time.Second, pids[1])
		})

		require.Equal(t, OutcomeExited, res.Outcome)
		require.ErrorIs(t, readErr, os.ErrDeadlineExceeded)
		require.GreaterOrEqual(t, waited, spec.DrainTimeout-50*time.Millisecond)
		require.Less(t, waited, DefaultDrainTimeout, "the spec's drain, not the default")
	})

	t.Run("StdinAndStdinPipeExclude", func(t *testing.T) {
		t.Parallel()

		spec := helperSpec(t, "stdin")
		spec.Stdin, spec.StdinPipe = []byte("x"), true
		_, err := Start(spec)
		require.Error(t, err)
	})

	t.Run("NoStdinPipe", func(t *testing.T) {
		t.Parallel()

		h, err := Start(helperSpec(t, "json"))
		require.NoError(t, err)
		require.Nil(t, h.Stdin())
		require.Equal(t, "{\"ok\": true, \"n\": 3}\n", h.Wait().Stdout)
	})
}
