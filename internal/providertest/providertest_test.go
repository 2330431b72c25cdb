package providertest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/clock"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// post sends form to the token endpoint, with HTTP Basic credentials when
// basic has two elements (sent exactly as given, without encoding).
func post(t *testing.T, s *providertest.Server, form url.Values, basic ...string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		req.SetBasicAuth(basic[0], basic[1])
	}
	return do(t, s, req)
}

func do(t *testing.T, s *providertest.Server, req *http.Request) reply {
	t.Helper()
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	json.Unmarshal(raw, &r.body)
	return r
}

// basic returns the RFC 6749 §2.3.1 encoding of the default client's credentials.
func basic() []string {
	return []string{url.QueryEscape(providertest.ClientID), url.QueryEscape(providertest.ClientSecret)}
}

func wantOAuthError(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.status != status || r.body["error"] != code {
		t.Errorf("got %d %s, want %d error=%s", r.status, r.raw, status, code)
	}
	if r.body["error_description"] == nil {
		t.Errorf("no error_description in %s", r.raw)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
}

func TestXOAuth2ClientCredentials(t *testing.T) {
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		s := providertest.New(t, providertest.Options{})
		cfg := clientcredentials.Config{
			ClientID:       providertest.ClientID,
			ClientSecret:   providertest.ClientSecret,
			TokenURL:       s.TokenURL,
			Scopes:         []string{"read", "write"},
			EndpointParams: url.Values{"audience": {"https://api.example.com"}},
			AuthStyle:      style,
		}
		tok, err := cfg.Token(context.Background())
		if err != nil {
			t.Fatalf("style %v: %v", style, err)
		}
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.Extra("expires_in") != 3600.0 || tok.RefreshToken != "" {
			t.Errorf("style %v: token %+v", style, tok)
		}
		want := map[oauth2.AuthStyle]tokenhub.AuthStyle{oauth2.AuthStyleInHeader: tokenhub.AuthStyleBasic, oauth2.AuthStyleInParams: tokenhub.AuthStyleBody}[style]
		last := s.LastRequest()
		if last.ClientAuth != want || last.ClientID != providertest.ClientID || last.GrantType != "client_credentials" {
			t.Errorf("style %v: last request %+v", style, last)
		}
		if last.Form.Get("scope") != "read write" || last.Form.Get("audience") != "https://api.example.com" {
			t.Errorf("style %v: form %v", style, last.Form)
		}
		if !s.ValidAccessToken(tok.AccessToken) {
			t.Errorf("style %v: the issued token is not valid", style)
		}
	}
}

func TestClientAuthentication(t *testing.T) {
	form := url.Values{"grant_type": {"client_credentials"}}
	withBody := func(id, secret string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}}
		if secret != "" {
			v.Set("client_secret", secret)
		}
		return v
	}

	t.Run("basic only refuses body", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{AuthStyle: tokenhub.AuthStyleBasic})
		r := post(t, s, withBody(providertest.ClientID, providertest.ClientSecret))
		wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
		if r.header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		if r := post(t, s, form, basic()...); r.status != http.StatusOK {
			t.Errorf("basic: %d %s", r.status, r.raw)
		}
	})
	t.Run("body only refuses basic", func(t *testing.T) {
		s := providertest.New(t, providertest.Options{AuthStyle: tokenhub.AuthStyleBody})
		wantOAuthError(t, post(t, s, form, basic()...), http.StatusUnauthorized, "invalid_client")
		if r := post(t, s, withBody(providertest.ClientID, providertest.ClientSecret)); r.status != http.StatusOK {
			t.Errorf("body: %d %s", r.status, r.raw)
		}
	})
	s := providertest.New(t, providertest.Options{Clients: map[string]string{
		providertest.ClientID: providertest.ClientSecret,
		"public-app":          "",
	}})
	t.Run("basic without form-encoding", func(t *testing.T) {
		wantOAuthError(t, post(t, s, form, providertest.ClientID, providertest.ClientSecret), http.StatusUnauthorized, "invalid_client")
	})
	t.Run("wrong secret", func(t *testing.T) {
		wantOAuthError(t, post(t, s, form, providertest.ClientID, "nope"), http.StatusUnauthorized, "invalid_client")
		wantOAuthError(t, post(t, s, withBody(providertest.ClientID, "nope")), http.StatusUnauthorized, "invalid_client")
	})
	t.Run("unknown client", func(t *testing.T) {
		wantOAuthError(t, post(t, s, withBody("other", providertest.ClientSecret)), http.StatusUnauthorized, "invalid_client")
	})
	t.Run("no client authentication", func(t *testing.T) {
		wantOAuthError(t, post(t, s, form), http.StatusUnauthorized, "invalid_client")
		wantOAuthError(t, post(t, s, withBody(providertest.ClientID, "")), http.StatusUnauthorized, "invalid_client")
	})
	t.Run("two methods at once", func(t *testing.T) {
		wantOAuthError(t, post(t, s, withBody(providertest.ClientID, providertest.ClientSecret), basic()...), http.StatusBadRequest, "invalid_request")
	})
	t.Run("public client", func(t *testing.T) {
		if r := post(t, s, withBody("public-app", "")); r.status != http.StatusOK {
			t.Errorf("public client: %d %s", r.status, r.raw)
		}
		if got := s.LastRequest().ClientAuth; got != "" {
			t.Errorf("ClientAuth = %q, want none", got)
		}
	})
}

func TestRequestErrors(t *testing.T) {
	s := providertest.New(t, providertest.Options{})
	wantOAuthError(t, post(t, s, url.Values{"grant_type": {"authorization_code"}, "code": {"x"}}, basic()...), http.StatusBadRequest, "unsupported_grant_type")
	wantOAuthError(t, post(t, s, url.Values{}, basic()...), http.StatusBadRequest, "invalid_request")
	wantOAuthError(t, post(t, s, url.Values{"grant_type": {"client_credentials"}, "scope": {"a", "b"}}, basic()...), http.StatusBadRequest, "invalid_request")

	req, _ := http.NewRequest(http.MethodGet, s.TokenURL+"?grant_type=client_credentials", nil)
	if r := do(t, s, req); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow %q", r.status, r.header.Get("Allow"))
	}
	req, _ = http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	wantOAuthError(t, do(t, s, req), http.StatusBadRequest, "invalid_request")

	if got, want := s.Counts(), (providertest.Counts{ClientCredentials: 1, Other: 4, Total: 5}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestScopes(t *testing.T) {
	s := providertest.New(t, providertest.Options{Scopes: []string{"read", "write"}})
	r := post(t, s, url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}}, basic()...)
	if r.status != http.StatusOK || r.body["scope"] != "read" {
		t.Errorf("known scope: %d %s", r.status, r.raw)
	}
	wantOAuthError(t, post(t, s, url.Values{"grant_type": {"client_credentials"}, "scope": {"read admin"}}, basic()...), http.StatusBadRequest, "invalid_scope")
}

func TestPasswordGrant(t *testing.T) {
	s := providertest.New(t, providertest.Options{IssueRefreshToken: true})
	cfg := oauth2.Config{
		ClientID:     providertest.ClientID,
		ClientSecret: providertest.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: s.TokenURL, AuthStyle: oauth2.AuthStyleInHeader},
	}
	tok, err := cfg.PasswordCredentialsToken(context.Background(), providertest.Username, providertest.Password)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token %+v", tok)
	}
	if last := s.LastRequest(); last.Form.Get("username") != providertest.Username || last.Form.Get("password") != providertest.Password {
		t.Errorf("form %v", last.Form)
	}

	_, err = cfg.PasswordCredentialsToken(context.Background(), providertest.Username, "wrong")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("wrong password: %v", err)
	}
	wantOAuthError(t, post(t, s, url.Values{"grant_type": {"password"}, "username": {providertest.Username}}, basic()...), http.StatusBadRequest, "invalid_request")
	if got := s.Counts(); got.Password != 3 || got.Total != 3 {
		t.Errorf("counts %+v", got)
	}
}

func TestRefresh(t *testing.T) {
	fc := clock.NewFake(t0)
	newServer := func(o providertest.Options) *providertest.Server {
		o.Now, o.IssueRefreshToken = fc.Now, true
		return providertest.New(t, o)
	}
	obtain := func(s *providertest.Server) reply {
		t.Helper()
		r := post(t, s, url.Values{"grant_type": {"password"}, "username": {providertest.Username}, "password": {providertest.Password}, "scope": {"a b"}}, basic()...)
		if r.status != http.StatusOK {
			t.Fatalf("obtain: %d %s", r.status, r.raw)
		}
		return r
	}
	refresh := func(s *providertest.Server, tok string) reply {
		t.Helper()
		return post(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}, basic()...)
	}

	t.Run("rotate", func(t *testing.T) {
		s := newServer(providertest.Options{Rotate: true})
		rt1 := obtain(s).body["refresh_token"].(string)
		r := refresh(s, rt1)
		rt2, _ := r.body["refresh_token"].(string)
		if r.status != http.StatusOK || rt2 == "" || rt2 == rt1 {
			t.Fatalf("refresh: %d %s", r.status, r.raw)
		}
		wantOAuthError(t, refresh(s, rt1), http.StatusBadRequest, "invalid_grant")
		if r := refresh(s, rt2); r.status != http.StatusOK {
			t.Errorf("the rotated token: %d %s", r.status, r.raw)
		}
	})
	t.Run("no rotation omits the refresh token", func(t *testing.T) {
		s := newServer(providertest.Options{})
		rt := obtain(s).body["refresh_token"].(string)
		for range 2 {
			r := refresh(s, rt)
			if _, ok := r.body["refresh_token"]; r.status != http.StatusOK || ok {
				t.Errorf("refresh: %d %s, want 200 without refresh_token", r.status, r.raw)
			}
		}
	})
	t.Run("scope", func(t *testing.T) {
		s := newServer(providertest.Options{})
		rt := obtain(s).body["refresh_token"].(string)
		r := post(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {"a"}}, basic()...)
		if r.status != http.StatusOK || r.body["scope"] != "a" {
			t.Errorf("narrowing: %d %s", r.status, r.raw)
		}
		wantOAuthError(t, post(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {"a c"}}, basic()...), http.StatusBadRequest, "invalid_scope")
	})
	t.Run("expired", func(t *testing.T) {
		s := newServer(providertest.Options{RefreshTTL: time.Hour})
		r := obtain(s)
		if r.body["refresh_expires_in"] != 3600.0 {
			t.Errorf("refresh_expires_in = %v, want 3600", r.body["refresh_expires_in"])
		}
		fc.Advance(time.Hour)
		wantOAuthError(t, refresh(s, r.body["refresh_token"].(string)), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("JWT refresh token", func(t *testing.T) {
		s := newServer(providertest.Options{RefreshTTL: time.Hour, RefreshJWT: true})
		r := obtain(s)
		if _, ok := r.body["refresh_expires_in"]; ok {
			t.Error("refresh_expires_in sent with a JWT refresh token")
		}
		if got, want := jwtClaims(t, r.body["refresh_token"].(string))["exp"], float64(fc.Now().Add(time.Hour).Unix()); got != want {
			t.Errorf("refresh token exp = %v, want %v", got, want)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		s := newServer(providertest.Options{})
		r := obtain(s)
		s.RevokeAll()
		wantOAuthError(t, refresh(s, r.body["refresh_token"].(string)), http.StatusBadRequest, "invalid_grant")
		if s.ValidAccessToken(r.body["access_token"].(string)) {
			t.Error("the access token is valid after RevokeAll")
		}
	})
	t.Run("unknown or missing", func(t *testing.T) {
		s := newServer(providertest.Options{})
		wantOAuthError(t, refresh(s, "nope"), http.StatusBadRequest, "invalid_grant")
		wantOAuthError(t, refresh(s, ""), http.StatusBadRequest, "invalid_request")
	})
	t.Run("another client", func(t *testing.T) {
		s := newServer(providertest.Options{Clients: map[string]string{providertest.ClientID: providertest.ClientSecret, "b": "b-secret"}})
		rt := obtain(s).body["refresh_token"].(string)
		wantOAuthError(t, post(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "b", "b-secret"), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("x/oauth2 refreshes", func(t *testing.T) {
		s := newServer(providertest.Options{Rotate: true})
		r := obtain(s)
		cfg := oauth2.Config{ClientID: providertest.ClientID, ClientSecret: providertest.ClientSecret,
			Endpoint: oauth2.Endpoint{TokenURL: s.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
		old := &oauth2.Token{RefreshToken: r.body["refresh_token"].(string), Expiry: time.Now().Add(-time.Hour)}
		tok, err := cfg.TokenSource(context.Background(), old).Token()
		if err != nil || tok.RefreshToken == old.RefreshToken {
			t.Fatalf("refresh through x/oauth2: %v %+v", err, tok)
		}
		if got := s.Counts(); got.RefreshToken != 1 || got.Password != 1 {
			t.Errorf("counts %+v", got)
		}
	})
}

func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts, want a JWT", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExpiryStyles(t *testing.T) {
	fc := clock.NewFake(t0)
	cc := url.Values{"grant_type": {"client_credentials"}}
	for _, tc := range []struct {
		style            providertest.ExpiryStyle
		expiresIn, expAt any
		jwt, jwtExp      bool
	}{
		{style: providertest.ExpiresIn, expiresIn: 600.0},
		{style: providertest.ExpiresAt, expAt: float64(t0.Add(10 * time.Minute).Unix())},
		{style: providertest.JWTExp, jwt: true, jwtExp: true},
		{style: providertest.JWTNoExp, jwt: true},
		{style: providertest.NoExpiry},
	} {
		t.Run(string(tc.style), func(t *testing.T) {
			s := providertest.New(t, providertest.Options{Now: fc.Now, TTL: 10 * time.Minute, Expiry: tc.style})
			r := post(t, s, cc, basic()...)
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if r.body["expires_in"] != tc.expiresIn || r.body["expires_at"] != tc.expAt {
				t.Errorf("expires_in %v expires_at %v, want %v %v", r.body["expires_in"], r.body["expires_at"], tc.expiresIn, tc.expAt)
			}
			tok := r.body["access_token"].(string)
			if isJWT := strings.Count(tok, ".") == 2; isJWT != tc.jwt {
				t.Errorf("token %q: JWT %v, want %v", tok, isJWT, tc.jwt)
			}
			if tc.jwt {
				exp, has := jwtClaims(t, tok)["exp"]
				if has != tc.jwtExp || (has && exp != float64(t0.Add(10*time.Minute).Unix())) {
					t.Errorf("exp claim %v (present %v), want present %v", exp, has, tc.jwtExp)
				}
			}
			if !s.ValidAccessToken(tok) {
				t.Error("not valid when issued")
			}
		})
	}
	t.Run("validity follows the clock", func(t *testing.T) {
		c := clock.NewFake(t0)
		s := providertest.New(t, providertest.Options{Now: c.Now, TTL: time.Minute})
		forever := providertest.New(t, providertest.Options{Now: c.Now, TTL: time.Minute, Expiry: providertest.NoExpiry})
		tok := post(t, s, cc, basic()...).body["access_token"].(string)
		tokForever := post(t, forever, cc, basic()...).body["access_token"].(string)
		resource := func(s *providertest.Server, tok string) int {
			req, _ := http.NewRequest(http.MethodGet, s.URL+providertest.ResourcePath, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			return do(t, s, req).status
		}
		if got := resource(s, tok); got != http.StatusOK {
			t.Errorf("resource with a fresh token: %d", got)
		}
		c.Advance(time.Minute)
		if got := resource(s, tok); got != http.StatusUnauthorized {
			t.Errorf("resource with an expired token: %d", got)
		}
		if got := resource(forever, tokForever); got != http.StatusOK {
			t.Errorf("resource with a token that never expires: %d", got)
		}
	})
}

func TestTokenType(t *testing.T) {
	s := providertest.New(t, providertest.Options{TokenType: "-"})
	if r := post(t, s, url.Values{"grant_type": {"client_credentials"}}, basic()...); r.body["token_type"] != nil {
		t.Errorf("token_type %v, want none", r.body["token_type"])
	}
}

func TestFormResponseAndEdit(t *testing.T) {
	s := providertest.New(t, providertest.Options{
		FormResponse: true,
		Edit:         func(m map[string]any) { m["expires_in"] = "120" },
	})
	r := post(t, s, url.Values{"grant_type": {"client_credentials"}}, basic()...)
	if ct := r.header.Get("Content-Type"); r.status != http.StatusOK || ct != "application/x-www-form-urlencoded" {
		t.Fatalf("%d %s", r.status, ct)
	}
	v, err := url.ParseQuery(string(r.raw))
	if err != nil || v.Get("access_token") == "" || v.Get("expires_in") != "120" || v.Get("token_type") != "Bearer" {
		t.Errorf("form answer %v (%v)", v, err)
	}
	// x/oauth2 reads form answers too, as it does GitHub's.
	cfg := clientcredentials.Config{ClientID: providertest.ClientID, ClientSecret: providertest.ClientSecret, TokenURL: s.TokenURL}
	if tok, err := cfg.Token(context.Background()); err != nil || tok.AccessToken == "" {
		t.Errorf("x/oauth2 with a form answer: %v", err)
	}
}

func TestFaults(t *testing.T) {
	s := providertest.New(t, providertest.Options{})
	cc := url.Values{"grant_type": {"client_credentials"}}
	s.FailNext(1, http.StatusServiceUnavailable, "30")
	s.FailNext(1, http.StatusTooManyRequests, "5")
	s.FailNext(1, http.StatusInternalServerError, "")
	s.MalformedNext(1, "")
	s.MalformedNext(1, "<html>")
	for i, want := range []struct {
		status     int
		retryAfter string
		code       string
		raw        string
	}{
		{503, "30", "temporarily_unavailable", ""},
		{429, "5", "temporarily_unavailable", ""},
		{500, "", "server_error", ""},
		{200, "", "", "-"},
		{200, "", "", "<html>"},
	} {
		r := post(t, s, cc, basic()...)
		if r.status != want.status || r.header.Get("Retry-After") != want.retryAfter {
			t.Errorf("call %d: %d Retry-After %q, want %d %q", i+1, r.status, r.header.Get("Retry-After"), want.status, want.retryAfter)
		}
		if want.code != "" && r.body["error"] != want.code {
			t.Errorf("call %d: body %s, want error %s", i+1, r.raw, want.code)
		}
		if want.raw == "-" && len(r.raw) != 0 || want.raw != "-" && want.raw != "" && string(r.raw) != want.raw {
			t.Errorf("call %d: body %q", i+1, r.raw)
		}
	}
	if r := post(t, s, cc, basic()...); r.status != http.StatusOK || r.body["access_token"] == nil {
		t.Errorf("after the faults: %d %s", r.status, r.raw)
	}
	if got := s.Counts(); got.ClientCredentials != 6 || got.Total != 6 {
		t.Errorf("counts %+v, want 6 client_credentials calls", got)
	}

	t.Run("hang", func(t *testing.T) {
		s.Hang(1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader(cc.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := s.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		deadline := time.Now().Add(10 * time.Second)
		for s.Counts().Total != 7 || s.Pending() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the hanging request never arrived")
			}
			time.Sleep(2 * time.Millisecond)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestLastRequestIsACopy(t *testing.T) {
	s := providertest.New(t, providertest.Options{})
	post(t, s, url.Values{"grant_type": {"client_credentials"}, "resource": {"r1"}}, basic()...)
	got := s.LastRequest()
	got.Form.Set("resource", "changed")
	if s.LastRequest().Form.Get("resource") != "r1" {
		t.Error("changing LastRequest's form changed the record")
	}
	if got.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("header %v", got.Header)
	}
}
