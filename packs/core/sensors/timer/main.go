package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // cron timezones must resolve on hosts without /usr/share/zoneinfo
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "attune-core-timer-sensor: %s\n", err)
		os.Exit(1)
	}
}

// run serves the sensor protocol until ctx ends, then stops every timer and
// returns nil. It returns an error only when it cannot start (a malformed
// ATTUNE_SENSOR_TRIGGERS) or stdout breaks.
//
// Reading stdin cannot be interrupted, so the goroutine that reads it may
// outlive run until stdin closes; it never touches the sensor after run ends.
func run(ctx context.Context, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := newSensor(cfg.SensorRef, realClock{}, log, stdout, cancel)

	log.Info("timer sensor started", "sensor_ref", cfg.SensorRef, "rules", len(cfg.Rules))
	for i, raw := range cfg.Rules {
		r, err := decodeRule(raw)
		if err != nil {
			log.Error("skipping bad entry in ATTUNE_SENSOR_TRIGGERS", "index", i, "error", err)
			continue
		}
		s.start(ctx, r, "startup")
	}

	lines := make(chan []byte)
	go func() {
		defer close(lines)
		err := readLines(stdin, func(line []byte, err error) bool {
			if err != nil {
				log.Error("skipping stdin line", "error", err)
				return true
			}
			select {
			case lines <- line:
				return true
			case <-ctx.Done():
				return false
			}
		})
		switch {
		case ctx.Err() != nil:
		case err != nil:
			log.Error("error reading stdin; no more rule changes will arrive, timers keep running", "error", err)
		default:
			log.Info("stdin closed; no more rule changes will arrive, timers keep running")
		}
	}()

	for {
		select {
		case <-ctx.Done():
			s.stopAll(stopGrace)
			if parent.Err() == nil {
				return context.Cause(ctx)
			}
			log.Info("timer sensor stopped")
			return nil
		case line, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			s.handleLine(ctx, line)
		}
	}
}
