package packs

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProblemError(t *testing.T) {
	t.Parallel()

	require.Equal(t, `packs/x/actions/a.yaml:12: unknown runner_type "ruby"; use native, shell, python or node`,
		Problem{File: "packs/x/actions/a.yaml", Line: 12, Msg: `unknown runner_type "ruby"; use native, shell, python or node`}.Error())
	require.Equal(t, "packs/x/pack.yaml: pack.yaml not found", Problem{File: "packs/x/pack.yaml", Msg: "pack.yaml not found"}.Error())
	require.Equal(t, "a.yaml:3: warning: entry point missing", Problem{File: "a.yaml", Line: 3, Msg: "entry point missing", Warning: true}.Error())

	ps := []Problem{{File: "a.yaml", Line: 1, Msg: "bad"}, {File: "b.yaml", Msg: "worse"}}
	require.NoError(t, AsError(nil))
	require.NoError(t, AsError([]Problem{{File: "a", Msg: "w", Warning: true}}))
	err := AsError(ps)
	require.EqualError(t, err, "a.yaml:1: bad\nb.yaml: worse")
	var le *LoadError
	require.ErrorAs(t, err, &le)
	var p Problem
	require.ErrorAs(t, err, &p, "Unwrap exposes each problem")
	require.Equal(t, ps[0], p)
}
