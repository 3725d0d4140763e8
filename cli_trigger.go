package main

import "github.com/spf13/cobra"

func (a *app) triggerCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "trigger", Short: "Inspect triggers"}
	cmd.AddCommand(a.listCommand("list", "List triggers",
		`SELECT ref, pack_ref, description, parameters FROM attune.trigger ORDER BY ref`,
		[]string{"ref", "pack_ref", "description"}, false))
	return cmd
}
