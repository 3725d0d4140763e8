package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/attune-system/attune/schema"
)

func (a *app) migrateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply migrations (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			pool, err := schema.Open(ctx, a.cfg.DatabaseURL, 4)
			if err != nil {
				return err
			}
			defer pool.Close()
			res, err := schema.Migrate(ctx, pool)
			if err != nil {
				return err
			}
			names := []string{}
			if res.RiverVersions == nil {
				res.RiverVersions = []int{}
			}
			for _, m := range res.Applied {
				names = append(names, fmt.Sprintf("%03d_%s", m.Version, m.Name))
			}
			return a.print(map[string]any{"river_versions": res.RiverVersions, "applied": names}, func(w *tabwriter.Writer) {
				if len(names) == 0 && len(res.RiverVersions) == 0 {
					fmt.Fprintln(w, "schema attune is up to date")
					return
				}
				fmt.Fprintf(w, "applied River migrations %v and attune migrations %s\n", res.RiverVersions, strings.Join(names, ", "))
			})
		},
	}
}
