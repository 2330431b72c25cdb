package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/poll"
	"github.com/tokenhub/tokenhub/server"
)

func TestNewKey(t *testing.T) {
	a, err := server.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := server.NewKey()
	if a == b {
		t.Fatal("two keys are equal")
	}
	if !strings.HasPrefix(a, server.KeyPrefix) || len(a) != len(server.KeyPrefix)+43 {
		t.Fatalf("key %q: want %q and 43 base64url characters", a, server.KeyPrefix)
	}
	if h := server.HashKey(a); len(h) != 32 || bytes.Equal(h, server.HashKey(b)) {
		t.Fatalf("HashKey: %x", h)
	}
}

func TestWorkspacesAndApps(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)

	ws, err := e.admin.CreateWorkspace(c, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if ws.Name != "acme" || ws.CreatedAt.IsZero() {
		t.Fatalf("CreateWorkspace = %+v", ws)
	}
	_, err = e.admin.CreateWorkspace(c, "acme")
	apiError(t, err, http.StatusConflict, tokenhub.ECONFLICT)
	if !errors.Is(err, client.ErrConflict) {
		t.Fatalf("errors.Is(%v, ErrConflict) = false", err)
	}
	e.workspace("beta")
	wss, err := e.admin.Workspaces(c)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, w := range wss {
		names = append(names, w.Name)
	}
	if !slices.Equal(names, []string{"acme", "beta"}) {
		t.Fatalf("Workspaces = %v", names)
	}

	for _, name := range []string{"a", "b"} {
		if _, _, err := e.admin.PutConnection(c, "acme", name, oauth2Config()); err != nil {
			t.Fatal(err)
		}
	}
	k, err := e.admin.CreateApp(c, "acme", "reports", []string{"b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "reports" || k.Workspace != "acme" || !strings.HasPrefix(k.Key, server.KeyPrefix) {
		t.Fatalf("CreateApp = %+v", k)
	}
	if strings.Contains(fmt.Sprint(k), k.Key) || strings.Contains(fmt.Sprintf("%#v", k), k.Key) {
		t.Fatal("AppKey formats its key")
	}
	_, err = e.admin.CreateApp(c, "acme", "reports", nil)
	apiError(t, err, http.StatusConflict, tokenhub.ECONFLICT)
	_, err = e.admin.CreateApp(c, "nope", "reports", nil)
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)
	created := e.do("POST", "/v1/workspaces/acme/apps", e.adminKey, strings.NewReader(`{"name":"all"}`))
	if created.status != http.StatusCreated || created.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("POST app: %d %v", created.status, created.header)
	}

	apps, err := e.admin.Apps(c, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != 2 || apps[0].Name != "all" || apps[1].Name != "reports" ||
		!slices.Equal(apps[1].Connections, []string{"a", "b"}) || len(apps[0].Connections) != 0 {
		t.Fatalf("Apps = %+v", apps)
	}
	raw := e.do("GET", "/v1/workspaces/acme/apps", e.adminKey, nil)
	noSecrets(t, "GET apps", string(raw.body), k.Key)
	if bytes.Contains(raw.body, []byte("hash")) {
		t.Fatalf("GET apps shows a key hash: %s", raw.body)
	}
	_, err = e.admin.Apps(c, "nope")
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)

	if err := e.admin.RevokeApp(c, "acme", "all"); err != nil {
		t.Fatal(err)
	}
	apiError(t, e.admin.RevokeApp(c, "acme", "all"), http.StatusNotFound, tokenhub.ENOTFOUND)
	if apps, _ := e.admin.Apps(c, "acme"); len(apps) != 1 {
		t.Fatalf("after revoke, Apps = %+v", apps)
	}

	if err := e.admin.DeleteWorkspace(c, "beta"); err != nil {
		t.Fatal(err)
	}
	apiError(t, e.admin.DeleteWorkspace(c, "beta"), http.StatusNotFound, tokenhub.ENOTFOUND)
	if wss, _ := e.admin.Workspaces(c); len(wss) != 1 {
		t.Fatalf("after delete, Workspaces = %+v", wss)
	}
}

func TestProviders(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)

	p := demo.Provider()
	v, res, err := e.admin.PutProvider(c, p)
	if err != nil {
		t.Fatal(err)
	}
	if res != tokenhub.PutCreated || v.Name != p.Name || v.Builtin || v.Header != p.Header || v.Login == nil {
		t.Fatalf("PutProvider = %+v, %s", v, res)
	}
	if _, res, err = e.admin.PutProvider(c, p); err != nil || res != tokenhub.PutUnchanged {
		t.Fatalf("PutProvider again = %s, %v; want unchanged", res, err)
	}
	p.DefaultTTL = tokenhub.Duration(10 * time.Minute)
	if v, res, err = e.admin.PutProvider(c, p); err != nil || res != tokenhub.PutUpdated || v.DefaultTTL != p.DefaultTTL {
		t.Fatalf("PutProvider changed = %+v, %s, %v; want updated", v, res, err)
	}
	// The answer's status tells created from updated.
	body, _ := json.Marshal(p)
	if r := e.do("PUT", "/v1/providers/"+p.Name, e.adminKey, bytes.NewReader(body)); r.status != http.StatusOK {
		t.Fatalf("PUT existing provider: %d %s", r.status, r.body)
	}
	q := *demo.Provider()
	q.Name = ""
	body, _ = json.Marshal(&q)
	if r := e.do("PUT", "/v1/providers/other-login", e.adminKey, bytes.NewReader(body)); r.status != http.StatusCreated {
		t.Fatalf("PUT new provider without a name in the body: %d %s", r.status, r.body)
	}

	got, err := e.admin.Provider(c, p.Name)
	if err != nil || got.DefaultTTL != p.DefaultTTL {
		t.Fatalf("Provider = %+v, %v", got, err)
	}
	oauth, err := e.admin.Provider(c, "oauth2")
	if err != nil || !oauth.Builtin {
		t.Fatalf("Provider(oauth2) = %+v, %v", oauth, err)
	}
	_, err = e.admin.Provider(c, "nope")
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)

	all, err := e.admin.Providers(c)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range all {
		names = append(names, fmt.Sprintf("%s:%v", p.Name, p.Builtin))
	}
	if !slices.Equal(names, []string{"oauth2:true", "baserow-demo:false", "other-login:false"}) {
		t.Fatalf("Providers = %v", names)
	}
}

func TestConnections(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	_, url := e.demoProvider(demo.Options{})

	cfg := demo.ConnectionConfig(url)
	v, res, err := e.admin.PutConnection(c, "acme", "baserow", &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res != tokenhub.PutCreated || v.Name != "baserow" || v.Workspace != "acme" || v.Provider != demo.ProviderName ||
		v.BaseURL != url || v.Grant != tokenhub.GrantLogin || v.Generation == 0 ||
		!slices.Equal(v.SecretsSet, []string{"credentials.email", "credentials.password"}) {
		t.Fatalf("PutConnection = %+v, %s", v, res)
	}
	// A new connection obtains its first token at once, without a read.
	poll.Until(t, "the first token", func() bool {
		v, err := e.admin.Connection(c, "acme", "baserow")
		return err == nil && v.State == tokenhub.StateHealthy
	})
	v, err = e.admin.Connection(c, "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if !v.HasToken || v.ExpiresAt.IsZero() || v.NextRefreshAt.IsZero() || v.LastRefreshAt.IsZero() ||
		v.RefreshCount != 1 || v.Failures != 0 || v.LastError != nil {
		t.Fatalf("healthy connection = %+v", v)
	}
	if !v.NextRefreshAt.Before(v.ExpiresAt) {
		t.Fatalf("next refresh %v is not before expiry %v", v.NextRefreshAt, v.ExpiresAt)
	}

	gen := v.Generation
	if v, res, err = e.admin.PutConnection(c, "acme", "baserow", &cfg); err != nil || res != tokenhub.PutUnchanged || v.Generation != gen {
		t.Fatalf("PutConnection same = %+v, %s, %v; want unchanged", v, res, err)
	}
	cfg.Allow = []tokenhub.AllowRule{{PathPrefix: "/api/database/", Methods: []string{"GET"}}}
	if v, res, err = e.admin.PutConnection(c, "acme", "baserow", &cfg); err != nil || res != tokenhub.PutUpdated || v.Generation <= gen {
		t.Fatalf("PutConnection changed = %+v, %s, %v; want updated", v, res, err)
	}
	if len(v.Allow) != 1 || v.Allow[0].PathPrefix != "/api/database/" {
		t.Fatalf("allow = %+v", v.Allow)
	}

	// The body may name the connection, as the config file does.
	named, _ := json.Marshal(struct {
		Name string `json:"name"`
		*tokenhub.ConnectionConfig
	}{"reports", oauth2Config()})
	if r := e.do("PUT", "/v1/workspaces/acme/connections/reports", e.adminKey, bytes.NewReader(named)); r.status != http.StatusCreated {
		t.Fatalf("PUT with a name: %d %s", r.status, r.body)
	}
	list, err := e.admin.Connections(c, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "baserow" || list[1].Name != "reports" {
		t.Fatalf("Connections = %+v", list)
	}
	r := list[1]
	if r.ClientID != "reports-service" || !slices.Equal(r.Scopes, []string{"reports.read"}) ||
		r.Params["audience"] != "https://api.example.com" || !slices.Equal(r.SecretsSet, []string{"client_secret"}) {
		t.Fatalf("oauth2 connection view = %+v", r)
	}

	// Wait for the changed connection's new token, so that no event
	// arrives between the two reads below.
	poll.Until(t, "the token after the change", func() bool {
		v, err := e.admin.Connection(c, "acme", "baserow")
		return err == nil && v.State == tokenhub.StateHealthy && v.HasToken
	})
	evs, err := e.admin.Events(c, "acme", "baserow", 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []tokenhub.EventType
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if !slices.Contains(types, tokenhub.EventCreated) || !slices.Contains(types, tokenhub.EventObtained) ||
		!slices.Contains(types, tokenhub.EventConfigChanged) {
		t.Fatalf("events = %v", types)
	}
	if one, err := e.admin.Events(c, "acme", "baserow", 1); err != nil || len(one) != 1 || one[0].Type != evs[0].Type {
		t.Fatalf("Events(limit 1) = %+v, %v", one, err)
	}

	_, err = e.admin.Connection(c, "acme", "nope")
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)
	_, err = e.admin.Events(c, "acme", "nope", 0)
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)
	_, err = e.admin.Connections(c, "nope")
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)
	_, _, err = e.admin.PutConnection(c, "nope", "x", &cfg)
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)

	if err := e.admin.DeleteConnection(c, "acme", "reports"); err != nil {
		t.Fatal(err)
	}
	apiError(t, e.admin.DeleteConnection(c, "acme", "reports"), http.StatusNotFound, tokenhub.ENOTFOUND)
	_, err = e.admin.Connection(c, "acme", "reports")
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)
}

func TestAdminRefresh(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	d, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	poll.Until(t, "the first token", func() bool {
		v, err := e.admin.Connection(c, "acme", "baserow")
		return err == nil && v.State == tokenhub.StateHealthy
	})
	before := d.Counts()
	v, err := e.admin.RefreshConnection(c, "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	after := d.Counts()
	if after.TokenAuth+after.TokenRefresh != before.TokenAuth+before.TokenRefresh+1 {
		t.Fatalf("provider calls %+v → %+v, want one more", before, after)
	}
	if v.RefreshCount != 2 || v.State != tokenhub.StateHealthy {
		t.Fatalf("after refresh = %+v", v)
	}
	// The demo's refresh token is a JWT whose exp says when it dies (7 days).
	if left := time.Until(v.RefreshExpiresAt); left < 6*24*time.Hour || left > 8*24*time.Hour {
		t.Fatalf("refresh_expires_at = %v, want about 7 days ahead", v.RefreshExpiresAt)
	}
	_, err = e.admin.RefreshConnection(c, "acme", "nope")
	apiError(t, err, http.StatusNotFound, tokenhub.ENOTFOUND)

	// The app route takes the admin key too, naming the workspace in the
	// query; it answers the view, never the token.
	r := e.do("POST", "/v1/connections/baserow/refresh?workspace=acme", e.adminKey, nil)
	if r.status != http.StatusOK {
		t.Fatalf("admin key on the app refresh route: %d %s", r.status, r.body)
	}
	var view client.ConnectionView
	if err := json.Unmarshal(r.body, &view); err != nil || view.RefreshCount != 3 || view.Name != "baserow" {
		t.Fatalf("answer %s (err %v), want the connection view after a third token", r.body, err)
	}
	if strings.Contains(string(r.body), "access_token") {
		t.Fatal("the admin refresh answered a token")
	}
	if got := d.Counts(); got.TokenAuth+got.TokenRefresh != after.TokenAuth+after.TokenRefresh+1 {
		t.Fatalf("provider calls %+v → %+v, want one more", after, got)
	}
}

// TestTokenDemo reads a token of a Baserow-style connection whose provider
// was defined through the API, and uses it on the demo's rows API, the way
// the recipe tokenhub replaces did.
func TestTokenDemo(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	d, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	app, key := e.app("acme", "reports")

	tok, err := app.Token(c, "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Header.Name != "Authorization" || tok.Header.Value != "JWT "+tok.AccessToken || tok.AccessToken == "" {
		t.Fatalf("token header = %q: %q (token %d bytes)", tok.Header.Name, tok.Header.Value, len(tok.AccessToken))
	}
	if left := time.Until(tok.ExpiresAt); left <= 0 || left > demo.DefaultAccessTTL+time.Second {
		t.Fatalf("expires_at %v is not within the demo's 60s", tok.ExpiresAt)
	}

	req, _ := http.NewRequestWithContext(c, "GET", url+"/api/database/rows/table/1/?user_field_names=true", nil)
	req.Header.Set(tok.Header.Name, tok.Header.Value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rows struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}
	err = json.NewDecoder(resp.Body).Decode(&rows)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || rows.Count == 0 || len(rows.Results) == 0 {
		t.Fatalf("rows: %d %+v %v", resp.StatusCode, rows, err)
	}

	// The raw answer: no-store, exactly the documented fields, no refresh
	// token, and byte for byte what encoding/json makes of client.Token.
	raw := e.do("GET", "/v1/connections/baserow/token", key, nil)
	if raw.status != 200 || raw.header.Get("Cache-Control") != "no-store" || raw.header.Get("Content-Type") != "application/json" {
		t.Fatalf("token answer: %d %v", raw.status, raw.header)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw.body, &fields); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"access_token", "expires_at", "header", "token_type"}) {
		t.Fatalf("token answer fields = %v", keys)
	}
	var decoded client.Token
	if err := json.Unmarshal(raw.body, &decoded); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(&decoded)
	if string(raw.body) != string(want)+"\n" {
		t.Fatalf("token answer\n got %s\nwant %s", raw.body, want)
	}

	// A forced refresh through the app route renews the token once and
	// answers the new one, which the token endpoint then serves.
	before := d.Counts()
	fresh, err := app.Refresh(c, "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if after := d.Counts(); after.TokenRefresh != before.TokenRefresh+1 || after.TokenAuth != before.TokenAuth {
		t.Fatalf("provider calls %+v → %+v, want one refresh", before, after)
	}
	if fresh.AccessToken == tok.AccessToken || fresh.Header.Value != "JWT "+fresh.AccessToken {
		t.Fatal("Refresh answered the old token")
	}
	again, err := app.Token(c, "baserow")
	if err != nil || again.AccessToken != fresh.AccessToken {
		t.Fatalf("Token after Refresh: %v; same as refreshed: %v", err, err == nil && again.AccessToken == fresh.AccessToken)
	}
	if s := fmt.Sprintf("%v %+v %#v", tok, tok, tok); strings.Contains(s, tok.AccessToken) {
		t.Fatal("client.Token formats its access token")
	}
}

// TestTokenConcurrent reads one connection from many goroutines.
func TestTokenConcurrent(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	d, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	app, _ := e.app("acme", "reports")
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for range 20 {
				tok, err := app.Token(c, "baserow")
				if err != nil {
					errs <- err
					return
				}
				if tok.AccessToken == "" {
					errs <- errors.New("empty token")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := d.Counts().TokenAuth; n != 1 {
		t.Fatalf("%d logins for 640 reads, want 1", n)
	}
}

func TestWorkspaceIsolation(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	e.workspace("other")
	_, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "mine", url)
	e.putDemoConn("other", "theirs", url)
	app, key := e.app("acme", "reports")

	if _, err := app.Token(c, "mine"); err != nil {
		t.Fatal(err)
	}
	// A connection of another workspace answers exactly as a missing one:
	// compare the answer while it exists elsewhere with the answer once it
	// exists nowhere.
	for _, path := range []string{"/v1/connections/theirs/token", "/v1/connections/theirs/refresh"} {
		method := "GET"
		if strings.HasSuffix(path, "refresh") {
			method = "POST"
		}
		elsewhere := e.do(method, path, key, nil)
		if elsewhere.status != http.StatusNotFound || errorOf(t, elsewhere).Error.Code != tokenhub.ENOTFOUND {
			t.Fatalf("%s of another workspace: %d %s", path, elsewhere.status, elsewhere.body)
		}
		noSecrets(t, "404 answer", string(elsewhere.body), "other")
		if err := e.admin.DeleteConnection(c, "other", "theirs"); err != nil && !errors.Is(err, client.ErrNotFound) {
			t.Fatal(err)
		}
		missing := e.do(method, path, key, nil)
		sameAnswer(t, method+" "+path+": other workspace vs missing", elsewhere, missing)
		e.putDemoConn("other", "theirs", url)
	}
	_, err := app.Token(c, "theirs")
	if !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Token(theirs) = %v, want ErrNotFound", err)
	}
}

func TestAppLimitedToConnections(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	_, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "allowed", url)
	e.putDemoConn("acme", "secret-ops", url)
	app, key := e.app("acme", "limited", "allowed")

	if _, err := app.Token(c, "allowed"); err != nil {
		t.Fatal(err)
	}
	notListed := e.do("GET", "/v1/connections/secret-ops/token", key, nil)
	refresh := e.do("POST", "/v1/connections/secret-ops/refresh", key, nil)
	if err := e.admin.DeleteConnection(c, "acme", "secret-ops"); err != nil {
		t.Fatal(err)
	}
	missing := e.do("GET", "/v1/connections/secret-ops/token", key, nil)
	missingRefresh := e.do("POST", "/v1/connections/secret-ops/refresh", key, nil)
	if notListed.status != http.StatusNotFound {
		t.Fatalf("not listed: %d %s", notListed.status, notListed.body)
	}
	sameAnswer(t, "token: not listed vs missing", notListed, missing)
	sameAnswer(t, "refresh: not listed vs missing", refresh, missingRefresh)
}

func TestKeyRevocationIsImmediate(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	_, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	app, _ := e.app("acme", "reports")
	keep, _ := e.app("acme", "keep")

	if _, err := app.Token(c, "baserow"); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.RevokeApp(c, "acme", "reports"); err != nil {
		t.Fatal(err)
	}
	_, err := app.Token(c, "baserow")
	apiError(t, err, http.StatusUnauthorized, tokenhub.EUNAUTHORIZED)
	if _, err := keep.Token(c, "baserow"); err != nil {
		t.Fatalf("another app's key stopped working: %v", err)
	}

	// Deleting the workspace stops its keys too, even when a workspace of
	// the same name and an app of the same name are made again.
	if err := e.admin.DeleteWorkspace(c, "acme"); err != nil {
		t.Fatal(err)
	}
	_, err = keep.Token(c, "baserow")
	apiError(t, err, http.StatusUnauthorized, tokenhub.EUNAUTHORIZED)
	e.workspace("acme")
	e.putDemoConn("acme", "baserow", url)
	e.app("acme", "keep")
	_, err = keep.Token(c, "baserow")
	apiError(t, err, http.StatusUnauthorized, tokenhub.EUNAUTHORIZED)
}

// TestKeyCacheTTL: a key revoked through another server that shares the
// store stops working here once the cache TTL has passed.
func TestKeyCacheTTL(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnvWith(t, envOptions{now: clock, ttl: time.Minute})
	c := ctx(t)
	e.workspace("acme")
	_, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	app, key := e.app("acme", "reports")
	if _, err := app.Token(c, "baserow"); err != nil {
		t.Fatal(err)
	}
	// Revoke in the store directly, as another replica would.
	if err := e.store.DeleteApp(c, "acme", "reports"); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Token(c, "baserow"); err != nil {
		t.Fatalf("within the TTL the cached key still works here: %v", err)
	}
	mu.Lock()
	now = now.Add(time.Minute + time.Second)
	mu.Unlock()
	_, err := app.Token(c, "baserow")
	apiError(t, err, http.StatusUnauthorized, tokenhub.EUNAUTHORIZED)
	noSecrets(t, "error", err.Error(), key)
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	app, appKey := e.app("acme", "reports")
	wrong, _ := server.NewKey()

	cases := []struct {
		name, method, path, key string
		status                  int
	}{
		{"admin route, no key", "GET", "/v1/workspaces", "", 401},
		{"admin route, wrong key", "GET", "/v1/workspaces", wrong, 401},
		{"admin route, app key", "GET", "/v1/workspaces", appKey, 403},
		{"admin route, app key, write", "POST", "/v1/workspaces", appKey, 403},
		{"app route, no key", "GET", "/v1/connections/x/token", "", 401},
		{"app route, wrong key", "GET", "/v1/connections/x/token", wrong, 401},
		{"app route, admin key", "GET", "/v1/connections/x/token", e.adminKey, 403},
		{"app refresh, admin key without workspace", "POST", "/v1/connections/x/refresh", e.adminKey, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tc.key, nil)
			if r.status != tc.status {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.status)
			}
			eb := errorOf(t, r)
			if want := map[int]string{400: tokenhub.EINVALID, 401: tokenhub.EUNAUTHORIZED, 403: tokenhub.EFORBIDDEN}[tc.status]; eb.Error.Code != want {
				t.Fatalf("code %q, want %q", eb.Error.Code, want)
			}
			if tc.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			noSecrets(t, "answer", string(r.body), appKey, e.adminKey, wrong)
		})
	}
	// A malformed Authorization header is a missing key.
	req, _ := http.NewRequestWithContext(c, "GET", e.url+"/v1/workspaces", nil)
	req.Header.Set("Authorization", "Basic "+e.adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("Basic auth with the admin key: %d, want 401", resp.StatusCode)
	}
	// The client's errors never hold the key.
	_, err = client.New(e.url, wrong).Workspaces(c)
	apiError(t, err, 401, tokenhub.EUNAUTHORIZED)
	_, err = app.Workspaces(c)
	ce := apiError(t, err, 403, tokenhub.EFORBIDDEN)
	noSecrets(t, "client error", ce.Error()+fmt.Sprintf("%+v", ce), wrong, appKey)
	if !errors.Is(err, client.ErrForbidden) || tokenhub.ErrorCode(err) != tokenhub.EFORBIDDEN {
		t.Fatalf("errors.Is / tokenhub.ErrorCode do not see the code of %v", err)
	}
}

func TestNeedsReauth(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	_, url := e.demoProvider(demo.Options{})
	cfg := demo.ConnectionConfig(url)
	cfg.Credentials["password"] = "wrong-password-123"
	if _, _, err := e.admin.PutConnection(c, "acme", "baserow", &cfg); err != nil {
		t.Fatal(err)
	}
	app, key := e.app("acme", "reports")

	_, err := app.Token(c, "baserow")
	ce := apiError(t, err, http.StatusConflict, tokenhub.ENEEDSREAUTH)
	if !errors.Is(err, client.ErrNeedsReauth) || errors.Is(err, client.ErrConflict) {
		t.Fatalf("errors.Is(%v, ErrNeedsReauth) is false, or it is a conflict", err)
	}
	if ce.State != tokenhub.StateNeedsReauth || !strings.Contains(ce.Message, "baserow") {
		t.Fatalf("needs_reauth error = %+v; want its state and the connection named", ce)
	}
	raw := e.do("GET", "/v1/connections/baserow/token", key, nil)
	eb := errorOf(t, raw)
	if raw.status != 409 || eb.Error.State != tokenhub.StateNeedsReauth || raw.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("raw needs_reauth answer: %d %v %s", raw.status, raw.header, raw.body)
	}
	noSecrets(t, "needs_reauth answer", string(raw.body), "wrong-password-123", demo.DefaultEmail)

	v, err := e.admin.Connection(c, "acme", "baserow")
	if err != nil {
		t.Fatal(err)
	}
	if v.State != tokenhub.StateNeedsReauth || v.LastError == nil || v.LastError.Message == "" || v.HasToken {
		t.Fatalf("connection view = %+v", v)
	}
	_, err = e.admin.RefreshConnection(c, "acme", "baserow")
	apiError(t, err, http.StatusConflict, tokenhub.ENEEDSREAUTH)

	// Fixing the password through the API repairs the connection.
	cfg.Credentials["password"] = demo.DefaultPassword
	if _, res, err := e.admin.PutConnection(c, "acme", "baserow", &cfg); err != nil || res != tokenhub.PutUpdated {
		t.Fatalf("PutConnection fix = %s, %v", res, err)
	}
	if _, err := app.Token(c, "baserow"); err != nil {
		t.Fatalf("Token after fixing the password: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	e.demoProvider(demo.Options{})
	// A provider that is down: a loopback port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	e.putDemoConn("acme", "baserow", down)
	app, key := e.app("acme", "reports")

	_, err = app.Token(c, "baserow")
	ce := apiError(t, err, http.StatusServiceUnavailable, tokenhub.EUNAVAILABLE)
	if !errors.Is(err, client.ErrUnavailable) || ce.RetryAfter < time.Second {
		t.Fatalf("unavailable error = %+v", ce)
	}
	raw := e.do("GET", "/v1/connections/baserow/token", key, nil)
	if raw.status != 503 || raw.header.Get("Retry-After") == "" || raw.header.Get("Cache-Control") != "no-store" ||
		errorOf(t, raw).Error.Code != tokenhub.EUNAVAILABLE {
		t.Fatalf("raw unavailable answer: %d %v %s", raw.status, raw.header, raw.body)
	}
	noSecrets(t, "unavailable answer", string(raw.body), demo.DefaultPassword, demo.DefaultEmail)
	v, err := e.admin.Connection(c, "acme", "baserow")
	if err != nil || v.LastError == nil || v.Failures == 0 {
		t.Fatalf("connection view = %+v, %v", v, err)
	}
}

// TestNoSecretInAnswers reads every admin view of connections holding each
// kind of secret, and the log, and finds none of the secrets.
func TestNoSecretInAnswers(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	const email, password = "ada@example.com", "pa55-Very-Secret"
	_, url := e.demoProvider(demo.Options{Users: map[string]string{email: password}})
	cfg := demo.ConnectionConfig(url)
	cfg.Credentials = map[string]string{"email": email, "password": password}
	if _, _, err := e.admin.PutConnection(c, "acme", "baserow", &cfg); err != nil {
		t.Fatal(err)
	}
	oc := oauth2Config()
	if _, _, err := e.admin.PutConnection(c, "acme", "reports", oc); err != nil {
		t.Fatal(err)
	}
	pw := &tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "http://127.0.0.1:1/token", Grant: tokenhub.GrantPassword,
		Username: "svc", Password: "user-password-xyz", ClientID: "cid"}
	if _, _, err := e.admin.PutConnection(c, "acme", "pw", pw); err != nil {
		t.Fatal(err)
	}
	rt := &tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "http://127.0.0.1:1/token", Grant: tokenhub.GrantRefreshToken,
		RefreshToken: "seed-refresh-token-abc"}
	if _, _, err := e.admin.PutConnection(c, "acme", "seeded", rt); err != nil {
		t.Fatal(err)
	}
	app, appKey := e.app("acme", "reports")
	tok, err := app.Token(c, "baserow")
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{email, password, oc.ClientSecret, pw.Password, rt.RefreshToken, tok.AccessToken, appKey, e.adminKey}

	paths := []string{
		"/v1/workspaces", "/v1/workspaces/acme/apps", "/v1/workspaces/acme/connections", "/v1/providers",
		"/v1/providers/" + demo.ProviderName,
	}
	for _, n := range []string{"baserow", "reports", "pw", "seeded"} {
		paths = append(paths, "/v1/workspaces/acme/connections/"+n, "/v1/workspaces/acme/connections/"+n+"/events")
	}
	for _, p := range paths {
		r := e.do("GET", p, e.adminKey, nil)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", p, r.status, r.body)
		}
		noSecrets(t, "GET "+p, string(r.body), secrets...)
	}
	r := e.do("POST", "/v1/workspaces/acme/connections/baserow/refresh", e.adminKey, nil)
	noSecrets(t, "admin refresh", string(r.body), secrets...)
	v, err := e.admin.Connection(c, "acme", "pw")
	if err != nil || !slices.Equal(v.SecretsSet, []string{"password"}) || v.Username != "svc" {
		t.Fatalf("pw view = %+v, %v", v, err)
	}
	v, err = e.admin.Connection(c, "acme", "seeded")
	if err != nil || !slices.Equal(v.SecretsSet, []string{"refresh_token"}) {
		t.Fatalf("seeded view = %+v, %v", v, err)
	}
	noSecrets(t, "the log", e.logs.String(), secrets...)
}

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/v2/nothing", e.adminKey, nil)
	if r.status != 404 || errorOf(t, r).Error.Code != tokenhub.ENOTFOUND {
		t.Fatalf("unknown path: %d %s", r.status, r.body)
	}
	r = e.do("PATCH", "/v1/workspaces", e.adminKey, nil)
	if r.status != 405 || r.header.Get("Allow") != "GET, POST" {
		t.Fatalf("wrong method: %d %v %s", r.status, r.header, r.body)
	}
	errorOf(t, r)
	// Without a proxy the proxy route does not exist.
	r = e.do("GET", "/v1/proxy/x/y", e.adminKey, nil)
	if r.status != 404 {
		t.Fatalf("proxy without a Proxy: %d %s", r.status, r.body)
	}
}

func TestHealthAndReady(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	anon := client.New(e.url, "")
	if err := anon.Health(c); err != nil {
		t.Fatal(err)
	}
	if err := anon.Ready(c); err != nil {
		t.Fatal(err)
	}
	e.broker.Close()
	e.store.Close()
	if err := anon.Health(c); err != nil {
		t.Fatalf("Health with the store closed: %v", err)
	}
	err := anon.Ready(c)
	apiError(t, err, http.StatusServiceUnavailable, tokenhub.EUNAVAILABLE)
}

// recordingProxy stands in for proxy.Handler: it records what the server
// handed it.
type recordingProxy struct {
	mu    sync.Mutex
	calls []string
}

func (p *recordingProxy) ServeProxy(w http.ResponseWriter, r *http.Request, ws, conn, path string) {
	p.mu.Lock()
	p.calls = append(p.calls, fmt.Sprintf("%s %s %s %s auth=%v", r.Method, ws, conn, path, r.Header.Get("Authorization") != ""))
	p.mu.Unlock()
	w.WriteHeader(http.StatusTeapot)
}

func TestProxyMount(t *testing.T) {
	p := &recordingProxy{}
	e := newEnvWith(t, envOptions{proxy: p})
	e.workspace("acme")
	if _, _, err := e.admin.PutConnection(ctx(t), "acme", "rows", oauth2Config()); err != nil {
		t.Fatal(err)
	}
	_, key := e.app("acme", "limited", "rows")

	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v1/proxy/rows/api/database/rows/table/1/?x=1", "GET acme rows /api/database/rows/table/1/"},
		{"POST", "/v1/proxy/rows/a/../../../admin", "POST acme rows /a/../../../admin"},
		{"DELETE", "/v1/proxy/rows/a%2F..%2Fb//c", "DELETE acme rows /a%2F..%2Fb//c"},
		{"GET", "/v1/proxy/rows", "GET acme rows "},
		{"GET", "/v1/proxy/rows/", "GET acme rows /"},
	} {
		p.calls = nil
		r := e.do(tc.method, tc.path, key, nil)
		if r.status != http.StatusTeapot || len(p.calls) != 1 || p.calls[0] != tc.want+" auth=true" {
			t.Fatalf("%s %s: %d %s, proxy saw %q, want %q", tc.method, tc.path, r.status, r.body, p.calls, tc.want)
		}
	}
	p.calls = nil
	if r := e.do("GET", "/v1/proxy/other/x", key, nil); r.status != 404 || len(p.calls) != 0 {
		t.Fatalf("proxy to a connection the app may not read: %d %s, calls %q", r.status, r.body, p.calls)
	}
	if r := e.do("GET", "/v1/proxy/rows/x", "", nil); r.status != 401 || len(p.calls) != 0 {
		t.Fatalf("proxy without a key: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/proxy/rows/x", e.adminKey, nil); r.status != 403 || len(p.calls) != 0 {
		t.Fatalf("proxy with the admin key: %d %s", r.status, r.body)
	}
}

// TestProxyThroughServer reads the demo's rows through the real proxy,
// mounted on the server, with only an app key.
func TestProxyThroughServer(t *testing.T) {
	e := newEnvWith(t, envOptions{realProxy: true})
	e.workspace("acme")
	e.workspace("other")
	_, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	_, key := e.app("acme", "reports")
	_, otherKey := e.app("other", "reports")

	r := e.do("GET", "/v1/proxy/baserow/api/database/rows/table/1/?user_field_names=true", key, nil)
	var rows struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(r.body, &rows); err != nil || r.status != 200 || rows.Count == 0 || rows.Results[0]["Name"] == nil {
		t.Fatalf("rows through the proxy: %d %s (%v)", r.status, r.body, err)
	}
	// The API's answers, errors included, are not marked as tokenhub's.
	if v := r.header.Values(client.ErrorHeader); v != nil {
		t.Errorf("rows through the proxy: %s %q, want none", client.ErrorHeader, v)
	}
	apiErr := e.do("GET", "/v1/proxy/baserow/api/database/rows/table/2/", key, nil)
	if v := apiErr.header.Values(client.ErrorHeader); apiErr.status != 404 || v != nil {
		t.Errorf("the API's 404 through the proxy: %d %s, %s %q; want 404 and no %[3]s", apiErr.status, apiErr.body, client.ErrorHeader, v)
	}
	// Another workspace's app, and an app not allowed the connection, get
	// what an app gets for a connection that does not exist.
	other := e.do("GET", "/v1/proxy/baserow/api/database/rows/table/1/", otherKey, nil)
	if other.status != 404 || errorOf(t, other).Error.Code != tokenhub.ENOTFOUND {
		t.Fatalf("another workspace's app through the proxy: %d %s", other.status, other.body)
	}
	e.putDemoConn("acme", "something-else", url)
	_, limitedKey := e.app("acme", "limited", "something-else")
	notListed := e.do("GET", "/v1/proxy/baserow/api/", limitedKey, nil)
	_, allKey := e.app("acme", "all")
	if err := e.admin.DeleteConnection(ctx(t), "acme", "baserow"); err != nil {
		t.Fatal(err)
	}
	missing := e.do("GET", "/v1/proxy/baserow/api/", allKey, nil)
	sameAnswer(t, "proxy: not listed vs missing", notListed, missing)
}

func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/openapi.yaml", "", nil)
	if r.status != 200 || !bytes.HasPrefix(r.body, []byte("openapi: 3.1")) {
		t.Fatalf("GET /openapi.yaml: %d %.40s", r.status, r.body)
	}
}
