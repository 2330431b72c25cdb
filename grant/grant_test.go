package grant_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/clock"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// secrets are the values that no error text may ever hold.
var secrets = []string{providertest.ClientSecret, providertest.Password}

// checkError fails the test when err is not a *grant.Error with the wanted
// permanence, or when its text holds a secret or a response body.
func checkError(t *testing.T, err error, permanent bool, extraSecrets ...string) *grant.Error {
	t.Helper()
	var e *grant.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want a *grant.Error", err, err)
	}
	if grant.IsPermanent(err) != permanent {
		t.Errorf("IsPermanent(%v) = %v, want %v", err, !permanent, permanent)
	}
	msg := err.Error()
	for _, s := range append(secrets, extraSecrets...) {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error text %q holds the secret %q", msg, s)
		}
	}
	if strings.Contains(msg, "{") {
		t.Errorf("error text %q seems to quote a body", msg)
	}
	return e
}

func oauthProvider() *tokenhub.Provider {
	return &tokenhub.Provider{Name: "test-oauth", TokenURL: "{{.BaseURL}}" + providertest.TokenPath}
}

func oauthConn(s *providertest.Server, g tokenhub.Grant) *tokenhub.Connection {
	return &tokenhub.Connection{Workspace: "acme", Name: "api", Config: tokenhub.ConnectionConfig{
		Provider:     "test-oauth",
		BaseURL:      s.URL,
		Grant:        g,
		ClientID:     providertest.ClientID,
		ClientSecret: providertest.ClientSecret,
		Username:     providertest.Username,
		Password:     providertest.Password,
	}}
}

func TestObtainClientCredentials(t *testing.T) {
	fc := clock.NewFake(t0)
	c := &grant.Client{Now: fc.Now, UserAgent: "tokenhub-test/1"}
	for _, tc := range []struct {
		name           string
		server         tokenhub.AuthStyle // what the server accepts
		provider, conn tokenhub.AuthStyle
		want           tokenhub.AuthStyle
	}{
		{"default is basic", tokenhub.AuthStyleBasic, "", "", tokenhub.AuthStyleBasic},
		{"provider says body", tokenhub.AuthStyleBody, tokenhub.AuthStyleBody, "", tokenhub.AuthStyleBody},
		{"connection says body", tokenhub.AuthStyleBody, "", tokenhub.AuthStyleBody, tokenhub.AuthStyleBody},
		{"connection overrides provider", tokenhub.AuthStyleBasic, tokenhub.AuthStyleBody, tokenhub.AuthStyleBasic, tokenhub.AuthStyleBasic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := providertest.New(t, providertest.Options{Now: fc.Now, AuthStyle: tc.server, TTL: 10 * time.Minute})
			p := oauthProvider()
			p.AuthStyle = tc.provider
			conn := oauthConn(s, tokenhub.GrantClientCredentials)
			conn.Config.AuthStyle = tc.conn
			conn.Config.Scopes = []string{"reports.read", "reports.write"}
			conn.Config.Params = map[string]string{"audience": "https://api.example.com", "resource": "urn:r", "grant_type": "password"}

			tok, err := c.Obtain(context.Background(), p, conn)
			if err != nil {
				t.Fatal(err)
			}
			if !s.ValidAccessToken(tok.AccessToken) || tok.TokenType != "Bearer" || tok.RefreshToken != "" {
				t.Errorf("token %v", tok)
			}
			if !tok.ExpiresAt.Equal(t0.Add(10*time.Minute)) || tok.ExpirySource != tokenhub.ExpiryExpiresIn || !tok.ObtainedAt.Equal(t0) {
				t.Errorf("expires %v (%s), obtained %v", tok.ExpiresAt, tok.ExpirySource, tok.ObtainedAt)
			}
			last := s.LastRequest()
			if last.ClientAuth != tc.want || last.ClientID != providertest.ClientID {
				t.Errorf("client auth %q as %q, want %q", last.ClientAuth, last.ClientID, tc.want)
			}
			f := last.Form
			if f.Get("grant_type") != "client_credentials" || f.Get("scope") != "reports.read reports.write" ||
				f.Get("audience") != "https://api.example.com" || f.Get("resource") != "urn:r" {
				t.Errorf("form %v", f)
			}
			if tc.want == tokenhub.AuthStyleBasic && (f.Has("client_id") || f.Has("client_secret")) {
				t.Errorf("basic auth also sent credentials in the body: %v", f)
			}
			if got := last.Header.Get("Accept"); got != "application/json" {
				t.Errorf("Accept %q", got)
			}
			if got := last.Header.Get("User-Agent"); got != "tokenhub-test/1" {
				t.Errorf("User-Agent %q", got)
			}
		})
	}
}

func TestObtainPublicClient(t *testing.T) {
	s := providertest.New(t, providertest.Options{Clients: map[string]string{"spa": ""}})
	conn := oauthConn(s, tokenhub.GrantClientCredentials)
	conn.Config.ClientID, conn.Config.ClientSecret = "spa", ""
	if _, err := (&grant.Client{}).Obtain(context.Background(), oauthProvider(), conn); err != nil {
		t.Fatal(err)
	}
	if last := s.LastRequest(); last.ClientAuth != "" || last.Form.Get("client_id") != "spa" {
		t.Errorf("public client sent %v with auth %q", last.Form, last.ClientAuth)
	}
}

func TestObtainPassword(t *testing.T) {
	s := providertest.New(t, providertest.Options{IssueRefreshToken: true})
	c := &grant.Client{}
	conn := oauthConn(s, tokenhub.GrantPassword)
	tok, err := c.Obtain(context.Background(), oauthProvider(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || !s.ValidAccessToken(tok.AccessToken) {
		t.Errorf("token %v", tok)
	}
	if f := s.LastRequest().Form; f.Get("grant_type") != "password" || f.Get("username") != providertest.Username || f.Get("password") != providertest.Password {
		t.Errorf("form %v", f)
	}

	conn.Config.Password = "wrong-password"
	_, err = c.Obtain(context.Background(), oauthProvider(), conn)
	e := checkError(t, err, true, "wrong-password")
	if e.Op != grant.OpObtain || e.StatusCode != http.StatusBadRequest || e.Code != "invalid_grant" || e.Description == "" {
		t.Errorf("error %+v", e)
	}
	if got := err.Error(); !strings.Contains(got, "obtain") || !strings.Contains(got, "400") || !strings.Contains(got, "invalid_grant") || !strings.Contains(got, e.Description) {
		t.Errorf("Error() = %q, want op, status, code and description", got)
	}
}

func TestTokenURL(t *testing.T) {
	s := providertest.New(t, providertest.Options{})
	c := &grant.Client{}
	t.Run("connection overrides provider", func(t *testing.T) {
		p := oauthProvider()
		p.TokenURL = "http://127.0.0.1:1/never"
		conn := oauthConn(s, tokenhub.GrantClientCredentials)
		conn.Config.TokenURL = s.TokenURL
		if _, err := c.Obtain(context.Background(), p, conn); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("none", func(t *testing.T) {
		p := oauthProvider()
		p.TokenURL = ""
		_, err := c.Obtain(context.Background(), p, oauthConn(s, tokenhub.GrantClientCredentials))
		if e := checkError(t, err, true); e.StatusCode != 0 || !strings.Contains(err.Error(), "token_url") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("not http", func(t *testing.T) {
		conn := oauthConn(s, tokenhub.GrantClientCredentials)
		conn.Config.BaseURL = "ftp://example.com"
		_, err := c.Obtain(context.Background(), oauthProvider(), conn)
		checkError(t, err, true)
	})
	t.Run("login grant on an OAuth provider", func(t *testing.T) {
		before := s.Counts().Total
		_, err := c.Obtain(context.Background(), oauthProvider(), oauthConn(s, tokenhub.GrantLogin))
		checkError(t, err, true)
		if s.Counts().Total != before {
			t.Error("a request was sent")
		}
	})
}

func TestRefreshOAuth(t *testing.T) {
	c := &grant.Client{}
	obtain := func(t *testing.T, s *providertest.Server) (*tokenhub.Connection, *tokenhub.Token) {
		t.Helper()
		conn := oauthConn(s, tokenhub.GrantPassword)
		conn.Config.Scopes = []string{"a"}
		conn.Config.Params = map[string]string{"audience": "aud"}
		tok, err := c.Obtain(context.Background(), oauthProvider(), conn)
		if err != nil || tok.RefreshToken == "" {
			t.Fatalf("obtain: %v %v", tok, err)
		}
		conn.Token = tok
		return conn, tok
	}

	t.Run("rotation", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{IssueRefreshToken: true, Rotate: true})
		conn, tok := obtain(t, s)
		tok2, err := c.Refresh(context.Background(), oauthProvider(), conn, tok.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken || tok2.AccessToken == tok.AccessToken {
			t.Errorf("refreshed token %v", tok2)
		}
		f := s.LastRequest().Form
		if f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != tok.RefreshToken || f.Get("scope") != "a" || f.Get("audience") != "aud" {
			t.Errorf("refresh form %v", f)
		}
		if f.Has("username") || f.Has("password") {
			t.Errorf("refresh sent the password: %v", f)
		}
		// The retired token is refused for good.
		_, err = c.Refresh(context.Background(), oauthProvider(), conn, tok.RefreshToken)
		if e := checkError(t, err, true, tok.RefreshToken, tok2.RefreshToken); e.Op != grant.OpRefresh || e.Code != "invalid_grant" {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("omitted refresh token", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{IssueRefreshToken: true})
		conn, tok := obtain(t, s)
		tok2, err := c.Refresh(context.Background(), oauthProvider(), conn, tok.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if tok2.RefreshToken != "" || tok2.AccessToken == "" {
			t.Errorf("refreshed token %v, want no refresh token", tok2)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{IssueRefreshToken: true})
		conn, tok := obtain(t, s)
		s.RevokeAll()
		_, err := c.Refresh(context.Background(), oauthProvider(), conn, tok.RefreshToken)
		checkError(t, err, true, tok.RefreshToken)
	})
	t.Run("no refresh token", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{})
		_, err := c.Refresh(context.Background(), oauthProvider(), oauthConn(s, tokenhub.GrantClientCredentials), "")
		checkError(t, err, true)
		if !errors.Is(err, grant.ErrNoRefreshToken) || s.Counts().Total != 0 {
			t.Errorf("err = %v after %d requests", err, s.Counts().Total)
		}
	})
}

func TestExpirySources(t *testing.T) {
	const ttl = 10 * time.Minute
	rfc3339 := t0.Add(20 * time.Minute).Format(time.RFC3339)
	for _, tc := range []struct {
		name       string
		expiry     providertest.ExpiryStyle
		edit       func(map[string]any)
		defaultTTL time.Duration
		want       time.Time
		source     tokenhub.ExpirySource
	}{
		{name: "expires_in", expiry: providertest.ExpiresIn, want: t0.Add(ttl), source: tokenhub.ExpiryExpiresIn},
		{name: "expires_in as a string", expiry: providertest.ExpiresIn, edit: func(m map[string]any) { m["expires_in"] = "90" },
			want: t0.Add(90 * time.Second), source: tokenhub.ExpiryExpiresIn},
		{name: "expires_at", expiry: providertest.ExpiresAt, want: t0.Add(ttl), source: tokenhub.ExpiryExpiresAt},
		{name: "expires_at RFC 3339", expiry: providertest.ExpiresAt, edit: func(m map[string]any) { m["expires_at"] = rfc3339 },
			want: t0.Add(20 * time.Minute), source: tokenhub.ExpiryExpiresAt},
		{name: "expires_in wins over expires_at", expiry: providertest.ExpiresAt, edit: func(m map[string]any) { m["expires_in"] = 30 },
			want: t0.Add(30 * time.Second), source: tokenhub.ExpiryExpiresIn},
		{name: "JWT exp", expiry: providertest.JWTExp, defaultTTL: time.Hour, want: t0.Add(ttl), source: tokenhub.ExpiryJWT},
		{name: "expires_in wins over JWT exp", expiry: providertest.JWTExp, edit: func(m map[string]any) { m["expires_in"] = 45 },
			want: t0.Add(45 * time.Second), source: tokenhub.ExpiryExpiresIn},
		{name: "expires_at wins over JWT exp", expiry: providertest.JWTExp, edit: func(m map[string]any) { m["expires_at"] = rfc3339 },
			want: t0.Add(20 * time.Minute), source: tokenhub.ExpiryExpiresAt},
		{name: "JWT exp wins over default_ttl", expiry: providertest.JWTExp, defaultTTL: 5 * time.Minute, want: t0.Add(ttl), source: tokenhub.ExpiryJWT},
		{name: "JWT without exp falls to default_ttl", expiry: providertest.JWTNoExp, defaultTTL: time.Hour, want: t0.Add(time.Hour), source: tokenhub.ExpiryDefaultTTL},
		{name: "JWT without exp and no default", expiry: providertest.JWTNoExp, source: tokenhub.ExpiryNone},
		{name: "malformed JWT falls to default_ttl", expiry: providertest.NoExpiry, defaultTTL: 5 * time.Minute,
			edit: func(m map[string]any) { m["access_token"] = "eyJhbGciOi.!!!not-base64!!!.sig" }, want: t0.Add(5 * time.Minute), source: tokenhub.ExpiryDefaultTTL},
		{name: "zero expires_in falls through", expiry: providertest.NoExpiry, defaultTTL: 2 * time.Minute,
			edit: func(m map[string]any) { m["expires_in"] = 0 }, want: t0.Add(2 * time.Minute), source: tokenhub.ExpiryDefaultTTL},
		{name: "opaque token with default_ttl", expiry: providertest.NoExpiry, defaultTTL: time.Hour, want: t0.Add(time.Hour), source: tokenhub.ExpiryDefaultTTL},
		{name: "opaque token, no default", expiry: providertest.NoExpiry, source: tokenhub.ExpiryNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := clock.NewFake(t0)
			s := providertest.New(t, providertest.Options{Now: fc.Now, TTL: ttl, Expiry: tc.expiry, Edit: tc.edit})
			p := oauthProvider()
			p.DefaultTTL = tokenhub.Duration(tc.defaultTTL)
			tok, err := (&grant.Client{Now: fc.Now}).Obtain(context.Background(), p, oauthConn(s, tokenhub.GrantClientCredentials))
			if err != nil {
				t.Fatal(err)
			}
			if !tok.ExpiresAt.Equal(tc.want) || tok.ExpirySource != tc.source {
				t.Errorf("expires %v (%q), want %v (%q)", tok.ExpiresAt, tok.ExpirySource, tc.want, tc.source)
			}
		})
	}
}

// A slow answer must not stretch the token's life: expires_in counts from
// when the request was sent.
func TestExpiresInCountsFromSend(t *testing.T) {
	fc := clock.NewFake(t0)
	s := providertest.New(t, providertest.Options{Now: fc.Now, TTL: time.Minute,
		Edit: func(map[string]any) { fc.Advance(7 * time.Second) }})
	tok, err := (&grant.Client{Now: fc.Now}).Obtain(context.Background(), oauthProvider(), oauthConn(s, tokenhub.GrantClientCredentials))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.ObtainedAt.Equal(t0) || !tok.ExpiresAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("obtained %v expires %v, want %v and %v", tok.ObtainedAt, tok.ExpiresAt, t0, t0.Add(time.Minute))
	}
}

func TestRefreshTokenExpiry(t *testing.T) {
	fc := clock.NewFake(t0)
	for _, tc := range []struct {
		name   string
		o      providertest.Options
		want   time.Time
		source tokenhub.ExpirySource
	}{
		{"refresh_expires_in", providertest.Options{RefreshTTL: 24 * time.Hour}, t0.Add(24 * time.Hour), tokenhub.ExpiryExpiresIn},
		{"JWT exp", providertest.Options{RefreshTTL: 48 * time.Hour, RefreshJWT: true}, t0.Add(48 * time.Hour), tokenhub.ExpiryJWT},
		{"unknown", providertest.Options{}, time.Time{}, tokenhub.ExpiryNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Now, tc.o.IssueRefreshToken = fc.Now, true
			s := providertest.New(t, tc.o)
			tok, err := (&grant.Client{Now: fc.Now}).Obtain(context.Background(), oauthProvider(), oauthConn(s, tokenhub.GrantPassword))
			if err != nil {
				t.Fatal(err)
			}
			if !tok.RefreshExpiresAt.Equal(tc.want) || tok.RefreshExpirySource != tc.source {
				t.Errorf("refresh expires %v (%q), want %v (%q)", tok.RefreshExpiresAt, tok.RefreshExpirySource, tc.want, tc.source)
			}
		})
	}
}

func TestFormEncodedResponse(t *testing.T) {
	fc := clock.NewFake(t0)
	s := providertest.New(t, providertest.Options{Now: fc.Now, FormResponse: true, IssueRefreshToken: true, TTL: 8 * time.Hour})
	tok, err := (&grant.Client{Now: fc.Now}).Obtain(context.Background(), oauthProvider(), oauthConn(s, tokenhub.GrantPassword))
	if err != nil {
		t.Fatal(err)
	}
	if !s.ValidAccessToken(tok.AccessToken) || tok.RefreshToken == "" || tok.TokenType != "Bearer" ||
		!tok.ExpiresAt.Equal(t0.Add(8*time.Hour)) || tok.ExpirySource != tokenhub.ExpiryExpiresIn {
		t.Errorf("token %v", tok)
	}
}

func TestTransientFailures(t *testing.T) {
	fc := clock.NewFake(t0)
	s := providertest.New(t, providertest.Options{Now: fc.Now})
	c := &grant.Client{Now: fc.Now}
	p := oauthProvider()
	conn := oauthConn(s, tokenhub.GrantClientCredentials)
	obtain := func() error {
		_, err := c.Obtain(context.Background(), p, conn)
		return err
	}

	t.Run("503 with Retry-After seconds", func(t *testing.T) {
		s.FailNext(1, http.StatusServiceUnavailable, "30")
		err := obtain()
		e := checkError(t, err, false)
		if e.StatusCode != 503 || e.Code != "temporarily_unavailable" || e.RetryAfter != 30*time.Second || grant.RetryAfter(err) != 30*time.Second {
			t.Errorf("error %+v", e)
		}
		if !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "retry after 30s") {
			t.Errorf("Error() = %q", err)
		}
	})
	t.Run("429 with Retry-After date", func(t *testing.T) {
		s.FailNext(1, http.StatusTooManyRequests, t0.Add(90*time.Second).Format(http.TimeFormat))
		e := checkError(t, obtain(), false)
		if e.StatusCode != 429 || e.RetryAfter != 90*time.Second {
			t.Errorf("error %+v, want 429 retry after 90s", e)
		}
	})
	t.Run("500 without Retry-After", func(t *testing.T) {
		s.FailNext(1, http.StatusInternalServerError, "")
		if e := checkError(t, obtain(), false); e.StatusCode != 500 || e.RetryAfter != 0 {
			t.Errorf("error %+v", e)
		}
	})
	for name, body := range map[string]string{
		"empty 200":                   "",
		"truncated JSON":              `{"access_token":"abc`,
		"HTML":                        "<html><body>maintenance</body></html>",
		"no access token":             `{"token_type":"Bearer","expires_in":3600}`,
		"access token not a string":   `{"access_token":12345}`,
		"JSON array":                  `["access_token"]`,
		"access token with newline":   `{"access_token":"abc\r\nX-Evil: 1"}`,
		"trailing garbage after JSON": `{"access_token":"abc"} {}`,
	} {
		t.Run("malformed 200: "+name, func(t *testing.T) {
			s.MalformedNext(1, body)
			if e := checkError(t, obtain(), false); e.StatusCode != 200 || e.Err == nil {
				t.Errorf("error %+v", e)
			}
		})
	}
	t.Run("200 with an OAuth error", func(t *testing.T) {
		s.MalformedNext(1, `{"error":"invalid_grant","error_description":"nope"}`)
		if e := checkError(t, obtain(), true); e.Code != "invalid_grant" {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s.Hang(1)
		p := oauthProvider()
		p.Timeout = tokenhub.Duration(50 * time.Millisecond)
		_, err := c.Obtain(context.Background(), p, conn)
		e := checkError(t, err, false)
		if !errors.Is(err, context.DeadlineExceeded) || e.StatusCode != 0 || !strings.Contains(err.Error(), "no answer within 50ms") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Obtain(ctx, p, conn)
		checkError(t, err, false)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		conn := oauthConn(s, tokenhub.GrantClientCredentials)
		conn.Config.TokenURL = "http://" + addr + "/token?api_key=query-secret-value"
		_, err = c.Obtain(context.Background(), p, conn)
		e := checkError(t, err, false, "query-secret-value")
		var ue *url.Error
		if e.StatusCode != 0 || !errors.As(err, &ue) {
			t.Errorf("err = %v, want a *url.Error inside", err)
		}
		if strings.Contains(err.Error(), "api_key") || strings.Contains(err.Error(), "/token") {
			t.Errorf("Error() = %q quotes the URL's path or query", err)
		}
	})
}

func TestPermanentFailures(t *testing.T) {
	c := &grant.Client{}
	t.Run("invalid_client", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{AuthStyle: tokenhub.AuthStyleBasic})
		conn := oauthConn(s, tokenhub.GrantClientCredentials)
		conn.Config.AuthStyle = tokenhub.AuthStyleBody
		_, err := c.Obtain(context.Background(), oauthProvider(), conn)
		if e := checkError(t, err, true); e.StatusCode != 401 || e.Code != "invalid_client" || e.RetryAfter != 0 {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("unsupported grant", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{})
		_, err := c.Refresh(context.Background(), oauthProvider(), oauthConn(s, tokenhub.GrantClientCredentials), "some-refresh-token")
		if e := checkError(t, err, true, "some-refresh-token"); e.StatusCode != 400 || e.Code != "invalid_grant" {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("404", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{})
		conn := oauthConn(s, tokenhub.GrantClientCredentials)
		conn.Config.TokenURL = s.URL + "/nowhere"
		_, err := c.Obtain(context.Background(), oauthProvider(), conn)
		if e := checkError(t, err, true); e.StatusCode != 404 {
			t.Errorf("error %+v", e)
		}
	})
}
