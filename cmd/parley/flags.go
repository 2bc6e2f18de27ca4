package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// flags is one command's flag set, bound to the environment: every flag has
// a PARLEY_* variable, and the variable's value, when set, replaces the
// built-in default. It is the one binder every subcommand uses:
//
//   - a malformed variable is a usage error naming the variable (exit 2),
//     never a silent default;
//   - secrets (tokens, and URLs that may carry a password) are never printed:
//     --help says whether their variable is set, not its value, and errors
//     name the flag, not the value;
//   - --log-level and --log-format (text or JSON, one format for every line
//     of the process, the access log's included) come with every command and
//     configure slog's default logger once the flags are parsed.
type flags struct {
	*flag.FlagSet
	envErrs []error
	// late are the secrets' environment values, applied after Parse to the
	// flags the command line did not set.
	late map[string]func() error

	logLevel, logFormat string
}

// newFlags returns the flags of command name; its --help prints synopsis,
// description and every flag with its variable. defaultLogFormat is "text"
// or "json".
func newFlags(name, synopsis, description, defaultLogFormat string) *flags {
	fs := flag.NewFlagSet("parley "+name, flag.ContinueOnError)
	f := &flags{FlagSet: fs, late: map[string]func() error{}}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: parley %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	f.String(&f.logLevel, "log-level", "PARLEY_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	f.String(&f.logFormat, "log-format", "PARLEY_LOG_FORMAT", defaultLogFormat, "log format of every line this process writes: text or json")
	return f
}

// env returns the variable's value and whether it is set (empty counts as
// unset).
func env(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	return v, ok && v != ""
}

func usageEnv(usage, envName string) string {
	return usage + " (env " + envName + ")"
}

// String binds a string flag.
func (f *flags) String(p *string, name, envName, def, usage string) {
	if v, ok := env(envName); ok {
		def = v
	}
	f.StringVar(p, name, def, usageEnv(usage, envName))
}

// Secret binds a string flag whose value must never be printed (a token, a
// URL with a password): --help shows whether its variable is set.
func (f *flags) Secret(p *string, name, envName, usage string) {
	v, set := env(envName)
	state := "unset"
	if set {
		state = "set"
	}
	f.StringVar(p, name, "", usage+" (env "+envName+", now "+state+"; never printed)")
	if set {
		f.late[name] = func() error { *p = v; return nil }
	}
}

// envDefault is the value of variable envName parsed by parse when it is
// set, else def; a value parse refuses is recorded (Parse reports it,
// naming the variable and what it should be).
func envDefault[T any](f *flags, envName string, def T, parse func(string) (T, error), what string) T {
	v, ok := env(envName)
	if !ok {
		return def
	}
	x, err := parse(strings.TrimSpace(v))
	if err != nil {
		f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q is not %s", envName, v, what))
		return def
	}
	return x
}

// Int binds an int flag.
func (f *flags) Int(p *int, name, envName string, def int, usage string) {
	f.IntVar(p, name, envDefault(f, envName, def, strconv.Atoi, "an integer"), usageEnv(usage, envName))
}

// Uint64 binds a uint64 flag.
func (f *flags) Uint64(p *uint64, name, envName string, def uint64, usage string) {
	parse := func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }
	f.Uint64Var(p, name, envDefault(f, envName, def, parse, "a non-negative integer"), usageEnv(usage, envName))
}

// Float binds a float64 flag.
func (f *flags) Float(p *float64, name, envName string, def float64, usage string) {
	parse := func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
	f.Float64Var(p, name, envDefault(f, envName, def, parse, "a number"), usageEnv(usage, envName))
}

// Duration binds a time.Duration flag.
func (f *flags) Duration(p *time.Duration, name, envName string, def time.Duration, usage string) {
	f.DurationVar(p, name, envDefault(f, envName, def, time.ParseDuration, "a duration (e.g. 500ms, 10s, 2m)"), usageEnv(usage, envName))
}

// Bool binds a bool flag.
func (f *flags) Bool(p *bool, name, envName string, def bool, usage string) {
	f.BoolVar(p, name, envDefault(f, envName, def, strconv.ParseBool, "a boolean (true or false)"), usageEnv(usage, envName))
}

// List binds a repeatable string flag; its variable holds the values
// separated by sep.
func (f *flags) List(p *[]string, name, envName, sep, usage string) {
	if v, ok := env(envName); ok {
		*p = splitList(v, sep)
	}
	f.Var((*listValue)(p), name, usage+" (env "+envName+", '"+sep+"'-separated)")
}

type listValue []string

// Values binds a flag that takes several values: repeated, or separated by
// sep in one value (--target A --target B, or --target A,B). Its variable
// holds them separated by sep; the command line, when it sets the flag,
// replaces the variable's values.
func (f *flags) Values(p *[]string, name, envName, sep, usage string) {
	v := &valuesFlag{p: p, sep: sep}
	if e, ok := env(envName); ok {
		*p = splitList(e, sep)
	}
	f.Var(v, name, usage+" (env "+envName+", '"+sep+"'-separated; repeatable)")
}

type valuesFlag struct {
	p   *[]string
	sep string
	set bool // the command line set it: the variable's values are dropped
}

func (v *valuesFlag) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, v.sep)
}

func (v *valuesFlag) Set(s string) error {
	if !v.set {
		*v.p, v.set = nil, true
	}
	parts := splitList(s, v.sep)
	if len(parts) == 0 {
		return fmt.Errorf("empty value")
	}
	*v.p = append(*v.p, parts...)
	return nil
}

func (l *listValue) String() string     { return strings.Join(*l, " ") }
func (l *listValue) Set(v string) error { *l = append(*l, v); return nil }

// splitList splits s at sep and drops blank parts.
func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Parse parses args: a bad flag or a malformed variable is errUsage (exit
// 2), --help flag.ErrHelp. Then the secrets' variables fill the flags the
// command line left unset, and the log level and format take effect.
func (f *flags) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(f.envErrs) > 0 {
		return fmt.Errorf("%w: %w", errUsage, errors.Join(f.envErrs...))
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for name, apply := range f.late {
		if !set[name] {
			if err := apply(); err != nil {
				return err
			}
		}
	}
	log, err := newLogger(os.Stderr, f.logLevel, f.logFormat)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	slog.SetDefault(log)
	return nil
}

// newLogger is the process's logger: level debug|info|warn|error, format
// text|json.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "info", "":
		l = slog.LevelInfo
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
