package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	main "github.com/tokenhub/tokenhub/cmd/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/logtest"
)

// noSecrets fails the test when a run's output holds any of the secrets.
func noSecrets(t *testing.T, what string, r result, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			t.Fatalf("%s: an empty secret to look for", what)
		}
		if strings.Contains(r.Stdout, s) || strings.Contains(r.Stderr, s) {
			t.Errorf("%s: the output holds a secret (%d bytes)", what, len(s))
		}
	}
}

// TestCurlDemoRows reads the demo Baserow's rows through tokenhub's proxy
// with `tokenhub curl`, as the recipe we replace read them into a Table
// widget: raw, as a table, with -i, and with the errors a user meets.
func TestCurlDemoRows(t *testing.T) {
	_, provURL := startDemoProvider(t, demo.Options{AccessTTL: time.Hour, Logger: quiet()})
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.admin()
	app := demoApp(t, admin, provURL, "page")
	env := map[string]string{"TOKENHUB_URL": s.URL(), "TOKENHUB_APP_KEY": app.Key}
	const rows = "/api/database/rows/table/1/?user_field_names=true"

	var runs []result
	curl := func(args ...string) result {
		t.Helper()
		r := run(t, env, append([]string{"curl"}, args...)...)
		runs = append(runs, r)
		return r
	}

	// The body as the API sent it.
	r := curl("baserow", rows)
	var page struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &page) != nil || page.Count != 4 || len(page.Results) != 4 {
		t.Fatalf("curl: status %d, stdout %q, stderr %q; want the demo's 4 rows", r.Code, r.Stdout, r.Stderr)
	}

	// --table results: one column per field, in the answer's order, one
	// line per row.
	r = curl("baserow", rows, "--table", "results")
	lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	if r.Code != 0 || len(lines) != 5 {
		t.Fatalf("--table results: status %d, %d lines; want 0 and a header and 4 rows\n%s%s", r.Code, len(lines), r.Stdout, r.Stderr)
	}
	if !regexp.MustCompile(`^Active +Email +Name +Role +id +order$`).MatchString(lines[0]) {
		t.Errorf("--table results: header %q, want the rows' keys", lines[0])
	}
	if !regexp.MustCompile(`^true +ada@example\.com +Ada Lovelace +Engineer +1 +1\.0+$`).MatchString(lines[1]) {
		t.Errorf("--table results: first row %q, want Ada Lovelace's", lines[1])
	}
	if col := strings.Index(lines[0], "Name"); col < 0 || !strings.HasPrefix(lines[4][col:], "Katherine Johnson") {
		t.Errorf("--table results: the columns are not aligned:\n%s", r.Stdout)
	}
	// Cut cells.
	r = curl("baserow", rows, "--table", "results", "--max-width", "6")
	if r.Code != 0 || !regexp.MustCompile(`(?m)^true +ada@e… +Ada L… +Engin… +1 +1.000…$`).MatchString(r.Stdout) {
		t.Errorf("--max-width 6: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	// -i: the status line and headers, a blank line, the body.
	r = curl("-i", "baserow", rows)
	head, body, ok := strings.Cut(r.Stdout, "\n\n")
	if r.Code != 0 || !ok || !strings.HasPrefix(head, "HTTP/1.1 200 OK\n") ||
		!strings.Contains(head+"\n", "\nContent-Type: application/json\n") || !strings.HasPrefix(body, `{"count":4,`) {
		t.Errorf("-i: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	// A --table path that is not there, or not an array: an error naming
	// it, and nothing on stdout.
	for _, tt := range []struct{ path, want string }{
		{"data.items", `--table data.items: the answer has no key "data" (its keys: "count", "next", "previous", "results")`},
		{"count", "--table count: count is a number, not an array"},
		{".", `--table .: the answer is an object, not an array (its arrays: "results")`},
		{"results.7", `--table results.7: results is an array of 4 elements; "7" is not an index in it`},
	} {
		r = curl("baserow", rows, "--table", tt.path)
		if r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, tt.want) {
			t.Errorf("--table %s: status %d, stdout %q, stderr %q; want 1 and %q", tt.path, r.Code, r.Stdout, r.Stderr, tt.want)
		}
	}

	// A non-2xx answer of the API: its body on stdout, its status on
	// stderr, exit status 1, and no table.
	r = curl("baserow", "/api/database/rows/table/2/", "--table", "results")
	if r.Code != 1 || !strings.Contains(r.Stdout, `"error":"ERROR_TABLE_DOES_NOT_EXIST"`) ||
		!strings.Contains(r.Stderr, "the API of connection baserow answered 404 Not Found") {
		t.Errorf("a table that does not exist: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	// tokenhub's own errors: their message on stderr, nothing on stdout.
	r = curl("nope", rows)
	if r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, `connection "acme/nope" not found (not_found)`) {
		t.Errorf("an unknown connection: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = curl("baserow", "/api/../admin/")
	if r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, "(invalid)") {
		t.Errorf("a path with ..: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	bad := run(t, map[string]string{"TOKENHUB_URL": s.URL(), "TOKENHUB_APP_KEY": "thk_not-a-key"}, "curl", "baserow", rows)
	if bad.Code != 1 || bad.Stdout != "" || !strings.Contains(bad.Stderr, "(unauthorized); check the key") {
		t.Errorf("a wrong app key: status %d, stdout %q, stderr %q", bad.Code, bad.Stdout, bad.Stderr)
	}

	// Usage errors: exit status 2, naming what is wrong.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"baserow", "api/database/rows/table/1/"}, `PATH "api/database/rows/table/1/" must start with "/"`},
		{[]string{"baserow"}, "missing PATH"},
		{[]string{"-H", "X-Broken", "baserow", rows}, `-H: "X-Broken" is not a header in the form 'Name: value'`},
		{[]string{"-H", "Bad Name: v", "baserow", rows}, `-H: "Bad Name: v" is not a header`},
		{[]string{"-H", "Authorization: JWT x", "baserow", rows}, "-H: Authorization carries the app key"},
		{[]string{"-X", "GET /", "baserow", rows}, `-X: "GET /" is not an HTTP method`},
		{[]string{"--table", "a..b", "baserow", rows}, `--table: "a..b" has an empty key`},
		{[]string{"-d", "a", "-d", "b", "baserow", rows}, "-d: given 2 times"},
		{[]string{"-d", "@" + filepath.Join(t.TempDir(), "missing.json"), "baserow", rows}, "-d: open "},
	} {
		r := curl(tt.args...)
		if r.Code != 2 || r.Stdout != "" || !strings.Contains(r.Stderr, tt.want) {
			t.Errorf("curl %q: status %d, stdout %q, stderr %q; want 2 and %q", tt.args, r.Code, r.Stdout, r.Stderr, tt.want)
		}
	}
	if r := run(t, map[string]string{"TOKENHUB_URL": s.URL()}, "curl", "baserow", rows); r.Code != 1 || !strings.Contains(r.Stderr, "set TOKENHUB_APP_KEY") {
		t.Errorf("without an app key: status %d, stderr %q", r.Code, r.Stderr)
	}

	// The help shows the example of the issue.
	if r := run(t, nil, "curl", "--help"); r.Code != 0 || !strings.Contains(r.Stdout, "tokenhub curl baserow '/api/database/rows/table/1/?user_field_names=true' --table results") {
		t.Errorf("curl --help: status %d\n%s", r.Code, r.Stdout)
	}

	// Neither the connection's token nor the app key shows up anywhere.
	tok, err := client.New(s.URL(), app.Key).Token(ctx, "baserow")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range runs {
		noSecrets(t, fmt.Sprintf("run %d", i), r, tok.AccessToken, app.Key)
	}
}

// recorded is a request an upstream received.
type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

// recorder is an API behind tokenhub that logs its users in (each login
// gets a new token) and records every other request it receives.
type recorder struct {
	mu      sync.Mutex
	reqs    []recorded
	tokens  []string
	refused string // the token /once401 refuses
}

func (u *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	defer u.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/login") {
		tok := fmt.Sprintf("rec-token-%d-%d", len(u.tokens)+1, time.Now().UnixNano())
		u.tokens = append(u.tokens, tok)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"expires_in":3600}`, tok)
		return
	}
	u.reqs = append(u.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)})
	switch {
	case strings.HasSuffix(r.URL.Path, "/fail"):
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "boom\n")
	case strings.HasSuffix(r.URL.Path, "/json404"):
		// Shaped and marked like tokenhub's errors, but the upstream's:
		// passed through, without the mark.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set(client.ErrorHeader, "not_found")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"not_found","message":"no such item"}}`)
	case strings.HasSuffix(r.URL.Path, "/once401") && (u.refused == "" || r.Header.Get("X-Api-Key") == u.refused):
		// The first token it sees is refused, as after a revocation upstream.
		u.refused = r.Header.Get("X-Api-Key")
		w.WriteHeader(http.StatusUnauthorized)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"ok":true,"got":%d}`, len(b))
	}
}

func (u *recorder) last(t *testing.T) recorded {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *recorder) secrets() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.tokens...)
}

// TestCurlUpstream sends requests with -X, -d and -H through tokenhub to an
// upstream that records them: they arrive with the method, body and
// headers given, the connection's header, and no app key.
func TestCurlUpstream(t *testing.T) {
	up := &recorder{}
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.admin()
	if _, err := admin.CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	prov := &tokenhub.Provider{
		Name:   "recorder",
		Login:  &tokenhub.Request{URL: "{{.BaseURL}}/login", JSON: map[string]any{"user": "{{.Credentials.user}}"}},
		Header: tokenhub.Header{Name: "X-Api-Key", Value: "Key {{.AccessToken}}"},
	}
	if _, _, err := admin.PutProvider(ctx, prov); err != nil {
		t.Fatal(err)
	}
	cfg := tokenhub.ConnectionConfig{Provider: "recorder", BaseURL: hs.URL + "/base", Credentials: map[string]string{"user": "u"}}
	if _, _, err := admin.PutConnection(ctx, "acme", "rec", &cfg); err != nil {
		t.Fatal(err)
	}
	// A connection whose API cannot be reached: it logs in at the recorder
	// but sends its requests to a closed port.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	prov2 := *prov
	prov2.Name = "recorder-fixed"
	prov2.Login = &tokenhub.Request{URL: hs.URL + "/login", JSON: map[string]any{"user": "{{.Credentials.user}}"}}
	if _, _, err := admin.PutProvider(ctx, &prov2); err != nil {
		t.Fatal(err)
	}
	cfg2 := tokenhub.ConnectionConfig{Provider: "recorder-fixed", BaseURL: closedURL, Credentials: map[string]string{"user": "u"}}
	if _, _, err := admin.PutConnection(ctx, "acme", "gone", &cfg2); err != nil {
		t.Fatal(err)
	}
	app, err := admin.CreateApp(ctx, "acme", "worker", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, admin, "acme", "rec", tokenhub.StateHealthy)
	waitState(t, admin, "acme", "gone", tokenhub.StateHealthy)
	env := map[string]string{"TOKENHUB_URL": s.URL(), "TOKENHUB_APP_KEY": app.Key}
	var runs []result
	curl := func(stdin string, args ...string) result {
		t.Helper()
		r := runIn(t, env, stdin, append([]string{"curl"}, args...)...)
		runs = append(runs, r)
		return r
	}
	// checkSent checks what reached the upstream on every request: the
	// connection's header with a token the upstream issued, and no trace of
	// the app key.
	checkSent := func(what string, got recorded) {
		t.Helper()
		if got.Header.Get("Authorization") != "" {
			t.Errorf("%s: the upstream got an Authorization header", what)
		}
		key := got.Header.Get("X-Api-Key")
		if tok, ok := strings.CutPrefix(key, "Key "); !ok || !strings.HasPrefix(tok, "rec-token-") {
			t.Errorf("%s: the upstream got X-Api-Key %q, want Key <its token>", what, key)
		}
		for name, vs := range got.Header {
			for _, v := range vs {
				if strings.Contains(v, app.Key) {
					t.Errorf("%s: the app key reached the upstream in %s", what, name)
				}
			}
		}
		if strings.Contains(got.Body, app.Key) || strings.Contains(got.Query, app.Key) {
			t.Errorf("%s: the app key reached the upstream", what)
		}
	}

	// -X, -d and repeated -H, with -i.
	r := curl("", "-X", "PUT", "-d", `{"name":"Ada"}`, "-H", "X-Custom: one", "-H", "X-Custom: two",
		"-H", "x-request-id:42", "-i", "rec", "/items/7?x=1&y=a%20b")
	got := up.last(t)
	if r.Code != 0 || got.Method != "PUT" || got.Path != "/base/items/7" || got.Query != "x=1&y=a%20b" || got.Body != `{"name":"Ada"}` {
		t.Fatalf("PUT: status %d, stderr %q; the upstream got %s %s?%s %q", r.Code, r.Stderr, got.Method, got.Path, got.Query, got.Body)
	}
	if ct, custom, id := got.Header.Get("Content-Type"), got.Header.Values("X-Custom"), got.Header.Get("X-Request-Id"); ct != "application/json" ||
		strings.Join(custom, ",") != "one,two" || id != "42" {
		t.Errorf("PUT: the upstream got Content-Type %q, X-Custom %q, X-Request-Id %q", ct, custom, id)
	}
	checkSent("PUT", got)
	if !strings.HasPrefix(r.Stdout, "HTTP/1.1 201 Created\n") || !strings.Contains(r.Stdout, "\nX-Upstream: yes\n") ||
		!strings.HasSuffix(r.Stdout, "\n\n"+`{"ok":true,"got":14}`) {
		t.Errorf("PUT -i: stdout %q", r.Stdout)
	}

	// -d @FILE implies POST; a body that is not JSON goes as a form, as
	// with curl, unless -H says otherwise.
	file := filepath.Join(t.TempDir(), "body.txt")
	writeFile(t, file, "a=1&b=2\n")
	r = curl("", "-d", "@"+file, "rec", "/form")
	got = up.last(t)
	if r.Code != 0 || got.Method != "POST" || got.Body != "a=1&b=2\n" || got.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("-d @FILE: status %d %q; the upstream got %s %q (%s)", r.Code, r.Stderr, got.Method, got.Body, got.Header.Get("Content-Type"))
	}
	checkSent("-d @FILE", got)
	r = curl("", "-d", "@"+file, "-H", "Content-Type: text/plain", "-X", "PATCH", "rec", "/text")
	if got = up.last(t); r.Code != 0 || got.Method != "PATCH" || got.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("-d @FILE -X PATCH -H Content-Type: status %d; the upstream got %s (%s)", r.Code, got.Method, got.Header.Get("Content-Type"))
	}

	// -d @- reads stdin. The upstream refuses the first token once; the
	// body is small enough for tokenhub to send it again after a refresh.
	logins := len(up.secrets())
	r = curl(`[1,2,3]`, "-d", "@-", "rec", "/once401")
	got = up.last(t)
	if r.Code != 0 || r.Stdout != `{"ok":true,"got":7}` || got.Body != "[1,2,3]" || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("-d @- after a 401: status %d, stdout %q, stderr %q; the upstream last got %q", r.Code, r.Stdout, r.Stderr, got.Body)
	}
	if n := len(up.secrets()); n != logins+1 {
		t.Errorf("logins during the 401: %d, want 1", n-logins)
	}

	// A non-2xx answer: its body, exit status 1, the status on stderr.
	r = curl("", "rec", "/fail")
	if r.Code != 1 || r.Stdout != "boom\n" || !strings.Contains(r.Stderr, "the API of connection rec answered 500 Internal Server Error") {
		t.Errorf("a 500: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// An upstream error that looks like tokenhub's is still the upstream's.
	r = curl("", "rec", "/json404")
	if r.Code != 1 || r.Stdout != `{"error":{"code":"not_found","message":"no such item"}}` || !strings.Contains(r.Stderr, "answered 404 Not Found") {
		t.Errorf("an upstream 404: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	// An upstream that cannot be reached: tokenhub's 502, as a message.
	r = curl("", "gone", "/anything")
	if r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, `the upstream of connection "gone" cannot be reached (unavailable)`) {
		t.Errorf("an unreachable upstream: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	secrets := append(up.secrets(), app.Key)
	for i, r := range runs {
		noSecrets(t, fmt.Sprintf("run %d", i), r, secrets...)
	}
}

// TestCurlTableShapes renders arrays of every shape: nested values as
// compact JSON, keys in first-seen order across rows, missing keys empty,
// scalars in a (value) column, control characters escaped; and an array at
// the top of the answer with ".".
func TestCurlTableShapes(t *testing.T) {
	answer := `{"data":{"items":[
		{"id":1,"tags":["a","b"],"owner":{"name":"Ada"},"note":"line1\nline2\tend"},
		{"id":2,"extra":null,"note":"\u001b[31mred"},
		"loose"
	]},"top":[1,2]}`
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/login") {
			io.WriteString(w, `{"access_token":"shape-token"}`)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/top") {
			io.WriteString(w, `[{"k":"v"},{"k":"w"}]`)
			return
		}
		io.WriteString(w, answer)
	}))
	t.Cleanup(hs.Close)
	env := startProxied(t, "shapes", hs.URL)

	r := run(t, env, "curl", "shapes", "/x", "--table", "data.items")
	want := `id  tags       owner           note               extra  (value)
1   ["a","b"]  {"name":"Ada"}  line1\nline2\tend
2                              \u001b[31mred      null
                                                         loose
`
	if r.Code != 0 || r.Stdout != want {
		t.Errorf("--table data.items: status %d, stderr %q\ngot:\n%s\nwant:\n%s", r.Code, r.Stderr, r.Stdout, want)
	}
	r = run(t, env, "curl", "shapes", "/x", "--table", ".data.items.0.tags")
	if r.Code != 0 || r.Stdout != "(value)\na\nb\n" {
		t.Errorf("--table .data.items.0.tags: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = run(t, env, "curl", "shapes", "/top", "--table", ".")
	if r.Code != 0 || r.Stdout != "k\nv\nw\n" {
		t.Errorf("--table . of a top-level array: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = run(t, env, "curl", "shapes", "/top", "--table", "")
	if r.Code != 0 || r.Stdout != "k\nv\nw\n" {
		t.Errorf("--table '' of a top-level array: status %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = run(t, env, "curl", "shapes", "/x", "--table", "data.items.0.owner.name")
	if r.Code != 1 || !strings.Contains(r.Stderr, "--table data.items.0.owner.name: data.items.0.owner.name is a string, not an array") {
		t.Errorf("--table on a string: status %d, stderr %q", r.Code, r.Stderr)
	}
}

// startProxied starts a server with a connection called name, in workspace
// acme, to the API at baseURL, which logs in at baseURL/login and answers
// {"access_token": ...}; and returns the environment of an app of acme.
func startProxied(t *testing.T, name, baseURL string) map[string]string {
	t.Helper()
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.admin()
	if _, err := admin.CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	prov := &tokenhub.Provider{
		Name:   name,
		Login:  &tokenhub.Request{URL: "{{.BaseURL}}/login"},
		Header: tokenhub.Header{Name: "X-Api-Key", Value: "Key {{.AccessToken}}"},
	}
	if _, _, err := admin.PutProvider(ctx, prov); err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.PutConnection(ctx, "acme", name, &tokenhub.ConnectionConfig{Provider: name, BaseURL: baseURL}); err != nil {
		t.Fatal(err)
	}
	app, err := admin.CreateApp(ctx, "acme", "worker", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, admin, "acme", name, tokenhub.StateHealthy)
	return map[string]string{"TOKENHUB_URL": s.URL(), "TOKENHUB_APP_KEY": app.Key}
}

// TestCurlStreams checks that the body is printed as it arrives: the
// upstream sends its first line and then waits, and the first line must
// reach stdout before the upstream is let go.
func TestCurlStreams(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/login") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"stream-token"}`)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	}))
	t.Cleanup(hs.Close)
	t.Cleanup(let) // runs before hs.Close, which waits for the handler
	env := startProxied(t, "stream", hs.URL)

	var out, errb logtest.Buffer
	e := &main.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	done := make(chan int, 1)
	go func() { done <- main.Run(context.Background(), e, []string{"curl", "stream", "/feed"}) }()

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "first\n") {
		if time.Now().After(deadline) {
			let()
			t.Fatalf("the first line did not reach stdout while the upstream held the rest back; stdout %q, stderr %q", out.String(), errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := out.String(); got != "first\n" {
		t.Errorf("before the upstream went on, stdout %q, want only the first line", got)
	}
	let()
	if code := <-done; code != 0 || out.String() != "first\nsecond\n" {
		t.Errorf("curl: status %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if strings.Contains(out.String()+errb.String(), "stream-token") {
		t.Errorf("the token reached the output")
	}
}
