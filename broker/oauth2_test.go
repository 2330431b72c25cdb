package broker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

func oauthConfig(srv *providertest.Server, grant tokenhub.Grant) tokenhub.ConnectionConfig {
	return tokenhub.ConnectionConfig{
		Provider: "oauth2", TokenURL: srv.TokenURL, Grant: grant,
		ClientID: providertest.ClientID, ClientSecret: providertest.ClientSecret,
		Username: providertest.Username, Password: providertest.Password,
	}
}

func TestRotatedRefreshTokenIsStoredAndUsed(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour, IssueRefreshToken: true, Rotate: true})
	e.put("api", oauthConfig(srv, tokenhub.GrantPassword))
	c := e.waitState("api", tokenhub.StateHealthy)
	rt1 := c.Token.RefreshToken
	if rt1 == "" || c.Token.ExpirySource != tokenhub.ExpiryExpiresIn {
		t.Fatalf("first token = %v, want a refresh token and expires_in expiry", c.Token)
	}

	for i := range 2 {
		next := c.Status.NextRefreshAt
		e.clk.Set(next)
		e.waitFor("refresh", func() bool { return srv.Counts().RefreshToken == int64(i+1) })
		c = e.waitState("api", tokenhub.StateHealthy)
	}
	if got := srv.Counts(); got.Password != 1 || got.RefreshToken != 2 {
		t.Fatalf("provider calls = %+v, want 1 password grant and 2 refreshes (a reused, retired refresh token would have forced a new login)", got)
	}
	if c.Token.RefreshToken == rt1 {
		t.Fatal("rotated refresh token not stored")
	}
	if !slices.Contains(e.events("api"), tokenhub.EventRotated) {
		t.Fatalf("events %v lack rotated", e.events("api"))
	}
}

// seedRefreshToken performs a password grant outside tokenhub, as a user who
// ran an authorization-code flow elsewhere would, and returns the refresh token.
func seedRefreshToken(t *testing.T, srv *providertest.Server) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {providertest.Username}, "password": {providertest.Password}}
	req, _ := http.NewRequest(http.MethodPost, srv.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(providertest.ClientID), url.QueryEscape(providertest.ClientSecret))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.RefreshToken == "" {
		t.Fatalf("seeding a refresh token: status %d, err %v", resp.StatusCode, err)
	}
	return body.RefreshToken
}

func TestInvalidGrantWithoutCredentialsNeedsReauth(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour, IssueRefreshToken: true, Rotate: true})
	cfg := tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: srv.TokenURL, Grant: tokenhub.GrantRefreshToken,
		ClientID: providertest.ClientID, ClientSecret: providertest.ClientSecret, RefreshToken: seedRefreshToken(t, srv)}
	e.put("api", cfg)
	c := e.waitState("api", tokenhub.StateHealthy)
	if srv.Counts().RefreshToken != 1 {
		t.Fatalf("refresh calls = %d, want 1 (the seed obtains the first token)", srv.Counts().RefreshToken)
	}
	valid := c.Token.AccessToken

	srv.RevokeAll()
	e.clk.Set(c.Status.NextRefreshAt)
	c = e.waitState("api", tokenhub.StateNeedsReauth)
	if c.Status.LastError == nil || c.Status.LastError.Code != "invalid_grant" {
		t.Fatalf("last error = %+v, want invalid_grant", c.Status.LastError)
	}
	if srv.Counts().Password != 1 || srv.Counts().ClientCredentials != 0 {
		t.Fatalf("provider calls = %+v: a connection without credentials must not try to log in", srv.Counts())
	}
	// The access token is still valid and still served until it expires.
	cur, err := e.b.Token(context.Background(), "acme", "api")
	if err != nil || cur.Token.AccessToken != valid {
		t.Fatalf("Token before expiry = %v, %v; want the still-valid token", cur, err)
	}
	e.clk.Set(c.Token.ExpiresAt)
	_, err = e.b.Token(context.Background(), "acme", "api")
	if tokenhub.ErrorCode(err) != tokenhub.ENEEDSREAUTH {
		t.Fatalf("Token after expiry = %v, want needs_reauth", err)
	}
	for _, want := range []string{"acme/api", "invalid_grant", "unknown or revoked refresh token"} {
		if !strings.Contains(tokenhub.ErrorMessage(err), want) {
			t.Fatalf("error %q does not mention %q", tokenhub.ErrorMessage(err), want)
		}
	}
	if !slices.Contains(e.events("api"), tokenhub.EventNeedsReauth) {
		t.Fatalf("events %v lack needs_reauth", e.events("api"))
	}
}

func TestInvalidGrantWithCredentialsLogsInAgain(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour, IssueRefreshToken: true, Rotate: true})
	e.put("api", oauthConfig(srv, tokenhub.GrantPassword))
	c := e.waitState("api", tokenhub.StateHealthy)
	srv.RevokeAll()
	e.clk.Set(c.Status.NextRefreshAt)
	e.waitFor("new password grant", func() bool { return srv.Counts().Password == 2 })
	c = e.waitState("api", tokenhub.StateHealthy)
	if !srv.ValidAccessToken(c.Token.AccessToken) {
		t.Fatal("stored token is not one the provider accepts")
	}
}

func TestTimeoutBacksOff(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour})
	e.putProvider(&tokenhub.Provider{Name: "slow-oauth", TokenURL: srv.TokenURL, Timeout: tokenhub.Duration(100 * time.Millisecond)})
	srv.Hang(1)
	cfg := oauthConfig(srv, tokenhub.GrantClientCredentials)
	cfg.Provider, cfg.TokenURL = "slow-oauth", ""
	e.put("api", cfg)
	var c *tokenhub.Connection
	e.waitFor("timeout recorded", func() bool { c = e.conn("api"); return c.Status.Failures == 1 && c.Lease.Owner == "" })
	if c.Status.State != tokenhub.StatePending || c.Status.LastError == nil {
		t.Fatalf("status after a timeout = %+v, want pending with the error", c.Status)
	}
	e.clk.Set(c.Status.NextRefreshAt)
	c = e.waitState("api", tokenhub.StateHealthy)
	if c.Token.ExpiresAt.Sub(c.Token.ObtainedAt) != time.Hour {
		t.Fatalf("lifetime = %v, want 1h", c.Token.Lifetime())
	}
}

func TestClientCredentialsScopesAndParams(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour, Scopes: []string{"reports.read", "reports.write"}})
	cfg := oauthConfig(srv, tokenhub.GrantClientCredentials)
	cfg.Scopes = []string{"reports.read"}
	cfg.Params = map[string]string{"audience": "https://api.example.com"}
	e.put("reports", cfg)
	e.waitState("reports", tokenhub.StateHealthy)
	req := srv.LastRequest()
	if req.Form.Get("scope") != "reports.read" || req.Form.Get("audience") != "https://api.example.com" {
		t.Fatalf("token request form scope=%q audience=%q", req.Form.Get("scope"), req.Form.Get("audience"))
	}
	cur, err := e.b.Token(context.Background(), "acme", "reports")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cur.HeaderValue, "Bearer ") {
		t.Fatalf("header value %q, want Bearer …", cur.HeaderValue)
	}
}

// TestWarnsBeforeRefreshTokenDies: when the refresh token expires before the
// next refresh and the connection has no credentials to log in again, the
// connection says so ahead of time, in an event and in the log; a connection
// that can log in again has no reason to.
func TestWarnsBeforeRefreshTokenDies(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour,
		IssueRefreshToken: true, Rotate: true, RefreshTTL: 30 * time.Minute})
	cfg := tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: srv.TokenURL, Grant: tokenhub.GrantRefreshToken,
		ClientID: providertest.ClientID, ClientSecret: providertest.ClientSecret, RefreshToken: seedRefreshToken(t, srv)}
	e.put("seeded", cfg)
	srv2 := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour,
		IssueRefreshToken: true, Rotate: true, RefreshTTL: 30 * time.Minute})
	e.put("password", oauthConfig(srv2, tokenhub.GrantPassword))

	c := e.waitState("seeded", tokenhub.StateHealthy)
	if want := epoch.Add(30 * time.Minute); !c.Token.RefreshExpiresAt.Equal(want) {
		t.Fatalf("refresh token expires %v, want %v", c.Token.RefreshExpiresAt, want)
	}
	if !c.Token.RefreshExpiresAt.Before(c.Status.NextRefreshAt) {
		t.Fatalf("the test needs the refresh token (%v) to die before the next refresh (%v)", c.Token.RefreshExpiresAt, c.Status.NextRefreshAt)
	}
	if !slices.Contains(e.events("seeded"), tokenhub.EventRefreshExpiring) {
		t.Fatalf("events %v lack %s", e.events("seeded"), tokenhub.EventRefreshExpiring)
	}
	if !strings.Contains(e.logs.String(), "the refresh token expires before the next refresh") {
		t.Fatalf("no warning in the log:\n%s", e.logs.String())
	}
	e.waitState("password", tokenhub.StateHealthy)
	if slices.Contains(e.events("password"), tokenhub.EventRefreshExpiring) {
		t.Fatalf("a connection that can log in again warns of its refresh token: %v", e.events("password"))
	}

	// The warning was right: at the next refresh the connection cannot renew.
	// The one that can log in does so, without sending its dead refresh token.
	e.clk.Set(c.Status.NextRefreshAt)
	e.waitState("seeded", tokenhub.StateNeedsReauth)
	e.waitFor("a new login", func() bool { return srv2.Counts().Password == 2 })
	e.waitState("password", tokenhub.StateHealthy)
	if n := srv2.Counts().RefreshToken; n != 0 {
		t.Fatalf("%d refresh requests with an expired refresh token, want 0", n)
	}
}

// TestTimeoutDegradesAndServesOldToken: a refresh-ahead that times out
// leaves the connection degraded, still serving its valid token, and is
// retried after a backoff.
func TestTimeoutDegradesAndServesOldToken(t *testing.T) {
	e := newEnv(t)
	srv := providertest.New(t, providertest.Options{Now: e.clk.Now, TTL: time.Hour})
	e.putProvider(&tokenhub.Provider{Name: "slow-oauth", TokenURL: srv.TokenURL, Timeout: tokenhub.Duration(100 * time.Millisecond)})
	cfg := oauthConfig(srv, tokenhub.GrantClientCredentials)
	cfg.Provider, cfg.TokenURL = "slow-oauth", ""
	e.put("api", cfg)
	c := e.waitState("api", tokenhub.StateHealthy)
	old := c.Token.AccessToken

	srv.Hang(1)
	e.clk.Set(c.Status.NextRefreshAt)
	c = e.waitState("api", tokenhub.StateDegraded)
	if c.Status.Failures != 1 || c.Status.LastError == nil || !strings.Contains(c.Status.LastError.Message, "no answer within 100ms") {
		t.Fatalf("status = %+v, want one timeout", c.Status)
	}
	cur, err := e.b.Token(context.Background(), "acme", "api")
	if err != nil {
		t.Fatalf("Token while degraded: %v", err)
	}
	if cur.Token.AccessToken != old {
		t.Fatal("Token while degraded did not serve the old, still valid token")
	}
	if wait := c.Status.NextRefreshAt.Sub(e.clk.Now()); wait <= 0 || wait > time.Second {
		t.Fatalf("retry in %v, want a first backoff within (0, 1s]", wait)
	}
	e.clk.Set(c.Status.NextRefreshAt)
	c = e.waitState("api", tokenhub.StateHealthy)
	if c.Token.AccessToken == old || !slices.Contains(e.events("api"), tokenhub.EventRecovered) {
		t.Fatalf("after the retry: renewed %v, events %v; want a new token and recovered", c.Token.AccessToken != old, e.events("api"))
	}
}
