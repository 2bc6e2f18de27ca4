// Command parley is the Parley messaging backend: the API server, its local
// PostgreSQL + replica + PgBouncer + Redis stack, migrations, seeding and the
// load generator, all in one binary.
//
// Each subcommand lives in its own file in this package and registers itself
// with register in an init function; main only dispatches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand of the parley binary.
type command struct {
	name    string
	summary string
	// run parses args (everything after the command name) and does the work.
	// It returns errUsage (possibly wrapped) for bad flags, which exits 2.
	run func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("parley: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// errUsage marks a command-line mistake; main exits with status 2.
var errUsage = errors.New("usage error")

// exitError carries a specific exit status (the load generator uses 99 for
// failed thresholds).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usage(w io.Writer) {
	fmt.Fprintln(w, `parley — a messaging backend whose data layer scales and rolls out safely.

Usage:
  parley <command> [flags]

Commands:`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, `
Run 'parley <command> --help' for the flags of one command. Every flag has a
PARLEY_* environment variable as its default (shown in each command's help); a
malformed variable is an error (exit 2). Secrets (tokens, URLs) are never shown.`)
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// Until a command has parsed its --log-level and --log-format.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			if c, ok := commands[args[1]]; ok {
				return exitCode(c.run(context.Background(), []string{"--help"}))
			}
		}
		usage(os.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "parley: unknown command %q\n\n", args[0])
		usage(os.Stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return exitCode(c.run(ctx, args[1:]))
}

func exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(os.Stderr, "parley: %v\n", ee.err)
		}
		return ee.code
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintf(os.Stderr, "parley: %v\n", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "parley: %v\n", err)
	return 1
}
