package tokenhub_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
)

func loginProvider() *tokenhub.Provider {
	return &tokenhub.Provider{
		Name:    "baserow-login",
		Header:  tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"},
		Login:   &tokenhub.Request{URL: "{{.BaseURL}}/api/user/token-auth/", JSON: map[string]any{"email": "{{.Credentials.email}}"}},
		Refresh: &tokenhub.Request{URL: "{{.BaseURL}}/api/user/token-refresh/", JSON: map[string]any{"refresh_token": "{{.RefreshToken}}"}},
	}
}

// checkField fails t unless err is nil for an empty field, or else an
// EINVALID error whose message starts by naming field.
func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("Validate() = %v, want nil", err)
		}
		return
	}
	if tokenhub.ErrorCode(err) != tokenhub.EINVALID || !strings.HasPrefix(tokenhub.ErrorMessage(err), field+":") {
		t.Fatalf("Validate() = %v, want invalid naming %q first", err, field)
	}
}

func TestProviderValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(p *tokenhub.Provider)
		field string // "" means valid
	}{
		{"valid login provider", func(p *tokenhub.Provider) {}, ""},
		{"valid oauth2 provider", func(p *tokenhub.Provider) { p.Login, p.Refresh, p.TokenURL = nil, nil, "https://auth/token" }, ""},
		{"no name", func(p *tokenhub.Provider) { p.Name = "" }, "name"},
		{"bad name", func(p *tokenhub.Provider) { p.Name = "Bad Name" }, "name"},
		{"bad auth style", func(p *tokenhub.Provider) { p.AuthStyle = "header" }, "auth_style"},
		{"login without url", func(p *tokenhub.Provider) { p.Login.URL = "" }, "login.url"},
		{"login bad method", func(p *tokenhub.Provider) { p.Login.Method = "DELETE" }, "login.method"},
		{"login json and form", func(p *tokenhub.Provider) { p.Login.Form = map[string]string{"a": "b"} }, "login"},
		{"login bad template", func(p *tokenhub.Provider) { p.Login.JSON = map[string]any{"email": "{{.Credentials.email"} }, "login.json.email"},
		{"login unknown field", func(p *tokenhub.Provider) { p.Login.URL = "{{.Nope}}/x" }, "login.url"},
		{"refresh without login", func(p *tokenhub.Provider) { p.Login = nil }, "refresh"},
		{"token url on login provider", func(p *tokenhub.Provider) { p.TokenURL = "https://x/token" }, "token_url"},
		{"bad header name", func(p *tokenhub.Provider) { p.Header.Name = "Bad Header" }, "header.name"},
		{"header without value", func(p *tokenhub.Provider) { p.Header.Value = "" }, "header.value"},
		{"refresh_at too big", func(p *tokenhub.Provider) { p.RefreshAt = 1 }, "refresh_at"},
		{"jitter too big", func(p *tokenhub.Provider) { p.RefreshJitter = 0.5 }, "refresh_jitter"},
		{"negative ttl", func(p *tokenhub.Provider) { p.DefaultTTL = -1 }, "default_ttl"},
		{"token url with user info", func(p *tokenhub.Provider) {
			p.Login, p.Refresh, p.TokenURL = nil, nil, "https://id:secret@auth/token"
		}, "token_url"},
		{"login url with templated user info", func(p *tokenhub.Provider) { p.Login.URL = "https://{{.Username}}:{{.Password}}@x/login" }, "login.url"},
		{"refresh url with user info", func(p *tokenhub.Provider) { p.Refresh.URL = "https://u:p@x/refresh" }, "refresh.url"},
		{"@ in a path is no user info", func(p *tokenhub.Provider) { p.Login.URL = "{{.BaseURL}}/users/a@b/login" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loginProvider()
			tt.edit(p)
			checkField(t, p.Validate(), tt.field)
		})
	}
}

func TestConnectionConfigValidate(t *testing.T) {
	oauth := &tokenhub.Provider{Name: "oauth2"}
	login := loginProvider()
	tests := []struct {
		name  string
		p     *tokenhub.Provider
		cfg   tokenhub.ConnectionConfig
		field string
	}{
		{"client credentials", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", ClientID: "id"}, ""},
		{"password", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", Grant: "password", Username: "u", Password: "p"}, ""},
		{"seeded refresh token", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", Grant: "refresh_token", RefreshToken: "rt"}, ""},
		{"login", login, tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: "https://api.baserow.io"}, ""},
		{"no provider", oauth, tokenhub.ConnectionConfig{}, "provider"},
		{"unknown provider", nil, tokenhub.ConnectionConfig{Provider: "nope"}, "provider"},
		{"bad base url", login, tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: "ftp://x"}, "base_url"},
		{"base url with query", login, tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: "https://x/?a=b"}, "base_url"},
		{"login needs base url", login, tokenhub.ConnectionConfig{Provider: "baserow-login"}, "base_url"},
		{"login with oauth grant", login, tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: "https://x", Grant: "password"}, "grant"},
		{"token url on login", login, tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: "https://x", TokenURL: "https://x/t"}, "token_url"},
		{"no token url", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", ClientID: "id"}, "token_url"},
		{"no client id", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t"}, "client_id"},
		{"password without password", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", Grant: "password", Username: "u"}, "password"},
		{"refresh_token without token", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", Grant: "refresh_token"}, "refresh_token"},
		{"misspelt grant", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", Grant: "pasword"}, "grant"},
		{"bad auth style", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", ClientID: "id", AuthStyle: "x"}, "auth_style"},
		{"allow prefix on login", login, tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: "https://x", Allow: []tokenhub.AllowRule{{PathPrefix: "api"}}}, "allow[0].path_prefix"},
		{"token url with user info", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://id:secret@a/t", ClientID: "id"}, "token_url"},
		{"allow bad method", oauth, tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://a/t", ClientID: "id", Allow: []tokenhub.AllowRule{{PathPrefix: "/api", Methods: []string{"get"}}}}, "allow[0].methods[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkField(t, tt.cfg.Validate(tt.p), tt.field)
		})
	}
}

// An error about a URL never quotes the password in its user info.
func TestURLErrorsHoldNoPassword(t *testing.T) {
	login := loginProvider()
	for _, u := range []string{"ftp://user:PASSWORD-1@x", "http://user:PASSWORD-1@x:port", "https://user:PASSWORD-1@x"} {
		err := (&tokenhub.ConnectionConfig{Provider: "baserow-login", BaseURL: u}).Validate(login)
		if tokenhub.ErrorCode(err) != tokenhub.EINVALID || !strings.HasPrefix(tokenhub.ErrorMessage(err), "base_url:") ||
			strings.Contains(err.Error(), "PASSWORD-1") {
			t.Errorf("base_url %s: %v, want invalid naming base_url without the password", u, err)
		}
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	cfg := tokenhub.ConnectionConfig{Provider: "oauth2", ClientID: "id", ClientSecret: "client-secret-1",
		Password: "password-2", RefreshToken: "refresh-3", Credentials: map[string]string{"email": "credential-4"}}
	tok := &tokenhub.Token{AccessToken: "access-5", RefreshToken: "refresh-6", TokenType: "Bearer", ExpiresAt: time.Unix(1e9, 0)}
	conn := &tokenhub.Connection{Workspace: "acme", Name: "x", Config: cfg, Token: tok}

	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("x", "cfg", cfg, "token", tok, "conn", conn, "tokval", *tok)
	data := cfg.TemplateData()
	data.AccessToken, data.RefreshToken = tok.AccessToken, tok.RefreshToken
	log.Info("x", "data", data)
	out := logs.String() + fmt.Sprintf("%v %+v %#v %v %+v %#v %s %v %+v %#v", cfg, cfg, cfg, tok, tok, *tok, tok, data, data, &data)
	for _, secret := range []string{"client-secret-1", "password-2", "refresh-3", "credential-4", "access-5", "refresh-6"} {
		if strings.Contains(out, secret) {
			t.Errorf("secret %q leaked into %s", secret, out)
		}
	}
	if got, want := strings.Join(cfg.SecretFields(), ","), "client_secret,credentials.email,password,refresh_token"; got != want {
		t.Errorf("SecretFields() = %s, want %s", got, want)
	}
}

func TestTokenValid(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		tok  *tokenhub.Token
		want bool
	}{
		{"nil", nil, false},
		{"empty", &tokenhub.Token{}, false},
		{"no expiry", &tokenhub.Token{AccessToken: "a"}, true},
		{"future", &tokenhub.Token{AccessToken: "a", ExpiresAt: now.Add(time.Second)}, true},
		{"at expiry", &tokenhub.Token{AccessToken: "a", ExpiresAt: now}, false},
		{"past", &tokenhub.Token{AccessToken: "a", ExpiresAt: now.Add(-time.Second)}, false},
	}
	for _, tt := range tests {
		if got := tt.tok.Valid(now); got != tt.want {
			t.Errorf("%s: Valid = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{`"10m"`, 10 * time.Minute, true},
		{`"90s"`, 90 * time.Second, true},
		{`30`, 30 * time.Second, true},
		{`1.5`, 1500 * time.Millisecond, true},
		{`"ten minutes"`, 0, false},
		{`true`, 0, false},
	}
	for _, tt := range tests {
		var d tokenhub.Duration
		err := json.Unmarshal([]byte(tt.in), &d)
		if (err == nil) != tt.ok || (tt.ok && time.Duration(d) != tt.want) {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v, ok=%v", tt.in, time.Duration(d), err, tt.want, tt.ok)
		}
	}
	b, _ := json.Marshal(tokenhub.Duration(10 * time.Minute))
	if string(b) != `"10m0s"` {
		t.Errorf("Marshal = %s, want \"10m0s\"", b)
	}
}

func TestConfigEqual(t *testing.T) {
	a := tokenhub.ConnectionConfig{Provider: "oauth2", ClientID: "id", Scopes: []string{"a"}, Credentials: map[string]string{"k": "v"}}
	b := a
	b.Credentials = map[string]string{"k": "v"}
	if !a.Equal(&b) {
		t.Fatal("equal configs reported different")
	}
	b.Credentials = map[string]string{"k": "w"}
	if a.Equal(&b) {
		t.Fatal("a changed credential went unnoticed")
	}
	c := a
	c.Allow = []tokenhub.AllowRule{{PathPrefix: "/x"}}
	if a.Equal(&c) {
		t.Fatal("a changed allowlist went unnoticed")
	}
}

// TestPolicyDefaults: a provider that sets no knob refreshes at 75% ± 5%, no
// later than 10s before expiry, and gives each upstream attempt 30s.
func TestPolicyDefaults(t *testing.T) {
	got := (&tokenhub.Provider{}).Policy()
	want := tokenhub.RefreshPolicy{RefreshAt: 0.75, Jitter: 0.05, Margin: 10 * time.Second, Timeout: 30 * time.Second}
	if got != want {
		t.Errorf("Policy() = %+v, want %+v", got, want)
	}
	p := &tokenhub.Provider{RefreshAt: 0.5, RefreshJitter: -1, RefreshMargin: tokenhub.Duration(time.Minute),
		MinRefreshInterval: tokenhub.Duration(time.Hour), Timeout: tokenhub.Duration(5 * time.Second), DefaultTTL: tokenhub.Duration(10 * time.Minute)}
	want = tokenhub.RefreshPolicy{RefreshAt: 0.5, Jitter: 0, Margin: time.Minute, MinRefreshInterval: time.Hour, Timeout: 5 * time.Second, DefaultTTL: 10 * time.Minute}
	if got := p.Policy(); got != want {
		t.Errorf("Policy() with every knob set = %+v, want %+v", got, want)
	}
}
