package main

import (
	"fmt"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version of the build",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v, c, goVersion := version, commit, "unknown"
			if info, ok := debug.ReadBuildInfo(); ok {
				goVersion = info.GoVersion
				for _, s := range info.Settings {
					if s.Key == "vcs.revision" && c == "" {
						c = s.Value
					}
				}
			}
			if c == "" {
				c = "unknown"
			}
			return a.print(map[string]string{"version": v, "commit": c, "go": goVersion}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "attune %s (commit %s, %s)\n", v, c, goVersion)
			})
		},
	}
}
