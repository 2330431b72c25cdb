package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/providertest"
)

// applyFile is a config with both kinds of connection from the issue: an
// OAuth 2.0 client-credentials one and a Baserow-style login, against real
// test providers. %s are the OAuth server's URL and the demo provider's.
const applyFile = `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        base_url: %[1]s
        token_url: %[1]s/oauth/token
        grant: client_credentials
        client_id: test-client
        client_secret: ${file:reports-secret.txt}
        scopes: [reports.read]
        params: {audience: "https://api.example.com"}
      - name: baserow
        provider: baserow-login
        base_url: %[2]s
        grant: login
        credentials: {email: "${env:BASEROW_EMAIL}", password: "${env:BASEROW_PASSWORD}"}
providers:
  - name: baserow-login
    header: {name: Authorization, value: "JWT {{.AccessToken}}"}
    login:   {url: "{{.BaseURL}}/api/user/token-auth/",    json: {email: "{{.Credentials.email}}", password: "{{.Credentials.password}}"}}
    refresh: {url: "{{.BaseURL}}/api/user/token-refresh/", json: {refresh_token: "{{.RefreshToken}}"}}
    response: {access_token: access_token, refresh_token: refresh_token, expires_in: expires_in}
    default_ttl: 10m
`

type applyEnv struct {
	s      *server
	dir    string
	file   string
	env    map[string]string
	oauth  *providertest.Server
	baserw *demo.Server
	bURL   string
}

func newApplyEnv(t *testing.T, password string) *applyEnv {
	t.Helper()
	a := &applyEnv{s: startServer(t, ""), dir: t.TempDir()}
	a.oauth = providertest.New(t, providertest.Options{})
	a.baserw, a.bURL = startDemoProvider(t, demo.Options{Logger: quiet()})
	a.file = filepath.Join(a.dir, "tokenhub.yaml")
	writeFile(t, a.file, fmt.Sprintf(applyFile, a.oauth.URL, a.bURL))
	writeFile(t, filepath.Join(a.dir, "reports-secret.txt"), providertest.ClientSecret+"\n")
	a.env = a.s.env("BASEROW_EMAIL", demo.DefaultEmail, "BASEROW_PASSWORD", password)
	return a
}

// TestApply applies the example against real providers: everything
// is created, both connections get a token, a second apply changes nothing,
// and dry runs report without changing anything.
func TestApply(t *testing.T) {
	a := newApplyEnv(t, demo.DefaultPassword)
	ctx := context.Background()

	r := run(t, a.env, "apply", "-f", a.file)
	if r.Code != 0 {
		t.Fatalf("apply: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{
		"provider baserow-login: created",
		"workspace acme: created",
		"connection acme/reports: created",
		"connection acme/baserow: created",
		"apply: 4 created, 0 updated, 0 unchanged",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("apply output lacks %q:\n%s", want, r.Stdout)
		}
	}
	// It waited for the first tokens and shows both connections healthy.
	for _, conn := range []string{"reports", "baserow"} {
		if !regexp.MustCompile(`(?m)^acme\s+` + conn + `\s+healthy\s+`).MatchString(r.Stdout) {
			t.Errorf("apply output lacks a healthy row for %s:\n%s", conn, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout+r.Stderr, demo.DefaultPassword) || strings.Contains(r.Stdout+r.Stderr, providertest.ClientSecret) {
		t.Errorf("apply printed a secret")
	}
	if c := a.oauth.Counts(); c.ClientCredentials != 1 {
		t.Errorf("OAuth server: %d client_credentials requests, want 1", c.ClientCredentials)
	}
	if c := a.baserw.Counts(); c.TokenAuth != 1 {
		t.Errorf("demo provider: %d logins, want 1", c.TokenAuth)
	}
	req := a.oauth.LastRequest()
	if req.Form.Get("audience") != "https://api.example.com" || req.Form.Get("scope") != "reports.read" {
		t.Errorf("token request form: scope %q audience %q", req.Form.Get("scope"), req.Form.Get("audience"))
	}

	// Idempotent: the second apply changes nothing and says so, and no
	// provider is asked for a new token.
	r = run(t, a.env, "apply", "-f", a.file)
	if r.Code != 0 || !strings.Contains(r.Stdout, "apply: no changes (4 unchanged)") {
		t.Errorf("second apply: status %d, want \"no changes\":\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if strings.Contains(r.Stdout, "created") || strings.Contains(r.Stdout, "updated") {
		t.Errorf("second apply reports a change:\n%s", r.Stdout)
	}
	if a.oauth.Counts().ClientCredentials != 1 || a.baserw.Counts().TokenAuth != 1 {
		t.Errorf("second apply made new tokens: oauth %+v, demo %+v", a.oauth.Counts(), a.baserw.Counts())
	}

	// A dry run of the same file changes nothing, and is honest about the
	// secrets it cannot compare.
	r = run(t, a.env, "apply", "-f", a.file, "--dry-run")
	if r.Code != 0 {
		t.Fatalf("dry run: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{
		"connection acme/reports: unchanged unless its secrets changed (secrets cannot be read back to compare)",
		"dry run: 0 to create, 0 to update, 2 unchanged, 2 unchanged unless their secrets changed; nothing was changed",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, r.Stdout)
		}
	}

	// A dry run of a changed file reports what would change, and changes
	// nothing.
	changed := strings.Replace(fmt.Sprintf(applyFile, a.oauth.URL, a.bURL), "scopes: [reports.read]", "scopes: [reports.read, reports.write]", 1)
	changed = strings.Replace(changed, "default_ttl: 10m", "default_ttl: 20m", 1)
	changed = strings.Replace(changed, "  - name: acme\n", "  - name: beta\n    connections: []\n  - name: acme\n", 1)
	writeFile(t, a.file, changed)
	r = run(t, a.env, "apply", "-f", a.file, "--dry-run")
	for _, want := range []string{
		"provider baserow-login: would be updated",
		"workspace beta: would be created",
		"connection acme/reports: would be updated (scopes)",
		"dry run: 1 to create, 2 to update",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("dry run of a changed file lacks %q:\n%s", want, r.Stdout)
		}
	}
	v, err := a.s.admin().Connection(ctx, "acme", "reports")
	if err != nil || len(v.Scopes) != 1 {
		t.Errorf("after a dry run the scopes are %v (%v), want them untouched", v.Scopes, err)
	}
	if ws, _ := a.s.admin().Workspaces(ctx); len(ws) != 1 {
		t.Errorf("after a dry run there are %d workspaces, want 1", len(ws))
	}

	// Applying it for real changes exactly that, and gets a new token for
	// the changed connection.
	r = run(t, a.env, "apply", "-f", a.file)
	for _, want := range []string{
		"provider baserow-login: updated",
		"workspace beta: created",
		"connection acme/reports: updated",
		"apply: 1 created, 2 updated, 2 unchanged",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("apply of a changed file lacks %q (status %d):\n%s%s", want, r.Code, r.Stdout, r.Stderr)
		}
	}
	waitState(t, a.s.admin(), "acme", "reports", tokenhub.StateHealthy)
	if c := a.oauth.Counts(); c.ClientCredentials != 2 {
		t.Errorf("OAuth server: %d client_credentials requests, want 2 (one more for the changed config)", c.ClientCredentials)
	}
}

// TestApplyWrongPassword checks that a wrong password shows at once: apply
// prints the connection's state and error, names where it is in the file,
// and exits 1.
func TestApplyWrongPassword(t *testing.T) {
	a := newApplyEnv(t, "not-the-password")
	r := run(t, a.env, "apply", "-f", a.file)
	if r.Code != 1 {
		t.Errorf("status %d, want 1", r.Code)
	}
	if !regexp.MustCompile(`(?m)^acme\s+baserow\s+needs_reauth\s+`).MatchString(r.Stdout) {
		t.Errorf("the table lacks baserow in needs_reauth:\n%s", r.Stdout)
	}
	want := a.file + ":13: connection acme/baserow needs re-authorisation: "
	if !strings.Contains(r.Stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
	}
	if strings.Contains(r.Stdout+r.Stderr, "not-the-password") {
		t.Errorf("apply printed the password")
	}
}

// TestApplyFileErrors checks that errors in the file are reported with file,
// line and field, all at once, and that nothing reaches the server.
func TestApplyFileErrors(t *testing.T) {
	s := startServer(t, "")
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	writeFile(t, file, `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        grant: pasword
      - name: other
        provider: oauth2
        client_secret: ${env:MISSING_SECRET}
`)
	r := run(t, s.env(), "apply", "-f", file)
	if r.Code != 1 {
		t.Errorf("status %d, want 1", r.Code)
	}
	for _, want := range []string{
		file + `:8: workspaces[0].connections[0].grant: must be client_credentials, password, refresh_token or login, not "pasword"`,
		file + `:11: workspaces[0].connections[1].client_secret: ${env:MISSING_SECRET}: environment variable MISSING_SECRET is not set`,
	} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks\n  %s\ngot:\n%s", want, r.Stderr)
		}
	}
	if ws, err := s.admin().Workspaces(context.Background()); err != nil || len(ws) != 0 {
		t.Errorf("workspaces after a refused file: %v, %v; want none", ws, err)
	}
}
