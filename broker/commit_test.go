package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

// refusingStore is the real store, except that while refuse is set it
// refuses every write of a new token, as a full disk would.
type refusingStore struct {
	tokenhub.Store
	refuse atomic.Bool
}

func (s *refusingStore) UpdateConnection(ctx context.Context, id int64, upd tokenhub.ConnectionUpdate) (*tokenhub.Connection, error) {
	if upd.Token != nil && s.refuse.Load() {
		return nil, errors.New("disk full")
	}
	return s.Store.UpdateConnection(ctx, id, upd)
}

// TestNewTokenIsStoredBeforeHandedOut: a token the store could not keep is
// never given to a reader; the old, still valid token is served meanwhile,
// and the renewal is retried.
func TestNewTokenIsStoredBeforeHandedOut(t *testing.T) {
	e := newEnv(t)
	idp := newBaserow(t, e.clk, time.Minute)
	e.putProvider(demo.Provider())
	e.b.Close() // this test runs its own broker, on a store that can refuse
	e.b = nil
	st := &refusingStore{Store: e.st}
	logs := &logtest.Buffer{}
	b := broker.New(broker.Options{Store: st, Clock: e.clk, Owner: "refusing",
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Rand: func() float64 { return 0.5 }})
	if err := b.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg := idp.config()
	if _, _, err := e.st.PutConnection(context.Background(), "acme", "baserow", &cfg, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(context.Background(), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
	old := e.waitState("baserow", tokenhub.StateHealthy).Token.AccessToken

	st.refuse.Store(true)
	e.clk.Advance(45 * time.Second) // the refresh-ahead gets a new token the store refuses
	e.waitFor("the refused write", func() bool { return strings.Contains(logs.String(), "TOKEN NOT STORED") })
	if idp.Counts().TokenRefresh != 1 {
		t.Fatalf("refresh requests = %d, want 1", idp.Counts().TokenRefresh)
	}
	cur, err := b.Token(context.Background(), "acme", "baserow")
	if err != nil {
		t.Fatalf("Token = %v; want the old, still valid token", err)
	}
	if cur.Token.AccessToken != old {
		t.Fatal("Token handed out the new token, which the store refused; want the old token, the only one stored")
	}
	if got := e.conn("baserow").Token.AccessToken; got != old {
		t.Fatal("the store changed although it refused the write")
	}

	st.refuse.Store(false)
	e.clk.Advance(5 * time.Second) // the retry, after at most the backoff ceiling
	e.waitFor("a stored renewal", func() bool { return e.conn("baserow").Token.AccessToken != old })
	e.waitFor("the stored token handed out", func() bool {
		cur, err := b.Token(context.Background(), "acme", "baserow")
		return err == nil && cur.Token.AccessToken == e.conn("baserow").Token.AccessToken
	})
}

// gatedGranter is the real grant client, except that when armed it holds a
// refresh before sending it, until gate is closed.
type gatedGranter struct {
	grant.Client
	armed   atomic.Bool
	waiting chan struct{} // closed when a refresh is held
	gate    chan struct{}
}

func (g *gatedGranter) Refresh(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection, rt string) (*tokenhub.Token, error) {
	if g.armed.CompareAndSwap(true, false) {
		close(g.waiting)
		<-g.gate
	}
	return g.Client.Refresh(ctx, p, c, rt)
}

// TestRefusedRefreshRereadsStoredToken: a refresher whose lease lapsed while
// its request was delayed gets invalid_grant for a refresh token that another
// refresher has meanwhile rotated. Before deciding the connection is broken
// it re-reads the store, finds the other refresher's token, and serves it.
func TestRefusedRefreshRereadsStoredToken(t *testing.T) {
	g := &gatedGranter{waiting: make(chan struct{}), gate: make(chan struct{})}
	e := newEnvWith(t, func(e *env) { g.Now = e.clk.Now; e.grant = g })
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour, IssueRefreshToken: true, Rotate: true})
	// A seeded refresh token and no credentials: this connection cannot log
	// in again, so a wrong verdict would leave it needing re-authorisation.
	cfg := tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: srv.TokenURL, Grant: tokenhub.GrantRefreshToken,
		ClientID: providertest.ClientID, ClientSecret: providertest.ClientSecret, RefreshToken: seedRefreshToken(t, srv)}
	e.put("api", cfg)
	e.waitState("api", tokenhub.StateHealthy)

	other := broker.New(broker.Options{Store: e.st, Clock: e.clk, Owner: "other-replica", Rand: func() float64 { return 0.5 }})
	if err := other.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })

	g.armed.Store(true)
	slow := make(chan error, 1)
	var slowCur *broker.Current
	go func() {
		cur, err := e.b.Refresh(context.Background(), "acme", "api")
		slowCur = cur
		slow <- err
	}()
	<-g.waiting // this broker holds the lease and is about to send the refresh token

	e.clk.Advance(2 * time.Minute) // its lease lapses
	fresh, err := other.Refresh(context.Background(), "acme", "api")
	if err != nil {
		t.Fatalf("the other replica's refresh: %v", err)
	}
	close(g.gate) // the delayed request goes out with the rotated-away token
	if err := <-slow; err != nil {
		t.Fatalf("the delayed refresh = %v; want the other replica's token", err)
	}
	if slowCur.Token.AccessToken != fresh.Token.AccessToken {
		t.Fatal("the delayed refresh did not hand out the stored token")
	}
	c := e.conn("api")
	if c.Status.State != tokenhub.StateHealthy || c.Token.AccessToken != fresh.Token.AccessToken {
		t.Fatalf("stored state %s, same token %v; want healthy with the other replica's token", c.Status.State, c.Token.AccessToken == fresh.Token.AccessToken)
	}
	if slices.Contains(e.events("api"), tokenhub.EventNeedsReauth) {
		t.Fatalf("events %v: the connection was declared broken", e.events("api"))
	}
	if srv.Counts().RefreshToken != 3 {
		t.Fatalf("refresh requests = %d, want 3 (seed, the other replica's, the refused one)", srv.Counts().RefreshToken)
	}
}
