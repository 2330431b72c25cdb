// Command tokenhub is the one tokenhub binary: the server (serve), a demo
// that runs the whole idea in one process (demo), and the client commands
// that manage workspaces, apps and connections and read tokens.
//
// Every subcommand takes --help, which lists its flags and shows an example.
// Flags fall back to TOKENHUB_* environment variables. See docs/cli.md.
//
// The package is laid out so that tests run the real thing: Run is the whole
// command line, Main is a running server and Demo a running demo, each
// started on port 0 with a temporary store.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// commands is the table of subcommands, in the order help lists them. To add
// one, write a func returning a *Command (see tokenCommand for a small one)
// and list it here.
func commands() []*Command {
	return []*Command{
		serveCommand(),
		demoCommand(),
		applyCommand(),
		statusCommand(),
		tokenCommand(),
		refreshCommand(),
		curlCommand(),
		eventsCommand(),
		workspaceCommand(),
		appCommand(),
		keyCommand(),
	}
}

func main() {
	// SIGINT and SIGTERM cancel the context: serve and demo shut down
	// gracefully, client commands abandon their request.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, OSEnv(), os.Args[1:])
	stop()
	os.Exit(code)
}
