package main

import "github.com/spf13/cobra"

func (a *app) sensorCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "sensor", Short: "Inspect sensors"}
	cmd.AddCommand(a.listCommand("list", "List sensors, with the replica running each",
		`SELECT s.ref, s.enabled, s.trigger_types, s.runner_type, s.entry_point,
			coalesce(st.worker, '') AS worker, coalesce(st.status, 'stopped') AS status
		FROM attune.sensor s LEFT JOIN attune.sensor_state st ON st.sensor_ref = s.ref ORDER BY s.ref`,
		[]string{"ref", "enabled", "trigger_types", "status", "worker", "entry_point"}, false))
	return cmd
}
