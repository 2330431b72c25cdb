package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/poll"
)

// A header template that fails only once it runs over a real token (it
// passes the check over empty data made when the provider is defined) must
// not put the token into the connection's last error, its events, the
// token endpoint's answer or the log.
func TestFailingHeaderTemplateLeaksNoToken(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	d, url := e.demoProvider(demo.Options{})
	p := demo.Provider()
	p.Name = "evil-header"
	p.Header = tokenhub.Header{Name: "Authorization", Value: "JWT {{if .AccessToken}}{{.AccessToken | call}}{{end}}"}
	if _, _, err := e.admin.PutProvider(c, p); err != nil {
		t.Fatalf("PutProvider: %v", err)
	}
	cfg := demo.ConnectionConfig(url)
	cfg.Provider = p.Name
	if _, _, err := e.admin.PutConnection(c, "acme", "baserow", &cfg); err != nil {
		t.Fatal(err)
	}
	_, key := e.app("acme", "reader")

	poll.Until(t, "the connection to fail", func() bool {
		v, err := e.admin.Connection(c, "acme", "baserow")
		return err == nil && v.LastError != nil
	})
	if d.Counts().TokenAuth == 0 {
		t.Fatal("the demo provider issued no token; the test needs one")
	}
	tok := e.do("GET", "/v1/connections/baserow/token", key, nil)
	if tok.status == http.StatusOK {
		t.Fatalf("token endpoint: %d %s, want an error", tok.status, tok.body)
	}
	conn := e.do("GET", "/v1/workspaces/acme/connections/baserow", e.adminKey, nil)
	events := e.do("GET", "/v1/workspaces/acme/connections/baserow/events", e.adminKey, nil)
	if !strings.Contains(string(conn.body), "render") {
		t.Errorf("connection %s: want a last error about the header template", conn.body)
	}
	// The demo's access tokens are JWTs: their first segment is base64url
	// of {"alg":…}, which starts with "eyJ".
	for where, s := range map[string]string{
		"token answer": string(tok.body), "connection": string(conn.body), "events": string(events.body), "log": e.logs.String(),
	} {
		if strings.Contains(s, "eyJ") {
			t.Errorf("%s holds an access token: %s", where, s)
		}
	}
}
