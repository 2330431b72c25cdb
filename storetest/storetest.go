// Package storetest is the behaviour suite that every tokenhub.Store must
// pass. Each backend's tests call Run with a function that opens a fresh,
// empty store; the suite then checks every method's documented semantics
// and error codes, so that SQLite and PostgreSQL behave the same.
//
// Times used by the suite have microsecond precision, the finest a
// PostgreSQL timestamp keeps; stores may return them in any location, and
// the suite compares them with time.Time.Equal.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
)

// Run runs the suite. open must return a new, empty store for each call and
// arrange for it to be closed when the test ends (t.Cleanup). Each subtest
// gets its own store, so subtests do not depend on each other.
func Run(t *testing.T, open func(t *testing.T) tokenhub.Store) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

var tests = []struct {
	name string
	fn   func(t *testing.T, s tokenhub.Store)
}{
	{"Workspace/CreateFind", testWorkspaceCreateFind},
	{"Workspace/Duplicate", testWorkspaceDuplicate},
	{"Workspace/InvalidName", testWorkspaceInvalidName},
	{"Workspace/NotFound", testWorkspaceNotFound},
	{"Workspace/List", testWorkspaceList},
	{"Workspace/DeleteCascades", testWorkspaceDeleteCascades},

	{"Provider/PutFind", testProviderPutFind},
	{"Provider/NotFound", testProviderNotFound},
	{"Provider/List", testProviderList},
	{"Provider/Invalid", testProviderInvalid},

	{"Connection/Create", testConnectionCreate},
	{"Connection/RoundTrip", testConnectionRoundTrip},
	{"Connection/Unchanged", testConnectionUnchanged},
	{"Connection/ConfigChanged", testConnectionConfigChanged},
	{"Connection/EachFieldIsCompared", testConnectionEachFieldCompared},
	{"Connection/MissingWorkspace", testConnectionMissingWorkspace},
	{"Connection/Invalid", testConnectionInvalid},
	{"Connection/NotFound", testConnectionNotFound},
	{"Connection/ListOrderAndFilter", testConnectionList},
	{"Connection/DeleteDropsEvents", testConnectionDelete},

	{"Lease/Acquire", testLeaseAcquire},
	{"Lease/Invalid", testLeaseInvalid},

	{"Update/TokenStatusEvents", testUpdateTokenStatusEvents},
	{"Update/NilFieldsKeep", testUpdateNilFieldsKeep},
	{"Update/StaleVersionWritesNothing", testUpdateConflict},
	{"Update/ReleaseLease", testUpdateReleaseLease},
	{"Update/EventsNewestFirst", testUpdateEventsNewestFirst},
	{"Update/EventsBounded", testUpdateEventsBounded},
	{"Update/Invalid", testUpdateInvalid},

	{"App/CreateFind", testAppCreateFind},
	{"App/Duplicate", testAppDuplicate},
	{"App/NotFound", testAppNotFound},
	{"App/Delete", testAppDelete},
	{"App/Invalid", testAppInvalid},

	{"Ping", testPing},
	{"Reseal/NothingUnderOldKeys", testResealNothing},

	{"Concurrency/AcquireLease", testConcurrentAcquireLease},
	{"Concurrency/UpdateConnection", testConcurrentUpdate},
	{"Concurrency/PutConnection", testConcurrentPut},
}

// allEvents is a FindEvents limit above any connection's number of events.
const allEvents = 10 * tokenhub.MaxEventsPerConnection

// t0 is the suite's reference time, with microsecond precision.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

// Secrets written by the suite. None may appear in an error message.
const (
	secretClient   = "client-secret-5Qm2x"
	secretPassword = "password-Xk29Lw"
	secretCred     = "credential-Z8pQ1"
	secretAccess   = "access-token-Lr7Tn4"
	secretRefresh  = "refresh-token-Vb3Hs9"
)

var secrets = []string{secretClient, secretPassword, secretCred, secretAccess, secretRefresh}

// sampleConfig returns a config that sets every field, secrets included.
func sampleConfig() *tokenhub.ConnectionConfig {
	return &tokenhub.ConnectionConfig{
		Provider:     "oauth2",
		BaseURL:      "https://api.example.com",
		TokenURL:     "https://auth.example.com/token",
		Grant:        tokenhub.GrantPassword,
		AuthStyle:    tokenhub.AuthStyleBody,
		ClientID:     "client-1",
		ClientSecret: secretClient,
		Username:     "alice",
		Password:     secretPassword,
		Credentials:  map[string]string{"api_key": secretCred},
		Scopes:       []string{"read", "write"},
		Params:       map[string]string{"audience": "https://api.example.com"},
		Allow:        []tokenhub.AllowRule{{PathPrefix: "/v1/", Methods: []string{"GET"}}},
	}
}

// sampleToken returns a token that sets every field.
func sampleToken(obtained time.Time) *tokenhub.Token {
	return &tokenhub.Token{
		AccessToken:         secretAccess,
		RefreshToken:        secretRefresh,
		TokenType:           "Bearer",
		ExpiresAt:           obtained.Add(time.Hour),
		ExpirySource:        tokenhub.ExpiryExpiresIn,
		ObtainedAt:          obtained,
		RefreshExpiresAt:    obtained.Add(24 * time.Hour),
		RefreshExpirySource: tokenhub.ExpiryExpiresIn,
	}
}

func mustWorkspace(t *testing.T, s tokenhub.Store, name string) *tokenhub.Workspace {
	t.Helper()
	w, err := s.CreateWorkspace(t.Context(), name)
	if err != nil {
		t.Fatalf("CreateWorkspace(%q): %v", name, err)
	}
	return w
}

func mustPut(t *testing.T, s tokenhub.Store, ws, name string, cfg *tokenhub.ConnectionConfig, now time.Time) *tokenhub.Connection {
	t.Helper()
	c, _, err := s.PutConnection(t.Context(), ws, name, cfg, now)
	if err != nil {
		t.Fatalf("PutConnection(%q, %q): %v", ws, name, err)
	}
	return c
}

func mustFind(t *testing.T, s tokenhub.Store, ws, name string) *tokenhub.Connection {
	t.Helper()
	c, err := s.FindConnection(t.Context(), ws, name)
	if err != nil {
		t.Fatalf("FindConnection(%q, %q): %v", ws, name, err)
	}
	return c
}

func mustUpdate(t *testing.T, s tokenhub.Store, id int64, upd tokenhub.ConnectionUpdate) *tokenhub.Connection {
	t.Helper()
	c, err := s.UpdateConnection(t.Context(), id, upd)
	if err != nil {
		t.Fatalf("UpdateConnection(%d): %v", id, err)
	}
	return c
}

func mustEvents(t *testing.T, s tokenhub.Store, id int64, limit int) []*tokenhub.Event {
	t.Helper()
	evs, err := s.FindEvents(t.Context(), id, limit)
	if err != nil {
		t.Fatalf("FindEvents(%d, %d): %v", id, limit, err)
	}
	return evs
}

// connWithToken creates workspace ws (when missing) and connection name,
// and gives it sampleToken(t0) and a healthy status.
func connWithToken(t *testing.T, s tokenhub.Store, ws, name string) *tokenhub.Connection {
	t.Helper()
	if _, err := s.FindWorkspace(t.Context(), ws); tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		mustWorkspace(t, s, ws)
	}
	c := mustPut(t, s, ws, name, sampleConfig(), t0)
	return mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{
		IfVersion: c.Version,
		Token:     sampleToken(t0),
		Status:    &tokenhub.Status{State: tokenhub.StateHealthy, LastRefreshAt: t0, RefreshCount: 1, NextRefreshAt: t0.Add(45 * time.Minute)},
	})
}

// wantCode fails the test unless err carries code. When substr is set, the
// error's message must contain it (so that it names the object). No error
// message may contain a secret.
func wantCode(t *testing.T, what string, err error, code, substr string) {
	t.Helper()
	if got := tokenhub.ErrorCode(err); got != code {
		t.Fatalf("%s: got code %q (error %v), want code %q", what, got, err, code)
	}
	if err == nil {
		return
	}
	if substr != "" && !strings.Contains(err.Error(), substr) {
		t.Fatalf("%s: got message %q, want it to name %q", what, err.Error(), substr)
	}
	noSecret(t, what, err.Error())
}

func noSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range secrets {
		if strings.Contains(s, secret) {
			t.Fatalf("%s: error message %q contains a secret", what, s)
		}
	}
}

func configJSON(c *tokenhub.ConnectionConfig) string {
	b, _ := json.Marshal(c)
	return string(b)
}

func checkConfig(t *testing.T, what string, got, want *tokenhub.ConnectionConfig) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s: config:\n got  %s\n want %s", what, configJSON(got), configJSON(want))
	}
}

func tokenDiff(got, want *tokenhub.Token) string {
	switch {
	case got == nil && want == nil:
		return ""
	case got == nil || want == nil:
		return fmt.Sprintf("got token %v, want %v", got != nil, want != nil)
	}
	var d []string
	str := func(f, g, w string) {
		if g != w {
			d = append(d, fmt.Sprintf("%s: got %q, want %q", f, g, w))
		}
	}
	tm := func(f string, g, w time.Time) {
		if !g.Equal(w) {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", f, g, w))
		}
	}
	str("AccessToken", got.AccessToken, want.AccessToken)
	str("RefreshToken", got.RefreshToken, want.RefreshToken)
	str("TokenType", got.TokenType, want.TokenType)
	tm("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	str("ExpirySource", string(got.ExpirySource), string(want.ExpirySource))
	tm("ObtainedAt", got.ObtainedAt, want.ObtainedAt)
	tm("RefreshExpiresAt", got.RefreshExpiresAt, want.RefreshExpiresAt)
	str("RefreshExpirySource", string(got.RefreshExpirySource), string(want.RefreshExpirySource))
	return strings.Join(d, "; ")
}

func checkToken(t *testing.T, what string, got, want *tokenhub.Token) {
	t.Helper()
	if d := tokenDiff(got, want); d != "" {
		t.Fatalf("%s: token: %s", what, d)
	}
}

func statusDiff(got, want tokenhub.Status) string {
	var d []string
	if got.State != want.State {
		d = append(d, fmt.Sprintf("State: got %q, want %q", got.State, want.State))
	}
	if !got.LastRefreshAt.Equal(want.LastRefreshAt) {
		d = append(d, fmt.Sprintf("LastRefreshAt: got %v, want %v", got.LastRefreshAt, want.LastRefreshAt))
	}
	if got.RefreshCount != want.RefreshCount {
		d = append(d, fmt.Sprintf("RefreshCount: got %d, want %d", got.RefreshCount, want.RefreshCount))
	}
	if got.Failures != want.Failures {
		d = append(d, fmt.Sprintf("Failures: got %d, want %d", got.Failures, want.Failures))
	}
	if !got.NextRefreshAt.Equal(want.NextRefreshAt) {
		d = append(d, fmt.Sprintf("NextRefreshAt: got %v, want %v", got.NextRefreshAt, want.NextRefreshAt))
	}
	g, w := got.LastError, want.LastError
	switch {
	case g == nil && w == nil:
	case g == nil || w == nil:
		d = append(d, fmt.Sprintf("LastError: got %+v, want %+v", g, w))
	case !g.At.Equal(w.At) || g.Code != w.Code || g.Description != w.Description || g.Message != w.Message || g.Status != w.Status:
		d = append(d, fmt.Sprintf("LastError: got %+v, want %+v", *g, *w))
	}
	return strings.Join(d, "; ")
}

func checkStatus(t *testing.T, what string, got, want tokenhub.Status) {
	t.Helper()
	if d := statusDiff(got, want); d != "" {
		t.Fatalf("%s: status: %s", what, d)
	}
}

func checkLease(t *testing.T, what string, got, want tokenhub.Lease) {
	t.Helper()
	if got.Owner != want.Owner || !got.Since.Equal(want.Since) || !got.Until.Equal(want.Until) {
		t.Fatalf("%s: lease: got %+v, want %+v", what, got, want)
	}
}

func eventTypes(evs []*tokenhub.Event) []tokenhub.EventType {
	out := make([]tokenhub.EventType, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func connNames(cs []*tokenhub.Connection) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Path()
	}
	return out
}

// ---- workspaces ----

func testWorkspaceCreateFind(t *testing.T, s tokenhub.Store) {
	w := mustWorkspace(t, s, "acme")
	if w.ID == 0 || w.Name != "acme" || w.CreatedAt.IsZero() {
		t.Fatalf("CreateWorkspace: got %+v, want a non-zero ID, Name %q and CreatedAt", w, "acme")
	}
	got, err := s.FindWorkspace(t.Context(), "acme")
	if err != nil {
		t.Fatalf("FindWorkspace: %v", err)
	}
	if got.ID != w.ID || got.Name != w.Name || !got.CreatedAt.Equal(w.CreatedAt) {
		t.Fatalf("FindWorkspace: got %+v, want %+v", got, w)
	}
}

func testWorkspaceDuplicate(t *testing.T, s tokenhub.Store) {
	mustWorkspace(t, s, "acme")
	_, err := s.CreateWorkspace(t.Context(), "acme")
	wantCode(t, "CreateWorkspace of a taken name", err, tokenhub.ECONFLICT, `"acme"`)
}

func testWorkspaceInvalidName(t *testing.T, s tokenhub.Store) {
	for _, name := range []string{"", "Acme", "has space", "-dash", strings.Repeat("a", 64), "a/b"} {
		_, err := s.CreateWorkspace(t.Context(), name)
		wantCode(t, fmt.Sprintf("CreateWorkspace(%q)", name), err, tokenhub.EINVALID, "")
	}
	if ws, err := s.FindWorkspaces(t.Context()); err != nil || len(ws) != 0 {
		t.Fatalf("FindWorkspaces after refused creates: got %d workspaces, %v; want none", len(ws), err)
	}
}

func testWorkspaceNotFound(t *testing.T, s tokenhub.Store) {
	_, err := s.FindWorkspace(t.Context(), "nope")
	wantCode(t, "FindWorkspace", err, tokenhub.ENOTFOUND, `"nope"`)
	err = s.DeleteWorkspace(t.Context(), "nope")
	wantCode(t, "DeleteWorkspace", err, tokenhub.ENOTFOUND, `"nope"`)
}

func testWorkspaceList(t *testing.T, s tokenhub.Store) {
	if ws, err := s.FindWorkspaces(t.Context()); err != nil || len(ws) != 0 {
		t.Fatalf("FindWorkspaces on an empty store: got %d, %v; want none", len(ws), err)
	}
	for _, n := range []string{"zeta", "acme", "mid"} {
		mustWorkspace(t, s, n)
	}
	ws, err := s.FindWorkspaces(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		got = append(got, w.Name)
	}
	if want := []string{"acme", "mid", "zeta"}; !slices.Equal(got, want) {
		t.Fatalf("FindWorkspaces: got %q, want %q", got, want)
	}
}

func testWorkspaceDeleteCascades(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	doomed := connWithToken(t, s, "doomed", "reports")
	doomed2 := mustPut(t, s, "doomed", "billing", sampleConfig(), t0)
	kept := connWithToken(t, s, "kept", "reports")
	for _, a := range []*tokenhub.App{
		{Workspace: "doomed", Name: "app", KeyHash: []byte("hash-doomed-000000000000000000000")},
		{Workspace: "kept", Name: "app", KeyHash: []byte("hash-kept-00000000000000000000000")},
	} {
		if err := s.CreateApp(ctx, a); err != nil {
			t.Fatalf("CreateApp: %v", err)
		}
	}

	if err := s.DeleteWorkspace(ctx, "doomed"); err != nil {
		t.Fatalf("DeleteWorkspace: %v", err)
	}
	_, err := s.FindWorkspace(ctx, "doomed")
	wantCode(t, "FindWorkspace after delete", err, tokenhub.ENOTFOUND, "doomed")
	_, err = s.FindConnection(ctx, "doomed", "reports")
	wantCode(t, "FindConnection after workspace delete", err, tokenhub.ENOTFOUND, "doomed/reports")
	for _, id := range []int64{doomed.ID, doomed2.ID} {
		_, err = s.FindConnectionByID(ctx, id)
		wantCode(t, "FindConnectionByID after workspace delete", err, tokenhub.ENOTFOUND, "")
		_, err = s.FindEvents(ctx, id, 10)
		wantCode(t, "FindEvents after workspace delete", err, tokenhub.ENOTFOUND, "")
	}
	_, err = s.FindAppByKeyHash(ctx, []byte("hash-doomed-000000000000000000000"))
	wantCode(t, "FindAppByKeyHash after workspace delete", err, tokenhub.ENOTFOUND, "")
	_, err = s.FindApps(ctx, "doomed")
	wantCode(t, "FindApps after workspace delete", err, tokenhub.ENOTFOUND, "doomed")

	all, err := s.FindConnections(ctx, tokenhub.ConnectionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := connNames(all), []string{"kept/reports"}; !slices.Equal(got, want) {
		t.Fatalf("FindConnections after delete: got %q, want %q", got, want)
	}
	checkToken(t, "the other workspace's connection", all[0].Token, sampleToken(t0))
	if evs := mustEvents(t, s, kept.ID, allEvents); len(evs) == 0 {
		t.Fatal("the other workspace's connection lost its events")
	}
	if a, err := s.FindAppByKeyHash(ctx, []byte("hash-kept-00000000000000000000000")); err != nil || a.Workspace != "kept" {
		t.Fatalf("the other workspace's app: got %+v, %v", a, err)
	}

	mustWorkspace(t, s, "doomed")
	ws := "doomed"
	if cs, err := s.FindConnections(ctx, tokenhub.ConnectionFilter{Workspace: &ws}); err != nil || len(cs) != 0 {
		t.Fatalf("a recreated workspace: got connections %q, %v; want none", connNames(cs), err)
	}
	if apps, err := s.FindApps(ctx, "doomed"); err != nil || len(apps) != 0 {
		t.Fatalf("a recreated workspace: got %d apps, %v; want none", len(apps), err)
	}
}

// ---- providers ----

func sampleProvider(name string) *tokenhub.Provider {
	return &tokenhub.Provider{
		Name: name,
		Login: &tokenhub.Request{
			URL:  "{{.BaseURL}}/api/user/token-auth/",
			JSON: map[string]any{"email": "{{.Username}}", "password": "{{.Password}}"},
		},
		Refresh: &tokenhub.Request{
			URL:  "{{.BaseURL}}/api/user/token-refresh/",
			JSON: map[string]any{"refresh_token": "{{.RefreshToken}}"},
		},
		Response:   tokenhub.ResponseMapping{AccessToken: "access_token", RefreshToken: "refresh_token"},
		Header:     tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"},
		DefaultTTL: tokenhub.Duration(10 * time.Minute),
		RefreshAt:  0.5,
	}
}

func providerJSON(p *tokenhub.Provider) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func testProviderPutFind(t *testing.T, s tokenhub.Store) {
	changed := sampleProvider("baserow")
	changed.DefaultTTL = tokenhub.Duration(20 * time.Minute)
	steps := []struct {
		what        string
		p           *tokenhub.Provider
		wantChanged bool
	}{
		{"new", sampleProvider("baserow"), true},
		{"same again", sampleProvider("baserow"), false},
		{"changed", changed, true},
		{"changed again", changed, false},
		{"back to the first", sampleProvider("baserow"), true},
	}
	for _, st := range steps {
		got, err := s.PutProvider(t.Context(), st.p)
		if err != nil {
			t.Fatalf("PutProvider (%s): %v", st.what, err)
		}
		if got != st.wantChanged {
			t.Fatalf("PutProvider (%s): got changed=%v, want %v", st.what, got, st.wantChanged)
		}
		found, err := s.FindProvider(t.Context(), "baserow")
		if err != nil {
			t.Fatalf("FindProvider (%s): %v", st.what, err)
		}
		if g, w := providerJSON(found), providerJSON(st.p); g != w {
			t.Fatalf("FindProvider (%s):\n got  %s\n want %s", st.what, g, w)
		}
	}
}

func testProviderNotFound(t *testing.T, s tokenhub.Store) {
	_, err := s.FindProvider(t.Context(), "nope")
	wantCode(t, "FindProvider", err, tokenhub.ENOTFOUND, `"nope"`)
}

func testProviderList(t *testing.T, s tokenhub.Store) {
	if ps, err := s.FindProviders(t.Context()); err != nil || len(ps) != 0 {
		t.Fatalf("FindProviders on an empty store: got %d, %v; want none", len(ps), err)
	}
	for _, n := range []string{"zoho", "baserow", "keycloak"} {
		if _, err := s.PutProvider(t.Context(), sampleProvider(n)); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := s.FindProviders(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Name)
		if g, w := providerJSON(p), providerJSON(sampleProvider(p.Name)); g != w {
			t.Fatalf("FindProviders: %s:\n got  %s\n want %s", p.Name, g, w)
		}
	}
	if want := []string{"baserow", "keycloak", "zoho"}; !slices.Equal(got, want) {
		t.Fatalf("FindProviders: got %q, want %q", got, want)
	}
}

func testProviderInvalid(t *testing.T, s tokenhub.Store) {
	_, err := s.PutProvider(t.Context(), nil)
	wantCode(t, "PutProvider(nil)", err, tokenhub.EINVALID, "")
	_, err = s.PutProvider(t.Context(), sampleProvider("Not Valid"))
	wantCode(t, "PutProvider with a bad name", err, tokenhub.EINVALID, "name")
}

// ---- connections ----

func testConnectionCreate(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "acme")
	cfg := sampleConfig()
	c, res, err := s.PutConnection(ctx, "acme", "reports", cfg, t0)
	if err != nil {
		t.Fatalf("PutConnection: %v", err)
	}
	if res != tokenhub.PutCreated {
		t.Fatalf("PutConnection: got result %q, want %q", res, tokenhub.PutCreated)
	}
	check := func(what string, c *tokenhub.Connection) {
		t.Helper()
		if c.ID == 0 || c.Workspace != "acme" || c.Name != "reports" {
			t.Fatalf("%s: got ID %d, %q, want a non-zero ID, %q", what, c.ID, c.Path(), "acme/reports")
		}
		checkConfig(t, what, &c.Config, cfg)
		if c.Generation <= 0 || c.Version <= 0 {
			t.Fatalf("%s: got Generation %d, Version %d; want both positive", what, c.Generation, c.Version)
		}
		checkToken(t, what, c.Token, nil)
		checkStatus(t, what, c.Status, tokenhub.Status{State: tokenhub.StatePending})
		checkLease(t, what, c.Lease, tokenhub.Lease{})
		if !c.CreatedAt.Equal(t0) || !c.UpdatedAt.Equal(t0) {
			t.Fatalf("%s: got CreatedAt %v, UpdatedAt %v; want both %v", what, c.CreatedAt, c.UpdatedAt, t0)
		}
	}
	check("PutConnection", c)
	found := mustFind(t, s, "acme", "reports")
	check("FindConnection", found)
	byID, err := s.FindConnectionByID(ctx, c.ID)
	if err != nil {
		t.Fatalf("FindConnectionByID: %v", err)
	}
	check("FindConnectionByID", byID)
	if found.ID != c.ID || byID.ID != c.ID || found.Version != c.Version || found.Generation != c.Generation {
		t.Fatalf("Find*: got IDs %d/%d versions %d, want ID %d version %d", found.ID, byID.ID, found.Version, c.ID, c.Version)
	}

	evs := mustEvents(t, s, c.ID, 10)
	if len(evs) != 1 || evs[0].Type != tokenhub.EventCreated || !evs[0].At.Equal(t0) || evs[0].ConnectionID != c.ID || evs[0].ID == 0 {
		t.Fatalf("events after create: got %d events %v, want one %q at %v for connection %d", len(evs), eventTypes(evs), tokenhub.EventCreated, t0, c.ID)
	}
}

func testConnectionRoundTrip(t *testing.T, s tokenhub.Store) {
	c := connWithToken(t, s, "acme", "reports")
	for what, got := range map[string]*tokenhub.Connection{"UpdateConnection": c, "FindConnection": mustFind(t, s, "acme", "reports")} {
		cfg := got.Config
		if cfg.ClientSecret != secretClient || cfg.Password != secretPassword || cfg.Credentials["api_key"] != secretCred {
			t.Fatalf("%s: the secrets did not survive the round trip: got %s", what, configJSON(&cfg))
		}
		checkConfig(t, what, &cfg, sampleConfig())
		checkToken(t, what, got.Token, sampleToken(t0))
	}

	// A config with nothing optional set round-trips too.
	minimal := &tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "https://auth.example.com/token", ClientID: "x"}
	m := mustPut(t, s, "acme", "minimal", minimal, t0)
	checkConfig(t, "minimal config", &m.Config, minimal)
	checkConfig(t, "minimal config, found", &mustFind(t, s, "acme", "minimal").Config, minimal)
}

func testConnectionUnchanged(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	before := connWithToken(t, s, "acme", "reports")
	evsBefore := mustEvents(t, s, before.ID, allEvents)

	c, res, err := s.PutConnection(ctx, "acme", "reports", sampleConfig(), t0.Add(time.Hour))
	if err != nil {
		t.Fatalf("PutConnection: %v", err)
	}
	if res != tokenhub.PutUnchanged {
		t.Fatalf("PutConnection of the same config: got %q, want %q", res, tokenhub.PutUnchanged)
	}
	for what, got := range map[string]*tokenhub.Connection{"PutConnection": c, "FindConnection": mustFind(t, s, "acme", "reports")} {
		if got.Version != before.Version || got.Generation != before.Generation {
			t.Fatalf("%s: got Version %d Generation %d, want %d %d (unchanged)", what, got.Version, got.Generation, before.Version, before.Generation)
		}
		checkToken(t, what, got.Token, sampleToken(t0))
		checkStatus(t, what, got.Status, before.Status)
		if !got.UpdatedAt.Equal(before.UpdatedAt) {
			t.Fatalf("%s: UpdatedAt: got %v, want %v (unchanged)", what, got.UpdatedAt, before.UpdatedAt)
		}
	}
	if evs := mustEvents(t, s, before.ID, allEvents); len(evs) != len(evsBefore) {
		t.Fatalf("events after an unchanged put: got %v, want %v", eventTypes(evs), eventTypes(evsBefore))
	}
}

func testConnectionConfigChanged(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	before := connWithToken(t, s, "acme", "reports")
	leased, _, err := s.AcquireLease(ctx, before.ID, "refresher-1", t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	cfg := sampleConfig()
	cfg.Password = "a-new-password"
	now := t0.Add(time.Hour)

	c, res, err := s.PutConnection(ctx, "acme", "reports", cfg, now)
	if err != nil {
		t.Fatalf("PutConnection: %v", err)
	}
	if res != tokenhub.PutUpdated {
		t.Fatalf("PutConnection of a changed config: got %q, want %q", res, tokenhub.PutUpdated)
	}
	for what, got := range map[string]*tokenhub.Connection{"PutConnection": c, "FindConnection": mustFind(t, s, "acme", "reports")} {
		if got.ID != before.ID {
			t.Fatalf("%s: got ID %d, want %d", what, got.ID, before.ID)
		}
		checkConfig(t, what, &got.Config, cfg)
		if got.Generation <= before.Generation {
			t.Fatalf("%s: Generation: got %d, want more than %d", what, got.Generation, before.Generation)
		}
		if got.Version <= leased.Version {
			t.Fatalf("%s: Version: got %d, want more than %d", what, got.Version, leased.Version)
		}
		checkToken(t, what+" (token dropped)", got.Token, nil)
		checkStatus(t, what+" (status reset)", got.Status, tokenhub.Status{State: tokenhub.StatePending})
		checkLease(t, what+" (lease freed)", got.Lease, tokenhub.Lease{})
		if !got.UpdatedAt.Equal(now) || !got.CreatedAt.Equal(before.CreatedAt) {
			t.Fatalf("%s: got CreatedAt %v UpdatedAt %v, want %v and %v", what, got.CreatedAt, got.UpdatedAt, before.CreatedAt, now)
		}
	}
	evs := mustEvents(t, s, c.ID, allEvents)
	if len(evs) < 2 || evs[0].Type != tokenhub.EventConfigChanged || !evs[0].At.Equal(now) || evs[len(evs)-1].Type != tokenhub.EventCreated {
		t.Fatalf("events: got %v (newest first), want %q at %v first and %q last", eventTypes(evs), tokenhub.EventConfigChanged, now, tokenhub.EventCreated)
	}
	noSecret(t, "config_changed event", evs[0].Message)

	// The stale version of the refresher that held the lease no longer applies.
	_, err = s.UpdateConnection(ctx, c.ID, tokenhub.ConnectionUpdate{IfVersion: leased.Version, Token: sampleToken(now)})
	wantCode(t, "UpdateConnection with the version from before the config change", err, tokenhub.ECONFLICT, "acme/reports")
}

func testConnectionEachFieldCompared(t *testing.T, s tokenhub.Store) {
	mustWorkspace(t, s, "acme")
	changes := []struct {
		field  string
		mutate func(c *tokenhub.ConnectionConfig)
	}{
		{"provider", func(c *tokenhub.ConnectionConfig) { c.Provider = "other" }},
		{"base_url", func(c *tokenhub.ConnectionConfig) { c.BaseURL = "https://other.example.com" }},
		{"token_url", func(c *tokenhub.ConnectionConfig) { c.TokenURL = "https://other.example.com/token" }},
		{"grant", func(c *tokenhub.ConnectionConfig) { c.Grant = tokenhub.GrantClientCredentials }},
		{"auth_style", func(c *tokenhub.ConnectionConfig) { c.AuthStyle = tokenhub.AuthStyleBasic }},
		{"client_id", func(c *tokenhub.ConnectionConfig) { c.ClientID = "client-2" }},
		{"client_secret", func(c *tokenhub.ConnectionConfig) { c.ClientSecret = "other-secret" }},
		{"username", func(c *tokenhub.ConnectionConfig) { c.Username = "bob" }},
		{"password", func(c *tokenhub.ConnectionConfig) { c.Password = "other-password" }},
		{"credentials value", func(c *tokenhub.ConnectionConfig) { c.Credentials["api_key"] = "other" }},
		{"credentials added", func(c *tokenhub.ConnectionConfig) { c.Credentials["email"] = "a@example.com" }},
		{"scopes", func(c *tokenhub.ConnectionConfig) { c.Scopes = []string{"read"} }},
		{"params", func(c *tokenhub.ConnectionConfig) { c.Params = nil }},
		{"allow", func(c *tokenhub.ConnectionConfig) { c.Allow[0].Methods = []string{"GET", "POST"} }},
	}
	for i, ch := range changes {
		name := fmt.Sprintf("conn-%d", i)
		before := mustPut(t, s, "acme", name, sampleConfig(), t0)
		cfg := sampleConfig()
		ch.mutate(cfg)
		c, res, err := s.PutConnection(t.Context(), "acme", name, cfg, t0.Add(time.Minute))
		if err != nil {
			t.Fatalf("PutConnection changing %s: %v", ch.field, err)
		}
		if res != tokenhub.PutUpdated || c.Generation <= before.Generation {
			t.Fatalf("PutConnection changing %s: got %q, Generation %d; want %q and more than %d", ch.field, res, c.Generation, tokenhub.PutUpdated, before.Generation)
		}
		checkConfig(t, "after changing "+ch.field, &mustFind(t, s, "acme", name).Config, cfg)
	}
}

func testConnectionMissingWorkspace(t *testing.T, s tokenhub.Store) {
	_, _, err := s.PutConnection(t.Context(), "nope", "reports", sampleConfig(), t0)
	wantCode(t, "PutConnection in a missing workspace", err, tokenhub.ENOTFOUND, `"nope"`)
	if cs, err := s.FindConnections(t.Context(), tokenhub.ConnectionFilter{}); err != nil || len(cs) != 0 {
		t.Fatalf("FindConnections: got %q, %v; want none", connNames(cs), err)
	}
}

func testConnectionInvalid(t *testing.T, s tokenhub.Store) {
	mustWorkspace(t, s, "acme")
	_, _, err := s.PutConnection(t.Context(), "acme", "reports", nil, t0)
	wantCode(t, "PutConnection with a nil config", err, tokenhub.EINVALID, "")
	for _, name := range []string{"", "Reports", "a b", "a/b"} {
		_, _, err := s.PutConnection(t.Context(), "acme", name, sampleConfig(), t0)
		wantCode(t, fmt.Sprintf("PutConnection(%q)", name), err, tokenhub.EINVALID, "")
	}
}

func testConnectionNotFound(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	c := mustPut(t, s, mustWorkspace(t, s, "acme").Name, "reports", sampleConfig(), t0)
	missing := c.ID + 1000

	_, err := s.FindConnection(ctx, "acme", "nope")
	wantCode(t, "FindConnection of a missing name", err, tokenhub.ENOTFOUND, "acme/nope")
	_, err = s.FindConnection(ctx, "other", "reports")
	wantCode(t, "FindConnection in a missing workspace", err, tokenhub.ENOTFOUND, "other/reports")
	_, err = s.FindConnectionByID(ctx, missing)
	wantCode(t, "FindConnectionByID", err, tokenhub.ENOTFOUND, fmt.Sprint(missing))
	err = s.DeleteConnection(ctx, "acme", "nope")
	wantCode(t, "DeleteConnection", err, tokenhub.ENOTFOUND, "acme/nope")
	err = s.DeleteConnection(ctx, "other", "reports")
	wantCode(t, "DeleteConnection in a missing workspace", err, tokenhub.ENOTFOUND, "other/reports")
	_, _, err = s.AcquireLease(ctx, missing, "owner", t0, t0.Add(time.Minute))
	wantCode(t, "AcquireLease", err, tokenhub.ENOTFOUND, fmt.Sprint(missing))
	_, err = s.UpdateConnection(ctx, missing, tokenhub.ConnectionUpdate{IfVersion: 1})
	wantCode(t, "UpdateConnection", err, tokenhub.ENOTFOUND, fmt.Sprint(missing))
	_, err = s.FindEvents(ctx, missing, 10)
	wantCode(t, "FindEvents", err, tokenhub.ENOTFOUND, fmt.Sprint(missing))
}

func testConnectionList(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "beta")
	mustWorkspace(t, s, "alpha")
	for _, p := range [][2]string{{"beta", "zulu"}, {"alpha", "yankee"}, {"beta", "charlie"}, {"beta", "mike"}} {
		mustPut(t, s, p[0], p[1], sampleConfig(), t0)
	}
	connWithToken(t, s, "beta", "mike")

	all, err := s.FindConnections(ctx, tokenhub.ConnectionFilter{})
	if err != nil {
		t.Fatalf("FindConnections: %v", err)
	}
	if got, want := connNames(all), []string{"alpha/yankee", "beta/charlie", "beta/mike", "beta/zulu"}; !slices.Equal(got, want) {
		t.Fatalf("FindConnections: got %q, want %q", got, want)
	}
	for _, c := range all {
		checkConfig(t, "FindConnections "+c.Path(), &c.Config, sampleConfig())
		if c.Name == "mike" {
			checkToken(t, "FindConnections "+c.Path(), c.Token, sampleToken(t0))
		} else {
			checkToken(t, "FindConnections "+c.Path(), c.Token, nil)
		}
	}

	beta := "beta"
	got, err := s.FindConnections(ctx, tokenhub.ConnectionFilter{Workspace: &beta})
	if err != nil {
		t.Fatal(err)
	}
	if g, w := connNames(got), []string{"beta/charlie", "beta/mike", "beta/zulu"}; !slices.Equal(g, w) {
		t.Fatalf("FindConnections(workspace beta): got %q, want %q", g, w)
	}
	none := "none"
	got, err = s.FindConnections(ctx, tokenhub.ConnectionFilter{Workspace: &none})
	if err != nil || len(got) != 0 {
		t.Fatalf("FindConnections(missing workspace): got %q, %v; want none and no error", connNames(got), err)
	}
}

func testConnectionDelete(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	old := connWithToken(t, s, "acme", "reports")
	other := connWithToken(t, s, "acme", "billing")
	mustUpdate(t, s, old.ID, tokenhub.ConnectionUpdate{IfVersion: old.Version,
		Events: []tokenhub.Event{{At: t0, Type: tokenhub.EventObtained, Message: "obtained"}}})

	if err := s.DeleteConnection(ctx, "acme", "reports"); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	_, err := s.FindConnection(ctx, "acme", "reports")
	wantCode(t, "FindConnection after delete", err, tokenhub.ENOTFOUND, "acme/reports")
	_, err = s.FindEvents(ctx, old.ID, 10)
	wantCode(t, "FindEvents after delete", err, tokenhub.ENOTFOUND, "")
	err = s.DeleteConnection(ctx, "acme", "reports")
	wantCode(t, "DeleteConnection twice", err, tokenhub.ENOTFOUND, "acme/reports")
	checkToken(t, "the other connection", mustFind(t, s, "acme", "billing").Token, sampleToken(t0))
	if evs := mustEvents(t, s, other.ID, allEvents); len(evs) == 0 {
		t.Fatal("the other connection lost its events")
	}

	again := mustPut(t, s, "acme", "reports", sampleConfig(), t0.Add(time.Hour))
	if again.ID == old.ID {
		t.Fatalf("a recreated connection reuses the deleted one's ID %d", old.ID)
	}
	checkToken(t, "a recreated connection", again.Token, nil)
	if evs := mustEvents(t, s, again.ID, allEvents); len(evs) != 1 || evs[0].Type != tokenhub.EventCreated {
		t.Fatalf("a recreated connection's events: got %v, want only %q", eventTypes(evs), tokenhub.EventCreated)
	}
}

// ---- leases ----

func testLeaseAcquire(t *testing.T, s tokenhub.Store) {
	type held struct {
		owner        string
		since, until time.Time
	}
	minute := time.Minute
	tests := []struct {
		name     string
		held     *held // the lease before the call; nil when free
		release  bool  // the holder released it with UpdateConnection
		owner    string
		now      time.Time
		wantCode string
	}{
		{name: "free", owner: "a", now: t0},
		{name: "held by another", held: &held{"b", t0, t0.Add(minute)}, owner: "a", now: t0.Add(30 * time.Second), wantCode: tokenhub.ECONFLICT},
		{name: "held by another, a moment before it lapses", held: &held{"b", t0, t0.Add(minute)}, owner: "a", now: t0.Add(minute - time.Microsecond), wantCode: tokenhub.ECONFLICT},
		{name: "lapsed at its until", held: &held{"b", t0, t0.Add(minute)}, owner: "a", now: t0.Add(minute)},
		{name: "lapsed long ago", held: &held{"b", t0, t0.Add(minute)}, owner: "a", now: t0.Add(time.Hour)},
		{name: "same owner renews", held: &held{"a", t0, t0.Add(minute)}, owner: "a", now: t0.Add(30 * time.Second)},
		{name: "released by its holder", held: &held{"b", t0, t0.Add(minute)}, release: true, owner: "a", now: t0.Add(time.Second)},
	}
	for i, tt := range tests {
		name := fmt.Sprintf("conn-%d", i)
		c := connWithToken(t, s, "acme", name)
		wantPrev := tokenhub.Lease{}
		if tt.held != nil {
			var err error
			c, _, err = s.AcquireLease(t.Context(), c.ID, tt.held.owner, tt.held.since, tt.held.until)
			if err != nil {
				t.Fatalf("%s: setup AcquireLease: %v", tt.name, err)
			}
			wantPrev = tokenhub.Lease{Owner: tt.held.owner, Since: tt.held.since, Until: tt.held.until}
			if tt.release {
				c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, ReleaseLease: tt.held.owner})
				wantPrev = tokenhub.Lease{}
			}
		}
		before := c
		until := tt.now.Add(2 * minute)

		got, prev, err := s.AcquireLease(t.Context(), c.ID, tt.owner, tt.now, until)
		what := fmt.Sprintf("%s: AcquireLease(%q)", tt.name, tt.owner)
		after := mustFind(t, s, "acme", name)
		if tt.wantCode != "" {
			wantCode(t, what, err, tt.wantCode, "acme/"+name)
			if got == nil {
				t.Fatalf("%s: got no connection alongside the conflict, want the current one", what)
			}
			if got.ID != c.ID || got.Version != before.Version {
				t.Fatalf("%s: got connection %d version %d, want %d version %d", what, got.ID, got.Version, c.ID, before.Version)
			}
			checkLease(t, what+" current lease", got.Lease, wantPrev)
			checkToken(t, what+" current token", got.Token, sampleToken(t0))
			checkLease(t, what+" stored lease", after.Lease, wantPrev)
			if after.Version != before.Version {
				t.Fatalf("%s: stored Version: got %d, want %d (nothing written)", what, after.Version, before.Version)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want := tokenhub.Lease{Owner: tt.owner, Since: tt.now, Until: until}
		checkLease(t, what+" returned lease", got.Lease, want)
		checkLease(t, what+" stored lease", after.Lease, want)
		checkLease(t, what+" prev", prev, wantPrev)
		if got.Version <= before.Version || after.Version != got.Version {
			t.Fatalf("%s: Version: got %d (stored %d), want more than %d", what, got.Version, after.Version, before.Version)
		}
		checkToken(t, what, got.Token, sampleToken(t0))
		checkConfig(t, what, &got.Config, sampleConfig())
	}
}

func testLeaseInvalid(t *testing.T, s tokenhub.Store) {
	c := connWithToken(t, s, "acme", "reports")
	_, _, err := s.AcquireLease(t.Context(), c.ID, "", t0, t0.Add(time.Minute))
	wantCode(t, "AcquireLease with no owner", err, tokenhub.EINVALID, "owner")
	_, _, err = s.AcquireLease(t.Context(), c.ID, "a", t0, t0)
	wantCode(t, "AcquireLease until now", err, tokenhub.EINVALID, "until")
	checkLease(t, "after refused leases", mustFind(t, s, "acme", "reports").Lease, tokenhub.Lease{})
}

// ---- updates ----

func testUpdateTokenStatusEvents(t *testing.T, s tokenhub.Store) {
	mustWorkspace(t, s, "acme")
	c := mustPut(t, s, "acme", "reports", sampleConfig(), t0)
	tok := sampleToken(t0.Add(time.Minute))
	st := &tokenhub.Status{
		State:         tokenhub.StateDegraded,
		LastError:     &tokenhub.ErrorInfo{At: t0.Add(2 * time.Minute), Code: "temporarily_unavailable", Description: "try later", Message: "token endpoint answered 503", Status: 503},
		LastRefreshAt: t0.Add(time.Minute),
		RefreshCount:  7,
		Failures:      2,
		NextRefreshAt: t0.Add(3 * time.Minute),
	}
	evs := []tokenhub.Event{
		{At: t0.Add(time.Minute), Type: tokenhub.EventObtained, Message: "obtained a token"},
		{At: t0.Add(2 * time.Minute), Type: tokenhub.EventDegraded, Message: "token endpoint answered 503"},
	}
	got := mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Token: tok, Status: st, Events: evs})
	for what, g := range map[string]*tokenhub.Connection{"UpdateConnection": got, "FindConnection": mustFind(t, s, "acme", "reports")} {
		checkToken(t, what, g.Token, tok)
		checkStatus(t, what, g.Status, *st)
		checkConfig(t, what, &g.Config, sampleConfig())
		if g.Version <= c.Version || g.Generation != c.Generation {
			t.Fatalf("%s: got Version %d Generation %d, want Version above %d and Generation %d", what, g.Version, g.Generation, c.Version, c.Generation)
		}
	}
	stored := mustEvents(t, s, c.ID, allEvents)
	if want := []tokenhub.EventType{tokenhub.EventDegraded, tokenhub.EventObtained, tokenhub.EventCreated}; !slices.Equal(eventTypes(stored), want) {
		t.Fatalf("FindEvents: got %v, want %v", eventTypes(stored), want)
	}
	for i, e := range stored[:2] {
		w := evs[1-i]
		if !e.At.Equal(w.At) || e.Message != w.Message || e.ConnectionID != c.ID || e.ID == 0 {
			t.Fatalf("FindEvents[%d]: got %+v, want %+v for connection %d", i, *e, w, c.ID)
		}
	}

	// Every update increases Version, even one that only appends events.
	v := got.Version
	for i := range 3 {
		got = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: got.Version,
			Events: []tokenhub.Event{{At: t0, Type: tokenhub.EventRetried, Message: fmt.Sprint("retry ", i)}}})
		if got.Version <= v {
			t.Fatalf("update %d: Version: got %d, want more than %d", i, got.Version, v)
		}
		v = got.Version
	}
}

func testUpdateNilFieldsKeep(t *testing.T, s tokenhub.Store) {
	c := connWithToken(t, s, "acme", "reports")

	// Token nil keeps the token; the status is written.
	st := tokenhub.Status{State: tokenhub.StateDegraded, Failures: 1, RefreshCount: c.Status.RefreshCount, LastRefreshAt: c.Status.LastRefreshAt}
	c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Status: &st})
	for what, g := range map[string]*tokenhub.Connection{"UpdateConnection": c, "FindConnection": mustFind(t, s, "acme", "reports")} {
		checkToken(t, what+" with a nil token", g.Token, sampleToken(t0))
		checkStatus(t, what, g.Status, st)
	}
	wantStatus := st

	// Status nil keeps the status; the token is written.
	tok := sampleToken(t0.Add(time.Hour))
	tok.RefreshToken = "rotated-refresh-token"
	c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Token: tok})
	for what, g := range map[string]*tokenhub.Connection{"UpdateConnection": c, "FindConnection": mustFind(t, s, "acme", "reports")} {
		checkToken(t, what, g.Token, tok)
		checkStatus(t, what+" with a nil status", g.Status, wantStatus)
	}

	// An empty update keeps both and still counts as a write.
	v := c.Version
	c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version})
	checkToken(t, "empty update", c.Token, tok)
	checkStatus(t, "empty update", c.Status, wantStatus)
	if c.Version <= v {
		t.Fatalf("empty update: Version: got %d, want more than %d", c.Version, v)
	}
}

func testUpdateConflict(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	c := connWithToken(t, s, "acme", "reports")
	c, _, err := s.AcquireLease(ctx, c.ID, "holder", t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	before := mustFind(t, s, "acme", "reports")
	evsBefore := mustEvents(t, s, c.ID, allEvents)

	for _, stale := range []int64{c.Version - 1, c.Version + 1, 0} {
		newTok := sampleToken(t0.Add(time.Hour))
		newTok.AccessToken = secretAccess + "-new"
		_, err = s.UpdateConnection(ctx, c.ID, tokenhub.ConnectionUpdate{
			IfVersion:    stale,
			Token:        newTok,
			Status:       &tokenhub.Status{State: tokenhub.StateNeedsReauth},
			ReleaseLease: "holder",
			Events:       []tokenhub.Event{{At: t0, Type: tokenhub.EventRefreshed, Message: "refreshed"}},
		})
		what := fmt.Sprintf("UpdateConnection with IfVersion %d (stored %d)", stale, c.Version)
		wantCode(t, what, err, tokenhub.ECONFLICT, "acme/reports")

		after := mustFind(t, s, "acme", "reports")
		if after.Version != before.Version {
			t.Fatalf("%s: Version: got %d, want %d (nothing written)", what, after.Version, before.Version)
		}
		checkToken(t, what, after.Token, before.Token)
		checkStatus(t, what, after.Status, before.Status)
		checkLease(t, what, after.Lease, before.Lease)
		if evs := mustEvents(t, s, c.ID, allEvents); !slices.Equal(eventTypes(evs), eventTypes(evsBefore)) {
			t.Fatalf("%s: events: got %v, want %v (nothing written)", what, eventTypes(evs), eventTypes(evsBefore))
		}
	}
}

func testUpdateReleaseLease(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	c := connWithToken(t, s, "acme", "reports")
	c, _, err := s.AcquireLease(ctx, c.ID, "holder", t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	held := c.Lease
	steps := []struct {
		release string
		want    tokenhub.Lease
	}{
		{"", held},
		{"someone-else", held},
		{"holder", tokenhub.Lease{}},
		{"holder", tokenhub.Lease{}}, // releasing a free lease is harmless
	}
	for _, st := range steps {
		c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, ReleaseLease: st.release})
		what := fmt.Sprintf("UpdateConnection(ReleaseLease %q)", st.release)
		checkLease(t, what, c.Lease, st.want)
		checkLease(t, what+", stored", mustFind(t, s, "acme", "reports").Lease, st.want)
		checkToken(t, what, c.Token, sampleToken(t0))
	}
}

func testUpdateEventsNewestFirst(t *testing.T, s tokenhub.Store) {
	mustWorkspace(t, s, "acme")
	c := mustPut(t, s, "acme", "reports", sampleConfig(), t0)
	var want []string
	for i := range 5 {
		msg := fmt.Sprintf("event %d", i)
		c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version,
			Events: []tokenhub.Event{{At: t0.Add(time.Duration(i) * time.Second), Type: tokenhub.EventRetried, Message: msg}}})
		want = append([]string{msg}, want...)
	}
	for _, limit := range []int{1, 3, 5} {
		evs := mustEvents(t, s, c.ID, limit)
		var got []string
		for _, e := range evs {
			got = append(got, e.Message)
		}
		if !slices.Equal(got, want[:limit]) {
			t.Fatalf("FindEvents(limit %d): got %q, want %q", limit, got, want[:limit])
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].ID >= evs[i-1].ID {
				t.Fatalf("FindEvents(limit %d): IDs not newest first: %d then %d", limit, evs[i-1].ID, evs[i].ID)
			}
		}
	}
	if evs := mustEvents(t, s, c.ID, 100); len(evs) != 6 {
		t.Fatalf("FindEvents(limit 100): got %d events, want 6 (5 and created)", len(evs))
	}
}

func testUpdateEventsBounded(t *testing.T, s tokenhub.Store) {
	bound := tokenhub.MaxEventsPerConnection
	mustWorkspace(t, s, "acme")
	c := mustPut(t, s, "acme", "reports", sampleConfig(), t0)
	other := mustPut(t, s, "acme", "other", sampleConfig(), t0)

	// Append bound+25 events in three batches, then bound+10 more in one.
	n := 0
	for _, batch := range []int{bound / 2, bound / 2, 25, bound + 10} {
		var evs []tokenhub.Event
		for range batch {
			evs = append(evs, tokenhub.Event{At: t0.Add(time.Duration(n) * time.Millisecond), Type: tokenhub.EventRefreshed, Message: fmt.Sprintf("e%04d", n)})
			n++
		}
		c = mustUpdate(t, s, c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Events: evs})

		got := mustEvents(t, s, c.ID, 10*bound)
		total := n + 1 // and the created event
		if want := min(total, bound); len(got) != want {
			t.Fatalf("after %d events: FindEvents returned %d, want %d", total, len(got), want)
		}
		if wantNewest := fmt.Sprintf("e%04d", n-1); got[0].Message != wantNewest {
			t.Fatalf("after %d events: newest is %q, want %q", total, got[0].Message, wantNewest)
		}
		if total > bound {
			if wantOldest := fmt.Sprintf("e%04d", n-bound); got[len(got)-1].Message != wantOldest {
				t.Fatalf("after %d events: oldest kept is %q, want %q", total, got[len(got)-1].Message, wantOldest)
			}
		}
	}
	if evs := mustEvents(t, s, other.ID, allEvents); len(evs) != 1 || evs[0].Type != tokenhub.EventCreated {
		t.Fatalf("another connection's events: got %v, want only %q (trimming must stay per connection)", eventTypes(evs), tokenhub.EventCreated)
	}
}

func testUpdateInvalid(t *testing.T, s tokenhub.Store) {
	c := connWithToken(t, s, "acme", "reports")
	_, err := s.UpdateConnection(t.Context(), c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Status: &tokenhub.Status{State: "bogus"}})
	wantCode(t, "UpdateConnection with an unknown state", err, tokenhub.EINVALID, "state")
	_, err = s.UpdateConnection(t.Context(), c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Events: []tokenhub.Event{{At: t0, Message: "no type"}}})
	wantCode(t, "UpdateConnection with an event without a type", err, tokenhub.EINVALID, "type")
	if got := mustFind(t, s, "acme", "reports"); got.Version != c.Version {
		t.Fatalf("after refused updates: Version %d, want %d", got.Version, c.Version)
	}
}

// ---- apps ----

func hash(s string) []byte {
	b := make([]byte, 32)
	copy(b, s)
	return b
}

func testAppCreateFind(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "acme")
	apps := []*tokenhub.App{
		{Workspace: "acme", Name: "worker", KeyHash: hash("worker"), Connections: []string{"reports", "billing"}},
		{Workspace: "acme", Name: "dashboard", KeyHash: hash("dashboard")},
	}
	for _, a := range apps {
		if err := s.CreateApp(ctx, a); err != nil {
			t.Fatalf("CreateApp(%q): %v", a.Name, err)
		}
		if a.ID == 0 || a.CreatedAt.IsZero() {
			t.Fatalf("CreateApp(%q): got ID %d CreatedAt %v, want both set", a.Name, a.ID, a.CreatedAt)
		}
	}
	check := func(what string, got, want *tokenhub.App) {
		t.Helper()
		if got.ID != want.ID || got.Workspace != want.Workspace || got.Name != want.Name ||
			string(got.KeyHash) != string(want.KeyHash) || !slices.Equal(got.Connections, want.Connections) ||
			!got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("%s: got %+v, want %+v", what, *got, *want)
		}
	}
	for _, a := range apps {
		got, err := s.FindAppByKeyHash(ctx, a.KeyHash)
		if err != nil {
			t.Fatalf("FindAppByKeyHash(%s): %v", a.Name, err)
		}
		check("FindAppByKeyHash", got, a)
	}
	list, err := s.FindApps(ctx, "acme")
	if err != nil {
		t.Fatalf("FindApps: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("FindApps: got %d apps, want 2", len(list))
	}
	check("FindApps[0]", list[0], apps[1]) // dashboard before worker
	check("FindApps[1]", list[1], apps[0])
	if !list[1].CanRead("reports") || list[1].CanRead("other") || !list[0].CanRead("anything") {
		t.Fatalf("CanRead of found apps: worker %q, dashboard %q", list[1].Connections, list[0].Connections)
	}
}

func testAppDuplicate(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "acme")
	mustWorkspace(t, s, "other")
	if err := s.CreateApp(ctx, &tokenhub.App{Workspace: "acme", Name: "worker", KeyHash: hash("1")}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateApp(ctx, &tokenhub.App{Workspace: "acme", Name: "worker", KeyHash: hash("2")})
	wantCode(t, "CreateApp with a taken name", err, tokenhub.ECONFLICT, `"worker"`)
	err = s.CreateApp(ctx, &tokenhub.App{Workspace: "acme", Name: "second", KeyHash: hash("1")})
	wantCode(t, "CreateApp with a taken key hash", err, tokenhub.ECONFLICT, "")
	if err := s.CreateApp(ctx, &tokenhub.App{Workspace: "other", Name: "worker", KeyHash: hash("3")}); err != nil {
		t.Fatalf("CreateApp with the same name in another workspace: %v", err)
	}
	if list, err := s.FindApps(ctx, "acme"); err != nil || len(list) != 1 {
		t.Fatalf("FindApps after refused creates: got %d apps, %v; want 1", len(list), err)
	}
}

func testAppNotFound(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "acme")
	_, err := s.FindAppByKeyHash(ctx, hash("unknown"))
	wantCode(t, "FindAppByKeyHash", err, tokenhub.ENOTFOUND, "")
	err = s.DeleteApp(ctx, "acme", "nope")
	wantCode(t, "DeleteApp", err, tokenhub.ENOTFOUND, `"nope"`)
	err = s.CreateApp(ctx, &tokenhub.App{Workspace: "missing", Name: "worker", KeyHash: hash("1")})
	wantCode(t, "CreateApp in a missing workspace", err, tokenhub.ENOTFOUND, `"missing"`)
	_, err = s.FindApps(ctx, "missing")
	wantCode(t, "FindApps of a missing workspace", err, tokenhub.ENOTFOUND, `"missing"`)
	if list, err := s.FindApps(ctx, "acme"); err != nil || len(list) != 0 {
		t.Fatalf("FindApps of an empty workspace: got %d, %v; want none, no error", len(list), err)
	}
}

func testAppDelete(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "acme")
	for _, n := range []string{"a", "b"} {
		if err := s.CreateApp(ctx, &tokenhub.App{Workspace: "acme", Name: n, KeyHash: hash(n)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteApp(ctx, "acme", "a"); err != nil {
		t.Fatalf("DeleteApp: %v", err)
	}
	_, err := s.FindAppByKeyHash(ctx, hash("a"))
	wantCode(t, "FindAppByKeyHash of a deleted app", err, tokenhub.ENOTFOUND, "")
	if got, err := s.FindAppByKeyHash(ctx, hash("b")); err != nil || got.Name != "b" {
		t.Fatalf("FindAppByKeyHash of the other app: got %v, %v", got, err)
	}
	list, err := s.FindApps(ctx, "acme")
	if err != nil || len(list) != 1 || list[0].Name != "b" {
		t.Fatalf("FindApps after delete: got %d apps, %v; want only b", len(list), err)
	}
	err = s.DeleteApp(ctx, "acme", "a")
	wantCode(t, "DeleteApp twice", err, tokenhub.ENOTFOUND, `"a"`)
}

func testAppInvalid(t *testing.T, s tokenhub.Store) {
	ctx := t.Context()
	mustWorkspace(t, s, "acme")
	err := s.CreateApp(ctx, &tokenhub.App{Workspace: "acme", Name: "Bad Name", KeyHash: hash("1")})
	wantCode(t, "CreateApp with a bad name", err, tokenhub.EINVALID, "name")
	err = s.CreateApp(ctx, &tokenhub.App{Workspace: "acme", Name: "worker"})
	wantCode(t, "CreateApp without a key hash", err, tokenhub.EINVALID, "key")
	err = s.CreateApp(ctx, nil)
	wantCode(t, "CreateApp(nil)", err, tokenhub.EINVALID, "")
}

// ---- misc ----

func testPing(t *testing.T, s tokenhub.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testResealNothing(t *testing.T, s tokenhub.Store) {
	connWithToken(t, s, "acme", "reports")
	mustPut(t, s, "acme", "pending", sampleConfig(), t0)
	n, err := s.Reseal(t.Context())
	if err != nil {
		t.Fatalf("Reseal: %v", err)
	}
	if n != 0 {
		t.Fatalf("Reseal of values all sealed by this store's primary key: got %d rewritten, want 0", n)
	}
	checkToken(t, "after Reseal", mustFind(t, s, "acme", "reports").Token, sampleToken(t0))
}

// ---- concurrency ----

const racers = 16

// race runs call racers times at once, each with its index, all released
// together, and returns the calls' errors by index.
func race(call func(i int) error) []error {
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Go(func() {
			<-start
			errs[i] = call(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// winners returns the indexes of the calls that succeeded, and fails the
// test on any error other than the ECONFLICT a lost race answers.
func winners(t *testing.T, what string, errs []error) []int {
	t.Helper()
	var won []int
	var other []error
	for i, err := range errs {
		switch tokenhub.ErrorCode(err) {
		case "":
			won = append(won, i)
		case tokenhub.ECONFLICT:
		default:
			other = append(other, err)
		}
	}
	if len(other) > 0 {
		t.Fatalf("%s races: unexpected errors %v", what, other)
	}
	return won
}

func testConcurrentAcquireLease(t *testing.T, s tokenhub.Store) {
	c := connWithToken(t, s, "acme", "reports")
	owner := func(i int) string { return fmt.Sprintf("replica-%d", i) }
	errs := race(func(i int) error {
		_, _, err := s.AcquireLease(context.Background(), c.ID, owner(i), t0, t0.Add(time.Minute))
		return err
	})
	var won []string
	for _, i := range winners(t, "AcquireLease", errs) {
		won = append(won, owner(i))
	}
	if len(won) != 1 {
		t.Fatalf("AcquireLease races: got %d winners %q, want exactly 1", len(won), won)
	}
	if got := mustFind(t, s, "acme", "reports").Lease.Owner; got != won[0] {
		t.Fatalf("stored lease owner: got %q, want the winner %q", got, won[0])
	}
}

func testConcurrentUpdate(t *testing.T, s tokenhub.Store) {
	c := connWithToken(t, s, "acme", "reports")
	access := func(i int) string { return fmt.Sprintf("access-%d", i) }
	errs := race(func(i int) error {
		tok := sampleToken(t0.Add(time.Hour))
		tok.AccessToken = access(i)
		_, err := s.UpdateConnection(context.Background(), c.ID, tokenhub.ConnectionUpdate{IfVersion: c.Version, Token: tok,
			Events: []tokenhub.Event{{At: t0, Type: tokenhub.EventRefreshed, Message: tok.AccessToken[:6]}}})
		return err
	})
	won := winners(t, "UpdateConnection", errs)
	if len(won) != 1 {
		t.Fatalf("UpdateConnection races on one version: got %d winners, want exactly 1", len(won))
	}
	if got, want := mustFind(t, s, "acme", "reports").Token.AccessToken, access(won[0]); got != want {
		t.Fatalf("stored token: got %q, want the winner's %q", got, want)
	}
	n := 0
	for _, e := range mustEvents(t, s, c.ID, allEvents) {
		if e.Type == tokenhub.EventRefreshed {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("events from UpdateConnection races: got %d refreshed events, want 1 (losers write nothing)", n)
	}
}

func testConcurrentPut(t *testing.T, s tokenhub.Store) {
	mustWorkspace(t, s, "acme")
	got := make([]tokenhub.PutResult, racers)
	errs := race(func(i int) error {
		var err error
		_, got[i], err = s.PutConnection(context.Background(), "acme", "reports", sampleConfig(), t0)
		return err
	})
	if errs = slices.DeleteFunc(errs, func(err error) bool { return err == nil }); len(errs) > 0 {
		t.Fatalf("PutConnection races: unexpected errors %v", errs)
	}
	results := map[tokenhub.PutResult]int{}
	for _, r := range got {
		results[r]++
	}
	if results[tokenhub.PutCreated] != 1 || results[tokenhub.PutUnchanged] != racers-1 {
		t.Fatalf("PutConnection races: got %v, want 1 %q and %d %q", results, tokenhub.PutCreated, racers-1, tokenhub.PutUnchanged)
	}
	if cs, err := s.FindConnections(t.Context(), tokenhub.ConnectionFilter{}); err != nil || len(cs) != 1 {
		t.Fatalf("FindConnections: got %q, %v; want one connection", connNames(cs), err)
	}
}
