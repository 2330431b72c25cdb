package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/server"
	"github.com/tokenhub/tokenhub/sqlite"
)

// Config is the configuration of `tokenhub serve`: flags that fall back to
// TOKENHUB_* environment variables. The zero Config is not valid; start from
// DefaultConfig.
type Config struct {
	Addr  string // host:port to listen on; port 0 picks a free one
	Store string // sqlite:PATH

	// Key holds the encryption keys themselves (base64, comma-separated,
	// primary first), as TOKENHUB_KEY does. When empty, KeyFile is used,
	// and created on the first start.
	Key     string
	KeyFile string

	// AdminKey is the admin key itself, as TOKENHUB_ADMIN_KEY holds it. When
	// empty, AdminKeyFile is read, and created on the first start.
	AdminKey     string
	AdminKeyFile string

	LogFormat string // text or json
	LogLevel  string // debug, info, warn or error

	// ShutdownTimeout bounds how long a shutdown waits for in-flight
	// requests and refreshes before it cancels or cuts them off.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the defaults of `tokenhub serve`.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:7470",
		Store:           "sqlite:./tokenhub.db",
		KeyFile:         "./tokenhub.key",
		AdminKeyFile:    "./tokenhub.admin-key",
		LogFormat:       "text",
		LogLevel:        "info",
		ShutdownTimeout: 10 * time.Second,
	}
}

// bind defines c's flags on f, with c's current values as defaults.
func (c *Config) bind(f *flags) {
	f.String(&c.Addr, "addr", "TOKENHUB_ADDR", c.Addr, "`host:port` to listen on")
	f.String(&c.Store, "store", "TOKENHUB_STORE", c.Store, "where state is kept: `sqlite:PATH` (postgres:// is not supported yet)")
	f.String(&c.KeyFile, "key-file", "TOKENHUB_KEY_FILE", c.KeyFile,
		"`file` of encryption keys, created on first start; TOKENHUB_KEY (base64 keys, comma-separated) takes precedence")
	f.String(&c.AdminKeyFile, "admin-key-file", "TOKENHUB_ADMIN_KEY_FILE", c.AdminKeyFile,
		"`file` holding the admin key, created on first start; TOKENHUB_ADMIN_KEY takes precedence")
	f.String(&c.LogFormat, "log-format", "TOKENHUB_LOG_FORMAT", c.LogFormat, "log format: text or json")
	f.String(&c.LogLevel, "log-level", "TOKENHUB_LOG_LEVEL", c.LogLevel, "log level: debug, info, warn or error")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", "TOKENHUB_SHUTDOWN_TIMEOUT", c.ShutdownTimeout,
		"how long shutdown waits for in-flight requests")
	if v, ok := f.lookup("TOKENHUB_KEY"); ok {
		c.Key = v
	}
	if v, ok := f.lookup("TOKENHUB_ADMIN_KEY"); ok {
		c.AdminKey = v
	}
}

// Validate checks c and returns an error that names the first bad flag.
func (c *Config) Validate() error {
	if err := validateAddr(c.Addr); err != nil {
		return flagErrorf("addr", "%s", err)
	}
	if _, err := storePath(c.Store); err != nil {
		return flagErrorf("store", "%s", err)
	}
	if c.Key == "" && c.KeyFile == "" {
		return flagErrorf("key-file", "required when TOKENHUB_KEY is not set")
	}
	if c.AdminKey == "" && c.AdminKeyFile == "" {
		return flagErrorf("admin-key-file", "required when TOKENHUB_ADMIN_KEY is not set")
	}
	if _, err := parseLogFormat(c.LogFormat); err != nil {
		return flagErrorf("log-format", "%s", err)
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		return flagErrorf("log-level", "%s", err)
	}
	if c.ShutdownTimeout <= 0 {
		return flagErrorf("shutdown-timeout", "must be positive")
	}
	return nil
}

func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (for example 127.0.0.1:7470, or :7470 for every interface)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: %q is not a host name or IP address", addr, host)
	}
	return nil
}

// storePath returns the SQLite file named by a --store value.
func storePath(s string) (string, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || scheme == "" {
		return "", fmt.Errorf("%q names no store type; write sqlite:PATH, for example sqlite:./tokenhub.db", s)
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		rest = strings.TrimPrefix(rest, "//") // sqlite:///abs/path and sqlite://rel/path
		if rest == "" {
			return "", fmt.Errorf("%q names no file; write sqlite:PATH, for example sqlite:./tokenhub.db", s)
		}
		return rest, nil
	case "postgres", "postgresql":
		return "", fmt.Errorf("PostgreSQL stores are not supported yet; use sqlite:PATH")
	}
	return "", fmt.Errorf("unknown store type %q; write sqlite:PATH, for example sqlite:./tokenhub.db", scheme)
}

func parseLogFormat(s string) (string, error) {
	switch s {
	case "text", "json":
		return s, nil
	}
	return "", fmt.Errorf("must be text or json, not %q", s)
}

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// NewLogger returns the logger c asks for, writing to w.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	level, _ := parseLogLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// durationsAsText writes durations as "1m30s" rather than as nanoseconds,
// which is what the JSON handler would otherwise print.
func durationsAsText(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// Main is a running tokenhub server: the store, the engine and the HTTP API,
// wired together. Tests run the real server by filling in Config (with Addr
// on port 0 and a temporary store), calling Run, and Close at the end.
//
// Main is not safe for concurrent use: call Run once, then Close once.
type Main struct {
	Config Config
	// Logger receives every log line. When nil, Run builds one from Config
	// that writes to Stderr.
	Logger *slog.Logger
	// Stderr is where the default logger writes; os.Stderr when nil.
	Stderr io.Writer
	// Now, when set, is the clock of the server's API. The engine keeps the
	// real clock.
	Now func() time.Time

	// Set by Run.
	Store  *sqlite.Store
	Broker *broker.Broker
	// KeyFileCreated and AdminKeyFileCreated report whether this start
	// created the key files.
	KeyFileCreated      bool
	AdminKeyFileCreated bool

	adminKey string
	http     *http.Server
	ln       net.Listener
	served   chan error
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main { return &Main{Config: DefaultConfig()} }

// Run validates the configuration, opens the store (creating the key files on
// the first start), starts the engine and starts serving the API in the
// background. It returns once the server is listening; Close stops it. On
// failure, everything Run opened is closed again.
func (m *Main) Run(ctx context.Context) (err error) {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	if m.Stderr == nil {
		m.Stderr = os.Stderr
	}
	if m.Logger == nil {
		m.Logger = m.Config.NewLogger(m.Stderr)
	}
	log := m.Logger
	defer func() {
		if err != nil {
			m.closeAll(context.Background())
		}
	}()

	keys, err := m.loadKeys()
	if err != nil {
		return err
	}
	keyring, err := seal.NewKeyring(keys[0], keys[1:]...)
	if err != nil {
		return fmt.Errorf("encryption keys: %w", err)
	}
	adminKey, err := m.loadAdminKey()
	if err != nil {
		return err
	}
	m.adminKey = adminKey

	path, _ := storePath(m.Config.Store)
	store, err := sqlite.Open(path, keyring)
	if err != nil {
		if errors.Is(err, sqlite.ErrLocked) {
			return fmt.Errorf("store %s is in use by another tokenhub process: %w", path, err)
		}
		return fmt.Errorf("opening store %s: %w", path, err)
	}
	m.Store = store

	m.Broker = broker.New(broker.Options{
		Store:  store,
		Grant:  &grant.Client{},
		Logger: log.With("component", "broker"),
		// The SQLite store is locked to this one process, so a lease
		// left in it can only be ours from before a crash or kill: with a
		// stable owner the restarted process takes it over at once (and
		// logs that the refresh was interrupted) instead of waiting for it
		// to lapse.
		Owner: "sqlite:" + path,
	})
	if err := m.Broker.Open(ctx); err != nil {
		return fmt.Errorf("starting the engine: %w", err)
	}

	srv := server.New(server.Options{
		Store:        store,
		Broker:       m.Broker,
		AdminKeyHash: server.HashKey(adminKey),
		Logger:       log.With("component", "http"),
		Now:          m.Now,
		Proxy:        newProxy(m.Broker, log.With("component", "proxy")),
	})
	ln, err := net.Listen("tcp", m.Config.Addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	m.ln = ln
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}
	m.http = hs
	served := make(chan error, 1)
	m.served = served
	go func() { served <- hs.Serve(ln) }()
	log.Info("tokenhub is serving", "url", m.URL(), "store", path, "key_id", keyring.PrimaryID())
	return nil
}

// URL returns the base URL of the running server, such as
// "http://127.0.0.1:7470"; "" before Run.
func (m *Main) URL() string {
	if m.ln == nil {
		return ""
	}
	return "http://" + m.ln.Addr().String()
}

// AdminKey returns the admin key the server accepts; "" before Run.
func (m *Main) AdminKey() string { return m.adminKey }

// Wait blocks until ctx is done or the server stops serving on its own, and
// returns the serving error in the latter case.
func (m *Main) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-m.served:
		m.served <- err // for Close
		return fmt.Errorf("serving: %w", err)
	}
}

// Close shuts down gracefully: it stops accepting requests and starting
// refreshes, and lets the requests and refreshes in flight finish, up to
// Config.ShutdownTimeout. Refreshes still running shortly before then are
// cancelled, so the requests waiting on them answer 503; requests still
// running at the timeout are cut off. Then it closes the store. It returns
// the errors met.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	return m.closeAll(ctx)
}

func (m *Main) closeAll(ctx context.Context) error {
	var errs []error
	// Requests and refreshes in flight finish together, since a request may
	// be waiting on a refresh: HTTP stops accepting and drains while the
	// engine lets its refreshes run. Refreshes still running shortly before
	// the deadline are cancelled, so that the requests waiting on them can
	// still answer (503) before it.
	httpDone := make(chan error, 1)
	if hs := m.http; hs != nil {
		go func() { httpDone <- hs.Shutdown(ctx) }()
	} else {
		if m.ln != nil {
			m.ln.Close()
		}
		httpDone <- nil
	}
	if m.Broker != nil {
		bctx, cancel := drainContext(ctx)
		if err := m.Broker.Shutdown(bctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping the engine: %w", err))
		}
		cancel()
		m.Broker = nil
	}
	if err := <-httpDone; err != nil {
		errs = append(errs, fmt.Errorf("stopping HTTP: %w", err))
		m.http.Close()
	}
	m.http = nil
	if m.Store != nil {
		if err := m.Store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the store: %w", err))
		}
		m.Store = nil
	}
	if m.Logger != nil && len(errs) == 0 {
		m.Logger.Info("tokenhub stopped")
	}
	return errors.Join(errs...)
}

// drainContext returns the context the engine's refreshes may run under
// during a shutdown bounded by ctx: until a little before ctx's deadline,
// leaving the requests waiting on them time to answer. Without a deadline
// (a failed start) it is done at once.
func drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		c, cancel := context.WithCancel(ctx)
		cancel()
		return c, cancel
	}
	return context.WithDeadline(ctx, d.Add(-min(time.Second, time.Until(d)/4)))
}

// loadKeys returns the encryption keys, primary first: from TOKENHUB_KEY, or
// from the key file, which is created on the first start.
func (m *Main) loadKeys() ([][]byte, error) {
	if m.Config.Key != "" {
		keys, err := seal.ParseKeys(m.Config.Key)
		if err != nil {
			return nil, fmt.Errorf("TOKENHUB_KEY: %w", err)
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("TOKENHUB_KEY: holds no key")
		}
		return keys, nil
	}
	keys, created, err := seal.LoadOrCreateKeyFile(m.Config.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("--key-file: %s holds no key", m.Config.KeyFile)
	}
	if created {
		m.KeyFileCreated = true
		m.Logger.Warn("CREATED A NEW ENCRYPTION KEY FILE. Back it up now: every stored secret and token is encrypted with it, "+
			"and losing it loses them all. Keep it out of version control.",
			"path", absPath(m.Config.KeyFile), "key_id", seal.KeyID(keys[0]))
	}
	return keys, nil
}

// minAdminKeyLen is the shortest admin key serve accepts. The admin key
// manages everything, so a guessable one is refused rather than trusted.
const minAdminKeyLen = 24

// loadAdminKey returns the admin key: TOKENHUB_ADMIN_KEY, or the admin key
// file, which is created with a new key on the first start.
func (m *Main) loadAdminKey() (string, error) {
	if m.Config.AdminKey != "" {
		if len(m.Config.AdminKey) < minAdminKeyLen {
			return "", fmt.Errorf("TOKENHUB_ADMIN_KEY: too short (%d characters); use at least %d random characters, such as a key tokenhub generates on a first start without it", len(m.Config.AdminKey), minAdminKeyLen)
		}
		return m.Config.AdminKey, nil
	}
	path := m.Config.AdminKeyFile
	key, err := readKeyFile(path)
	if err == nil {
		if len(key) < minAdminKeyLen {
			return "", fmt.Errorf("--admin-key-file: the key in %s is too short (%d characters); use at least %d random characters, or delete the file to have a new key generated", path, len(key), minAdminKeyLen)
		}
		return key, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("--admin-key-file: %w", err)
	}
	key, err = server.NewKey()
	if err != nil {
		return "", fmt.Errorf("making the admin key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("--admin-key-file: creating it: %w", err)
	}
	_, werr := f.WriteString(key + "\n")
	if serr := f.Sync(); werr == nil {
		werr = serr
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return "", fmt.Errorf("--admin-key-file: writing it: %w", werr)
	}
	m.AdminKeyFileCreated = true
	m.Logger.Warn("created the admin key; the tokenhub CLI run from this directory finds it there, "+
		"others set TOKENHUB_ADMIN_KEY to its contents", "path", absPath(path))
	return key, nil
}

// readKeyFile reads a key kept alone in a file. It refuses a file that
// group or others may read, since the key manages everything.
func readKeyFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by others (mode %04o); run: chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", err
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return key, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// newProxy returns the proxy for the server's /v1/proxy route.
func newProxy(b *broker.Broker, log *slog.Logger) server.Proxy {
	return proxy.New(proxy.Options{Tokens: b, Logger: log})
}

// serveCommand is `tokenhub serve`.
func serveCommand() *Command {
	return &Command{
		Name:    "serve",
		Args:    "[flags]",
		Summary: "Run the tokenhub server",
		Help: `Runs the tokenhub server: the HTTP API, and the engine that obtains tokens and
refreshes them before they expire.

On the first start it creates the encryption key file (back it up: losing it
loses every stored secret) and the admin key file, both with mode 0600, and logs
where they are. SIGINT or SIGTERM stops it gracefully: requests in flight
finish, refreshes in flight finish or are cancelled, and the store is closed.`,
		Example: `tokenhub serve
tokenhub serve --addr :7470 --store sqlite:/var/lib/tokenhub/tokenhub.db --log-format json
TOKENHUB_KEY=$(cat /run/secrets/tokenhub-key) tokenhub serve`,
		New: func(f *flags) func(context.Context, *Env, []string) error {
			m := NewMain()
			m.Config.bind(f)
			return func(ctx context.Context, e *Env, args []string) error {
				if len(args) > 0 {
					return usagef("takes no arguments, got %q", args)
				}
				m.Stderr = e.Stderr
				if err := m.Run(ctx); err != nil {
					return err
				}
				werr := m.Wait(ctx)
				m.Logger.Info("shutting down")
				return errors.Join(werr, m.Close())
			}
		},
	}
}
