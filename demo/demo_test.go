package demo_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/clock"
	"github.com/tokenhub/tokenhub/internal/poll"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	srv   *demo.Server
	ts    *httptest.Server
	clock *clock.Fake
}

func newFixture(t *testing.T, o demo.Options) *fixture {
	t.Helper()
	c := clock.NewFake(t0)
	if o.Now == nil {
		o.Now = c.Now
	}
	srv := demo.New(o)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { srv.Release(); ts.Close() })
	return &fixture{srv: srv, ts: ts, clock: c}
}

// reply is a decoded response.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (f *fixture) do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	json.Unmarshal(raw, &r.body)
	return r
}

func (f *fixture) postJSON(t *testing.T, path string, body any) reply {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, f.ts.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	return f.do(t, req)
}

func (f *fixture) login(t *testing.T) (access, refresh string) {
	t.Helper()
	r := f.postJSON(t, demo.PathTokenAuth, map[string]string{"email": demo.DefaultEmail, "password": demo.DefaultPassword})
	if r.status != http.StatusOK {
		t.Fatalf("login: status %d, body %s", r.status, r.raw)
	}
	return r.body["access_token"].(string), r.body["refresh_token"].(string)
}

func (f *fixture) rows(t *testing.T, path, auth string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.ts.URL+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return f.do(t, req)
}

// claims decodes a JWT's payload without checking it, as a client would.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("payload: %v", err)
	}
	return c
}

func wantError(t *testing.T, r reply, status int, code, detail string) {
	t.Helper()
	if r.status != status || r.body["error"] != code || r.body["detail"] != detail {
		t.Errorf("got %d %s, want %d {error:%s detail:%s}", r.status, r.raw, status, code, detail)
	}
}

func TestTokenAuth(t *testing.T) {
	f := newFixture(t, demo.Options{})
	r := f.postJSON(t, demo.PathTokenAuth, map[string]string{"email": demo.DefaultEmail, "password": demo.DefaultPassword})
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	access, _ := r.body["access_token"].(string)
	refresh, _ := r.body["refresh_token"].(string)
	if access == "" || refresh == "" || access == refresh {
		t.Fatalf("access %q refresh %q", access, refresh)
	}
	if r.body["token"] != access {
		t.Errorf("token = %v, want the access token (Baserow's deprecated alias)", r.body["token"])
	}
	u, _ := r.body["user"].(map[string]any)
	if u["username"] != demo.DefaultEmail || u["id"] != 1.0 {
		t.Errorf("user = %v", u)
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(access, ".")[0])
	if !strings.Contains(string(hdr), `"alg":"HS256"`) {
		t.Errorf("header %s, want HS256", hdr)
	}
	ac := claims(t, access)
	if ac["token_type"] != "access" || ac["exp"] != float64(t0.Add(60*time.Second).Unix()) ||
		ac["iat"] != float64(t0.Unix()) || ac["user_id"] != 1.0 || ac["jti"] == "" || ac["jti"] == nil {
		t.Errorf("access claims = %v", ac)
	}
	rc := claims(t, refresh)
	if rc["token_type"] != "refresh" || rc["exp"] != float64(t0.Add(168*time.Hour).Unix()) || rc["user_id"] != 1.0 {
		t.Errorf("refresh claims = %v", rc)
	}
	if ac["jti"] == rc["jti"] {
		t.Error("access and refresh token share a jti")
	}
}

func TestTokenAuthForm(t *testing.T) {
	f := newFixture(t, demo.Options{})
	form := url.Values{"email": {"  DEMO@tokenhub.local "}, "password": {demo.DefaultPassword}}
	req, _ := http.NewRequest(http.MethodPost, f.ts.URL+demo.PathTokenAuth, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := f.do(t, req); r.status != http.StatusOK || r.body["access_token"] == nil {
		t.Fatalf("form login with a non-normalised e-mail: %d %s", r.status, r.raw)
	}
}

func TestTokenAuthRefused(t *testing.T) {
	f := newFixture(t, demo.Options{Users: map[string]string{"a@example.com": "pw-a", "b@example.com": "pw-b"}})
	for _, tc := range []struct {
		name string
		body map[string]string
	}{
		{"wrong password", map[string]string{"email": "a@example.com", "password": "pw-b"}},
		{"unknown user", map[string]string{"email": "c@example.com", "password": "pw-a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.postJSON(t, demo.PathTokenAuth, tc.body)
			wantError(t, r, http.StatusUnauthorized, "ERROR_INVALID_CREDENTIALS", "No active account found with the given credentials.")
			if strings.Contains(string(r.raw), "pw-") {
				t.Errorf("the error body echoes a password: %s", r.raw)
			}
		})
	}
	t.Run("both users log in", func(t *testing.T) {
		for email, pw := range map[string]string{"a@example.com": "pw-a", "b@example.com": "pw-b"} {
			r := f.postJSON(t, demo.PathTokenAuth, map[string]string{"email": email, "password": pw})
			if r.status != http.StatusOK {
				t.Errorf("%s: %d %s", email, r.status, r.raw)
			}
		}
	})
	t.Run("missing fields", func(t *testing.T) {
		r := f.postJSON(t, demo.PathTokenAuth, map[string]string{})
		if r.status != http.StatusBadRequest || r.body["email"] == nil || r.body["password"] == nil {
			t.Errorf("got %d %s, want 400 naming email and password", r.status, r.raw)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+demo.PathTokenAuth, strings.NewReader("{email"))
		req.Header.Set("Content-Type", "application/json")
		if r := f.do(t, req); r.status != http.StatusBadRequest || r.body["detail"] == nil {
			t.Errorf("got %d %s, want 400 with a detail", r.status, r.raw)
		}
	})
	t.Run("unsupported media type", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+demo.PathTokenAuth, strings.NewReader("x"))
		req.Header.Set("Content-Type", "text/plain")
		if r := f.do(t, req); r.status != http.StatusUnsupportedMediaType {
			t.Errorf("got %d %s, want 415", r.status, r.raw)
		}
	})
	t.Run("GET", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+demo.PathTokenAuth, nil)
		if r := f.do(t, req); r.status != http.StatusMethodNotAllowed || r.body["detail"] != `Method "GET" not allowed.` {
			t.Errorf("got %d %s, want 405", r.status, r.raw)
		}
	})
}

func TestTokenRefresh(t *testing.T) {
	f := newFixture(t, demo.Options{AccessTTL: 5 * time.Minute, RefreshTTL: time.Hour})
	access, refresh := f.login(t)

	f.clock.Advance(2 * time.Minute)
	r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": refresh})
	if r.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.status, r.raw)
	}
	newAccess, _ := r.body["access_token"].(string)
	if newAccess == "" || newAccess == access || r.body["token"] != newAccess {
		t.Errorf("refresh answered access_token %q token %v", newAccess, r.body["token"])
	}
	if _, ok := r.body["refresh_token"]; ok {
		t.Error("the refresh answer carries a refresh token; Baserow does not rotate it")
	}
	if got, want := claims(t, newAccess)["exp"], float64(t0.Add(7*time.Minute).Unix()); got != want {
		t.Errorf("new access exp = %v, want %v (5m after the refresh)", got, want)
	}
	if r.body["user"] == nil {
		t.Error("no user in the refresh answer")
	}

	// The deprecated field name works too, and the refresh token stays usable.
	if r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"token": refresh}); r.status != http.StatusOK {
		t.Errorf("refresh with the deprecated token field: %d %s", r.status, r.raw)
	}

	const invalid = "Refresh token is expired or invalid."
	for name, tok := range map[string]string{
		"an access token": access,
		"garbage":         "not-a-jwt",
		"empty":           "",
		"tampered":        refresh[:len(refresh)-2] + "AA",
	} {
		r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": tok})
		t.Run(name, func(t *testing.T) { wantError(t, r, http.StatusUnauthorized, "ERROR_INVALID_REFRESH_TOKEN", invalid) })
	}

	t.Run("another server's token", func(t *testing.T) {
		other := newFixture(t, demo.Options{})
		_, foreign := other.login(t)
		r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": foreign})
		wantError(t, r, http.StatusUnauthorized, "ERROR_INVALID_REFRESH_TOKEN", invalid)
	})

	t.Run("expired", func(t *testing.T) {
		f.clock.Advance(time.Hour)
		r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": refresh})
		wantError(t, r, http.StatusUnauthorized, "ERROR_INVALID_REFRESH_TOKEN", invalid)
	})
}

func TestRevokeRefreshTokens(t *testing.T) {
	f := newFixture(t, demo.Options{})
	access, refresh := f.login(t)
	f.srv.RevokeRefreshTokens()
	r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": refresh})
	wantError(t, r, http.StatusUnauthorized, "ERROR_INVALID_REFRESH_TOKEN", "Refresh token is expired or invalid.")

	// Access tokens stay valid, and logging in again gives a working pair.
	if r := f.rows(t, "/api/database/rows/table/1/", "JWT "+access); r.status != http.StatusOK {
		t.Errorf("rows with an access token issued before the revocation: %d %s", r.status, r.raw)
	}
	_, refresh = f.login(t)
	if r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": refresh}); r.status != http.StatusOK {
		t.Errorf("refresh after logging in again: %d %s", r.status, r.raw)
	}
}

func TestRows(t *testing.T) {
	f := newFixture(t, demo.Options{})
	access, refresh := f.login(t)

	r := f.rows(t, "/api/database/rows/table/1/?user_field_names=true", "JWT "+access)
	if r.status != http.StatusOK {
		t.Fatalf("rows: %d %s", r.status, r.raw)
	}
	results, _ := r.body["results"].([]any)
	if r.body["count"] != float64(len(results)) || len(results) < 3 {
		t.Fatalf("count %v with %d results", r.body["count"], len(results))
	}
	if v, ok := r.body["next"]; !ok || v != nil {
		t.Errorf("next = %v, want null", v)
	}
	if v, ok := r.body["previous"]; !ok || v != nil {
		t.Errorf("previous = %v, want null", v)
	}
	first, _ := results[0].(map[string]any)
	if first["id"] != 1.0 || first["Name"] == nil {
		t.Errorf("first row %v, want id 1 and a Name", first)
	}

	// Without user_field_names, fields are named by id as in Baserow.
	r = f.rows(t, "/api/database/rows/table/1/", "JWT "+access)
	first, _ = r.body["results"].([]any)[0].(map[string]any)
	if _, ok := first["Name"]; ok || first["id"] != 1.0 {
		t.Errorf("row without user_field_names = %v, want field_N keys", first)
	}
	hasField := false
	for k := range first {
		hasField = hasField || strings.HasPrefix(k, "field_")
	}
	if !hasField {
		t.Errorf("row without user_field_names = %v, want field_N keys", first)
	}

	const path = "/api/database/rows/table/1/?user_field_names=true"
	t.Run("no header", func(t *testing.T) {
		r := f.rows(t, path, "")
		if r.status != http.StatusUnauthorized || r.body["detail"] != "Authentication credentials were not provided." {
			t.Errorf("got %d %s", r.status, r.raw)
		}
		if got := r.header.Get("WWW-Authenticate"); got != `JWT realm="api"` {
			t.Errorf("WWW-Authenticate %q", got)
		}
	})
	t.Run("Bearer scheme", func(t *testing.T) {
		if r := f.rows(t, path, "Bearer "+access); r.status != http.StatusUnauthorized {
			t.Errorf("got %d %s, want 401", r.status, r.raw)
		}
	})
	t.Run("database token scheme", func(t *testing.T) {
		wantError(t, f.rows(t, path, "Token abc"), http.StatusUnauthorized, "ERROR_TOKEN_DOES_NOT_EXIST", "The token does not exist.")
	})
	t.Run("JWT with no token", func(t *testing.T) {
		if r := f.rows(t, path, "JWT"); r.status != http.StatusUnauthorized || r.body["code"] != "bad_authorization_header" {
			t.Errorf("got %d %s", r.status, r.raw)
		}
	})
	const invalid = "Access token is expired or invalid."
	t.Run("refresh token", func(t *testing.T) {
		wantError(t, f.rows(t, path, "JWT "+refresh), http.StatusUnauthorized, "ERROR_INVALID_ACCESS_TOKEN", invalid)
	})
	t.Run("tampered", func(t *testing.T) {
		p := strings.Split(access, ".")
		forged := p[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"token_type":"access","user_id":1,"exp":9999999999}`)) + "." + p[2]
		wantError(t, f.rows(t, path, "JWT "+forged), http.StatusUnauthorized, "ERROR_INVALID_ACCESS_TOKEN", invalid)
	})
	t.Run("unknown table", func(t *testing.T) {
		wantError(t, f.rows(t, "/api/database/rows/table/99/", "JWT "+access), http.StatusNotFound, "ERROR_TABLE_DOES_NOT_EXIST", "The requested table does not exist.")
	})
	t.Run("expired", func(t *testing.T) {
		f.clock.Advance(59 * time.Second)
		if r := f.rows(t, path, "JWT "+access); r.status != http.StatusOK {
			t.Fatalf("1 s before exp: %d %s", r.status, r.raw)
		}
		f.clock.Advance(time.Second)
		wantError(t, f.rows(t, path, "JWT "+access), http.StatusUnauthorized, "ERROR_INVALID_ACCESS_TOKEN", invalid)
	})
}

func TestOptions(t *testing.T) {
	rows := []map[string]any{{"id": 7, "Title": "only"}}
	f := newFixture(t, demo.Options{TableID: 42, Rows: rows, AccessTTL: 10 * time.Minute})
	access, _ := f.login(t)
	if got, want := claims(t, access)["exp"], float64(t0.Add(10*time.Minute).Unix()); got != want {
		t.Errorf("exp = %v, want %v", got, want)
	}
	r := f.rows(t, "/api/database/rows/table/42/?user_field_names=true", "JWT "+access)
	if r.status != http.StatusOK || r.body["count"] != 1.0 {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	if row := r.body["results"].([]any)[0].(map[string]any); row["Title"] != "only" || row["id"] != 7.0 {
		t.Errorf("row = %v", row)
	}
	if r := f.rows(t, "/api/database/rows/table/1/", "JWT "+access); r.status != http.StatusNotFound {
		t.Errorf("table 1 when only 42 exists: %d", r.status)
	}
}

func TestUnknownPath(t *testing.T) {
	f := newFixture(t, demo.Options{})
	req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/api/nope/", nil)
	wantError(t, f.do(t, req), http.StatusNotFound, "URL_NOT_FOUND", "URL /api/nope/ not found.")
}

func TestFailNext(t *testing.T) {
	f := newFixture(t, demo.Options{})
	f.srv.FailNext(2, http.StatusServiceUnavailable, "7")
	f.srv.FailNext(1, http.StatusTooManyRequests, "Sat, 01 Mar 2025 12:00:30 GMT")
	body := map[string]string{"email": demo.DefaultEmail, "password": demo.DefaultPassword}
	for i, want := range []struct {
		status     int
		retryAfter string
	}{{503, "7"}, {503, "7"}, {429, "Sat, 01 Mar 2025 12:00:30 GMT"}, {200, ""}} {
		r := f.postJSON(t, demo.PathTokenAuth, body)
		if r.status != want.status || r.header.Get("Retry-After") != want.retryAfter {
			t.Errorf("call %d: %d Retry-After %q, want %d %q", i+1, r.status, r.header.Get("Retry-After"), want.status, want.retryAfter)
		}
		if want.status == 429 && r.body["detail"] == nil {
			t.Errorf("429 body %s, want a Django REST framework detail", r.raw)
		}
	}
	// Faults apply to the refresh endpoint too, and every call is counted.
	_, refresh := f.login(t)
	f.srv.FailNext(1, http.StatusBadGateway, "")
	if r := f.postJSON(t, demo.PathTokenRefresh, map[string]string{"refresh_token": refresh}); r.status != http.StatusBadGateway {
		t.Errorf("refresh: %d, want 502", r.status)
	}
	if got, want := f.srv.Counts(), (demo.Counts{TokenAuth: 5, TokenRefresh: 1}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestMalformedNext(t *testing.T) {
	f := newFixture(t, demo.Options{})
	f.srv.MalformedNext(1, "")
	f.srv.MalformedNext(1, `{"access_`)
	body := map[string]string{"email": demo.DefaultEmail, "password": demo.DefaultPassword}
	for _, want := range []string{"", `{"access_`} {
		r := f.postJSON(t, demo.PathTokenAuth, body)
		if r.status != http.StatusOK || string(r.raw) != want {
			t.Errorf("got %d %q, want 200 %q", r.status, r.raw, want)
		}
	}
	if f.srv.Pending() != 0 {
		t.Errorf("%d faults still pending", f.srv.Pending())
	}
}

func TestHang(t *testing.T) {
	f := newFixture(t, demo.Options{})
	f.srv.Hang(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		b := strings.NewReader(`{"email":"demo@tokenhub.local","password":"demo-password"}`)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.ts.URL+demo.PathTokenAuth, b)
		req.Header.Set("Content-Type", "application/json")
		resp, err := f.ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	poll.Until(t, "the hanging request to arrive", func() bool { return f.srv.Counts().TokenAuth == 1 && f.srv.Pending() == 0 })
	select {
	case err := <-done:
		t.Fatalf("the request returned before its context ended: %v", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The next call is served normally.
	f.login(t)

	t.Run("Release", func(t *testing.T) {
		f.srv.Hang(1)
		done := make(chan int, 1)
		go func() {
			r := f.postJSON(t, demo.PathTokenAuth, map[string]string{"email": demo.DefaultEmail, "password": demo.DefaultPassword})
			done <- r.status
		}()
		poll.Until(t, "the hanging request to arrive", func() bool { return f.srv.Counts().TokenAuth == 3 && f.srv.Pending() == 0 })
		f.srv.Release()
		if got := <-done; got != http.StatusServiceUnavailable {
			t.Errorf("released request: %d, want 503", got)
		}
	})
}

func TestProvider(t *testing.T) {
	p := demo.Provider()
	if err := p.Validate(); err != nil {
		t.Fatalf("Provider().Validate() = %v", err)
	}
	c := demo.ConnectionConfig("http://127.0.0.1:1")
	if err := c.Validate(p); err != nil {
		t.Fatalf("ConnectionConfig().Validate() = %v", err)
	}
	if h := p.HeaderOrDefault(); h.Name != "Authorization" || !strings.HasPrefix(h.Value, "JWT ") {
		t.Errorf("header %+v, want Authorization: JWT ...", h)
	}
}
