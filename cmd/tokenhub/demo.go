package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/server"
)

// Names of what the demo creates.
const (
	DemoWorkspace  = "demo"
	DemoProvider   = "baserow-login"
	DemoConnection = "baserow"
	DemoApp        = "demo-app"
)

// Demo is a running `tokenhub demo`: a Baserow-compatible provider on a
// loopback port and a tokenhub server with a workspace, a connection to that
// provider and an app key, all created on start. Tests run it on port 0.
//
// Demo is not safe for concurrent use: call Run once, then Close once.
type Demo struct {
	// Addr is where the tokenhub API listens.
	Addr string
	// Store is the store to use, sqlite:PATH; "" means a fresh temporary
	// directory, removed by Close. A given store keeps its encryption key in
	// PATH.key.
	Store string
	// AccessTTL is the lifetime of the demo provider's access tokens
	// (demo.DefaultAccessTTL when zero).
	AccessTTL time.Duration
	// Logger receives the server's, the engine's and the provider's logs.
	Logger *slog.Logger
	// Stdout receives the welcome text with the commands to try; nothing
	// when nil.
	Stdout io.Writer

	// Set by Run.
	Main        *Main
	Provider    *demo.Server
	ProviderURL string
	AppKey      string

	tmpDir   string
	provHTTP *http.Server
}

// Run starts the demo provider and the server, creates the workspace, the
// provider definition, the connection and the app, waits briefly for the
// connection's first token, and prints how to use it. It returns once all
// that is done; Close stops everything.
func (d *Demo) Run(ctx context.Context) (err error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	cfg := DefaultConfig()
	cfg.Addr = d.Addr
	if d.Store == "" {
		if d.tmpDir, err = os.MkdirTemp("", "tokenhub-demo-"); err != nil {
			return fmt.Errorf("making a temporary directory: %w", err)
		}
		cfg.Store = "sqlite:" + filepath.Join(d.tmpDir, "tokenhub.db")
		key, err := seal.NewKey()
		if err != nil {
			return err
		}
		cfg.Key = base64.StdEncoding.EncodeToString(key)
	} else {
		path, err := storePath(d.Store)
		if err != nil {
			return flagErrorf("store", "%s", err)
		}
		cfg.Store = d.Store
		cfg.KeyFile = path + ".key"
	}
	// The demo's admin key lives only as long as the process.
	if cfg.AdminKey, err = server.NewKey(); err != nil {
		return err
	}

	// The provider first, so the connection has somewhere to log in.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("starting the demo provider: %w", err)
	}
	d.Provider = demo.New(demo.Options{AccessTTL: d.AccessTTL, Logger: d.Logger.With("component", "demo-provider")})
	d.provHTTP = &http.Server{Handler: d.Provider, ReadHeaderTimeout: 10 * time.Second}
	d.ProviderURL = "http://" + ln.Addr().String()
	go d.provHTTP.Serve(ln)

	d.Main = &Main{Config: cfg, Logger: d.Logger}
	if err := d.Main.Run(ctx); err != nil {
		if !errors.As(err, new(*flagError)) && strings.Contains(err.Error(), "address already in use") {
			return fmt.Errorf("%w; is another tokenhub running? Try --addr 127.0.0.1:0 for any free port", err)
		}
		return err
	}

	c := client.New(d.Main.URL(), d.Main.AdminKey())
	if _, err := c.CreateWorkspace(ctx, DemoWorkspace); err != nil && !errors.Is(err, client.ErrConflict) {
		return fmt.Errorf("creating workspace %s: %w", DemoWorkspace, err)
	}
	p := demo.Provider()
	p.Name = DemoProvider
	if _, _, err := c.PutProvider(ctx, p); err != nil {
		return fmt.Errorf("defining provider %s: %w", DemoProvider, err)
	}
	conn := demo.ConnectionConfig(d.ProviderURL)
	conn.Provider = DemoProvider
	if _, _, err := c.PutConnection(ctx, DemoWorkspace, DemoConnection, &conn); err != nil {
		return fmt.Errorf("creating connection %s: %w", DemoConnection, err)
	}
	// A kept store already has the app, whose key was shown once, last time:
	// make it anew so that this run can show its key.
	if err := c.RevokeApp(ctx, DemoWorkspace, DemoApp); err != nil && !errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("replacing app %s: %w", DemoApp, err)
	}
	k, err := c.CreateApp(ctx, DemoWorkspace, DemoApp, []string{DemoConnection})
	if err != nil {
		return fmt.Errorf("creating app %s: %w", DemoApp, err)
	}
	d.AppKey = k.Key

	// The engine obtains the first token at once; wait a moment for it so
	// the welcome text can say it worked.
	view, err := d.waitHealthy(ctx, c, 10*time.Second)
	if err != nil {
		return err
	}
	if d.Stdout != nil {
		d.welcome(d.Stdout, view)
	}
	return nil
}

func (d *Demo) waitHealthy(ctx context.Context, c *client.Client, max time.Duration) (*client.ConnectionView, error) {
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	for {
		v, err := c.Connection(ctx, DemoWorkspace, DemoConnection)
		if err == nil && v.State != tokenhub.StatePending {
			return v, nil
		}
		select {
		case <-ctx.Done():
			if v != nil {
				return v, nil
			}
			return nil, fmt.Errorf("reading connection %s: %w", DemoConnection, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// welcome prints the URLs, the keys and copy-paste commands.
func (d *Demo) welcome(w io.Writer, v *client.ConnectionView) {
	exe := cliName()
	rows := d.ProviderURL + demo.PathRowsPrefix + fmt.Sprint(demo.DefaultTableID) + "/?user_field_names=true"
	state := string(v.State)
	if v.State == tokenhub.StateHealthy {
		state = "healthy, token expires in " + expiresIn(v, time.Now())
	} else if v.LastError != nil {
		state += ": " + lastError(v)
	}
	fmt.Fprintf(w, `
tokenhub demo is running.

  tokenhub API     %s
  demo Baserow     %s  (user %s; access tokens live %s)
  workspace        %s, connection %s (%s), app %s

Try it in another terminal:

  export TOKENHUB_URL=%s
  export TOKENHUB_APP_KEY=%s
  export TOKENHUB_ADMIN_KEY=%s   # admin key, for status and events

  # The token API, with curl:
  curl -s -H "Authorization: Bearer $TOKENHUB_APP_KEY" $TOKENHUB_URL/v1/connections/%s/token

  # Read the rows with a token from tokenhub:
  curl -s -H "Authorization: JWT $(%s token %s)" '%s'
  curl -s -H "$(%s token --header %s)" '%s'

  # Or let tokenhub add the token, so the caller never holds it (the proxy):
  curl -s -H "Authorization: Bearer $TOKENHUB_APP_KEY" '%s/v1/proxy/%s%s'
  %s curl %s '%s' --table results

  # Every connection's state, expiry and next refresh; the connection's log:
  %s status
  %s events %s

Watch the log below: the token is renewed before it expires, every 45 s or so,
without anyone asking. Ctrl-C stops the demo.

`, d.Main.URL(), d.ProviderURL, demo.DefaultEmail, ttlText(d.AccessTTL),
		DemoWorkspace, DemoConnection, state, DemoApp,
		d.Main.URL(), d.AppKey, d.Main.AdminKey(),
		DemoConnection,
		exe, DemoConnection, rows,
		exe, DemoConnection, rows,
		d.Main.URL(), DemoConnection, strings.TrimPrefix(rows, d.ProviderURL),
		exe, DemoConnection, strings.TrimPrefix(rows, d.ProviderURL),
		exe, exe, DemoConnection)
}

func ttlText(d time.Duration) string {
	if d == 0 {
		d = demo.DefaultAccessTTL
	}
	return human(d)
}

// cliName is how the welcome text calls this program: "tokenhub" when that
// is what the PATH finds, "go run ./cmd/tokenhub" under `go run` (the
// README's quickstart runs the demo that way, from the repository's root),
// else the executable's path.
func cliName() string {
	exe, err := os.Executable()
	if err != nil {
		return "tokenhub"
	}
	if strings.Contains(filepath.ToSlash(exe), "/go-build") {
		return "go run ./cmd/tokenhub"
	}
	if p, err := exec.LookPath("tokenhub"); err == nil {
		if a, _ := filepath.EvalSymlinks(p); a != "" {
			if b, _ := filepath.EvalSymlinks(exe); a == b {
				return "tokenhub"
			}
		}
	}
	return exe
}

// Close stops the server and the provider and removes the temporary store.
func (d *Demo) Close() error {
	var errs []error
	if d.Main != nil {
		errs = append(errs, d.Main.Close())
		d.Main = nil
	}
	if d.provHTTP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, d.provHTTP.Shutdown(ctx))
		cancel()
		d.provHTTP = nil
	}
	if d.tmpDir != "" {
		errs = append(errs, os.RemoveAll(d.tmpDir))
		d.tmpDir = ""
	}
	return errors.Join(errs...)
}

func demoCommand() *Command {
	return &Command{
		Name:    "demo",
		Args:    "[--addr host:port] [--store sqlite:PATH]",
		Summary: "Run the whole idea in one process, with no setup",
		Help: `Starts a Baserow-compatible demo provider on a loopback port and a tokenhub
server, creates a workspace "demo", a provider "baserow-login", a connection
"baserow" that logs in to the demo provider, and an app key; then prints the
URLs, the key, and commands to copy that fetch a token and read the demo's rows.

It keeps running, and logs every refresh: the demo's access tokens live 60 s,
so you can watch tokenhub renew them before they expire. The store is a fresh
temporary directory, removed on exit, unless --store names one. Ctrl-C stops it.`,
		Example: "tokenhub demo\ntokenhub demo --addr 127.0.0.1:0",
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var addr, store, format, level string
			f.String(&addr, "addr", "TOKENHUB_ADDR", "127.0.0.1:7470", "`host:port` for the tokenhub API")
			f.String(&store, "store", "", "", "keep the state in sqlite:`PATH` (default: a temporary directory, removed on exit)")
			f.String(&format, "log-format", "TOKENHUB_LOG_FORMAT", "text", "log format: text or json")
			f.String(&level, "log-level", "TOKENHUB_LOG_LEVEL", "info", "log level: debug, info, warn or error")
			return func(ctx context.Context, e *Env, args []string) error {
				if len(args) > 0 {
					return usagef("takes no arguments, got %q", args)
				}
				cfg := Config{Addr: addr, Store: store, LogFormat: format, LogLevel: level,
					Key: "x", AdminKey: "x", ShutdownTimeout: time.Second}
				if cfg.Store == "" {
					cfg.Store = "sqlite:tmp"
				}
				if err := cfg.Validate(); err != nil {
					return err
				}
				d := &Demo{Addr: addr, Store: store, Logger: cfg.NewLogger(e.Stderr), Stdout: e.Stdout}
				if err := d.Run(ctx); err != nil {
					return err
				}
				<-ctx.Done()
				d.Logger.Info("shutting down")
				return d.Close()
			}
		},
	}
}
