package grant_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/grant"
)

// A template that fails while it runs must not quote the data it ran over:
// text/template's own messages do ("range can't iterate over <value>",
// "non-function <value> of type string"), and the data are secrets.
func TestRenderErrorsHoldNoData(t *testing.T) {
	const token, password, cred = "ACCESS-TOKEN-0123456789", "PASSWORD-0123456789", "CREDENTIAL-0123456789"
	data := tokenhub.TemplateData{AccessToken: token, Password: password, Credentials: map[string]string{"pin": cred}}
	for _, tc := range []struct{ tmpl, action string }{
		{"{{range .AccessToken}}x{{end}}", ".AccessToken"},
		{"{{if .Password}}{{.Password | call}}{{end}}", "call"},
		{"{{.Credentials.pin | printf \"%s\" | call}}", "call"},
		{"{{slice .Credentials.pin 1 | call}}", "call"},
		{"{{html .AccessToken | call}}", "call"},
	} {
		_, err := grant.Render(tc.tmpl, data)
		if err == nil {
			t.Fatalf("Render(%q) succeeded, want an error", tc.tmpl)
		}
		for _, s := range []string{token, password, cred} {
			if strings.Contains(err.Error(), s[1:12]) {
				t.Errorf("Render(%q): error %q quotes the data", tc.tmpl, err)
			}
		}
		if !strings.Contains(err.Error(), tc.action) {
			t.Errorf("Render(%q): error %q does not name the action %q", tc.tmpl, err, tc.action)
		}
	}

	// The header template is checked over empty data when the provider is
	// defined, so a conditional hides a failure until a real token comes.
	p := &tokenhub.Provider{Name: "p", Header: tokenhub.Header{Name: "Authorization", Value: "Bearer {{if .AccessToken}}{{.AccessToken | call}}{{end}}"}}
	if err := p.Validate(); err != nil {
		t.Fatalf("the provider is refused at definition (%v); the test needs one that fails only at run time", err)
	}
	if _, _, err := grant.RenderHeader(p, token); err == nil || strings.Contains(err.Error(), token[1:12]) {
		t.Errorf("RenderHeader: %v, want an error without the token", err)
	}
}

// A login request whose template fails at run time yields an error without
// the credential, even in a form (a slice of it) that redaction cannot spot.
func TestLoginTemplateErrorHoldsNoCredential(t *testing.T) {
	const pin = "PIN-SECRET-0123456789"
	ts, _ := captureServer(t, 200, "application/json", `{"access_token":"x"}`)
	p := &tokenhub.Provider{Name: "l", Login: &tokenhub.Request{URL: ts.URL + "/login",
		JSON: map[string]any{"pin": "{{if .Credentials.pin}}{{slice .Credentials.pin 1 | call}}{{end}}"}}}
	conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{Credentials: map[string]string{"pin": pin}}}
	_, err := (&grant.Client{}).Obtain(context.Background(), p, conn)
	e := checkError(t, err, true, pin, pin[1:])
	if !strings.Contains(e.Error(), "login.json.pin") {
		t.Errorf("error %q does not name the field", e)
	}
}

// Secrets a provider echoes are redacted before its text is cut to length or
// its spaces folded, in every form the request carried them, and a secret
// that holds another one is redacted whole.
func TestEchoedSecretsAreRedactedWhole(t *testing.T) {
	const (
		clientID = "client id"
		secret   = "s3cret+/=value"
		password = "pass  word&more"
		refresh  = "pass  word&more-and-then-some"
	)
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)))
	padding := strings.Repeat("x", 290) + " "
	for _, tc := range []struct {
		name, description string
		leaks             []string // none of these may appear
	}{
		{"secret across the length cut", padding + password, []string{"pass "}},
		{"secret with folded spaces", "wrong password: " + password, []string{"pass word", "pass  word"}},
		{"form-encoded echo", "body was client_secret=" + url.QueryEscape(secret), []string{url.QueryEscape(secret), "s3cret"}},
		{"echoed Basic header", "Authorization: Basic " + basic, []string{basic}},
		{"longer secret holding a shorter one", "refresh token " + refresh + " expired", []string{"and-then-some"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]string{"error": "invalid_grant", "error_description": tc.description})
			ts, _ := captureServer(t, 400, "application/json", string(body))
			p := &tokenhub.Provider{Name: "echo", TokenURL: ts.URL + "/token"}
			conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{ClientID: clientID, ClientSecret: secret, Password: password},
				Token: &tokenhub.Token{AccessToken: "old-access", RefreshToken: refresh}}
			_, err := (&grant.Client{}).Refresh(context.Background(), p, conn, refresh)
			e := checkError(t, err, true, secret, password, refresh)
			for _, s := range tc.leaks {
				if strings.Contains(e.Error(), s) || strings.Contains(e.Description, s) {
					t.Errorf("error %q holds %q", e, s)
				}
			}
			if e.Code != "invalid_grant" || !strings.Contains(e.Description, "REDACTED") {
				t.Errorf("code %q, description %q; want invalid_grant and REDACTED", e.Code, e.Description)
			}
		})
	}
}

// A 2xx answer that does not map to a token may still hold fresh tokens: its
// error says where the token was looked for, and quotes nothing of it.
func TestUnmappedSuccessQuotesNothing(t *testing.T) {
	const fresh = "FRESH-TOKEN-0123456789"
	for _, body := range []string{
		`{"tokens":["` + fresh + `"]}`,
		`{"data":{"tokens":["` + fresh + `"],"refresh":["` + fresh + `"]}}`,
	} {
		ts, _ := captureServer(t, 200, "application/json", body)
		p := &tokenhub.Provider{Name: "o", TokenURL: ts.URL + "/token"}
		conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{ClientID: "id", ClientSecret: "client-secret"}}
		_, err := (&grant.Client{}).Obtain(context.Background(), p, conn)
		e := checkError(t, err, false, fresh)
		if e.Description != "" || !strings.Contains(e.Error(), `"access_token"`) {
			t.Errorf("%s: error %q (description %q), want one naming the path looked at, and no description", body, e, e.Description)
		}
	}
	// An explicit error in a 200 is still read.
	ts, _ := captureServer(t, 200, "application/json", `{"error":"invalid_grant","error_description":"expired"}`)
	p := &tokenhub.Provider{Name: "o", TokenURL: ts.URL + "/token"}
	conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{ClientID: "id", ClientSecret: "client-secret"}}
	_, err := (&grant.Client{}).Obtain(context.Background(), p, conn)
	var e *grant.Error
	if !errors.As(err, &e) || e.Code != "invalid_grant" || e.Description != "expired" || !e.Permanent {
		t.Errorf("200 with an OAuth error: %v, want invalid_grant: expired, permanent", err)
	}
}

// A token URL with user info is refused before anything is sent: net/http
// would send it as a Basic credential, and providers and connections defined
// through the API can no longer hold one.
func TestUserInfoInURLIsRefused(t *testing.T) {
	ts, last := captureServer(t, 200, "application/json", `{"access_token":"x"}`)
	u, _ := url.Parse(ts.URL)
	p := &tokenhub.Provider{Name: "o", TokenURL: "http://id:URL-SECRET-1@" + u.Host + "/token"}
	conn := &tokenhub.Connection{Config: tokenhub.ConnectionConfig{ClientID: "id"}}
	_, err := (&grant.Client{}).Obtain(context.Background(), p, conn)
	e := checkError(t, err, true, "URL-SECRET-1")
	if !strings.Contains(e.Error(), "token_url") || last().method != "" {
		t.Errorf("error %q (request %+v), want one naming token_url and no request", e, last())
	}
}
