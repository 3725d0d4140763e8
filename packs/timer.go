package packs

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser reads the expressions the core timer sensor accepts: 5 fields,
// or 6 with seconds first, and descriptors such as @hourly.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// checkTimerParams checks what the core timers' JSON Schemas cannot: that a
// cron expression parses, a time zone exists and fire_at is RFC 3339. A
// rule that fails here would otherwise register fine and never fire, with
// the reason only in the sensor's log.
func checkTimerParams(triggerRef string, params map[string]any) error {
	switch triggerRef {
	case "core.crontimer":
		if expr, ok := params["expression"].(string); ok {
			if _, err := cronParser.Parse(expr); err != nil {
				return fmt.Errorf("expression %q does not parse: %v; use 5 fields (minute hour day month weekday) or 6 with seconds first", expr, err)
			}
		}
		if tz, ok := params["timezone"].(string); ok && tz != "" {
			if _, err := time.LoadLocation(tz); err != nil {
				return fmt.Errorf("timezone %q is not an IANA time zone such as UTC or Europe/Paris", tz)
			}
		}
	case "core.datetimetimer":
		if at, ok := params["fire_at"].(string); ok {
			if _, err := time.Parse(time.RFC3339, at); err != nil {
				return fmt.Errorf("fire_at %q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", at)
			}
		}
	}
	return nil
}
