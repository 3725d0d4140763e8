package packs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTimerTriggerParams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, trigger, params, want string
	}{
		{"CronFiveFields", "core.crontimer", `{expression: "*/5 * * * *"}`, ""},
		{"CronSixFieldsWithZone", "core.crontimer", `{expression: "0 */5 * * * *", timezone: Europe/Paris}`, ""},
		{"CronDescriptor", "core.crontimer", `{expression: "@hourly"}`, ""},
		{"CronOutOfRange", "core.crontimer", `{expression: "61 * * * *"}`, `rule.yaml:5: trigger_params: expression "61 * * * *" does not parse`},
		{"CronGarbage", "core.crontimer", `{expression: "every tuesday"}`, `expression "every tuesday" does not parse`},
		{"CronBadZone", "core.crontimer", `{expression: "* * * * *", timezone: Mars/Olympus}`, `timezone "Mars/Olympus" is not an IANA time zone`},
		{"DatetimeGood", "core.datetimetimer", `{fire_at: "2030-01-02T15:04:05Z"}`, ""},
		{"DatetimeBad", "core.datetimetimer", `{fire_at: "tomorrow"}`, `fire_at "tomorrow" is not an RFC 3339 time`},
		{"OtherTriggersUntouched", "x.custom", `{expression: "61 * * * *"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "tp")
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "rules"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pack.yaml"), []byte("ref: tp\nversion: 1.0.0\n"), 0o644))
			rule := "name: r\ntrigger_ref: " + tc.trigger + "\naction_ref: other.action\n" +
				"# the parameters:\ntrigger_params: " + tc.params + "\n"
			require.NoError(t, os.WriteFile(filepath.Join(dir, "rules", "rule.yaml"), []byte(rule), 0o644))
			p, problems := Load(dir)
			if tc.want == "" {
				require.False(t, HasErrors(problems), "%v", problems)
				require.Len(t, p.Rules, 1)
				return
			}
			require.True(t, HasErrors(problems))
			require.Contains(t, AsError(problems).Error(), tc.want)
			require.Empty(t, p.Rules, "a rule that could never fire is not loaded")
		})
	}
}
