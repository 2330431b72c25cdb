package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/clock"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/sqlite"
)

// TestRealBrokerWithDemo runs the proxy on the real engine (a SQLite file,
// the grant client) against the demo provider, which behaves like Baserow:
// JWT login, JWT refresh, and a rows API that wants Authorization: JWT <token>.
//
// The demo's clock runs ahead of tokenhub's, so the token tokenhub still
// believes valid is refused with Baserow's 401: the proxy must force exactly
// one refresh at the demo and retry exactly once.
func TestRealBrokerWithDemo(t *testing.T) {
	ctx := context.Background()
	epoch := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	thClock := clock.NewFake(epoch)   // tokenhub's
	demoClock := clock.NewFake(epoch) // the provider's
	dm := demo.New(demo.Options{Now: demoClock.Now, AccessTTL: 10 * time.Minute})
	ds := httptest.NewServer(dm)
	t.Cleanup(func() { dm.Release(); ds.Close() })

	keys, err := seal.NewKeyring(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "tokenhub.db"), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateWorkspace(ctx, "ws1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutProvider(ctx, demo.Provider()); err != nil {
		t.Fatal(err)
	}
	cfg := demo.ConnectionConfig(ds.URL)
	if _, _, err := st.PutConnection(ctx, "ws1", "baserow", &cfg, thClock.Now()); err != nil {
		t.Fatal(err)
	}
	logger := newLogger(t, demo.DefaultPassword)
	b := broker.New(broker.Options{Store: st, Clock: thClock, Logger: logger, Owner: "proxy-test"})
	if err := b.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Sync(ctx, "ws1", "baserow"); err != nil {
		t.Fatal(err)
	}
	first, err := b.Token(ctx, "ws1", "baserow")
	if err != nil {
		t.Fatal(err)
	}

	front := httptest.NewServer(front(proxy.New(proxy.Options{Tokens: b, Logger: logger})))
	t.Cleanup(front.Close)
	e := &env{front: front}
	path := "/v1/proxy/baserow" + demo.PathRowsPrefix + "1/?user_field_names=true"

	// The token works: one request, no refresh.
	res, body := e.do(t, keyWS1, "GET", path, nil)
	if res.StatusCode != 200 || !strings.Contains(string(body), `"results"`) {
		t.Fatalf("got %d %s, want the demo's rows", res.StatusCode, body)
	}
	before := dm.Counts()

	// The provider's clock passes the access token's expiry; tokenhub's does not.
	demoClock.Advance(11 * time.Minute)
	res, body = e.do(t, keyWS1, "GET", path, nil)
	if res.StatusCode != 200 {
		t.Fatalf("after expiry at the provider: got %d %s, want 200 from the retry", res.StatusCode, body)
	}
	var rows struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(body, &rows); err != nil || len(rows.Results) == 0 {
		t.Errorf("body %s: want rows (%v)", body, err)
	}
	after := dm.Counts()
	if got := after.TokenRefresh - before.TokenRefresh; got != 1 {
		t.Errorf("%d refreshes at the provider, want exactly 1", got)
	}
	if got := after.TokenAuth - before.TokenAuth; got != 0 {
		t.Errorf("%d logins at the provider, want 0 (a refresh suffices)", got)
	}
	if got := after.Rows - before.Rows; got != 2 {
		t.Errorf("%d rows requests at the provider, want 2 (the 401 and one retry)", got)
	}
	now, err := b.Token(ctx, "ws1", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if now.HeaderValue == first.HeaderValue || !strings.HasPrefix(now.HeaderValue, "JWT ") {
		t.Errorf("the broker's header did not move to a new JWT token")
	}
	if bytes.Contains(body, []byte(now.Token.AccessToken)) || bytes.Contains(body, []byte(first.Token.AccessToken)) {
		t.Errorf("a token reached the app")
	}

	// Expired again at the provider, and this time the request has a body of
	// unknown length, which cannot be replayed: the 401 reaches the app, no
	// refresh is forced, and the connection's log in the store says so.
	demoClock.Advance(11 * time.Minute)
	before = dm.Counts()
	res, body = e.do(t, keyWS1, "GET", path, io.MultiReader(strings.NewReader("x")))
	if res.StatusCode != 401 || !strings.Contains(string(body), "ERROR_INVALID_ACCESS_TOKEN") {
		t.Errorf("got %d %s, want Baserow's 401 passed through", res.StatusCode, body)
	}
	if got := dm.Counts().TokenRefresh - before.TokenRefresh; got != 0 {
		t.Errorf("%d refreshes, want 0", got)
	}
	c, err := st.FindConnection(ctx, "ws1", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	events, err := st.FindEvents(ctx, c.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[0].Type != tokenhub.EventUnauthorized {
		var types []tokenhub.EventType
		for _, ev := range events {
			types = append(types, ev.Type)
		}
		t.Errorf("newest events %v, want %s first", types, tokenhub.EventUnauthorized)
	}
}
