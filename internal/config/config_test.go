package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/config"
)

// env returns a LookupEnv over a fixed map, so tests never depend on the
// process environment.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var issue3Env = map[string]string{
	"REPORTS_SECRET":   "rs-s3cret",
	"BASEROW_EMAIL":    "me@example.com",
	"BASEROW_PASSWORD": "bp-s3cret",
}

// TestLoadIssueExample loads the example from the issue verbatim and checks
// every field that reaches the API.
func TestLoadIssueExample(t *testing.T) {
	plan, err := config.Load("testdata/tokenhub.yaml", config.Options{LookupEnv: env(issue3Env)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	wantProv := tokenhub.Provider{
		Name:   "baserow-login",
		Header: tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"},
		Login: &tokenhub.Request{URL: "{{.BaseURL}}/api/user/token-auth/",
			JSON: map[string]any{"email": "{{.Credentials.email}}", "password": "{{.Credentials.password}}"}},
		Refresh: &tokenhub.Request{URL: "{{.BaseURL}}/api/user/token-refresh/",
			JSON: map[string]any{"refresh_token": "{{.RefreshToken}}"}},
		Response:   tokenhub.ResponseMapping{AccessToken: "access_token", RefreshToken: "refresh_token", ExpiresIn: "expires_in"},
		DefaultTTL: tokenhub.Duration(10 * time.Minute),
	}
	if len(plan.Providers) != 1 {
		t.Fatalf("providers: got %d, want 1", len(plan.Providers))
	}
	if got := plan.Providers[0]; !reflect.DeepEqual(got.Def, wantProv) || got.Pos.Line != 19 || got.Pos.Field != "providers[0]" {
		t.Errorf("provider:\n got %+v at %v\nwant %+v at line 19", got.Def, got.Pos, wantProv)
	}
	if len(plan.Workspaces) != 1 || plan.Workspaces[0].Name != "acme" || len(plan.Workspaces[0].Connections) != 2 {
		t.Fatalf("workspaces: got %+v", plan.Workspaces)
	}
	reports := plan.Workspaces[0].Connections[0]
	wantReports := tokenhub.ConnectionConfig{
		Provider:     "oauth2",
		BaseURL:      "https://api.example.com",
		TokenURL:     "https://auth.example.com/oauth/token",
		Grant:        tokenhub.GrantClientCredentials,
		ClientID:     "reports-service",
		ClientSecret: "rs-s3cret",
		Scopes:       []string{"reports.read"},
		Params:       map[string]string{"audience": "https://api.example.com"},
	}
	if reports.Name != "reports" || !reports.Config.Equal(&wantReports) || reports.Pos.Line != 4 {
		t.Errorf("reports: got %s %+v at %v", reports.Name, reports.Config.LogValue(), reports.Pos)
	}
	baserow := plan.Workspaces[0].Connections[1]
	wantBaserow := tokenhub.ConnectionConfig{
		Provider:    "baserow-login",
		BaseURL:     "https://api.baserow.io",
		Grant:       tokenhub.GrantLogin,
		Credentials: map[string]string{"email": "me@example.com", "password": "bp-s3cret"},
	}
	if baserow.Name != "baserow" || !baserow.Config.Equal(&wantBaserow) || baserow.Pos.Line != 13 {
		t.Errorf("baserow: got %s %+v at %v", baserow.Name, baserow.Config.LogValue(), baserow.Pos)
	}
	if len(plan.Warnings) != 0 {
		t.Errorf("warnings: got %v, want none (every secret is a reference)", plan.Warnings)
	}
	if p := plan.Provider("oauth2"); p == nil || p.Name != "oauth2" {
		t.Errorf("Provider(oauth2): got %v, want the built-in", p)
	}
}

// TestBadFiles checks that each kind of mistake is reported at its line and
// field, with a message that says what is wrong and no secret.
func TestBadFiles(t *testing.T) {
	const goodProvider = `providers:
  - name: jwt-login
    header: {name: Authorization, value: "JWT {{.AccessToken}}"}
    login: {url: "{{.BaseURL}}/login", json: {email: "{{.Credentials.email}}"}}
`
	tests := []struct {
		name  string
		file  string
		line  int
		field string
		msg   string
	}{{
		name: "grant typo",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
      - name: other
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        client_secret: hunter2
        # the typo:
        grant: pasword
`,
		line: 14, field: "workspaces[0].connections[1].grant",
		msg: `must be client_credentials, password, refresh_token or login, not "pasword"`,
	}, {
		name: "unknown connection field",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        client_secert: hunter2
`,
		line: 8, field: "workspaces[0].connections[0].client_secert",
		msg: "unknown field; did you mean client_secret?",
	}, {
		name: "unknown top-level field",
		file: `workspace:
  - name: acme
`,
		line: 1, field: "workspace", msg: "unknown field",
	}, {
		name: "unknown provider field",
		file: `providers:
  - name: jwt-login
    login: {url: "https://x.example/login", jsn: {a: b}}
`,
		line: 3, field: "providers[0].login.jsn", msg: "did you mean json?",
	}, {
		name: "list written as a string",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        scopes: reports.read
`,
		line: 6, field: "workspaces[0].connections[0].scopes", msg: "must be a list, not a string",
	}, {
		name: "mapping written as a list",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        params: [a, b]
`,
		line: 6, field: "workspaces[0].connections[0].params", msg: "must be a mapping, not a list",
	}, {
		name: "bad duration",
		file: `providers:
  - name: p
    token_url: https://auth.example.com/token
    default_ttl: 10x
`,
		line: 4, field: "providers[0].default_ttl", msg: `"10x" is not a duration`,
	}, {
		name: "number written as a string",
		file: `providers:
  - name: p
    token_url: https://auth.example.com/token
    refresh_at: soon
`,
		line: 4, field: "providers[0].refresh_at", msg: "must be a number, not a string",
	}, {
		name: "provider validation: refresh_at out of range",
		file: `providers:
  - name: p
    token_url: https://auth.example.com/token

    refresh_at: 1.5
`,
		line: 5, field: "providers[0].refresh_at", msg: "between 0 and 1",
	}, {
		name: "provider validation: bad template in a JSON body",
		file: `providers:
  - name: p
    login:
      url: https://x.example/login
      json:
        email: "{{.Credentials.email}}"
        password: "{{.Pasword}}"
`,
		line: 7, field: "providers[0].login.json.password", msg: "bad template",
	}, {
		name: "provider validation: header name",
		file: `providers:
  - name: p
    token_url: https://auth.example.com/token
    header:
      name: "Bad Header"
      value: "{{.AccessToken}}"
`,
		line: 5, field: "providers[0].header.name", msg: "not a valid HTTP header name",
	}, {
		name: "built-in provider name",
		file: `providers:
  - name: oauth2
    token_url: https://auth.example.com/token
`,
		line: 2, field: "providers[0].name", msg: "built-in provider",
	}, {
		name: "duplicate provider",
		file: goodProvider + `  - name: jwt-login
    login: {url: "https://x.example/login"}
`,
		line: 5, field: "providers[1].name", msg: `provider "jwt-login" is already defined at line 2`,
	}, {
		name: "duplicate workspace",
		file: `workspaces:
  - name: acme
  - name: beta
  - name: acme
`,
		line: 4, field: "workspaces[2].name", msg: `workspace "acme" is already defined at line 2`,
	}, {
		name: "duplicate connection",
		file: goodProvider + `workspaces:
  - name: acme
    connections:
      - name: db
        provider: jwt-login
        base_url: https://db.example.com
      - name: db
        provider: jwt-login
        base_url: https://db2.example.com
`,
		line: 11, field: "workspaces[0].connections[1].name", msg: `connection "db" is already defined in workspace "acme" at line 8`,
	}, {
		name: "key written twice",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        provider: oauth3
`,
		line: 6, field: "workspaces[0].connections[0].provider", msg: "written twice (first at line 5)",
	}, {
		name: "bad workspace name",
		file: `workspaces:
  - name: Acme Corp
`,
		line: 2, field: "workspaces[0].name", msg: "not a valid name",
	}, {
		name: "missing connection name",
		file: `workspaces:
  - name: acme
    connections:
      - provider: oauth2
        token_url: https://auth.example.com/token
`,
		line: 4, field: "workspaces[0].connections[0].name", msg: "required",
	}, {
		name: "unknown provider",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth3
`,
		line: 5, field: "workspaces[0].connections[0].provider", msg: `no provider named "oauth3"`,
	}, {
		name: "missing required field is placed at its object",
		file: goodProvider + `workspaces:
  - name: acme
    connections:

      - name: db
        provider: jwt-login
`,
		line: 9, field: "workspaces[0].connections[0].base_url", msg: "required",
	}, {
		name: "token_url on a login provider",
		file: goodProvider + `workspaces:
  - name: acme
    connections:
      - name: db
        provider: jwt-login
        base_url: https://db.example.com
        token_url: https://db.example.com/token
`,
		line: 11, field: "workspaces[0].connections[0].token_url", msg: "login API",
	}, {
		name: "bad allow rule",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        allow:
          - path_prefix: /ok
          - path_prefix: nope
`,
		line: 10, field: "workspaces[0].connections[0].allow[1].path_prefix", msg: "must start with /",
	}, {
		name: "missing environment variable",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        client_secret: ${env:NOT_SET_ANYWHERE}
`,
		line: 8, field: "workspaces[0].connections[0].client_secret",
		msg: "${env:NOT_SET_ANYWHERE}: environment variable NOT_SET_ANYWHERE is not set",
	}, {
		name: "unreadable secret file",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        client_secret: ${file:no-such-secret.txt}
`,
		line: 8, field: "workspaces[0].connections[0].client_secret",
		msg: "${file:no-such-secret.txt}: cannot read",
	}, {
		name: "unknown reference kind",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        client_secret: ${vault:reports}
`,
		line: 8, field: "workspaces[0].connections[0].client_secret", msg: "unknown reference",
	}, {
		name: "unterminated reference",
		file: `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        client_secret: "${env:REPORTS"
`,
		line: 8, field: "workspaces[0].connections[0].client_secret", msg: `no closing "}"`,
	}, {
		name: "YAML syntax error",
		file: `workspaces:
  - name: acme
    connections: [
`,
		line: 3, field: "", msg: "did not find expected node content",
	}, {
		name: "file is a list",
		file: `- a
- b
`,
		line: 1, field: "", msg: "must be a mapping",
	}, {
		name: "empty file",
		file: "# nothing here\n",
		line: 0, field: "", msg: "empty file",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("tokenhub.yaml", []byte(tt.file), config.Options{
				LookupEnv: env(map[string]string{"PLAIN": "env-s3cret"}),
				Dir:       t.TempDir(),
			})
			if err == nil {
				t.Fatal("Parse: got no error")
			}
			var e *config.Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse: got %T %v, want a *config.Error", err, err)
			}
			if e.File != "tokenhub.yaml" || e.Line != tt.line || e.Field != tt.field || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("got  %s\nwant tokenhub.yaml:%d: %s: …%s…", e, tt.line, tt.field, tt.msg)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "env-s3cret") {
				t.Errorf("the error shows a secret: %s", err)
			}
			// The full text starts with file:line: field:, ready for an editor.
			prefix := "tokenhub.yaml:"
			if tt.line > 0 {
				prefix += strings.TrimSpace(strings.Split(e.Error(), ":")[1]) + ": "
			}
			if !strings.HasPrefix(e.Error(), prefix) {
				t.Errorf("Error() = %q, want the prefix %q", e.Error(), prefix)
			}
		})
	}
}

// TestErrorFormat checks the exact text of one error, the form the issue gives.
func TestErrorFormat(t *testing.T) {
	file := `workspaces:
  - name: acme
    connections:
      - name: reports
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: x
        grant: pasword
`
	_, err := config.Parse("tokenhub.yaml", []byte(file), config.Options{})
	want := `tokenhub.yaml:8: workspaces[0].connections[0].grant: must be client_credentials, password, refresh_token or login, not "pasword"`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// TestAllErrorsReported checks that one load reports every independent
// problem, in file order, so a user fixes them in one pass.
func TestAllErrorsReported(t *testing.T) {
	file := `workspaces:
  - name: acme
    connections:
      - name: a
        provider: oauth2
        scopes: x
      - name: b
        provider: nope
  - name: BAD
`
	_, err := config.Parse("f.yaml", []byte(file), config.Options{})
	var list config.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %T %v, want an ErrorList", err, err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Error())
	}
	want := []string{
		`f.yaml:6: workspaces[0].connections[0].scopes: must be a list, not a string`,
		`f.yaml:8: workspaces[0].connections[1].provider: no provider named "nope"`,
		`f.yaml:9: workspaces[1].name: "BAD" is not a valid name (1-63 of a-z 0-9 . _ -, starting with a letter or digit)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// TestSecretReferences checks how ${env:…} and ${file:…} are resolved.
func TestSecretReferences(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("secret.txt", "file-s3cret\n")
	write("two-newlines.txt", "line\n\n")
	write("crlf.txt", "crlf-s3cret\r\n")
	write("none.txt", "no-newline")
	abs := filepath.Join(dir, "none.txt")
	write("tokenhub.yaml", `workspaces:
  - name: acme
    connections:
      - name: c
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: ${env:CLIENT_ID}
        client_secret: ${file:secret.txt}
        credentials:
          two: ${file:two-newlines.txt}
          crlf: ${file:crlf.txt}
          abs: ${file:`+abs+`}
          mixed: "pre-${env:CLIENT_ID}-${file:none.txt}-post"
          literal: "$${env:NOT_A_REFERENCE}"
          empty: ${env:EMPTY}
`)
	plan, err := config.Load(filepath.Join(dir, "tokenhub.yaml"), config.Options{
		LookupEnv: env(map[string]string{"CLIENT_ID": "cid", "EMPTY": ""}),
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	c := plan.Workspaces[0].Connections[0].Config
	if c.ClientID != "cid" || c.ClientSecret != "file-s3cret" {
		t.Errorf("client_id, client_secret: got %q, %q", c.ClientID, c.ClientSecret)
	}
	want := map[string]string{
		"two":     "line\n", // exactly one trailing newline is trimmed
		"crlf":    "crlf-s3cret",
		"abs":     "no-newline",
		"mixed":   "pre-cid-no-newline-post",
		"literal": "${env:NOT_A_REFERENCE}",
		"empty":   "",
	}
	if !reflect.DeepEqual(c.Credentials, want) {
		t.Errorf("credentials:\n got %q\nwant %q", c.Credentials, want)
	}

	// Relative references start at Options.Dir when it is set.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "secret.txt"), []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "tokenhub.yaml"))
	data = []byte(strings.ReplaceAll(string(data), "${file:two-newlines.txt}", "x"))
	data = []byte(strings.ReplaceAll(string(data), "${file:crlf.txt}", "x"))
	data = []byte(strings.ReplaceAll(string(data), "${file:none.txt}", "x"))
	plan, err = config.Parse("t.yaml", data, config.Options{Dir: other, LookupEnv: env(map[string]string{"CLIENT_ID": "cid", "EMPTY": ""})})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := plan.Workspaces[0].Connections[0].Config.ClientSecret; got != "other" {
		t.Errorf("client_secret from Options.Dir: got %q, want %q", got, "other")
	}
}

// TestProviderTemplatesAreNotReferences checks that provider definitions,
// which hold no secret, are taken literally.
func TestProviderTemplatesAreNotReferences(t *testing.T) {
	file := `providers:
  - name: p
    login: {url: "https://x.example/login", json: {note: "${env:X}"}}
`
	plan, err := config.Parse("f.yaml", []byte(file), config.Options{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := plan.Providers[0].Def.Login.JSON["note"]; got != "${env:X}" {
		t.Errorf("got %v, want the literal text", got)
	}
}

// TestPlainSecretWarnings checks that a secret written in the file is
// loaded, with a warning that names its line and field but not its value.
func TestPlainSecretWarnings(t *testing.T) {
	file := `workspaces:
  - name: acme
    connections:
      - name: c
        provider: oauth2
        token_url: https://auth.example.com/token
        grant: password
        username: me
        password: hunter2
        credentials: {email: me@example.com, api_key: k-123}
`
	plan, err := config.Parse("f.yaml", []byte(file), config.Options{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var got []string
	for _, w := range plan.Warnings {
		got = append(got, w.Error())
	}
	want := []string{
		"f.yaml:9: workspaces[0].connections[0].password: a secret written in plain text; use ${env:NAME} or ${file:PATH}",
		"f.yaml:10: workspaces[0].connections[0].credentials.api_key: a secret written in plain text; use ${env:NAME} or ${file:PATH}",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n got %q\nwant %q", got, want)
	}
	if c := plan.Workspaces[0].Connections[0].Config; c.Password != "hunter2" {
		t.Errorf("password: the plain value should still be used")
	}
}

// TestAnchorsAndMerges checks that YAML anchors, aliases and merge keys work,
// so connections can share settings.
func TestAnchorsAndMerges(t *testing.T) {
	file := `x-common: &common
  provider: oauth2
  token_url: https://auth.example.com/token
  scopes: [a]
workspaces:
  - name: acme
    connections:
      - <<: *common
        name: one
        client_id: one
      - <<: *common
        name: two
        client_id: two
        scopes: [b]
`
	// x-common is not a known top-level field, so the anchor has to live
	// somewhere known: put it on the first connection instead.
	if _, err := config.Parse("f.yaml", []byte(file), config.Options{}); err == nil || !strings.Contains(err.Error(), "f.yaml:1: x-common: unknown field") {
		t.Errorf("unknown top-level anchor holder: got %v", err)
	}
	file = `workspaces:
  - name: acme
    connections:
      - &common
        name: one
        provider: oauth2
        token_url: https://auth.example.com/token
        client_id: one
        scopes: [a]
      - <<: *common
        name: two
        client_id: two
        scopes: [b]
`
	plan, err := config.Parse("f.yaml", []byte(file), config.Options{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	cs := plan.Workspaces[0].Connections
	if len(cs) != 2 || cs[1].Name != "two" || cs[1].Config.ClientID != "two" ||
		cs[1].Config.TokenURL != "https://auth.example.com/token" || !reflect.DeepEqual(cs[1].Config.Scopes, []string{"b"}) {
		t.Errorf("merged connection: got %+v", cs[1])
	}
}

// TestFindProvider checks that a connection may name a provider that lives
// only on the server, when the caller can look it up.
func TestFindProvider(t *testing.T) {
	file := `workspaces:
  - name: acme
    connections:
      - name: db
        provider: stored-login
        base_url: https://db.example.com
`
	if _, err := config.Parse("f.yaml", []byte(file), config.Options{}); err == nil {
		t.Fatal("without FindProvider: got no error")
	}
	stored := &tokenhub.Provider{Name: "stored-login", Login: &tokenhub.Request{URL: "{{.BaseURL}}/login"}}
	plan, err := config.Parse("f.yaml", []byte(file), config.Options{FindProvider: func(name string) *tokenhub.Provider {
		if name == stored.Name {
			return stored
		}
		return nil
	}})
	if err != nil {
		t.Fatalf("with FindProvider: %v", err)
	}
	if g := plan.Workspaces[0].Connections[0].Config.GrantOrDefault(stored); g != tokenhub.GrantLogin {
		t.Errorf("grant: got %s", g)
	}
}
