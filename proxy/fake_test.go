package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/server"
)

// fakeTokens is a small in-memory engine: each connection's token is
// "tok-<conn>-<generation>", and Refresh moves to the next generation. It
// renders the provider's header template as the broker does.
type fakeTokens struct {
	mu     sync.Mutex
	conns  map[string]*fakeConn // "ws/name"
	events []fakeEvent

	tokenCalls, refreshCalls atomic.Int64
}

type fakeConn struct {
	up         *broker.Upstream
	header     tokenhub.Header
	gen        int
	tokenErr   error // returned by Token
	refreshErr error // returned by Refresh
}

type fakeEvent struct {
	ws, name string
	typ      tokenhub.EventType
	msg      string
}

func newFakeTokens() *fakeTokens { return &fakeTokens{conns: map[string]*fakeConn{}} }

// add registers ws/name with upstream base and allow rules, presented with h.
func (f *fakeTokens) add(t testing.TB, ws, name, base string, h tokenhub.Header, allow ...tokenhub.AllowRule) *fakeConn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if h.Name == "" {
		h = tokenhub.DefaultHeader
	}
	c := &fakeConn{up: &broker.Upstream{BaseURL: u, Allow: allow}, header: h}
	f.mu.Lock()
	f.conns[ws+"/"+name] = c
	f.mu.Unlock()
	return c
}

func (f *fakeTokens) set(ws, name string, fn func(c *fakeConn)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.conns[ws+"/"+name])
}

func accessToken(name string, gen int) string { return fmt.Sprintf("tok-%s-%d", name, gen) }

func (f *fakeTokens) current(name string, c *fakeConn) (*broker.Current, error) {
	tok := &tokenhub.Token{AccessToken: accessToken(name, c.gen), TokenType: "Bearer"}
	tmpl, err := template.New("header").Parse(c.header.Value)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, tokenhub.TemplateData{AccessToken: tok.AccessToken}); err != nil {
		return nil, err
	}
	return &broker.Current{Token: tok, HeaderName: c.header.Name, HeaderValue: b.String()}, nil
}

func (f *fakeTokens) lookup(ws, name string) (*fakeConn, error) {
	c, ok := f.conns[ws+"/"+name]
	if !ok {
		return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "connection %s/%s not found", ws, name)
	}
	return c, nil
}

func (f *fakeTokens) Token(ctx context.Context, ws, name string) (*broker.Current, error) {
	f.tokenCalls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(ws, name)
	if err != nil {
		return nil, err
	}
	if c.tokenErr != nil {
		return nil, c.tokenErr
	}
	return f.current(name, c)
}

func (f *fakeTokens) Refresh(ctx context.Context, ws, name string) (*broker.Current, error) {
	f.refreshCalls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(ws, name)
	if err != nil {
		return nil, err
	}
	if c.refreshErr != nil {
		return nil, c.refreshErr
	}
	c.gen++
	return f.current(name, c)
}

func (f *fakeTokens) Upstream(ws, name string) (*broker.Upstream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(ws, name)
	if err != nil {
		return nil, err
	}
	return c.up, nil
}

func (f *fakeTokens) Record(ctx context.Context, ws, name string, typ tokenhub.EventType, msg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fakeEvent{ws, name, typ, msg})
	return nil
}

func (f *fakeTokens) recorded() []fakeEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeEvent(nil), f.events...)
}

var _ proxy.Tokens = (*fakeTokens)(nil)
var _ proxy.Tokens = (*broker.Broker)(nil)
var _ server.Proxy = (*proxy.Handler)(nil)

// Test app keys: the front maps each to its workspace, as the server does.
const (
	keyWS1 = "appkey-ws1-0123456789abcdef"
	keyWS2 = "appkey-ws2-fedcba9876543210"
)

var appKeys = map[string]string{keyWS1: "ws1", keyWS2: "ws2"}

// front stands in for the server: it resolves the app key to a workspace,
// splits /v1/proxy/{conn}/{path...} on the escaped path and hands the request
// to the proxy, without cleaning the path (so the proxy's own checks are
// what is tested).
func front(h *proxy.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, ok := appKeys[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if !ok {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/proxy/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		conn, path, _ := strings.Cut(rest, "/")
		if path != "" || strings.HasSuffix(rest, "/") {
			path = "/" + path
		}
		h.ServeProxy(w, r, ws, conn, path)
	})
}

// newLogger returns a debug-level logger into a buffer, and registers a
// cleanup that fails the test when any of secrets shows up in it.
func newLogger(t *testing.T, secrets ...string) *slog.Logger {
	lb := &logtest.Buffer{}
	t.Cleanup(func() {
		out := lb.String()
		for _, s := range append(secrets, keyWS1, keyWS2, "tok-") {
			if strings.Contains(out, s) {
				t.Errorf("log holds secret %q:\n%s", s, out)
			}
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
