package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/worker"
)

func (a *app) serveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run this replica's worker and sensors until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			a.log.Info("attune serve starting", "version", version, "commit", commit,
				"database", databaseForLog(a.cfg.DatabaseURL), "packs_dir", a.cfg.PacksDir,
				"max_concurrent_executions", a.cfg.MaxConcurrentExecutions, "secrets_key", a.cfg.SecretsKey != "")
			pool, err := a.installDB(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			srv, err := worker.NewServer(a.cfg, pool, a.log)
			if err != nil {
				return err
			}
			if err := srv.Start(ctx); err != nil {
				return err
			}
			<-ctx.Done()
			a.log.Info("stopping: running executions may finish", "timeout", a.cfg.ShutdownTimeout)

			// A second signal stops at once: executions are killed and
			// settled without waiting for the shutdown timeout.
			stopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			defer cancel()
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sig)
			go func() {
				select {
				case <-sig:
					a.log.Warn("second signal: stopping now")
					cancel()
				case <-stopCtx.Done():
				}
			}()
			err = srv.Stop(stopCtx)
			if err != nil {
				a.log.Error("stopped with an error", "err", err)
			} else {
				a.log.Info("stopped")
			}
			return err
		},
	}
}

// databaseForLog names the database without its credentials: host, port
// and name only.
func databaseForLog(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "(unparsable ATTUNE_DATABASE_URL)"
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}
