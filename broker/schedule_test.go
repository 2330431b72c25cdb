package broker_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

// near reports whether a and b are within a millisecond: the schedule is
// computed in float64 shares of the lifetime.
func near(a, b time.Duration) bool { return (a - b).Abs() <= time.Millisecond }

// TestRefreshSchedule checks when a fresh token is set to be renewed, over
// the provider's refresh knobs and the jitter: at RefreshAt of its lifetime
// ± RefreshJitter, never later than RefreshMargin before expiry, never
// sooner than MinRefreshInterval after it was obtained.
func TestRefreshSchedule(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		rand float64
		p    tokenhub.Provider // knobs only; the name and token URL are filled in
		want time.Duration     // after ObtainedAt; 0 means never
	}{
		{name: "default 75%, jitter centred", ttl: time.Hour, rand: 0.5, want: 45 * time.Minute},
		{name: "default jitter, low end is 70%", ttl: time.Hour, rand: 0, want: 42 * time.Minute},
		{name: "default jitter, high end is 80%", ttl: time.Hour, rand: 0.9999999, want: 48 * time.Minute},
		{name: "custom share and jitter", ttl: time.Hour, rand: 0, want: 24 * time.Minute,
			p: tokenhub.Provider{RefreshAt: 0.5, RefreshJitter: 0.1}},
		{name: "negative jitter means none", ttl: time.Hour, rand: 0, want: 45 * time.Minute,
			p: tokenhub.Provider{RefreshJitter: -1}},
		{name: "never later than 10s before expiry", ttl: time.Minute, rand: 0.5, want: 50 * time.Second,
			p: tokenhub.Provider{RefreshAt: 0.99}},
		{name: "jitter does not push past the margin", ttl: 40 * time.Second, rand: 0.9999999, want: 30 * time.Second,
			p: tokenhub.Provider{RefreshAt: 0.74}},
		{name: "custom margin", ttl: time.Minute, rand: 0.5, want: 30 * time.Second,
			p: tokenhub.Provider{RefreshMargin: tokenhub.Duration(30 * time.Second)}},
		{name: "lifetime within the margin: at half of it", ttl: 8 * time.Second, rand: 0.5, want: 4 * time.Second},
		{name: "never earlier than min_refresh_interval", ttl: time.Hour, rand: 0, want: 50 * time.Minute,
			p: tokenhub.Provider{MinRefreshInterval: tokenhub.Duration(50 * time.Minute)}},
		{name: "min_refresh_interval below the share changes nothing", ttl: time.Hour, rand: 0.5, want: 45 * time.Minute,
			p: tokenhub.Provider{MinRefreshInterval: tokenhub.Duration(10 * time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvRand(t, func() float64 { return tc.rand })
			srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: tc.ttl})
			p := tc.p
			p.Name, p.TokenURL = "knobs", srv.TokenURL
			e.putProvider(&p)
			cfg := oauthConfig(srv, tokenhub.GrantClientCredentials)
			cfg.Provider, cfg.TokenURL = "knobs", ""
			e.put("api", cfg)
			c := e.waitState("api", tokenhub.StateHealthy)
			if c.Token.Lifetime() != tc.ttl {
				t.Fatalf("lifetime %v, want %v", c.Token.Lifetime(), tc.ttl)
			}
			if got := c.Status.NextRefreshAt.Sub(c.Token.ObtainedAt); !near(got, tc.want) {
				t.Fatalf("next refresh %v after the token was obtained, want %v", got, tc.want)
			}
			// The schedule is kept: the refresh happens then, not before.
			e.clk.Set(c.Token.ObtainedAt.Add(tc.want - 10*time.Millisecond))
			if n := srv.Counts().ClientCredentials; n != 1 {
				t.Fatalf("%d token requests before the scheduled time, want 1", n)
			}
			e.clk.Set(c.Status.NextRefreshAt)
			e.waitFor("the scheduled renewal", func() bool { return srv.Counts().ClientCredentials == 2 })
		})
	}
}

// TestTokenWithoutExpiryIsNotRenewed: a token that says nothing of its
// expiry, from a provider without default_ttl, is kept and never renewed.
func TestTokenWithoutExpiryIsNotRenewed(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, Expiry: providertest.NoExpiry})
	e.put("api", oauthConfig(srv, tokenhub.GrantClientCredentials))
	c := e.waitState("api", tokenhub.StateHealthy)
	if !c.Token.ExpiresAt.IsZero() || !c.Status.NextRefreshAt.IsZero() {
		t.Fatalf("expires_at %v, next_refresh_at %v; want both zero", c.Token.ExpiresAt, c.Status.NextRefreshAt)
	}
	e.clk.Advance(365 * 24 * time.Hour)
	if n := srv.Counts().Total; n != 1 {
		t.Fatalf("%d token requests after a year, want 1", n)
	}
}

// TestBackoffSchedule checks the delays between attempts after transient
// failures: exponential from 1s, with full jitter (a random share of the
// ceiling, here fixed by Rand), never below a tenth of the base, and never
// sooner than the provider's Retry-After.
func TestBackoffSchedule(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rand       float64
		retryAfter string
		want       []time.Duration
	}{
		{name: "ceiling doubles, delay is its random share", rand: 0.9, want: []time.Duration{900 * time.Millisecond, 1800 * time.Millisecond, 3600 * time.Millisecond, 7200 * time.Millisecond}},
		{name: "a smaller draw waits less", rand: 0.25, want: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}},
		{name: "floor of a tenth of the base", rand: 0, want: []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}},
		{name: "Retry-After wins over a shorter backoff", rand: 0.5, retryAfter: "30", want: []time.Duration{30 * time.Second, 30 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvRand(t, func() float64 { return tc.rand })
			srv := providertest.New(t, providertest.Options{Now: e.clk.Now})
			srv.FailNext(len(tc.want), http.StatusServiceUnavailable, tc.retryAfter)
			e.put("api", oauthConfig(srv, tokenhub.GrantClientCredentials))
			for i, want := range tc.want {
				var c *tokenhub.Connection
				e.waitFor("failure recorded", func() bool { c = e.conn("api"); return c.Status.Failures == i+1 && c.Lease.Owner == "" })
				if got := c.Status.NextRefreshAt.Sub(e.clk.Now()); !near(got, want) {
					t.Fatalf("after failure %d: next attempt in %v, want %v", i+1, got, want)
				}
				e.clk.Set(c.Status.NextRefreshAt)
			}
			c := e.waitState("api", tokenhub.StateHealthy)
			if n := srv.Counts().Total; n != int64(len(tc.want)+1) {
				t.Fatalf("%d token requests, want %d (one per scheduled attempt)", n, len(tc.want)+1)
			}
			if c.Status.Failures != 0 {
				t.Fatalf("failures after success = %d, want 0", c.Status.Failures)
			}
		})
	}
}
