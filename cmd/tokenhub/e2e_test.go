package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	main "github.com/tokenhub/tokenhub/cmd/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/sqlite"
)

// readRows reads the demo's rows with the header tokenhub handed out.
func readRows(t *testing.T, providerURL, name, value string) (int, []map[string]any) {
	t.Helper()
	return readRowsAt(t, providerURL+demo.PathRowsPrefix+"1/", name, value)
}

// readRowsAt reads rows from the table URL u with the header name: value.
func readRowsAt(t *testing.T, u, name, value string) (int, []map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", u+"?user_field_names=true", nil)
	req.Header.Set(name, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("reading rows: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}
	if resp.StatusCode != 200 {
		t.Fatalf("reading rows: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("reading rows: %v", err)
	}
	return body.Count, body.Results
}

// TestDemo runs `tokenhub demo` on port 0 and follows its welcome text: a
// token from the token API reads the demo's rows, through the client package
// and through the CLI's `token --header`.
func TestDemo(t *testing.T) {
	var out logtest.Buffer
	d := &main.Demo{Addr: "127.0.0.1:0", Stdout: &out, Logger: quiet()}
	if err := d.Run(context.Background()); err != nil {
		t.Fatalf("Demo.Run: %v", err)
	}
	defer d.Close()
	welcome := out.String()
	for _, want := range []string{
		d.Main.URL(), d.ProviderURL, "export TOKENHUB_APP_KEY=" + d.AppKey,
		"/v1/connections/baserow/token", "token baserow)", "token --header baserow)",
		"/api/database/rows/table/1/?user_field_names=true", "healthy",
	} {
		if !strings.Contains(welcome, want) {
			t.Errorf("the welcome text lacks %q:\n%s", want, welcome)
		}
	}

	tok, err := client.New(d.Main.URL(), d.AppKey).Token(context.Background(), main.DemoConnection)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.Header.Name != "Authorization" || tok.Header.Value != "JWT "+tok.AccessToken {
		t.Errorf("header: got %s: <%d bytes>, want Authorization: JWT <token>", tok.Header.Name, len(tok.Header.Value))
	}
	if n, rows := readRows(t, d.ProviderURL, tok.Header.Name, tok.Header.Value); n == 0 || len(rows) == 0 {
		t.Errorf("rows: count %d, %d results; want some", n, len(rows))
	}

	// The same through the CLI, as the welcome text says.
	env := map[string]string{"TOKENHUB_URL": d.Main.URL(), "TOKENHUB_APP_KEY": d.AppKey}
	r := run(t, env, "token", "--header", "baserow")
	name, value, ok := strings.Cut(strings.TrimSpace(r.Stdout), ": ")
	if r.Code != 0 || !ok {
		t.Fatalf("tokenhub token --header: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if n, _ := readRows(t, d.ProviderURL, name, value); n == 0 {
		t.Errorf("rows read with the CLI's header: none")
	}
	r = run(t, env, "token", "baserow")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != tok.AccessToken {
		t.Errorf("tokenhub token: status %d, want the same token as the API", r.Code)
	}

	// And through the proxy, with only the app key, as the welcome text's
	// proxy line does.
	proxyURL := d.Main.URL() + "/v1/proxy/baserow" + demo.PathRowsPrefix + "1/"
	if !strings.Contains(welcome, proxyURL+"?user_field_names=true") {
		t.Errorf("the welcome text lacks the proxy URL %s", proxyURL)
	}
	if n, _ := readRowsAt(t, proxyURL, "Authorization", "Bearer "+d.AppKey); n == 0 {
		t.Errorf("rows read through the proxy: none")
	}

	dir := strings.TrimPrefix(d.Main.Config.Store, "sqlite:")
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo's temporary store %s survives Close: %v", dir, err)
	}
}

// TestRestartKeepsTokens checks restart persistence: after a restart on the
// same store, the connection's token is served from the store, not fetched
// again from the provider.
func TestRestartKeepsTokens(t *testing.T) {
	prov, provURL := startDemoProvider(t, demo.Options{AccessTTL: time.Hour, Logger: quiet()})
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.admin()
	app := demoApp(t, admin, provURL, "reader")
	before, err := client.New(s.URL(), app.Key).Token(ctx, "baserow")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if c := prov.Counts(); c.TokenAuth != 1 || c.TokenRefresh != 0 {
		t.Fatalf("provider calls before the restart: %+v, want one login", c)
	}

	dir := s.Dir
	s.stop(t)
	s2 := startServer(t, dir)
	after, err := client.New(s2.URL(), app.Key).Token(ctx, "baserow")
	if err != nil {
		t.Fatalf("Token after the restart: %v", err)
	}
	if after.AccessToken != before.AccessToken || !after.ExpiresAt.Equal(before.ExpiresAt) {
		t.Errorf("after the restart the token changed (expires %v, was %v)", after.ExpiresAt, before.ExpiresAt)
	}
	if c := prov.Counts(); c.TokenAuth != 1 || c.TokenRefresh != 0 {
		t.Errorf("provider calls after the restart: %+v, want still one login and no refresh", c)
	}
	if v := waitState(t, s2.admin(), "acme", "baserow", tokenhub.StateHealthy); v.RefreshCount != 1 {
		t.Errorf("refresh count after the restart: %d, want 1", v.RefreshCount)
	}
}

// TestClientCommands drives the admin and app commands against a real
// server and provider: workspaces, apps and their keys, token, refresh,
// status and events, and revocation.
func TestClientCommands(t *testing.T) {
	prov, provURL := startDemoProvider(t, demo.Options{Logger: quiet()})
	s := startServer(t, "")
	env := s.env()

	if r := run(t, env, "workspace", "create", "acme"); r.Code != 0 || r.Stdout != "created workspace acme\n" {
		t.Fatalf("workspace create: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := run(t, env, "workspace", "create", "acme"); r.Code != 1 || !strings.Contains(r.Stderr, "(conflict)") {
		t.Errorf("workspace create twice: %d, stderr %q; want 1 and a conflict", r.Code, r.Stderr)
	}
	putDemoConnection(t, s.admin(), "acme", provURL)

	r := run(t, env, "app", "create", "--workspace", "acme", "--connections", "baserow", "--quiet", "page")
	key := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || !strings.HasPrefix(key, "thk_") || strings.Contains(key, "\n") {
		t.Fatalf("app create --quiet: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := run(t, env, "app", "list"); r.Code != 0 || !regexp.MustCompile(`(?m)^acme\s+page\s+baserow\s`).MatchString(r.Stdout) || strings.Contains(r.Stdout, key) {
		t.Errorf("app list: %d\n%s", r.Code, r.Stdout)
	}

	appEnv := map[string]string{"TOKENHUB_URL": s.URL(), "TOKENHUB_APP_KEY": key}
	if r := run(t, appEnv, "token", "baserow"); r.Code != 0 || strings.Count(r.Stdout, ".") != 2 {
		t.Errorf("token: %d, want a JWT; stderr %q", r.Code, r.Stderr)
	}
	if r := run(t, appEnv, "token", "nope"); r.Code != 1 || !strings.Contains(r.Stderr, "(not_found)") {
		t.Errorf("token of an unknown connection: %d %q", r.Code, r.Stderr)
	}
	if r := run(t, appEnv, "refresh", "baserow"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "refreshed baserow: the new token expires in ") {
		t.Errorf("refresh: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := run(t, env, "refresh", "--workspace", "acme", "baserow"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "refreshed acme/baserow: healthy") {
		t.Errorf("refresh --workspace: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if c := prov.Counts(); c.TokenRefresh != 2 {
		t.Errorf("provider refreshes: %d, want 2 (one per refresh command)", c.TokenRefresh)
	}

	r = run(t, env, "status")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "WORKSPACE  CONNECTION  STATE    EXPIRES IN  NEXT REFRESH  REFRESHES  LAST ERROR\n") ||
		!regexp.MustCompile(`(?m)^acme\s+baserow\s+healthy\s+\d[\dsmh]*\s+in \d[\dsmh]*\s+3$`).MatchString(r.Stdout) {
		t.Errorf("status: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r = run(t, env, "events", "baserow")
	if r.Code != 0 || !regexp.MustCompile(`(?m)^\S+ \S+\s+obtained\s`).MatchString(r.Stdout) ||
		len(regexp.MustCompile(`(?m)^\S+ \S+\s+refreshed\s`).FindAllString(r.Stdout, -1)) != 2 {
		t.Errorf("events: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	if r := run(t, env, "app", "revoke", "--workspace", "acme", "page"); r.Code != 0 {
		t.Errorf("app revoke: %d %q", r.Code, r.Stderr)
	}
	if r := run(t, appEnv, "token", "baserow"); r.Code != 1 || !strings.Contains(r.Stderr, "(unauthorized)") {
		t.Errorf("token with a revoked key: %d %q; want unauthorized", r.Code, r.Stderr)
	}

	// Without a key, or without a server, the message says what to do.
	if r := run(t, map[string]string{"TOKENHUB_URL": s.URL()}, "token", "baserow"); r.Code != 1 || !strings.Contains(r.Stderr, "set TOKENHUB_APP_KEY") {
		t.Errorf("token without a key: %d %q", r.Code, r.Stderr)
	}
	if r := run(t, map[string]string{"TOKENHUB_URL": "http://127.0.0.1:1", "TOKENHUB_ADMIN_KEY": "k"}, "status"); r.Code != 1 || !strings.Contains(r.Stderr, "cannot reach tokenhub at http://127.0.0.1:1") {
		t.Errorf("status without a server: %d %q", r.Code, r.Stderr)
	}

	// The admin key file is found without any environment, as in the
	// server's directory.
	if r := run(t, map[string]string{"TOKENHUB_URL": s.URL()}, "workspace", "list", "--admin-key-file", s.Config.AdminKeyFile); r.Code != 0 || !strings.Contains(r.Stdout, "acme") {
		t.Errorf("workspace list with --admin-key-file: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := run(t, env, "workspace", "delete", "acme"); r.Code != 0 {
		t.Errorf("workspace delete: %d %q", r.Code, r.Stderr)
	}
}

// TestKeyRotate rotates the encryption key of a stopped server's store, and
// checks that the restarted server still serves the old token from it.
func TestKeyRotate(t *testing.T) {
	prov, provURL := startDemoProvider(t, demo.Options{AccessTTL: time.Hour, Logger: quiet()})
	s := startServer(t, "")
	ctx := context.Background()
	if _, err := s.admin().CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	before := putDemoConnection(t, s.admin(), "acme", provURL)
	args := []string{"key", "rotate", "--store", s.Config.Store, "--key-file", s.Config.KeyFile}

	// While the server runs, the store's lock refuses, and the key file is
	// left alone.
	keyBefore, _ := os.ReadFile(s.Config.KeyFile)
	if r := run(t, nil, args...); r.Code != 1 || !strings.Contains(r.Stderr, "stop tokenhub serve first") {
		t.Errorf("key rotate on a running server: %d %q", r.Code, r.Stderr)
	}
	if keyAfter, _ := os.ReadFile(s.Config.KeyFile); string(keyAfter) != string(keyBefore) {
		t.Errorf("a refused rotation changed the key file")
	}

	dir, keyFile := s.Dir, s.Config.KeyFile
	s.stop(t)
	r := run(t, nil, args...)
	if r.Code != 0 || !regexp.MustCompile(`re-encrypted [1-9]\d* values`).MatchString(r.Stdout) {
		t.Fatalf("key rotate: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	keys, _ := os.ReadFile(keyFile)
	if n := len(strings.Fields(string(keys))); n != 2 {
		t.Errorf("the key file holds %d keys after a rotation, want 2", n)
	}
	// The data was re-encrypted: the new key alone reads it, the old alone
	// no longer does.
	ring, _, err := seal.LoadOrCreateKeyFile(keyFile)
	if err != nil || len(ring) != 2 {
		t.Fatalf("reading the rotated key file: %d keys, %v", len(ring), err)
	}
	for i, want := range []bool{true, false} {
		only, err := seal.NewKeyring(ring[i])
		if err != nil {
			t.Fatal(err)
		}
		st, err := sqlite.Open(filepath.Join(dir, "tokenhub.db"), only)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.FindConnection(ctx, "acme", "baserow")
		st.Close()
		if (err == nil) != want {
			t.Errorf("reading the store with only the %s key: %v", map[bool]string{true: "new", false: "old"}[want], err)
		}
	}

	s2 := startServer(t, dir)
	after := waitState(t, s2.admin(), "acme", "baserow", tokenhub.StateHealthy)
	if !after.ExpiresAt.Equal(before.ExpiresAt) || prov.Counts().TokenAuth != 1 {
		t.Errorf("after rotation: expires %v (was %v), logins %d; want the same token", after.ExpiresAt, before.ExpiresAt, prov.Counts().TokenAuth)
	}
	var ce *client.Error
	if _, err := s2.admin().Connection(ctx, "acme", "baserow"); errors.As(err, &ce) {
		t.Errorf("reading the connection after rotation: %v", err)
	}
}

// TestIsolationAndBadInput checks, on the real server, that an app never
// sees another workspace's connection (the same 404 as a missing one), and
// that bad input gets a 400 that names the field and changes nothing.
func TestIsolationAndBadInput(t *testing.T) {
	_, provURL := startDemoProvider(t, demo.Options{Logger: quiet()})
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.admin()
	for _, ws := range []string{"a", "b"} {
		if _, err := admin.CreateWorkspace(ctx, ws); err != nil {
			t.Fatal(err)
		}
	}
	putDemoConnection(t, admin, "a", provURL)
	appA, err := admin.CreateApp(ctx, "a", "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	appB, err := admin.CreateApp(ctx, "b", "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(s.URL(), appA.Key).Token(ctx, "baserow"); err != nil {
		t.Errorf("the app of workspace a: %v", err)
	}
	_, errOther := client.New(s.URL(), appB.Key).Token(ctx, "baserow")
	_, errMissing := client.New(s.URL(), appB.Key).Token(ctx, "missing")
	var eo, em *client.Error
	if !errors.As(errOther, &eo) || !errors.As(errMissing, &em) || eo.Status != 404 || em.Status != 404 || eo.Code != em.Code {
		t.Errorf("another workspace's connection: %v; a missing one: %v; want the same 404", errOther, errMissing)
	}

	bad := tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://auth.example.com/token", ClientID: "x", Grant: "pasword"}
	for _, tt := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"workspace name", func() error { _, err := admin.CreateWorkspace(ctx, "Bad Name"); return err }, "name"},
		{"connection grant", func() error { _, _, err := admin.PutConnection(ctx, "a", "new", &bad); return err }, "grant"},
		{"app name", func() error { _, err := admin.CreateApp(ctx, "a", "", nil); return err }, "name"},
	} {
		var ce *client.Error
		if err := tt.call(); !errors.As(err, &ce) || ce.Status != 400 || !strings.HasPrefix(ce.Message, tt.field+":") {
			t.Errorf("%s: got %v, want a 400 naming %s", tt.name, err, tt.field)
		}
	}
	if ws, _ := admin.Workspaces(ctx); len(ws) != 2 {
		t.Errorf("after refused requests: %d workspaces, want 2", len(ws))
	}
	if _, err := admin.Connection(ctx, "a", "new"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("a refused PUT created the connection: %v", err)
	}
	if apps, _ := admin.Apps(ctx, "a"); len(apps) != 1 {
		t.Errorf("after a refused app: %d apps, want 1", len(apps))
	}
}
