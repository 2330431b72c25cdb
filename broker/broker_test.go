package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/clock"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/internal/poll"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/sqlite"
)

var epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// env is one tokenhub engine on a real SQLite file, talking to a real HTTP
// provider, with a fake clock shared by the engine and the provider.
type env struct {
	t     *testing.T
	clk   *clock.Fake
	path  string
	key   []byte
	st    *sqlite.Store
	b     *broker.Broker
	logs  *logtest.Buffer
	owner string
	// rand is the broker's source of jitter; a constant 0.5 (no jitter)
	// when nil.
	rand func() float64
	// grant performs the upstream requests; the broker's default when nil.
	grant broker.Granter
}

func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

// newEnvRand is newEnv with rnd as the broker's source of jitter.
func newEnvRand(t *testing.T, rnd func() float64) *env {
	return newEnvWith(t, func(e *env) { e.rand = rnd })
}

// newEnvWith is newEnv with setup run on the env before the store and the
// broker open, to set its rand or grant.
func newEnvWith(t *testing.T, setup func(*env)) *env {
	t.Helper()
	e := &env{t: t, clk: clock.NewFake(epoch), path: filepath.Join(t.TempDir(), "tokenhub.db"),
		key: bytes.Repeat([]byte{7}, 32), logs: &logtest.Buffer{}, owner: "test-owner"}
	if setup != nil {
		setup(e)
	}
	e.open()
	t.Cleanup(e.close)
	if _, err := e.st.CreateWorkspace(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) open() {
	e.t.Helper()
	keys, err := seal.NewKeyring(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st, err = sqlite.Open(e.path, keys)
	if err != nil {
		e.t.Fatal(err)
	}
	rnd := e.rand
	if rnd == nil {
		rnd = func() float64 { return 0.5 } // no jitter: refresh exactly at 75%
	}
	e.b = broker.New(broker.Options{
		Store: e.st, Clock: e.clk, Owner: e.owner, Grant: e.grant,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Rand:   rnd,
	})
	if err := e.b.Open(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) close() {
	if e.b != nil {
		e.b.Close()
		e.b = nil
	}
	if e.st != nil {
		e.st.Close()
		e.st = nil
	}
}

// restart stops the engine and the store and starts both again on the same file.
func (e *env) restart() {
	e.close()
	e.open()
}

// put creates or changes a connection the way the API does: store, then Sync.
func (e *env) put(name string, cfg tokenhub.ConnectionConfig) {
	e.t.Helper()
	ctx := context.Background()
	if _, _, err := e.st.PutConnection(ctx, "acme", name, &cfg, e.clk.Now()); err != nil {
		e.t.Fatal(err)
	}
	if err := e.b.Sync(ctx, "acme", name); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) putProvider(p *tokenhub.Provider) {
	e.t.Helper()
	if _, err := e.st.PutProvider(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) conn(name string) *tokenhub.Connection {
	e.t.Helper()
	c, err := e.st.FindConnection(context.Background(), "acme", name)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds. Flights run on their own goroutines, so
// their effects arrive asynchronously even under the fake clock.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	poll.Until(e.t, what, cond)
}

func (e *env) waitState(name string, want tokenhub.State) *tokenhub.Connection {
	e.t.Helper()
	var c *tokenhub.Connection
	e.waitFor("state "+string(want), func() bool {
		c = e.conn(name)
		return c.Status.State == want && c.Lease.Owner == ""
	})
	return c
}

func (e *env) events(name string) []tokenhub.EventType {
	e.t.Helper()
	c := e.conn(name)
	evs, err := e.st.FindEvents(context.Background(), c.ID, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []tokenhub.EventType
	for i := len(evs) - 1; i >= 0; i-- {
		out = append(out, evs[i].Type)
	}
	return out
}

// baserow is a demo (Baserow-compatible) provider with a gate that can hold
// refresh requests, to make concurrent readers meet one in-flight refresh.
type baserow struct {
	*demo.Server
	srv  *httptest.Server
	hold atomic.Pointer[chan struct{}]
	// refreshes counts refresh requests as they arrive, before any hold.
	refreshes atomic.Int64
}

func newBaserow(t *testing.T, clk *clock.Fake, ttl time.Duration) *baserow {
	br := &baserow{Server: demo.New(demo.Options{Now: clk.Now, AccessTTL: ttl})}
	br.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == demo.PathTokenRefresh {
			br.refreshes.Add(1)
			if ch := br.hold.Load(); ch != nil {
				<-*ch
			}
		}
		br.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		br.Release()
		if ch := br.hold.Swap(nil); ch != nil {
			close(*ch)
		}
		br.srv.Close()
	})
	return br
}

func (br *baserow) config() tokenhub.ConnectionConfig { return demo.ConnectionConfig(br.srv.URL) }

// holdRefreshes makes refresh requests wait at the provider, as a slow
// provider's would, until release is called.
func (br *baserow) holdRefreshes() (release func()) {
	gate := make(chan struct{})
	br.hold.Store(&gate)
	return func() {
		br.hold.Store(nil)
		close(gate)
	}
}

// healthyBaserow starts a demo Baserow whose access tokens last a minute,
// adds the demo provider and a connection "baserow" to it, and waits until
// the connection holds its first token. It returns the provider and the
// connection as stored then.
func (e *env) healthyBaserow() (*baserow, *tokenhub.Connection) {
	e.t.Helper()
	idp := newBaserow(e.t, e.clk, time.Minute)
	e.putProvider(demo.Provider())
	e.put("baserow", idp.config())
	return idp, e.waitState("baserow", tokenhub.StateHealthy)
}

func TestObtainsAtOnceAndServes(t *testing.T) {
	e := newEnv(t)
	idp := newBaserow(t, e.clk, time.Minute)
	e.putProvider(demo.Provider())
	e.put("baserow", idp.config())

	// No reader asked: the first token is obtained at once.
	c := e.waitState("baserow", tokenhub.StateHealthy)
	if got := idp.Counts().TokenAuth; got != 1 {
		t.Fatalf("token-auth calls = %d, want 1", got)
	}
	if c.Token == nil || c.Token.ExpirySource != tokenhub.ExpiryJWT {
		t.Fatalf("stored token = %v, want one whose expiry came from the JWT", c.Token)
	}
	if want := epoch.Add(time.Minute); !c.Token.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at = %v, want %v", c.Token.ExpiresAt, want)
	}
	cur, err := e.b.Token(context.Background(), "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if cur.HeaderName != "Authorization" || cur.HeaderValue != "JWT "+c.Token.AccessToken {
		t.Fatalf("header = %s: %q, want Authorization: JWT <stored token>", cur.HeaderName, cur.HeaderValue)
	}
	if got, want := e.events("baserow"), []tokenhub.EventType{tokenhub.EventCreated, tokenhub.EventObtained}; !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if logs := e.logs.String(); strings.Contains(logs, c.Token.AccessToken) || strings.Contains(logs, demo.DefaultPassword) {
		t.Fatal("a secret reached the log")
	}
}

func TestRefreshAheadWithoutBlockingReaders(t *testing.T) {
	e := newEnv(t)
	idp, c := e.healthyBaserow()
	old := c.Token.AccessToken

	// 75% of 60 s, no jitter (Rand is 0.5), and 10 s before expiry at the latest.
	if want := epoch.Add(45 * time.Second); !c.Status.NextRefreshAt.Equal(want) {
		t.Fatalf("next_refresh_at = %v, want %v", c.Status.NextRefreshAt, want)
	}

	// Hold the refresh in flight, and read meanwhile with a context that is
	// already cancelled: a reader that had to wait would get its error.
	release := idp.holdRefreshes()
	e.clk.Advance(45 * time.Second)
	e.waitFor("refresh request to arrive", func() bool { return idp.refreshes.Load() == 1 })
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for range 100 {
		cur, err := e.b.Token(done, "acme", "baserow")
		if err != nil {
			t.Fatalf("a reader waited for the refresh in flight: %v", err)
		}
		if cur.Token.AccessToken != old {
			t.Fatal("reader got a token that is not stored yet")
		}
	}
	release()

	e.waitFor("new token", func() bool {
		cur, err := e.b.Token(context.Background(), "acme", "baserow")
		return err == nil && cur.Token.AccessToken != old
	})
	c = e.conn("baserow")
	if c.Token.AccessToken == old {
		t.Fatal("new token handed out before it was stored")
	}
	if c.Status.RefreshCount != 2 || c.Status.State != tokenhub.StateHealthy {
		t.Fatalf("status = %+v, want healthy with 2 successful requests", c.Status)
	}
	if got := idp.Counts().TokenAuth; got != 1 {
		t.Fatalf("token-auth calls = %d, want 1 (refresh must use the refresh token)", got)
	}
	// Baserow sends no new refresh token on refresh: the old one is kept.
	if c.Token.RefreshToken == "" {
		t.Fatal("refresh token lost when the provider omitted a new one")
	}
}

func TestThousandReadersAtExpiryShareOneRequest(t *testing.T) {
	e := newEnv(t)
	idp, _ := e.healthyBaserow()

	release := idp.holdRefreshes()
	// Jump past expiry: the scheduled refresh starts and is held at the
	// provider; the token is withdrawn, so every reader must wait.
	e.clk.Advance(61 * time.Second)
	e.waitFor("refresh request to arrive", func() bool { return idp.refreshes.Load() == 1 })

	const readers = 1000
	var wg sync.WaitGroup
	var waiting atomic.Int64
	errs := make(chan error, readers)
	tokens := make(chan string, readers)
	for range readers {
		wg.Go(func() {
			waiting.Add(1)
			cur, err := e.b.Token(context.Background(), "acme", "baserow")
			if err != nil {
				errs <- err
				return
			}
			tokens <- cur.Token.AccessToken
		})
	}
	e.waitFor("readers to start", func() bool { return waiting.Load() == readers })
	release()
	wg.Wait()
	close(errs)
	close(tokens)
	for err := range errs {
		t.Fatalf("reader failed: %v", err)
	}
	seen := map[string]bool{}
	for tok := range tokens {
		seen[tok] = true
	}
	if len(seen) != 1 {
		t.Fatalf("readers got %d different tokens, want 1", len(seen))
	}
	if got := idp.Counts().TokenRefresh + idp.Counts().TokenAuth; got != 2 {
		t.Fatalf("upstream calls = %d, want 2 (one login, one refresh)", got)
	}
}

func TestCancelledReaderDoesNotCancelSharedRefresh(t *testing.T) {
	e := newEnv(t)
	idp, _ := e.healthyBaserow()

	release := idp.holdRefreshes()
	e.clk.Advance(61 * time.Second)
	e.waitFor("refresh request to arrive", func() bool { return idp.refreshes.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		_, err := e.b.Token(ctx, "acme", "baserow")
		got <- err
	}()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader got %v, want context.Canceled", err)
	}
	release()
	// The shared refresh went on and its token is served.
	cur, err := e.b.Token(context.Background(), "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if !cur.Token.Valid(e.clk.Now()) {
		t.Fatal("got an invalid token")
	}
	if got := idp.Counts().TokenRefresh; got != 1 {
		t.Fatalf("refresh calls = %d, want 1", got)
	}
}

func TestTransientFailureBacksOffAndServesOldToken(t *testing.T) {
	e := newEnv(t)
	idp, c := e.healthyBaserow()
	old := c.Token.AccessToken

	idp.FailNext(2, http.StatusServiceUnavailable, "")
	e.clk.Advance(45 * time.Second) // the refresh-ahead fails
	c = e.waitState("baserow", tokenhub.StateDegraded)
	if c.Status.Failures != 1 || c.Status.LastError == nil || c.Status.LastError.Status != http.StatusServiceUnavailable {
		t.Fatalf("status = %+v, want one failure with status 503", c.Status)
	}
	// The old token is still valid and still served.
	cur, err := e.b.Token(context.Background(), "acme", "baserow")
	if err != nil || cur.Token.AccessToken != old {
		t.Fatalf("Token = %v, %v; want the old, still valid token", cur, err)
	}
	// Backoff: with Rand 0.5 the first retry waits half of the 1 s base.
	wait := c.Status.NextRefreshAt.Sub(e.clk.Now())
	if wait <= 0 || wait > time.Second {
		t.Fatalf("first retry in %v, want within (0, 1s]", wait)
	}
	e.clk.Advance(wait) // second attempt fails too
	e.waitFor("second failure", func() bool { c = e.conn("baserow"); return c.Status.Failures == 2 && c.Lease.Owner == "" })
	wait2 := c.Status.NextRefreshAt.Sub(e.clk.Now())
	if wait2 <= wait {
		t.Fatalf("second backoff %v not longer than first %v", wait2, wait)
	}
	e.clk.Advance(wait2) // third attempt succeeds
	c = e.waitState("baserow", tokenhub.StateHealthy)
	if c.Token.AccessToken == old {
		t.Fatal("token not renewed after recovery")
	}
	evs := e.events("baserow")
	for _, want := range []tokenhub.EventType{tokenhub.EventDegraded, tokenhub.EventRetried, tokenhub.EventRecovered} {
		if !slices.Contains(evs, want) {
			t.Fatalf("events %v lack %s", evs, want)
		}
	}
}

func TestNeverHandsOutExpiredToken(t *testing.T) {
	e := newEnv(t)
	idp, _ := e.healthyBaserow()

	idp.FailNext(1000, http.StatusBadGateway, "")
	// Step to just past expiry; every scheduled retry on the way fails.
	for e.clk.Now().Before(epoch.Add(61 * time.Second)) {
		e.clk.Advance(500 * time.Millisecond)
		e.waitFor("no flight", func() bool { return e.conn("baserow").Lease.Owner == "" })
	}
	_, err := e.b.Token(context.Background(), "acme", "baserow")
	if tokenhub.ErrorCode(err) != tokenhub.EUNAVAILABLE {
		t.Fatalf("Token after expiry with provider down = %v, want unavailable", err)
	}
	var te *tokenhub.Error
	if !errors.As(err, &te) || te.RetryAfter <= 0 {
		t.Fatalf("unavailable error %v has no RetryAfter", err)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	e := newEnv(t)
	idp := newBaserow(t, e.clk, time.Minute)
	e.putProvider(demo.Provider())
	idp.FailNext(1, http.StatusTooManyRequests, "120")
	e.put("baserow", idp.config())
	c := e.waitState("baserow", tokenhub.StatePending)
	e.waitFor("failure recorded", func() bool { c = e.conn("baserow"); return c.Status.Failures == 1 })
	if got := c.Status.NextRefreshAt.Sub(epoch); got < 120*time.Second {
		t.Fatalf("next attempt after %v, want at least Retry-After's 120s", got)
	}
	// A reader meanwhile fails fast with the remaining wait; it does not hit the provider.
	_, err := e.b.Token(context.Background(), "acme", "baserow")
	var te *tokenhub.Error
	if !errors.As(err, &te) || te.Code != tokenhub.EUNAVAILABLE || te.RetryAfter < 100*time.Second {
		t.Fatalf("Token during Retry-After = %v, want unavailable with RetryAfter ≈ 120s", err)
	}
	if got := idp.Counts().TokenAuth; got != 1 {
		t.Fatalf("token-auth calls = %d, want 1: readers must not hammer a provider that asked to wait", got)
	}
	// Nor does a forced refresh.
	if _, err := e.b.Refresh(context.Background(), "acme", "baserow"); tokenhub.ErrorCode(err) != tokenhub.EUNAVAILABLE {
		t.Fatalf("forced refresh during Retry-After = %v, want unavailable", err)
	}
	e.clk.Advance(119 * time.Second)
	if got := idp.Counts().TokenAuth; got != 1 {
		t.Fatalf("token-auth calls before Retry-After passed = %d, want 1", got)
	}
	e.clk.Advance(time.Second)
	e.waitState("baserow", tokenhub.StateHealthy)
}

func TestRefusedRefreshLogsInAgain(t *testing.T) {
	e := newEnv(t)
	idp, _ := e.healthyBaserow()

	idp.RevokeRefreshTokens()
	e.clk.Advance(45 * time.Second)
	e.waitFor("second login", func() bool { return idp.Counts().TokenAuth == 2 })
	c := e.waitState("baserow", tokenhub.StateHealthy)
	if idp.Counts().TokenRefresh != 1 {
		t.Fatalf("refresh calls = %d, want 1", idp.Counts().TokenRefresh)
	}
	if !slices.Contains(e.events("baserow"), tokenhub.EventRelogin) {
		t.Fatalf("events %v lack relogin", e.events("baserow"))
	}
	if !c.Token.Valid(e.clk.Now()) {
		t.Fatal("no valid token after the new login")
	}
}

func TestWrongPasswordNeedsReauth(t *testing.T) {
	e := newEnv(t)
	idp := newBaserow(t, e.clk, time.Minute)
	e.putProvider(demo.Provider())
	cfg := idp.config()
	cfg.Credentials = map[string]string{"email": demo.DefaultEmail, "password": "wrong-password-123"}
	e.put("baserow", cfg)
	c := e.waitState("baserow", tokenhub.StateNeedsReauth)
	if c.Status.LastError == nil || c.Status.LastError.Code == "" {
		t.Fatalf("last error = %+v, want the provider's error code", c.Status.LastError)
	}
	_, err := e.b.Token(context.Background(), "acme", "baserow")
	if tokenhub.ErrorCode(err) != tokenhub.ENEEDSREAUTH {
		t.Fatalf("Token = %v, want needs_reauth", err)
	}
	msg := tokenhub.ErrorMessage(err)
	if !strings.Contains(msg, "acme/baserow") || !strings.Contains(msg, c.Status.LastError.Code) {
		t.Fatalf("error %q does not name the connection and the provider's code %q", msg, c.Status.LastError.Code)
	}
	if strings.Contains(msg, "wrong-password-123") || strings.Contains(e.logs.String(), "wrong-password-123") {
		t.Fatal("the password reached an error or the log")
	}
	// Readers do not hammer the provider: the connection stays broken until fixed.
	for range 10 {
		e.b.Token(context.Background(), "acme", "baserow")
	}
	if got := idp.Counts().TokenAuth; got != 1 {
		t.Fatalf("token-auth calls = %d, want 1", got)
	}
	// Fixing the credentials obtains a token at once.
	e.put("baserow", idp.config())
	e.waitState("baserow", tokenhub.StateHealthy)
	if _, err := e.b.Token(context.Background(), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsTokensWithoutFetching(t *testing.T) {
	e := newEnv(t)
	idp, before := e.healthyBaserow()

	e.restart()
	cur, err := e.b.Token(context.Background(), "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if cur.Token.AccessToken != before.Token.AccessToken {
		t.Fatal("a new token was fetched after restart")
	}
	if c := idp.Counts(); c.TokenAuth != 1 || c.TokenRefresh != 0 {
		t.Fatalf("provider calls after restart = %+v, want 1 login and no refresh", c)
	}
	// The schedule survives too: the refresh happens at the stored time.
	e.clk.Advance(45 * time.Second)
	e.waitFor("scheduled refresh", func() bool { return idp.Counts().TokenRefresh == 1 })
}

func TestRestartTakesOverInterruptedRefresh(t *testing.T) {
	e := newEnv(t)
	_, c := e.healthyBaserow()

	// Simulate a crash after the lease was written and before the result was:
	// take the lease as this owner and stop without releasing it.
	e.b.Close()
	if _, _, err := e.st.AcquireLease(context.Background(), c.ID, e.owner, e.clk.Now(), e.clk.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	e.b = nil
	e.restart()
	e.waitFor("takeover", func() bool { return slices.Contains(e.events("baserow"), tokenhub.EventInterrupted) })
	c = e.waitState("baserow", tokenhub.StateHealthy)
	if c.Status.RefreshCount != 2 {
		t.Fatalf("refresh count = %d, want 2 (the interrupted refresh was redone)", c.Status.RefreshCount)
	}
}

func TestWrongKeyFailsClearly(t *testing.T) {
	e := newEnv(t)
	e.healthyBaserow()
	e.close()

	keys, err := seal.NewKeyring(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(e.path, keys)
	if err != nil {
		t.Fatal(err)
	}
	b := broker.New(broker.Options{Store: st, Clock: e.clk})
	err = b.Open(context.Background())
	b.Close()
	st.Close()
	if err == nil || !strings.Contains(err.Error(), "acme/baserow") {
		t.Fatalf("Open with the wrong key = %v, want an error naming acme/baserow", err)
	}
	// Nothing was overwritten: the right key still reads the token.
	e.open()
	if _, err := e.b.Token(context.Background(), "acme", "baserow"); err != nil {
		t.Fatalf("after reopening with the right key: %v", err)
	}
}

func TestConfigChangeObtainsNewToken(t *testing.T) {
	e := newEnv(t)
	idp, c := e.healthyBaserow()
	old := c.Token.AccessToken

	cfg := idp.config()
	cfg.BaseURL = idp.srv.URL + "/"
	e.put("baserow", cfg)
	e.waitFor("second login", func() bool { return idp.Counts().TokenAuth == 2 })
	c = e.waitState("baserow", tokenhub.StateHealthy)
	if c.Token.AccessToken == old {
		t.Fatal("token not replaced after the config changed")
	}
	if !slices.Contains(e.events("baserow"), tokenhub.EventConfigChanged) {
		t.Fatalf("events %v lack config_changed", e.events("baserow"))
	}
}

func TestForcedRefreshJoinsRunningFlight(t *testing.T) {
	e := newEnv(t)
	idp, _ := e.healthyBaserow()

	// A forced refresh joins any flight still finishing; start from none.
	if _, err := e.b.Refresh(context.Background(), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
	base := idp.refreshes.Load()

	release := idp.holdRefreshes()
	first := make(chan error, 1)
	go func() {
		_, err := e.b.Refresh(context.Background(), "acme", "baserow")
		first <- err
	}()
	e.waitFor("refresh request to arrive", func() bool { return idp.refreshes.Load() == base+1 })

	// While that refresh is in flight, more forced refreshes join it. With a
	// cancelled context each returns at once; one that started a flight of
	// its own would still send a request, which the count below would see.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for range 19 {
		if _, err := e.b.Refresh(cancelled, "acme", "baserow"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Refresh during a flight = %v, want it to wait for that flight", err)
		}
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	e.b.Close() // waits for every flight
	e.b = nil
	if got := idp.refreshes.Load() - base; got != 1 {
		t.Fatalf("refresh requests for 20 overlapping forced refreshes = %d, want 1", got)
	}
}

func TestUnknownConnection(t *testing.T) {
	e := newEnv(t)
	_, err := e.b.Token(context.Background(), "acme", "nope")
	if tokenhub.ErrorCode(err) != tokenhub.ENOTFOUND {
		t.Fatalf("Token(unknown) = %v, want not_found", err)
	}
	if _, err := e.b.Upstream("acme", "nope"); tokenhub.ErrorCode(err) != tokenhub.ENOTFOUND {
		t.Fatalf("Upstream(unknown) = %v, want not_found", err)
	}
}

func TestDeleteForgetsConnection(t *testing.T) {
	e := newEnv(t)
	idp, _ := e.healthyBaserow()
	if err := e.st.DeleteConnection(context.Background(), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Sync(context.Background(), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Token(context.Background(), "acme", "baserow"); tokenhub.ErrorCode(err) != tokenhub.ENOTFOUND {
		t.Fatalf("Token after delete = %v, want not_found", err)
	}
	e.clk.Advance(time.Hour) // no timer of the deleted connection fires a request
	if got := idp.Counts().TokenRefresh; got != 0 {
		t.Fatalf("refresh calls after delete = %d, want 0", got)
	}
}

func TestProviderChangeRerendersHeader(t *testing.T) {
	e := newEnv(t)
	idp := newBaserow(t, e.clk, time.Minute)
	p := demo.Provider()
	e.putProvider(p)
	e.put("baserow", idp.config())
	e.waitState("baserow", tokenhub.StateHealthy)

	p.Header = tokenhub.Header{Name: "X-Api-Key", Value: "{{.AccessToken}}"}
	e.putProvider(p)
	if err := e.b.Sync(context.Background(), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
	cur, err := e.b.Token(context.Background(), "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if cur.HeaderName != "X-Api-Key" || cur.HeaderValue != cur.Token.AccessToken {
		t.Fatalf("header after the provider changed = %s: %q, want X-Api-Key: <token>", cur.HeaderName, cur.HeaderValue)
	}
	if got := idp.Counts().TokenAuth + idp.Counts().TokenRefresh; got != 1 {
		t.Fatalf("provider calls = %d, want 1: a header change needs no new token", got)
	}
}
