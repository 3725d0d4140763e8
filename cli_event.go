package main

import "github.com/spf13/cobra"

func (a *app) eventCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "event", Short: "Inspect events"}
	cmd.AddCommand(a.listCommand("list", "List events, newest first",
		`SELECT id, trigger_ref, sensor_ref, payload, created_at FROM attune.event ORDER BY id DESC LIMIT $1`,
		[]string{"id", "trigger_ref", "sensor_ref", "created_at", "payload"}, true))
	return cmd
}
