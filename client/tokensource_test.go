package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/clock"
	"github.com/tokenhub/tokenhub/internal/poll"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/server"
	"github.com/tokenhub/tokenhub/sqlite"
)

// sdkStack is a whole tokenhub running in the test (a SQLite store in a
// temporary directory, the broker, the API with its proxy on a loopback
// port) with a demo Baserow provider, set up as an app sees it: workspace "acme", connection
// "baserow" to the demo, and an app whose Client counts its calls.
//
// The server side (store, broker, API, demo) runs on the fake clock Server;
// the SDK under test runs on its own fake clock, SDK, so that its timers can
// be counted. Both start at the current second, so an SDK on the real clock
// works against the stack too. Tests move the clocks with advance.
type sdkStack struct {
	URL      string
	AdminKey string
	AppKey   string
	Admin    *client.Client
	App      *client.Client // counts its calls in Calls
	Calls    *callCounter
	Demo     *demo.Server
	DemoURL  string
	Server   *clock.Fake
	SDK      *clock.Fake
}

// newSDKStack starts an sdkStack whose demo issues access tokens that live
// accessTTL.
func newSDKStack(t testing.TB, accessTTL time.Duration) *sdkStack {
	t.Helper()
	start := time.Now().Truncate(time.Second)
	s := &sdkStack{Server: clock.NewFake(start), SDK: clock.NewFake(start)}
	key, err := seal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := seal.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "tokenhub.db"), keys, sqlite.WithNow(s.Server.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Rand 0.5 puts the broker's refresh exactly at 75% of a token's life.
	b := broker.New(broker.Options{Store: st, Clock: s.Server, Rand: func() float64 { return 0.5 }})
	if err := b.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s.AdminKey, err = server.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Store: st, Broker: b, AdminKeyHash: server.HashKey(s.AdminKey), Now: s.Server.Now,
		Proxy: proxy.New(proxy.Options{Tokens: b})})
	api := httptest.NewServer(srv.Handler())
	t.Cleanup(api.Close)
	s.URL = api.URL
	s.Demo = demo.New(demo.Options{Now: s.Server.Now, AccessTTL: accessTTL})
	dts := httptest.NewServer(s.Demo)
	t.Cleanup(dts.Close)
	s.DemoURL = dts.URL

	ctx := context.Background()
	s.Admin = client.New(s.URL, s.AdminKey)
	if _, err := s.Admin.CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Admin.PutProvider(ctx, demo.Provider()); err != nil {
		t.Fatal(err)
	}
	s.putConnection(t, "baserow", demo.DefaultPassword)
	k, err := s.Admin.CreateApp(ctx, "acme", "reports", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.AppKey = k.Key
	s.Calls = &callCounter{base: http.DefaultTransport}
	s.App = client.New(s.URL, s.AppKey, client.WithHTTPClient(&http.Client{Transport: s.Calls}))
	return s
}

// putConnection creates or replaces the connection name to the demo,
// logging in with password.
func (s *sdkStack) putConnection(t testing.TB, name, password string) {
	t.Helper()
	cfg := demo.ConnectionConfig(s.DemoURL)
	cfg.Credentials["password"] = password
	if _, _, err := s.Admin.PutConnection(context.Background(), "acme", name, &cfg); err != nil {
		t.Fatal(err)
	}
}

// advanceServer moves the server's clock to at and waits until the broker
// has finished every refresh that fell due, so that what tokenhub serves
// afterwards does not depend on timing.
func (s *sdkStack) advanceServer(t testing.TB, at time.Time) {
	t.Helper()
	s.Server.Set(at)
	poll.Until(t, "the broker's due refreshes", func() bool {
		v, err := s.Admin.Connection(context.Background(), "acme", "baserow")
		if err != nil {
			t.Fatal(err)
		}
		return v.State == tokenhub.StateHealthy && v.NextRefreshAt.After(at)
	})
}

// callCounter is the app Client's RoundTripper: it counts the requests to
// the token and refresh endpoints, and can hold token requests until told.
type callCounter struct {
	base           http.RoundTripper
	token, refresh atomic.Int64
	hold           atomic.Pointer[func()] // called before a token request is sent
}

func (c *callCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/token"):
		c.token.Add(1)
		if h := c.hold.Load(); h != nil {
			(*h)()
		}
	case strings.HasSuffix(r.URL.Path, "/refresh"):
		c.refresh.Add(1)
	}
	return c.base.RoundTrip(r)
}

// cacheDeadline is when the SDK stops handing out a token that expires at
// exp and was fetched at now: min(10s, a tenth of its remaining life)
// before exp.
func cacheDeadline(exp, now time.Time) time.Time {
	return exp.Add(-min(10*time.Second, exp.Sub(now)/10))
}

// TestTokenSourceOneCallPerLifetime: over several token lifetimes, the
// source asks tokenhub once per token, hands out the cached token until its
// deadline, never one past its expiry, and a fresh one after.
func TestTokenSourceOneCallPerLifetime(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	ts := client.TokenSourceWithClock(s.App, context.Background(), "baserow", s.SDK)

	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	fetchedAt := s.SDK.Now()
	for lifetime := 1; lifetime <= 4; lifetime++ {
		if got := s.Calls.token.Load(); got != int64(lifetime) {
			t.Fatalf("lifetime %d: %d token calls, want %d", lifetime, got, lifetime)
		}
		if tok.AccessToken == "" || tok.TokenType != "JWT" || !tok.Expiry.After(s.SDK.Now()) {
			t.Fatalf("lifetime %d: token set %v type %q expiry %v at %v", lifetime, tok.AccessToken != "", tok.TokenType, tok.Expiry, s.SDK.Now())
		}
		deadline := cacheDeadline(tok.Expiry, fetchedAt)

		// Until the deadline, every read is the cached token: no call. The
		// broker renews the token meanwhile (at 75% of its life).
		s.advanceServer(t, deadline.Add(-time.Millisecond))
		s.SDK.Set(deadline.Add(-time.Millisecond))
		for range 1000 {
			got, err := ts.Token()
			if err != nil {
				t.Fatal(err)
			}
			if got != tok {
				t.Fatalf("lifetime %d: a different token before the deadline", lifetime)
			}
		}
		if got := s.Calls.token.Load(); got != int64(lifetime) {
			t.Fatalf("lifetime %d: %d token calls before the deadline, want %d", lifetime, got, lifetime)
		}

		// At the deadline the cache is withdrawn and the next read fetches
		// the token the broker renewed.
		s.advanceServer(t, deadline)
		s.SDK.Set(deadline)
		next, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		if next.AccessToken == tok.AccessToken || !next.Expiry.After(tok.Expiry) {
			t.Fatalf("lifetime %d: after the deadline got the old token (expiry %v, old %v)", lifetime, next.Expiry, tok.Expiry)
		}
		tok, fetchedAt = next, s.SDK.Now()
	}
	if got := s.Demo.Counts(); got.TokenAuth != 1 || got.TokenRefresh < 4 {
		t.Fatalf("demo counts %+v, want 1 login and at least 4 refreshes", got)
	}
}

// TestTokenSourceTimerLifecycle: the source has a timer only while it holds
// a token, and none once the token's deadline has passed, so an unused
// source holds nothing.
func TestTokenSourceTimerLifecycle(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	ts := client.TokenSourceWithClock(s.App, context.Background(), "baserow", s.SDK)
	if n := s.SDK.Pending(); n != 0 {
		t.Fatalf("%d timers before the first read", n)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	fetched := s.SDK.Now()
	if n := s.SDK.Pending(); n != 1 {
		t.Fatalf("%d timers while a token is cached, want 1", n)
	}
	// The timer wakes at least every 10 s to compare the deadline with the
	// wall clock, but it stays one timer.
	s.SDK.Advance(25 * time.Second)
	if n := s.SDK.Pending(); n != 1 {
		t.Fatalf("%d timers after 25s, want 1", n)
	}
	s.SDK.Set(cacheDeadline(tok.Expiry, fetched))
	if n := s.SDK.Pending(); n != 0 {
		t.Fatalf("%d timers after the deadline, want 0", n)
	}
}

// TestTokenSourceCoalesces: many goroutines that find the cache empty at
// once share one call to tokenhub, both for the first token and at expiry.
func TestTokenSourceCoalesces(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	ts := client.TokenSourceWithClock(s.App, context.Background(), "baserow", s.SDK)
	const readers = 64

	readAll := func() []*oauth2.Token {
		// Hold the token request until every reader has started, so that
		// they overlap it.
		var started sync.WaitGroup
		started.Add(readers)
		hold := func() {
			started.Wait()
			time.Sleep(20 * time.Millisecond) // let the last readers reach the cache
		}
		s.Calls.hold.Store(&hold)
		defer s.Calls.hold.Store(nil)
		toks := make([]*oauth2.Token, readers)
		var wg sync.WaitGroup
		for i := range readers {
			wg.Go(func() {
				started.Done()
				tok, err := ts.Token()
				if err != nil {
					t.Error(err)
				}
				toks[i] = tok
			})
		}
		wg.Wait()
		return toks
	}

	first := readAll()
	if got := s.Calls.token.Load(); got != 1 {
		t.Fatalf("%d token calls for %d concurrent first reads, want 1", got, readers)
	}
	for _, tok := range first {
		if tok != first[0] {
			t.Fatal("concurrent readers got different tokens")
		}
	}

	deadline := cacheDeadline(first[0].Expiry, s.SDK.Now())
	s.advanceServer(t, deadline)
	s.SDK.Set(deadline)
	second := readAll()
	if got := s.Calls.token.Load(); got != 2 {
		t.Fatalf("%d token calls after %d concurrent reads at expiry, want 2", got, readers)
	}
	for _, tok := range second {
		if tok != second[0] || tok.AccessToken == first[0].AccessToken {
			t.Fatal("readers at expiry did not all get the one new token")
		}
	}
}

// TestTokenSourceErrors: failures come back as *client.Error with the
// server's code, needs_reauth is told apart from other failures, and errors
// are not cached.
func TestTokenSourceErrors(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	ctx := context.Background()

	_, err := client.TokenSourceWithClock(s.App, ctx, "no-such-connection", s.SDK).Token()
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound || !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown connection: err = %v, want a 404 *client.Error matching ErrNotFound", err)
	}

	const wrong = "not-the-password-1234"
	s.putConnection(t, "broken", wrong)
	ts := client.TokenSourceWithClock(s.App, ctx, "broken", s.SDK)
	_, err = ts.Token()
	e = nil
	if !errors.As(err, &e) {
		t.Fatalf("needs_reauth: err = %T %v, want *client.Error", err, err)
	}
	if !errors.Is(err, client.ErrNeedsReauth) || errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrConflict) {
		t.Fatalf("needs_reauth: err = %v does not match ErrNeedsReauth alone", err)
	}
	if e.Code != tokenhub.ENEEDSREAUTH || e.State != tokenhub.StateNeedsReauth || tokenhub.ErrorCode(err) != tokenhub.ENEEDSREAUTH {
		t.Fatalf("needs_reauth: code %q state %q", e.Code, e.State)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Fatal("the error holds the password")
	}

	// Fixing the credentials fixes the source: the error was not cached.
	calls := s.Calls.token.Load()
	s.putConnection(t, "broken", demo.DefaultPassword)
	poll.Until(t, "the repaired connection's token", func() bool {
		v, err := s.Admin.Connection(ctx, "acme", "broken")
		return err == nil && v.HasToken
	})
	tok, err := ts.Token()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("after repair: %v", err)
	}
	if got := s.Calls.token.Load() - calls; got != 1 {
		t.Fatalf("%d token calls after repair, want 1", got)
	}

	// The source's context is used for its fetches.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = client.TokenSourceWithClock(s.App, cctx, "baserow", s.SDK).Token()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: err = %v, want context.Canceled", err)
	}
}

// TestTokenSourceClockAhead: a token that the local clock already sees as
// expired (the local clock runs ahead of tokenhub's) is returned, since
// tokenhub vouches for it, but never cached.
func TestTokenSourceClockAhead(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	s.SDK.Advance(2 * time.Minute)
	ts := client.TokenSourceWithClock(s.App, context.Background(), "baserow", s.SDK)
	for i := 1; i <= 3; i++ {
		tok, err := ts.Token()
		if err != nil || tok.AccessToken == "" {
			t.Fatalf("read %d: %v", i, err)
		}
		if got := s.Calls.token.Load(); got != int64(i) {
			t.Fatalf("read %d: %d token calls, want %d (nothing cached)", i, got, i)
		}
	}
	if n := s.SDK.Pending(); n != 0 {
		t.Fatalf("%d timers for an uncached token", n)
	}
}

// TestTokenSourcePublic: the exported constructor works on the real clock.
func TestTokenSourcePublic(t *testing.T) {
	s := newSDKStack(t, time.Hour)
	ts := s.App.TokenSource(context.Background(), "baserow")
	for range 100 {
		tok, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		if !tok.Valid() {
			t.Fatalf("invalid token, expiry %v", tok.Expiry)
		}
	}
	if got := s.Calls.token.Load(); got != 1 {
		t.Fatalf("%d token calls for 100 reads, want 1", got)
	}
}
