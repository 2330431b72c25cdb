package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/server"
)

// TestBadInput sends each kind of bad input and checks that it is refused
// with 400, that the message starts with the bad field, and that nothing
// changed.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	e.workspace("acme")
	_, url := e.demoProvider(demo.Options{})
	e.putDemoConn("acme", "baserow", url)
	if _, _, err := e.admin.PutConnection(c, "acme", "reports", oauth2Config()); err != nil {
		t.Fatal(err)
	}
	e.app("acme", "reports")

	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	oauth := func(mod func(m map[string]any)) string {
		m := map[string]any{"provider": "oauth2", "token_url": "https://auth.example.com/token", "client_id": "x"}
		mod(m)
		return js(m)
	}
	login := func(mod func(m map[string]any)) string {
		b, _ := json.Marshal(demo.Provider())
		var m map[string]any
		json.Unmarshal(b, &m)
		m["name"] = "my-login"
		mod(m)
		return js(m)
	}
	const conn = "/v1/workspaces/acme/connections/"

	cases := []struct {
		name, method, path, body string
		field                    string // the message must start with field + ":"
	}{
		{"workspace: empty body", "POST", "/v1/workspaces", "", "body"},
		{"workspace: not JSON", "POST", "/v1/workspaces", `{"name":`, "body"},
		{"workspace: not an object", "POST", "/v1/workspaces", `["acme"]`, "body"},
		{"workspace: trailing data", "POST", "/v1/workspaces", `{"name":"x"} {"name":"y"}`, "body"},
		{"workspace: no name", "POST", "/v1/workspaces", `{}`, "name"},
		{"workspace: bad name", "POST", "/v1/workspaces", `{"name":"Not A Name"}`, "name"},
		{"workspace: name not a string", "POST", "/v1/workspaces", `{"name":5}`, "name"},
		{"workspace: unknown field", "POST", "/v1/workspaces", `{"name":"x","owner":"me"}`, "owner"},

		{"app: bad name", "POST", "/v1/workspaces/acme/apps", `{"name":"app!"}`, "name"},
		{"app: bad connection", "POST", "/v1/workspaces/acme/apps", `{"name":"a","connections":["ok","BAD"]}`, "connections[1]"},
		{"app: connections not a list", "POST", "/v1/workspaces/acme/apps", `{"name":"a","connections":"ok"}`, "connections"},
		{"app: connection not a string", "POST", "/v1/workspaces/acme/apps", `{"name":"a","connections":[1]}`, "connections[0]"},
		{"app: unknown field", "POST", "/v1/workspaces/acme/apps", `{"name":"a","key":"mine"}`, "key"},
		{"app: unknown connection", "POST", "/v1/workspaces/acme/apps", `{"name":"a","connections":["baserow","nope"]}`, "connections[1]"},

		{"connection: unknown field", "PUT", conn + "new", oauth(func(m map[string]any) { m["secret"] = "x" }), "secret"},
		{"connection: unknown nested field", "PUT", conn + "new", oauth(func(m map[string]any) {
			m["allow"] = []any{map[string]any{"path_prefix": "/x", "verbs": []string{"GET"}}}
		}), "allow[0].verbs"},
		{"connection: wrong type", "PUT", conn + "new", oauth(func(m map[string]any) { m["scopes"] = []any{"a", 2} }), "scopes[1]"},
		{"connection: params not strings", "PUT", conn + "new", oauth(func(m map[string]any) { m["params"] = map[string]any{"audience": true} }), "params.audience"},
		{"connection: no provider", "PUT", conn + "new", oauth(func(m map[string]any) { delete(m, "provider") }), "provider"},
		{"connection: unknown provider", "PUT", conn + "new", oauth(func(m map[string]any) { m["provider"] = "nope" }), "provider"},
		{"connection: no token_url", "PUT", conn + "new", oauth(func(m map[string]any) { delete(m, "token_url") }), "token_url"},
		{"connection: bad token_url template", "PUT", conn + "new", oauth(func(m map[string]any) { m["token_url"] = "{{.Nope}}" }), "token_url"},
		{"connection: bad base_url", "PUT", conn + "new", oauth(func(m map[string]any) { m["base_url"] = "ftp://x" }), "base_url"},
		{"connection: base_url with user info", "PUT", conn + "new", oauth(func(m map[string]any) { m["base_url"] = "https://u:p@x" }), "base_url"},
		{"connection: token_url with user info", "PUT", conn + "new", oauth(func(m map[string]any) {
			m["token_url"] = "https://id:secret@auth.example.com/token"
		}), "token_url"},
		{"connection: no client_id", "PUT", conn + "new", oauth(func(m map[string]any) { delete(m, "client_id") }), "client_id"},
		{"connection: bad grant", "PUT", conn + "new", oauth(func(m map[string]any) { m["grant"] = "implicit" }), "grant"},
		{"connection: password grant without password", "PUT", conn + "new", oauth(func(m map[string]any) {
			m["grant"], m["username"] = "password", "u"
		}), "password"},
		{"connection: bad auth_style", "PUT", conn + "new", oauth(func(m map[string]any) { m["auth_style"] = "header" }), "auth_style"},
		{"connection: bad allow prefix", "PUT", conn + "new", oauth(func(m map[string]any) {
			m["allow"] = []any{map[string]any{"path_prefix": "api"}}
		}), "allow[0].path_prefix"},
		{"connection: login provider with token_url", "PUT", conn + "new", js(map[string]any{
			"provider": demo.ProviderName, "base_url": url, "token_url": "https://x/token"}), "token_url"},
		{"connection: login provider without base_url", "PUT", conn + "new", js(map[string]any{"provider": demo.ProviderName}), "base_url"},
		{"connection: name differs from path", "PUT", conn + "new", oauth(func(m map[string]any) { m["name"] = "other" }), "name"},
		{"connection: bad name in path", "PUT", conn + "Bad.Name", oauth(func(map[string]any) {}), "name"},
		{"connection: change refused", "PUT", conn + "baserow", js(map[string]any{"provider": demo.ProviderName, "base_url": "not a url"}), "base_url"},

		{"provider: built-in name", "PUT", "/v1/providers/oauth2", `{"token_url":"https://x/token"}`, "name"},
		{"provider: name differs from path", "PUT", "/v1/providers/a", login(func(m map[string]any) {}), "name"},
		{"provider: bad name", "PUT", "/v1/providers/Bad!", `{}`, "name"},
		{"provider: bad template", "PUT", "/v1/providers/my-login", login(func(m map[string]any) {
			m["login"].(map[string]any)["url"] = "{{.BaseURL"
		}), "login.url"},
		{"provider: login url with user info", "PUT", "/v1/providers/my-login", login(func(m map[string]any) {
			m["login"].(map[string]any)["url"] = "https://{{.Username}}:{{.Password}}@x/login"
		}), "login.url"},
		{"provider: bad json template", "PUT", "/v1/providers/my-login", login(func(m map[string]any) {
			m["login"].(map[string]any)["json"] = map[string]any{"email": "{{.Nope}}"}
		}), "login.json.email"},
		{"provider: unknown nested field", "PUT", "/v1/providers/my-login", login(func(m map[string]any) {
			m["login"].(map[string]any)["body"] = "x"
		}), "login.body"},
		{"provider: bad duration", "PUT", "/v1/providers/my-login", login(func(m map[string]any) { m["default_ttl"] = "ten minutes" }), "default_ttl"},
		{"provider: bad refresh_at", "PUT", "/v1/providers/my-login", login(func(m map[string]any) { m["refresh_at"] = 1.5 }), "refresh_at"},
		{"provider: bad header", "PUT", "/v1/providers/my-login", login(func(m map[string]any) {
			m["header"] = map[string]any{"name": "Bad Header", "value": "x"}
		}), "header.name"},
		{"provider: refresh without login", "PUT", "/v1/providers/my-login", js(map[string]any{
			"token_url": "https://x/token", "refresh": map[string]any{"url": "https://x/r"}}), "refresh"},

		{"events: bad limit", "GET", conn + "baserow/events?limit=0", "", "limit"},
		{"events: limit not a number", "GET", conn + "baserow/events?limit=ten", "", "limit"},
		{"events: limit too large", "GET", conn + "baserow/events?limit=100000", "", "limit"},
	}
	before := e.snapshot()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.method != "GET" {
				body = strings.NewReader(tc.body)
			}
			r := e.do(tc.method, tc.path, e.adminKey, body)
			if r.status != http.StatusBadRequest {
				t.Fatalf("%s %s %s: %d %s, want 400", tc.method, tc.path, tc.body, r.status, r.body)
			}
			eb := errorOf(t, r)
			if eb.Error.Code != tokenhub.EINVALID || !strings.HasPrefix(eb.Error.Message, tc.field+":") {
				t.Fatalf("error %s %q, want invalid starting with %q", eb.Error.Code, eb.Error.Message, tc.field+":")
			}
			if after := e.snapshot(); after != before {
				t.Fatalf("the store changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t)
	e.workspace("acme")
	before := e.snapshot()

	// A valid connection padded to 1 MiB + 1 byte.
	big := func() []byte {
		prefix := `{"provider":"oauth2","token_url":"http://127.0.0.1:1/token","client_id":"x","params":{"pad":"`
		suffix := `"}}`
		pad := server.MaxBodyBytes + 1 - len(prefix) - len(suffix)
		b := []byte(prefix + strings.Repeat("a", pad) + suffix)
		if len(b) != server.MaxBodyBytes+1 {
			t.Fatalf("body is %d bytes", len(b))
		}
		return b
	}()
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(big)
		if chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		r := e.do("PUT", "/v1/workspaces/acme/connections/big", e.adminKey, body)
		if r.status != http.StatusRequestEntityTooLarge || errorOf(t, r).Error.Code != tokenhub.ETOOLARGE {
			t.Fatalf("chunked=%v: %d %s, want 413 too_large", chunked, r.status, r.body)
		}
	}
	// Exactly 1 MiB is fine.
	ok := append([]byte{}, big[:len(big)-len(`a"}}`)]...)
	ok = append(ok, `"}}`...)
	if r := e.do("PUT", "/v1/workspaces/acme/connections/big", e.adminKey, bytes.NewReader(ok)); r.status != http.StatusCreated {
		t.Fatalf("1 MiB body: %d %.200s", r.status, r.body)
	}
	if err := e.admin.DeleteConnection(ctx(t), "acme", "big"); err != nil {
		t.Fatal(err)
	}
	if after := e.snapshot(); after != before {
		t.Fatalf("the store changed:\nbefore %s\nafter  %s", before, after)
	}
}
