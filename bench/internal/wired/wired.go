// Package wired builds the "ours" target of tokenhub's benchmarks: the real
// server, wired as `tokenhub serve` wires it (cmd/tokenhub/serve.go), so that
// a benchmark measures what users get and not a stand-in.
//
// That is server.New(...).Handler() on a SQLite store in a temporary
// directory with sealed secrets, the real broker with the real grant client,
// the proxy mounted on /v1/proxy/, and logs at info. Once the server is
// serving, Hub.Ready creates, through the server's own admin API, the
// workspace Workspace, the demo Baserow provider (demo.Provider: a JSON
// login, the token presented as Authorization: JWT <token>), the connection
// Connection to Options.BaseURL, and an app allowed to read it; it fetches
// the first token with the app key, so that the token is cached before the
// load starts, and hands the app key on.
//
// Both bench/token (the token endpoint) and bench/proxy (the proxy route)
// use it, so their "ours" is the same server.
package wired

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/server"
	"github.com/tokenhub/tokenhub/sqlite"
)

// The names Ready creates, and the key of the app key in the info it returns.
const (
	Workspace  = "bench"
	Connection = "baserow"
	App        = "bench"
	InfoAppKey = "app_key"
)

// Options configure New.
type Options struct {
	// BaseURL is the connection's base_url: the demo provider's login is
	// POSTed to BaseURL+demo.PathTokenAuth, and the proxy forwards
	// /v1/proxy/{Connection}/{path} to BaseURL/{path}. Required.
	BaseURL string
	// MinTokenTTL, when positive, is how long the first token must stay
	// valid: Ready fails when it expires sooner, since the broker would then
	// refresh it during the run and the benchmark would measure that too.
	MinTokenTTL time.Duration
	// Logger receives the server's, broker's and proxy's logs. When nil,
	// text at info level on standard error, as `tokenhub serve` logs by
	// default (standard output belongs to load.Serve's announcement).
	Logger *slog.Logger
}

// Hub is the wired server. Its Ready and Close are meant to be called once
// each, from one goroutine; the handler it installed is safe for concurrent
// use.
type Hub struct {
	opts     Options
	adminKey string
	closers  []func()
}

// New wires tokenhub into hs: it sets hs.Handler to the server's handler.
// The store lives in a temporary directory that Close removes. It fails when
// the directory, the key, the store or the broker cannot be made, having
// undone what it did.
func New(hs *http.Server, o Options) (*Hub, error) {
	if o.BaseURL == "" {
		return nil, fmt.Errorf("wired.New: Options.BaseURL is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	h := &Hub{opts: o}
	fail := func(doing string, err error) (*Hub, error) {
		h.Close()
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	dir, err := os.MkdirTemp("", "tokenhub-bench-")
	if err != nil {
		return fail("making the store's directory", err)
	}
	h.closers = append(h.closers, func() { os.RemoveAll(dir) })
	key, err := seal.NewKey()
	if err != nil {
		return fail("making the encryption key", err)
	}
	keys, err := seal.NewKeyring(key)
	if err != nil {
		return fail("making the keyring", err)
	}
	st, err := sqlite.Open(filepath.Join(dir, "tokenhub.db"), keys)
	if err != nil {
		return fail("opening the store", err)
	}
	h.closers = append(h.closers, func() { st.Close() })
	log := o.Logger
	b := broker.New(broker.Options{Store: st, Grant: &grant.Client{}, Logger: log.With("component", "broker"), Owner: "bench"})
	if err := b.Open(context.Background()); err != nil {
		return fail("opening the broker", err)
	}
	h.closers = append(h.closers, func() { b.Close() })
	if h.adminKey, err = server.NewKey(); err != nil {
		return fail("making the admin key", err)
	}
	srv := server.New(server.Options{
		Store:        st,
		Broker:       b,
		AdminKeyHash: server.HashKey(h.adminKey),
		Logger:       log.With("component", "http"),
		Proxy:        proxy.New(proxy.Options{Tokens: b, Logger: log.With("component", "proxy")}),
	})
	hs.Handler = srv.Handler()
	return h, nil
}

// Ready creates, through the admin API of the server serving at url, what
// the benchmark needs (see the package doc), fetches the first token with
// the app key, and returns {InfoAppKey: the app key}. It fits
// load.ServeOptions.Ready. It fails when a call fails or the first token
// expires within Options.MinTokenTTL.
func (h *Hub) Ready(url string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := client.New(url, h.adminKey)
	if _, err := admin.CreateWorkspace(ctx, Workspace); err != nil {
		return nil, fmt.Errorf("creating the workspace: %w", err)
	}
	if _, _, err := admin.PutProvider(ctx, demo.Provider()); err != nil {
		return nil, fmt.Errorf("creating the provider: %w", err)
	}
	cfg := demo.ConnectionConfig(h.opts.BaseURL)
	if _, _, err := admin.PutConnection(ctx, Workspace, Connection, &cfg); err != nil {
		return nil, fmt.Errorf("creating the connection: %w", err)
	}
	app, err := admin.CreateApp(ctx, Workspace, App, []string{Connection})
	if err != nil {
		return nil, fmt.Errorf("creating the app: %w", err)
	}
	tok, err := client.New(url, app.Key).Token(ctx, Connection)
	if err != nil {
		return nil, fmt.Errorf("first token: %w", err)
	}
	if left := time.Until(tok.ExpiresAt); h.opts.MinTokenTTL > 0 && left < h.opts.MinTokenTTL {
		return nil, fmt.Errorf("first token: expires in %s, want at least %s", left.Round(time.Second), h.opts.MinTokenTTL)
	}
	return map[string]string{InfoAppKey: app.Key}, nil
}

// Close stops the broker, closes the store and removes its directory, in
// the reverse order of their making.
func (h *Hub) Close() {
	for _, c := range slices.Backward(h.closers) {
		c()
	}
	h.closers = nil
}
