package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

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
			if _, _, err := a.cfg.HTTP(); err != nil {
				return err // before the database: a listener setting is wrong
			}
			a.log.Info("attune serve starting", "version", version, "commit", commit,
				"database", databaseForLog(a.cfg.DatabaseURL), "packs_dir", a.cfg.PacksDir,
				"max_concurrent_executions", a.cfg.MaxConcurrentExecutions, "secrets_key", a.cfg.SecretsKey != "")
			stopTracing, err := a.setupTracing(ctx)
			if err != nil {
				return err
			}
			defer stopTracing()
			pool, err := a.installDB(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			srv, err := worker.NewServer(a.cfg, pool, a.log)
			if err != nil {
				return err
			}
			web, err := a.listenHTTP(pool, srv)
			if err != nil {
				return err
			}
			if err := srv.Start(ctx); err != nil {
				return errors.Join(err, web.stop(context.WithoutCancel(ctx)))
			}
			web.serve(a)
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
			// The listener keeps answering while executions drain, with
			// /readyz failing so load balancers move on; it stops last.
			web.drain()
			err = srv.Stop(stopCtx)
			httpCtx, cancelHTTP := context.WithTimeout(stopCtx, 10*time.Second)
			defer cancelHTTP()
			err = errors.Join(err, web.stop(httpCtx))
			if err != nil {
				a.log.Error("stopped with an error", "err", err)
			} else {
				a.log.Info("stopped", "handed_back", srv.HandedBack())
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
