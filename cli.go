package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/worker"
)

// Build information, set with -ldflags "-X main.version=...".
var (
	version = "dev"
	commit  = ""
)

// app carries what every command shares: streams, the -j flag and the
// configuration, read once.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	json           bool
	cfg            worker.Config
	log            *slog.Logger
	environ        []string
}

// run is the whole program: main only turns its error into an exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runWithEnv(ctx, args, os.Environ(), stdin, stdout, stderr)
}

// runWithEnv is run with the configuration read from environ instead of the
// process's environment, so tests can run commands in parallel.
func runWithEnv(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, environ: environ}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	// cobra's argument errors say what is wrong but not what to type.
	switch {
	case err == nil:
	case errors.As(err, new(usageError)):
	case strings.HasPrefix(err.Error(), "unknown command"):
		return usageError{fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())}
	case strings.Contains(err.Error(), "arg(s)"):
		return usageError{fmt.Errorf("%w; usage: %s", err, strings.TrimSuffix(cmd.UseLine(), " [flags]"))}
	}
	return err
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "attune",
		Short:         "Run pack actions as executions on River and PostgreSQL",
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig(cmd)
			if err != nil {
				return err
			}
			a.cfg = cfg
			a.log = newLogger(cfg, a.stderr)
			return nil
		},
	}
	root.PersistentFlags().BoolVarP(&a.json, "json", "j", false, "print JSON for machines")
	root.AddCommand(
		a.serveCommand(), a.migrateCommand(), a.demoCommand(), a.benchCommand(), a.versionCommand(),
		a.packCommand(), a.actionCommand(), a.executionCommand(), a.workerCommand(),
		a.sensorCommand(), a.triggerCommand(), a.eventCommand(), a.ruleCommand(), a.secretCommand(),
		a.pruneCommand(),
	)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", flagValueError(cmd, err), cmd.CommandPath())}
	})
	refuseUnknownSubcommands(root)
	return root
}

var invalidFlagRE = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-\w, )?--([\w-]+)" flag: `)

// flagValueError says in attune's words what a flag takes, instead of the
// Go parser's text ("strconv.ParseInt: parsing "abc": invalid syntax").
func flagValueError(cmd *cobra.Command, err error) error {
	m := invalidFlagRE.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	f := cmd.Flags().Lookup(m[2])
	if f == nil {
		return err
	}
	var want string
	switch f.Value.Type() {
	case "int", "int32", "int64", "uint", "uint32", "uint64":
		want = "a whole number"
	case "duration":
		want = "a duration such as 30s, 5m or 2h"
	case "bool":
		want = "true or false"
	case "float32", "float64":
		want = "a number"
	default:
		return err
	}
	return fmt.Errorf("--%s must be %s, got %q", f.Name, want, m[1])
}

// refuseUnknownSubcommands makes every command group fail on a word it does
// not know. Cobra prints a group's help and exits 0 for "attune execution
// cancle 5", so a script with a typo would "succeed"; and its root message
// spreads the suggestion over several lines.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		hint := fmt.Sprintf("see %s --help", cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf("did you mean %q?", s[0])
		}
		return usageError{fmt.Errorf("unknown command %q for %q (%s)", args[0], cmd.CommandPath(), hint)}
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}

// Settings by what uses them: a command validates only those it reads.
var (
	clientSettings = []string{"ATTUNE_DATABASE_URL", "ATTUNE_LOG_LEVEL", "ATTUNE_LOG_FORMAT"}
	secretSettings = append(slices.Clip(clientSettings), "ATTUNE_SECRETS_KEY")
	packSettings   = append(slices.Clip(clientSettings), "ATTUNE_PACKS_DIR")
)

// loadConfig reads the configuration, validating what cmd uses: serve, demo
// and bench run a worker and use everything; version, help, completion and
// pack check use nothing; the rest talk to the database.
func (a *app) loadConfig(cmd *cobra.Command) (worker.Config, error) {
	path := strings.TrimPrefix(cmd.CommandPath(), "attune ")
	switch {
	case path == "serve" || path == "demo" || path == "bench":
		return worker.LoadConfig(a.environ)
	case path == "version" || path == "help" || path == "pack check" || strings.HasPrefix(path, "completion") || path == "attune":
		return worker.LoadConfigOf(a.environ, nil)
	case strings.HasPrefix(path, "secret ") || path == "action execute" || path == "execution re-run":
		return worker.LoadConfigOf(a.environ, secretSettings)
	case strings.HasPrefix(path, "pack "):
		return worker.LoadConfigOf(a.environ, packSettings)
	case path == "prune":
		return worker.LoadConfigOf(a.environ, append(slices.Clip(clientSettings), "ATTUNE_RETENTION"))
	}
	return worker.LoadConfigOf(a.environ, clientSettings)
}

func newLogger(cfg worker.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// durationsAsText logs durations as "30s" rather than JSON's nanoseconds,
// which nobody reads at a glance.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// db opens the configured database for a command that uses it: the
// database and attune's schema must exist at this binary's version. Only
// the installing commands (installDB) create or migrate anything.
func (a *app) db(ctx context.Context) (*pgxpool.Pool, error) {
	pool, err := schema.Connect(ctx, a.cfg.DatabaseURL, 4)
	if err != nil {
		return nil, err
	}
	if err := schema.Check(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// installDB opens the configured database for serve and demo, creating and
// migrating it as needed, so they work on a fresh install.
func (a *app) installDB(ctx context.Context) (*pgxpool.Pool, error) {
	pool, err := schema.Open(ctx, a.cfg.DatabaseURL, int32(a.cfg.MaxConcurrentExecutions+10))
	if err != nil {
		return nil, err
	}
	if _, err := schema.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// withDB runs fn with an open database.
func (a *app) withDB(fn func(ctx context.Context, pool *pgxpool.Pool, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		pool, err := a.db(cmd.Context())
		if err != nil {
			return err
		}
		defer pool.Close()
		return fn(cmd.Context(), pool, args)
	}
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries a chosen exit code and message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) { // run turns cobra's argument errors into usageErrors
		return 2
	}
	return 1
}

// oneLine keeps an error to one line on stderr.
func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), ":\n", ": ")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
