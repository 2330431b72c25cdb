package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Env is what a command sees of the world: its streams and its environment.
// main passes the process's; tests pass buffers and a map, so a command
// never reads os.Getenv or writes os.Stdout directly.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// LookupEnv reads an environment variable; os.LookupEnv in main.
	LookupEnv func(string) (string, bool)
}

// OSEnv returns the Env of the running process.
func OSEnv() *Env {
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv}
}

// Getenv returns the value of the environment variable name, "" when unset.
func (e *Env) Getenv(name string) string {
	if e.LookupEnv == nil {
		return ""
	}
	v, _ := e.LookupEnv(name)
	return v
}

// Command is one subcommand of tokenhub. Adding a subcommand means adding a
// Command to the table in commands.go.
type Command struct {
	Name    string
	Args    string // the synopsis after the name, e.g. "[flags] NAME"
	Summary string // one line, for the command list
	Help    string // paragraphs shown by --help
	Example string // shown by --help, one command per line
	// New defines the command's flags on f and returns the function that
	// runs the command once they are parsed, with the positional arguments.
	// The function returns an error to print, a usageError for bad input
	// (exit status 2), or errExit to exit 1 after printing its own account.
	// New is nil for a group such as "workspace".
	New func(f *flags) func(ctx context.Context, e *Env, args []string) error
	// Sub are the subcommands of a group.
	Sub []*Command

	path string // "tokenhub workspace create", set by Run
}

// usageError is bad command-line input. It exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errExit makes Run return 1 without printing anything more: the command has
// already said what went wrong.
var errExit = errors.New("exit 1")

// Run runs the tokenhub command line args (without the program name) and
// returns the process's exit status: 0 on success, 1 on failure, 2 on a
// usage error. It is what main calls, and what tests call.
func Run(ctx context.Context, e *Env, args []string) int {
	root := &Command{Name: "tokenhub", Sub: commands(), Help: rootHelp, path: "tokenhub"}
	setPaths(root)
	cmd, rest := root, args
	for len(cmd.Sub) > 0 && len(rest) > 0 {
		name := rest[0]
		if name == "help" && cmd == root {
			return helpCommand(e, root, rest[1:])
		}
		if name == "-h" || name == "--help" || name == "-help" {
			printHelp(e.Stdout, cmd)
			return 0
		}
		sub := find(cmd.Sub, name)
		if sub == nil {
			fmt.Fprintf(e.Stderr, "%s: unknown command %q\n\n", cmd.path, name)
			printHelp(e.Stderr, cmd)
			return 2
		}
		cmd, rest = sub, rest[1:]
	}
	if cmd.New == nil {
		printHelp(e.Stderr, cmd)
		return 2
	}
	f := newFlags(e, cmd)
	run := cmd.New(f)
	err := f.envErr
	var pos []string
	if err == nil {
		pos, err = f.Parse(rest)
	}
	if err == nil {
		err = run(ctx, e, pos)
	}
	var fe *flagError
	if errors.As(err, &fe) {
		err = usagef("%s: %s", f.source(fe.flag), fe.msg)
	}
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		printHelp(e.Stdout, cmd)
		return 0
	case errors.Is(err, errExit):
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(e.Stderr, "%s: %s\nRun '%s --help' for usage.\n", cmd.path, ue.msg, cmd.path)
		return 2
	default:
		fmt.Fprintf(e.Stderr, "%s: %s\n", cmd.path, errText(err))
		return 1
	}
}

func setPaths(c *Command) {
	for _, s := range c.Sub {
		s.path = c.path + " " + s.Name
		setPaths(s)
	}
}

func find(cmds []*Command, name string) *Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func helpCommand(e *Env, root *Command, args []string) int {
	cmd := root
	for _, a := range args {
		sub := find(cmd.Sub, a)
		if sub == nil {
			fmt.Fprintf(e.Stderr, "tokenhub help: unknown command %q\n", strings.Join(args, " "))
			return 2
		}
		cmd = sub
	}
	printHelp(e.Stdout, cmd)
	return 0
}

const rootHelp = `tokenhub obtains OAuth 2.0 and login-API tokens for every app in a workspace,
keeps them encrypted, refreshes them before they expire, and hands them to apps,
so apps never hold the secrets behind them.

Client commands find the server through --url or TOKENHUB_URL
(default http://127.0.0.1:7470). Admin commands use TOKENHUB_ADMIN_KEY, or else
the key in --admin-key-file (default ./tokenhub.admin-key, which 'tokenhub serve'
writes on its first start). App commands use TOKENHUB_APP_KEY.`

// printHelp writes cmd's usage, help text, subcommands or flags, and example.
func printHelp(w io.Writer, cmd *Command) {
	if len(cmd.Sub) > 0 {
		fmt.Fprintf(w, "Usage: %s <command> [flags] [args]\n\n", cmd.path)
	} else {
		fmt.Fprintf(w, "Usage: %s %s\n\n", cmd.path, cmd.Args)
	}
	if cmd.Help != "" {
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(cmd.Help))
	} else if cmd.Summary != "" {
		fmt.Fprintf(w, "%s.\n\n", cmd.Summary)
	}
	if len(cmd.Sub) > 0 {
		fmt.Fprintf(w, "Commands:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		var list func(prefix string, cs []*Command)
		list = func(prefix string, cs []*Command) {
			for _, c := range cs {
				if len(c.Sub) > 0 {
					list(prefix+c.Name+" ", c.Sub)
					continue
				}
				fmt.Fprintf(tw, "  %s%s\t%s\n", prefix, c.Name, c.Summary)
			}
		}
		list("", cmd.Sub)
		tw.Flush()
		fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags and an example.\n", cmd.path)
	} else if cmd.New != nil {
		// Define the command's flags without running it, to list them.
		fs := newFlags(&Env{}, cmd)
		cmd.New(fs)
		if fs.NFlag() > 0 {
			fmt.Fprintf(w, "Flags:\n")
			fs.printDefaults(w)
			fmt.Fprintln(w)
		}
	}
	if cmd.Example != "" {
		fmt.Fprintf(w, "Example:\n")
		for _, l := range strings.Split(strings.TrimSpace(cmd.Example), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

// flags is a flag.FlagSet whose flags may fall back to TOKENHUB_* environment
// variables, and that remembers where each value came from so errors can name
// the flag or the variable the user actually set.
type flags struct {
	fs   *flag.FlagSet
	env  *Env
	vars map[string]string // flag name → env var name
	n    int
	// envErr is the first environment variable that held a bad value.
	envErr error
}

// flagError is a bad flag value found by a Validate method. Run names the
// flag, and the environment variable when the value came from one.
type flagError struct{ flag, msg string }

func (e *flagError) Error() string { return dashes(e.flag) + ": " + e.msg }

func flagErrorf(flag, format string, args ...any) error {
	return &flagError{flag: flag, msg: fmt.Sprintf(format, args...)}
}

func newFlags(e *Env, cmd *Command) *flags {
	fs := flag.NewFlagSet(cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flags{fs: fs, env: e, vars: map[string]string{}}
}

// NFlag returns how many flags are defined.
func (f *flags) NFlag() int { return f.n }

// String defines a string flag whose default is taken from the environment
// variable envVar when that is set ("" for none).
func (f *flags) String(p *string, name, envVar, def, usage string) {
	f.n++
	if envVar != "" {
		f.vars[name] = envVar
		if v, ok := f.lookup(envVar); ok {
			def = v
		}
	}
	f.fs.StringVar(p, name, def, usage)
}

// Bool defines a boolean flag.
func (f *flags) Bool(p *bool, name string, def bool, usage string) {
	f.n++
	f.fs.BoolVar(p, name, def, usage)
}

// Duration defines a duration flag whose default is taken from the
// environment variable envVar when that is set ("" for none).
func (f *flags) Duration(p *time.Duration, name, envVar string, def time.Duration, usage string) {
	f.n++
	if envVar != "" {
		f.vars[name] = envVar
		if v, ok := f.lookup(envVar); ok {
			d, err := time.ParseDuration(v)
			if err != nil && f.envErr == nil {
				f.envErr = usagef("%s: %q is not a duration such as 10s", envVar, v)
			}
			def = d
		}
	}
	f.fs.DurationVar(p, name, def, usage)
}

// Strings defines a repeatable string flag: each use appends its value to
// *p, in the order given, as curl's -H does.
func (f *flags) Strings(p *[]string, name, usage string) {
	f.n++
	f.fs.Var((*stringList)(p), name, usage)
}

// stringList is the flag.Value of a repeatable string flag.
type stringList []string

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ", ")
}

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// Given reports whether flag name was set on the command line, so that a
// command can tell an explicit empty value from an absent flag.
func (f *flags) Given(name string) bool {
	given := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			given = true
		}
	})
	return given
}

// Int defines an integer flag.
func (f *flags) Int(p *int, name string, def int, usage string) {
	f.n++
	f.fs.IntVar(p, name, def, usage)
}

func (f *flags) lookup(envVar string) (string, bool) {
	if f.env.LookupEnv == nil {
		return "", false
	}
	v, ok := f.env.LookupEnv(envVar)
	return v, ok && v != ""
}

// Parse parses args, allowing flags after positional arguments
// ("tokenhub token baserow --header"), and returns the positional ones.
// "--" ends flag parsing. A flag error is a usageError.
func (f *flags) Parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			msg := strings.NewReplacer("flag -", "flag --", ": -", ": --").Replace(err.Error())
			return nil, usagef("%s", msg)
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag.Parse stops at "--" after consuming it, or at a positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// source names where flag name's value came from, for error messages:
// "--addr", or "--addr (from TOKENHUB_ADDR)" when the flag was not given
// and the variable was set.
func (f *flags) source(name string) string {
	if v := f.vars[name]; v != "" && !f.Given(name) {
		if _, ok := f.lookup(v); ok {
			return dashes(name) + " (from " + v + ")"
		}
	}
	return dashes(name)
}

// dashes writes a flag name as users type it: -f, --addr.
func dashes(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func (f *flags) printDefaults(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var names []string
	f.fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	sort.Strings(names)
	for _, n := range names {
		fl := f.fs.Lookup(n)
		typ, usage := flag.UnquoteUsage(fl)
		arg := dashes(n)
		if typ != "" {
			arg += " " + typ
		}
		var extra []string
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0" {
			extra = append(extra, "default "+fl.DefValue)
		}
		if v := f.vars[n]; v != "" {
			extra = append(extra, "env "+v)
		}
		if len(extra) > 0 {
			usage += " (" + strings.Join(extra, ", ") + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", arg, usage)
	}
	tw.Flush()
}
