package grant_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/clock"
)

type demoFixture struct {
	srv   *demo.Server
	ts    *httptest.Server
	clock *clock.Fake
	c     *grant.Client
	p     *tokenhub.Provider
	conn  *tokenhub.Connection
}

func newDemo(t *testing.T) *demoFixture {
	t.Helper()
	fc := clock.NewFake(t0)
	srv := demo.New(demo.Options{Now: fc.Now})
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { srv.Release(); ts.Close() })
	cfg := demo.ConnectionConfig(ts.URL)
	return &demoFixture{srv: srv, ts: ts, clock: fc, c: &grant.Client{Now: fc.Now}, p: demo.Provider(),
		conn: &tokenhub.Connection{Workspace: "acme", Name: "baserow", Config: cfg}}
}

// rows reads the demo's rows with the header RenderHeader builds for tok.
func (f *demoFixture) rows(t *testing.T, tok *tokenhub.Token) int {
	t.Helper()
	name, value, err := grant.RenderHeader(f.p, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/api/database/rows/table/1/?user_field_names=true", nil)
	req.Header.Set(name, value)
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestLoginDemo(t *testing.T) {
	f := newDemo(t)
	tok, err := f.c.Obtain(context.Background(), f.p, f.conn)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || !tok.ObtainedAt.Equal(t0) {
		t.Fatalf("token %v", tok)
	}
	if !tok.ExpiresAt.Equal(t0.Add(demo.DefaultAccessTTL)) || tok.ExpirySource != tokenhub.ExpiryJWT {
		t.Errorf("expires %v (%s), want %v from the JWT", tok.ExpiresAt, tok.ExpirySource, t0.Add(demo.DefaultAccessTTL))
	}
	if !tok.RefreshExpiresAt.Equal(t0.Add(demo.DefaultRefreshTTL)) || tok.RefreshExpirySource != tokenhub.ExpiryJWT {
		t.Errorf("refresh expires %v (%s)", tok.RefreshExpiresAt, tok.RefreshExpirySource)
	}
	if got := f.rows(t, tok); got != http.StatusOK {
		t.Errorf("rows with the obtained token: %d", got)
	}

	f.clock.Advance(45 * time.Second)
	f.conn.Token = tok
	tok2, err := f.c.Refresh(context.Background(), f.p, f.conn, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if tok2.AccessToken == tok.AccessToken || tok2.RefreshToken != "" {
		t.Errorf("refreshed %v: want a new access token and no refresh token (Baserow does not rotate)", tok2)
	}
	if want := t0.Add(45*time.Second + demo.DefaultAccessTTL); !tok2.ExpiresAt.Equal(want) {
		t.Errorf("refreshed expires %v, want %v", tok2.ExpiresAt, want)
	}
	f.clock.Advance(30 * time.Second) // the first token is dead, the second is not
	if got := f.rows(t, tok); got != http.StatusUnauthorized {
		t.Errorf("rows with the expired token: %d", got)
	}
	if got := f.rows(t, tok2); got != http.StatusOK {
		t.Errorf("rows with the refreshed token: %d", got)
	}
	if got := f.srv.Counts(); got.TokenAuth != 1 || got.TokenRefresh != 1 {
		t.Errorf("counts %+v", got)
	}
}

func TestLoginDemoFailures(t *testing.T) {
	f := newDemo(t)
	t.Run("wrong password", func(t *testing.T) {
		conn := *f.conn
		conn.Config.Credentials = map[string]string{"email": demo.DefaultEmail, "password": "not-the-password"}
		_, err := f.c.Obtain(context.Background(), f.p, &conn)
		e := checkError(t, err, true, "not-the-password", demo.DefaultPassword)
		if e.StatusCode != 401 || e.Code != "ERROR_INVALID_CREDENTIALS" || e.Description != "No active account found with the given credentials." {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("missing credential", func(t *testing.T) {
		conn := *f.conn
		conn.Config.Credentials = map[string]string{"email": demo.DefaultEmail}
		before := f.srv.Counts().TokenAuth
		_, err := f.c.Obtain(context.Background(), f.p, &conn)
		checkError(t, err, true)
		if !strings.Contains(err.Error(), "login.json.password") || !strings.Contains(err.Error(), `"password"`) {
			t.Errorf("Error() = %q, want it to name login.json.password and the missing key", err)
		}
		if f.srv.Counts().TokenAuth != before {
			t.Error("a request was sent")
		}
	})
	tok, err := f.c.Obtain(context.Background(), f.p, f.conn)
	if err != nil {
		t.Fatal(err)
	}
	f.conn.Token = tok
	t.Run("revoked refresh token", func(t *testing.T) {
		f.srv.RevokeRefreshTokens()
		_, err := f.c.Refresh(context.Background(), f.p, f.conn, tok.RefreshToken)
		e := checkError(t, err, true, tok.RefreshToken, tok.AccessToken)
		if e.Op != grant.OpRefresh || e.StatusCode != 401 || e.Code != "ERROR_INVALID_REFRESH_TOKEN" {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("503", func(t *testing.T) {
		f.srv.FailNext(1, http.StatusServiceUnavailable, "12")
		_, err := f.c.Obtain(context.Background(), f.p, f.conn)
		if e := checkError(t, err, false); e.StatusCode != 503 || e.RetryAfter != 12*time.Second {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("429", func(t *testing.T) {
		f.srv.FailNext(1, http.StatusTooManyRequests, "3")
		_, err := f.c.Obtain(context.Background(), f.p, f.conn)
		if e := checkError(t, err, false); e.StatusCode != 429 || e.RetryAfter != 3*time.Second || e.Description != "Request was throttled." {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		f.srv.MalformedNext(1, `{"user":{}}`)
		_, err := f.c.Obtain(context.Background(), f.p, f.conn)
		if e := checkError(t, err, false); e.StatusCode != 200 {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f.srv.Hang(1)
		p := demo.Provider()
		p.Timeout = tokenhub.Duration(50 * time.Millisecond)
		_, err := f.c.Refresh(context.Background(), p, f.conn, tok.RefreshToken)
		checkError(t, err, false, tok.RefreshToken)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no refresh request", func(t *testing.T) {
		p := demo.Provider()
		p.Refresh = nil
		before := f.srv.Counts()
		_, err := f.c.Refresh(context.Background(), p, f.conn, tok.RefreshToken)
		checkError(t, err, true, tok.RefreshToken)
		if !errors.Is(err, grant.ErrNoRefreshRequest) || f.srv.Counts() != before {
			t.Errorf("err = %v, counts %+v → %+v", err, before, f.srv.Counts())
		}
	})
}

// captured is what a capture server saw.
type captured struct {
	method, path, rawQuery string
	header                 http.Header
	body                   []byte
}

// captureServer records each request and answers with reply.
func captureServer(t *testing.T, status int, contentType, reply string) (*httptest.Server, func() captured) {
	t.Helper()
	var mu sync.Mutex
	var last captured
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = captured{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), b}
		mu.Unlock()
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	t.Cleanup(ts.Close)
	return ts, func() captured { mu.Lock(); defer mu.Unlock(); return last }
}

func TestLoginRequestRendering(t *testing.T) {
	ts, last := captureServer(t, 200, "application/json", `{"data":{"token":"tok-1","ttl":"120"},"renew":{"value":"r-1"}}`)
	p := &tokenhub.Provider{
		Name: "custom",
		Login: &tokenhub.Request{
			URL:     "{{.BaseURL}}/v1/session",
			Method:  "put",
			Headers: map[string]string{"X-Tenant": "{{.Credentials.tenant}}", "Content-Type": "application/vnd.custom+json"},
			JSON: map[string]any{
				"auth":  map[string]any{"user": "{{.Username}}", "secret": "{{.Password}}"},
				"scope": []any{"a", "{{.Credentials.tenant}}"},
				"keep":  true,
				"n":     3.0,
			},
		},
		Response: tokenhub.ResponseMapping{AccessToken: "data.token", ExpiresIn: "data.ttl", RefreshToken: "renew.value"},
	}
	// A password that would break out of a JSON string, or re-enter the
	// template engine, if it were pasted into the body as text.
	const nasty = `p"w\d", "admin": true, "x": "{{.ClientSecret}}`
	conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{
		BaseURL: ts.URL, Username: "bob", Password: nasty, ClientSecret: "client-secret-value",
		Credentials: map[string]string{"tenant": "t-42"},
	}}
	fc := clock.NewFake(t0)
	tok, err := (&grant.Client{Now: fc.Now}).Obtain(context.Background(), p, conn)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "tok-1" || tok.RefreshToken != "r-1" || !tok.ExpiresAt.Equal(t0.Add(2*time.Minute)) || tok.ExpirySource != tokenhub.ExpiryExpiresIn {
		t.Errorf("token %+v", *tok)
	}
	got := last()
	if got.method != http.MethodPut || got.path != "/v1/session" {
		t.Errorf("%s %s", got.method, got.path)
	}
	if got.header.Get("X-Tenant") != "t-42" || got.header.Get("Content-Type") != "application/vnd.custom+json" || got.header.Get("Accept") != "application/json" {
		t.Errorf("headers %v", got.header)
	}
	var body map[string]any
	if err := json.Unmarshal(got.body, &body); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	auth, _ := body["auth"].(map[string]any)
	if auth["user"] != "bob" || auth["secret"] != nasty {
		t.Errorf("auth = %v, want the password as one literal string", auth)
	}
	if _, ok := body["admin"]; ok {
		t.Error("the password injected a field into the body")
	}
	if s, _ := body["scope"].([]any); len(s) != 2 || s[1] != "t-42" || body["keep"] != true || body["n"] != 3.0 {
		t.Errorf("body %v", body)
	}
}

func TestLoginForm(t *testing.T) {
	f := newDemo(t)
	p := demo.Provider()
	p.Login = &tokenhub.Request{URL: "{{.BaseURL}}" + demo.PathTokenAuth,
		Form: map[string]string{"email": "{{.Credentials.email}}", "password": "{{.Credentials.password}}"}}
	p.Refresh = &tokenhub.Request{URL: "{{.BaseURL}}" + demo.PathTokenRefresh,
		Form: map[string]string{"refresh_token": "{{.RefreshToken}}"}}
	tok, err := f.c.Obtain(context.Background(), p, f.conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Refresh(context.Background(), p, f.conn, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}

	t.Run("GET puts the form in the query", func(t *testing.T) {
		ts, last := captureServer(t, 200, "application/json", `{"access_token":"x"}`)
		p := &tokenhub.Provider{Name: "g", Login: &tokenhub.Request{URL: ts.URL + "/login?v=2", Method: "GET",
			Form: map[string]string{"user": "{{.Username}}"}}}
		conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{Username: "a b&c"}}
		if _, err := (&grant.Client{}).Obtain(context.Background(), p, conn); err != nil {
			t.Fatal(err)
		}
		if got := last(); got.method != http.MethodGet || got.rawQuery != "user=a+b%26c&v=2" || len(got.body) != 0 {
			t.Errorf("%s ?%s body %q", got.method, got.rawQuery, got.body)
		}
	})
}

func TestLoginRefreshSeesTokens(t *testing.T) {
	ts, last := captureServer(t, 200, "application/json", `{"access_token":"new"}`)
	p := &tokenhub.Provider{Name: "r",
		Login: &tokenhub.Request{URL: ts.URL + "/login"},
		Refresh: &tokenhub.Request{URL: ts.URL + "/refresh",
			Headers: map[string]string{"Authorization": "Bearer {{.AccessToken}}"},
			JSON:    map[string]any{"refresh": "{{.RefreshToken}}"}},
	}
	conn := &tokenhub.Connection{Token: &tokenhub.Token{AccessToken: "old-access-token"}}
	tok, err := (&grant.Client{}).Refresh(context.Background(), p, conn, "the-refresh-token")
	if err != nil || tok.AccessToken != "new" {
		t.Fatalf("%v %v", tok, err)
	}
	got := last()
	if got.path != "/refresh" || got.header.Get("Authorization") != "Bearer old-access-token" || string(got.body) != `{"refresh":"the-refresh-token"}` {
		t.Errorf("%s %v %s", got.path, got.header, got.body)
	}
}

// A provider that echoes what it was sent must not smuggle a secret into an
// error message.
func TestErrorsHoldNoSecrets(t *testing.T) {
	const password, secret = "hunter2-password", "client-secret-xyz"
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
	}{
		{"OAuth JSON", "application/json", `{"error":"invalid_grant","error_description":"bad password hunter2-password for client-secret-xyz"}`, 400},
		{"login API detail list", "application/json", `{"error":"ERR","detail":["hunter2-password is wrong"]}`, 401},
		{"DRF field errors", "application/json", `{"password":["hunter2-password is too common"]}`, 400},
		{"form", "application/x-www-form-urlencoded", `error=invalid_client&error_description=client-secret-xyz+rejected`, 401},
		{"plain text", "text/plain", `hunter2-password`, 500},
		{"200 without a token", "application/json", `{"echo":"hunter2-password"}`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := captureServer(t, tc.status, tc.contentType, tc.body)
			p := &tokenhub.Provider{Name: "echo", TokenURL: ts.URL + "/token?key=" + secret}
			conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{Grant: tokenhub.GrantPassword,
				ClientID: "id", ClientSecret: secret, Username: "u", Password: password}}
			_, err := (&grant.Client{}).Obtain(context.Background(), p, conn)
			e := checkError(t, err, tc.status != 500 && tc.status != 200, password, secret)
			if tc.status == 400 && !strings.Contains(e.Description, "REDACTED") {
				t.Errorf("description %q, want the echoed secret redacted", e.Description)
			}
		})
	}
}

func TestLoginErrorShapes(t *testing.T) {
	for _, tc := range []struct {
		name, body, code, desc string
		status                 int
	}{
		{"Baserow", `{"error":"ERROR_INVALID_CREDENTIALS","detail":"No active account found."}`, "ERROR_INVALID_CREDENTIALS", "No active account found.", 401},
		{"Baserow validation", `{"error":"ERROR_REQUEST_BODY_VALIDATION","detail":{"email":[{"error":"This field is required.","code":"required"}]}}`,
			"ERROR_REQUEST_BODY_VALIDATION", "email: This field is required.", 400},
		{"DRF detail", `{"detail":"Authentication credentials were not provided."}`, "", "Authentication credentials were not provided.", 401},
		{"DRF non_field_errors", `{"non_field_errors":["Unable to log in.","Try again."]}`, "", "Unable to log in. Try again.", 400},
		{"DRF field errors", `{"password":["This field is required."],"email":["Enter a valid email address."]}`, "", "email: Enter a valid email address.; password: This field is required.", 400},
		{"Google style", `{"error":{"code":401,"message":"Request had invalid credentials.","status":"UNAUTHENTICATED"}}`, "UNAUTHENTICATED", "Request had invalid credentials.", 401},
		{"message", `{"message":"Invalid\n\tlogin"}`, "", "Invalid login", 403},
		{"not JSON", `<h1>Forbidden</h1>`, "", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := captureServer(t, tc.status, "application/json", tc.body)
			p := &tokenhub.Provider{Name: "l", Login: &tokenhub.Request{URL: ts.URL}}
			_, err := (&grant.Client{}).Obtain(context.Background(), p, &tokenhub.Connection{})
			e := checkError(t, err, true)
			if e.Code != tc.code || e.Description != tc.desc || e.StatusCode != tc.status {
				t.Errorf("got %d %q %q, want %d %q %q", e.StatusCode, e.Code, e.Description, tc.status, tc.code, tc.desc)
			}
		})
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	target, _ := captureServer(t, 200, "application/json", `{"access_token":"x"}`)
	ts := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	t.Cleanup(ts.Close)
	p := &tokenhub.Provider{Name: "r", TokenURL: ts.URL}
	conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{ClientID: "id", ClientSecret: "secret-value"}}
	_, err := (&grant.Client{}).Obtain(context.Background(), p, conn)
	if e := checkError(t, err, true, "secret-value"); e.StatusCode != http.StatusFound {
		t.Errorf("error %+v", e)
	}
}
