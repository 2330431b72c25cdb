package broker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

// holdingGranter is the real grant client, except that when armed it holds a
// refresh's answer, after the provider has sent it, until the flight's
// context is cancelled: the moment a shutdown lands between the provider
// rotating the refresh token and tokenhub storing the new one.
type holdingGranter struct {
	grant.Client
	armed atomic.Bool
	held  chan struct{} // closed when an answer is being held
}

func (g *holdingGranter) Refresh(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection, rt string) (*tokenhub.Token, error) {
	tok, err := g.Client.Refresh(ctx, p, c, rt)
	if g.armed.CompareAndSwap(true, false) {
		close(g.held)
		<-ctx.Done()
	}
	return tok, err
}

var _ broker.Granter = (*holdingGranter)(nil)

// TestShutdownKeepsRotatedRefreshToken: a shutdown that cancels a refresh
// after the provider rotated the refresh token still stores the new pair, so
// the provider's retired token is not all the store is left with.
func TestShutdownKeepsRotatedRefreshToken(t *testing.T) {
	g := &holdingGranter{held: make(chan struct{})}
	e := newEnvWith(t, func(e *env) {
		g.Now = e.clk.Now
		e.grant = g
	})
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour, IssueRefreshToken: true, Rotate: true})
	e.put("api", oauthConfig(srv, tokenhub.GrantPassword))
	c := e.waitState("api", tokenhub.StateHealthy)
	rt1 := c.Token.RefreshToken

	g.armed.Store(true)
	e.clk.Set(c.Status.NextRefreshAt)
	<-g.held // the provider has rotated: rt1 is retired
	e.b.Close()
	e.b = nil

	c = e.conn("api")
	if c.Token.RefreshToken == rt1 {
		t.Fatal("after a shutdown during the refresh the store holds only the refresh token the provider retired")
	}
	if !srv.ValidAccessToken(c.Token.AccessToken) || c.Lease.Owner != "" {
		t.Fatalf("stored token valid=%v, lease %+v; want the provider's new token and a free lease", srv.ValidAccessToken(c.Token.AccessToken), c.Lease)
	}

	// The next process renews with the stored refresh token, without a new login.
	e.restart()
	e.clk.Set(c.Status.NextRefreshAt)
	e.waitFor("a refresh after the restart", func() bool { return srv.Counts().RefreshToken == 2 })
	e.waitState("api", tokenhub.StateHealthy)
	if n := srv.Counts().Password; n != 1 {
		t.Fatalf("%d password grants, want 1: the rotated refresh token was lost", n)
	}
}

// TestShutdownLetsRunningRefreshFinish: Shutdown starts no refresh, but one
// already running may finish within the grace, and its waiter gets the new
// token, which is stored.
func TestShutdownLetsRunningRefreshFinish(t *testing.T) {
	g := &gatedGranter{waiting: make(chan struct{}), gate: make(chan struct{})}
	e := newEnvWith(t, func(e *env) { g.Now = e.clk.Now; e.grant = g })
	idp, before := e.healthyBaserow()
	old := before.Token.AccessToken
	// A broken connection: its readers fail at once without a flight, until
	// the shutdown marks it, which makes the shutdown's progress visible.
	broken := idp.config()
	broken.Credentials = map[string]string{"email": demo.DefaultEmail, "password": "wrong-password-123"}
	e.put("broken", broken)
	e.waitState("broken", tokenhub.StateNeedsReauth)

	g.armed.Store(true)
	type result struct {
		cur *broker.Current
		err error
	}
	waiter := make(chan result, 1)
	go func() {
		cur, err := e.b.Refresh(context.Background(), "acme", "baserow")
		waiter <- result{cur, err}
	}()
	<-g.waiting

	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.b.Shutdown(ctx)
		close(stopped)
	}()
	e.waitFor("the shutdown to begin", func() bool {
		_, err := e.b.Token(context.Background(), "acme", "broken")
		return tokenhub.ErrorCode(err) == tokenhub.EUNAVAILABLE
	})
	select {
	case <-stopped:
		t.Fatal("Shutdown returned while a refresh was still running")
	default:
	}
	close(g.gate)
	r := <-waiter
	<-stopped
	e.b = nil
	if r.err != nil {
		t.Fatalf("the refresh running at shutdown: %v; want it to finish", r.err)
	}
	c := e.conn("baserow")
	if r.cur.Token.AccessToken == old || c.Token.AccessToken != r.cur.Token.AccessToken {
		t.Fatal("the refresh that finished during the shutdown did not hand out and store a new token")
	}
}
