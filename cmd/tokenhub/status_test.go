package main_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
)

// TestStatusTable checks `tokenhub status`: one row per connection with its
// state, expiry, next refresh and last error, and --workspace limiting it to
// one workspace.
func TestStatusTable(t *testing.T) {
	_, provURL := startDemoProvider(t, demo.Options{Logger: quiet()})
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.admin()
	if _, _, err := admin.PutProvider(ctx, demo.Provider()); err != nil {
		t.Fatal(err)
	}
	good, bad := demo.ConnectionConfig(provURL), demo.ConnectionConfig(provURL)
	bad.Credentials = map[string]string{"email": demo.DefaultEmail, "password": "not-the-password"}
	for _, c := range []struct {
		ws, name string
		cfg      tokenhub.ConnectionConfig
	}{{"acme", "baserow", good}, {"acme", "broken", bad}, {"beta", "other", good}} {
		if _, err := admin.CreateWorkspace(ctx, c.ws); err != nil && !strings.Contains(err.Error(), "conflict") {
			t.Fatal(err)
		}
		if _, _, err := admin.PutConnection(ctx, c.ws, c.name, &c.cfg); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, admin, "acme", "baserow", tokenhub.StateHealthy)
	broken := waitState(t, admin, "acme", "broken", tokenhub.StateNeedsReauth)
	waitState(t, admin, "beta", "other", tokenhub.StateHealthy)
	if broken.LastError == nil || broken.LastError.Code == "" {
		t.Fatalf("last error %+v, want the provider's error code", broken.LastError)
	}

	r := run(t, s.env(), "status", "--workspace", "acme")
	if r.Code != 0 {
		t.Fatalf("status --workspace acme: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !regexp.MustCompile(`(?m)^acme\s+baserow\s+healthy\s+\d[\dsmh]*\s+in \d[\dsmh]*\s+1\s*$`).MatchString(r.Stdout) {
		t.Errorf("no healthy row with its expiry and next refresh for acme/baserow:\n%s", r.Stdout)
	}
	row := regexp.MustCompile(`(?m)^acme\s+broken\s+needs_reauth\s.*$`).FindString(r.Stdout)
	if row == "" || !strings.Contains(row, broken.LastError.Code) {
		t.Errorf("the row of acme/broken does not show its last error %q:\n%s", broken.LastError.Code, r.Stdout)
	}
	if strings.Contains(r.Stdout, "beta") || strings.Contains(r.Stdout+r.Stderr, "not-the-password") {
		t.Errorf("status --workspace acme shows another workspace or a secret:\n%s", r.Stdout)
	}
	all := run(t, s.env(), "status")
	if !regexp.MustCompile(`(?m)^beta\s+other\s+healthy\s`).MatchString(all.Stdout) || strings.Count(all.Stdout, "\n") != 4 {
		t.Errorf("status: want a header and three rows:\n%s", all.Stdout)
	}
}
