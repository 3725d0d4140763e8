package main

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIEventShow(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	var id int64
	require.NoError(t, b.pool.QueryRow(b.ctx, `INSERT INTO attune.event (trigger_ref, sensor_ref, payload, rules) VALUES
		('core.intervaltimer', 'core.timer_sensor', '{"n": 1}',
		 '[{"rule": "c.fires", "execution_id": 7}, {"rule": "c.bad", "skipped": "action c.echo rejected the parameters: missing required parameter \"s\""}, {"rule": "c.quiet", "not_matched": true}]')
		RETURNING id`).Scan(&id))

	out := b.ok(t, "event", "show", strconv.FormatInt(id, 10))
	require.Regexp(t, `(?m)^trigger\s+core\.intervaltimer$`, out)
	require.Regexp(t, `(?m)^payload\s+\{"n": 1\}$`, out)
	require.Regexp(t, `(?m)^c\.fires\s+fired: execution 7 \(attune execution show 7\)$`, out)
	require.Regexp(t, `(?m)^c\.bad\s+skipped: action c\.echo rejected the parameters: missing required parameter "s"$`, out)
	require.Regexp(t, `(?m)^c\.quiet\s+conditions not met$`, out)

	var ev map[string]any
	b.okJSON(t, &ev, "event", "show", strconv.FormatInt(id, 10))
	require.Len(t, ev["rules"], 3)

	r := b.attune(t, "event", "show", "999999")
	require.Equal(t, "attune: event not found: 999999 (attune event list shows recent ones)", r.line())
	r = b.attune(t, "event", "show", "x")
	require.Equal(t, 2, exitCode(r.err))
}
