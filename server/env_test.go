package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/server"
	"github.com/tokenhub/tokenhub/sqlite"
)

// The engine and the proxy fit the server's interfaces.
var (
	_ server.Broker = (*broker.Broker)(nil)
	_ server.Proxy  = (*proxy.Handler)(nil)
)

// env is a real tokenhub: a SQLite store in a temporary directory, the real
// broker, and the server listening on a loopback port, driven through
// client/.
type env struct {
	t        testing.TB
	store    *sqlite.Store
	broker   *broker.Broker
	srv      *server.Server
	url      string
	adminKey string
	admin    *client.Client
	logs     *logtest.Buffer
}

type envOptions struct {
	now   func() time.Time
	proxy server.Proxy
	ttl   time.Duration
	quiet bool // log at info, not debug, so that requests are not logged
	// realProxy mounts the real proxy.Handler on the broker.
	realProxy bool
}

func newEnv(t testing.TB) *env { return newEnvWith(t, envOptions{}) }

func newEnvWith(t testing.TB, o envOptions) *env {
	t.Helper()
	key, err := seal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := seal.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "tokenhub.db"), keys)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	logs := &logtest.Buffer{}
	level := slog.LevelDebug
	if o.quiet {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	b := broker.New(broker.Options{Store: st, Logger: log})
	if err := b.Open(context.Background()); err != nil {
		t.Fatalf("broker.Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })

	adminKey, err := server.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if o.realProxy {
		o.proxy = proxy.New(proxy.Options{Tokens: b, Logger: log})
	}
	srv := server.New(server.Options{
		Store:        st,
		Broker:       b,
		AdminKeyHash: server.HashKey(adminKey),
		Logger:       log,
		Now:          o.now,
		Proxy:        o.proxy,
		KeyCacheTTL:  o.ttl,
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &env{t: t, store: st, broker: b, srv: srv, url: ts.URL, adminKey: adminKey,
		admin: client.New(ts.URL, adminKey), logs: logs}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// workspace creates a workspace or fails the test.
func (e *env) workspace(name string) {
	e.t.Helper()
	if _, err := e.admin.CreateWorkspace(ctx(e.t), name); err != nil {
		e.t.Fatalf("CreateWorkspace(%q): %v", name, err)
	}
}

// app creates an app and returns a client that uses its key.
func (e *env) app(ws, name string, conns ...string) (*client.Client, string) {
	e.t.Helper()
	k, err := e.admin.CreateApp(ctx(e.t), ws, name, conns)
	if err != nil {
		e.t.Fatalf("CreateApp(%q, %q): %v", ws, name, err)
	}
	return client.New(e.url, k.Key), k.Key
}

// demoProvider starts a demo Baserow provider, registers its provider
// definition through the API, and returns it with its URL.
func (e *env) demoProvider(o demo.Options) (*demo.Server, string) {
	e.t.Helper()
	d := demo.New(o)
	ts := httptest.NewServer(d)
	e.t.Cleanup(ts.Close)
	if _, _, err := e.admin.PutProvider(ctx(e.t), demo.Provider()); err != nil {
		e.t.Fatalf("PutProvider: %v", err)
	}
	return d, ts.URL
}

// putDemoConn puts a connection to the demo provider at url.
func (e *env) putDemoConn(ws, name, url string) *client.ConnectionView {
	e.t.Helper()
	cfg := demo.ConnectionConfig(url)
	v, _, err := e.admin.PutConnection(ctx(e.t), ws, name, &cfg)
	if err != nil {
		e.t.Fatalf("PutConnection(%q, %q): %v", ws, name, err)
	}
	return v
}

// rawResponse is an answer read in full.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// do sends a raw request, for what the typed client cannot send (malformed
// bodies, missing keys) or to look at the bytes of an answer.
func (e *env) do(method, path, key string, body io.Reader) rawResponse {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx(e.t), method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return rawResponse{resp.StatusCode, resp.Header, b}
}

// sameAnswer fails unless a and b have the same status, body and headers
// (but for Date): answers that must not be told apart.
func sameAnswer(t *testing.T, what string, a, b rawResponse) {
	t.Helper()
	ha, hb := a.header.Clone(), b.header.Clone()
	ha.Del("Date")
	hb.Del("Date")
	if a.status != b.status || !bytes.Equal(a.body, b.body) || fmt.Sprint(ha) != fmt.Sprint(hb) {
		t.Fatalf("%s: the answers differ:\n%d %v %s\n%d %v %s", what, a.status, ha, a.body, b.status, hb, b.body)
	}
}

// errorOf decodes a JSON error answer, and checks that it is marked as
// tokenhub's with its code in the X-Tokenhub-Error header.
func errorOf(t *testing.T, r rawResponse) client.ErrorBody {
	t.Helper()
	var eb client.ErrorBody
	if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error.Code == "" {
		t.Fatalf("answer %d %q is not a JSON error: %v", r.status, r.body, err)
	}
	if got := r.header.Values(client.ErrorHeader); len(got) != 1 || got[0] != eb.Error.Code {
		t.Fatalf("answer %d %s: %s = %q, want exactly its code %q", r.status, r.body, client.ErrorHeader, got, eb.Error.Code)
	}
	return eb
}

// apiError asserts that err is a *client.Error with the given status and code.
func apiError(t *testing.T, err error, status int, code string) *client.Error {
	t.Helper()
	ce, ok := err.(*client.Error)
	if !ok {
		t.Fatalf("err = %T %v, want *client.Error %d %s", err, err, status, code)
	}
	if ce.Status != status || ce.Code != code {
		t.Fatalf("err = %d %s (%q), want %d %s", ce.Status, ce.Code, ce.Message, status, code)
	}
	return ce
}

// snapshot is everything the admin API shows, to check that a failed request
// changed nothing.
type snapshot struct {
	Workspaces  []*client.Workspace
	Apps        map[string][]*client.App
	Connections map[string][]*client.ConnectionView
	Providers   []*client.ProviderView
}

func (e *env) snapshot() string {
	e.t.Helper()
	c := ctx(e.t)
	var s snapshot
	var err error
	if s.Workspaces, err = e.admin.Workspaces(c); err != nil {
		e.t.Fatal(err)
	}
	s.Apps = map[string][]*client.App{}
	s.Connections = map[string][]*client.ConnectionView{}
	for _, w := range s.Workspaces {
		if s.Apps[w.Name], err = e.admin.Apps(c, w.Name); err != nil {
			e.t.Fatal(err)
		}
		conns, err := e.admin.Connections(c, w.Name)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, cv := range conns {
			// The runtime status moves on its own (refreshes) and so does
			// updated_at; the config and its generation must not.
			cv.State, cv.ExpiresAt, cv.NextRefreshAt, cv.LastRefreshAt = "", time.Time{}, time.Time{}, time.Time{}
			cv.RefreshCount, cv.Failures, cv.LastError, cv.HasToken, cv.UpdatedAt = 0, 0, nil, false, time.Time{}
		}
		s.Connections[w.Name] = conns
	}
	if s.Providers, err = e.admin.Providers(c); err != nil {
		e.t.Fatal(err)
	}
	b, err := json.MarshalIndent(&s, "", " ")
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// noSecrets fails when any of secrets occurs in s.
func noSecrets(t *testing.T, where, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s holds a secret (%.6s…)", where, sec)
		}
	}
}

// oauth2Config is a valid client-credentials connection config.
func oauth2Config() *tokenhub.ConnectionConfig {
	return &tokenhub.ConnectionConfig{
		Provider:     "oauth2",
		TokenURL:     "http://127.0.0.1:1/oauth/token",
		Grant:        tokenhub.GrantClientCredentials,
		ClientID:     "reports-service",
		ClientSecret: "s3cret-client-secret-value",
		Scopes:       []string{"reports.read"},
		Params:       map[string]string{"audience": "https://api.example.com"},
	}
}
