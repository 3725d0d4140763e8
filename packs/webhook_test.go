package packs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWebhookRuleParams(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		params, want string
	}{
		"Good":          {"path: github/push\n  secret: gh_secret", ""},
		"NoSecret":      {"path: open", ""},
		"NoPath":        {"secret: gh_secret", "needs path"},
		"BadPath":       {"path: ../etc", "path \"../etc\" is invalid"},
		"EmptySegment":  {"path: a//b", "is invalid"},
		"SecretSpaces":  {"path: a\n  secret: my secret", "not a secret name"},
		"SecretNumber":  {"path: a\n  secret: 42", "not a secret name"},
		"SecretLeading": {"path: a\n  secret: 1abc", "not a secret name"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			files := map[string]string{
				"pack.yaml":       "ref: w\nlabel: W\ndescription: d\nversion: 1.0.0\n",
				"actions/a.yaml":  "name: a\nref: w.a\nrunner_type: shell\nentry_point: a.sh\n",
				"actions/a.sh":    "#!/bin/sh\n",
				"rules/hook.yaml": "name: hook\nref: w.hook\ntrigger_ref: core.webhook\naction_ref: w.a\ntrigger_params:\n  " + tc.params + "\n",
			}
			for n, c := range files {
				require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(c), 0o755))
			}
			_, problems := Load(dir)
			var errs []string
			for _, p := range problems {
				if !p.Warning {
					errs = append(errs, p.Error())
				}
			}
			if tc.want == "" {
				require.Empty(t, errs)
				return
			}
			require.Len(t, errs, 1, "%v", errs)
			require.Contains(t, errs[0], "rules/hook.yaml")
			require.Contains(t, errs[0], tc.want)
			require.False(t, strings.Contains(errs[0], "\n"))
		})
	}
}
