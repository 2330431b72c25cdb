package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/proxy"
)

// seen is one request as an upstream received it.
type seen struct {
	Method, URI, Host string
	Header            http.Header
	Body              []byte
}

// upstream is an httptest server that records every request (reading the
// body whole, so only for small bodies) before answering with reply.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newUpstream(t *testing.T, reply func(w http.ResponseWriter, r *http.Request, n int, body []byte)) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream reading body: %v", err)
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body})
		n := len(u.reqs)
		u.mu.Unlock()
		reply(w, r, n, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

func ok(w http.ResponseWriter, r *http.Request, n int, body []byte) { io.WriteString(w, "ok") }

// env is a proxy behind a stand-in server, with a fake engine.
type env struct {
	tokens *fakeTokens
	front  *httptest.Server
}

func newEnv(t *testing.T, o proxy.Options) *env {
	tokens := newFakeTokens()
	o.Tokens = tokens
	if o.Logger == nil {
		o.Logger = newLogger(t)
	}
	front := httptest.NewServer(front(proxy.New(o)))
	t.Cleanup(front.Close)
	return &env{tokens: tokens, front: front}
}

// do sends method path (with the given app key) through the proxy.
func (e *env) do(t *testing.T, key, method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.front.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := e.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		State   string `json:"state"`
	} `json:"error"`
}

// wantError checks that res is a tokenhub JSON error with status and code
// that holds none of the secrets.
func wantError(t *testing.T, res *http.Response, body []byte, status int, code string, secrets ...string) errorBody {
	t.Helper()
	var e errorBody
	if res.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	if e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("error = %+v, want code %q and a message", e.Error, code)
	}
	// Marked as tokenhub's own, with its code.
	if got := res.Header.Values(client.ErrorHeader); len(got) != 1 || got[0] != code {
		t.Errorf("%s = %q, want exactly %q", client.ErrorHeader, got, code)
	}
	for _, s := range append(secrets, keyWS1, keyWS2, "tok-") {
		if bytes.Contains(body, []byte(s)) {
			t.Errorf("error body holds secret %q: %s", s, body)
		}
	}
	return e
}

func TestForwardsRequestAndResponse(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		w.Header().Set("X-Upstream", "yes")
		// An upstream cannot pass its answers off as tokenhub's errors.
		w.Header().Set(client.ErrorHeader, "not_found")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Set("Content-Type", "application/vnd.test+json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"echo":`+string(body)+`}`)
	})
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "baserow", up.URL+"/api", tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"})

	res, body := e.do(t, keyWS1, "PATCH", "/v1/proxy/baserow/database/rows/table/7/1/?user_field_names=true&a=1&a=2&b=%2F;c",
		strings.NewReader(`{"Name":"x"}`),
		"Content-Type", "application/json",
		"X-App", "kept",
		"Connection", "X-Hop-Named",
		"X-Hop-Named", "dropped",
		"Keep-Alive", "timeout=5",
		"Proxy-Authorization", "Basic c2VjcmV0",
		"X-Forwarded-For", "6.6.6.6",
		"X-Forwarded-Proto", "https",
		"X-Forwarded-Host", "spoofed.example",
		"Forwarded", "for=6.6.6.6",
	)

	if res.StatusCode != http.StatusCreated || string(body) != `{"echo":{"Name":"x"}}` {
		t.Fatalf("got %d %s, want 201 with the upstream's body", res.StatusCode, body)
	}
	if got := res.Header.Get("X-Upstream"); got != "yes" {
		t.Errorf("response X-Upstream = %q, want yes", got)
	}
	if got := res.Header.Values(client.ErrorHeader); got != nil {
		t.Errorf("response %s = %q, want it removed from the upstream's answer", client.ErrorHeader, got)
	}
	if got := res.Header.Values("Set-Cookie"); len(got) != 2 {
		t.Errorf("response Set-Cookie = %q, want both", got)
	}
	if got := res.Header.Get("Content-Type"); got != "application/vnd.test+json" {
		t.Errorf("response Content-Type = %q", got)
	}

	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	checks := []struct{ what, got, want string }{
		{"method", r.Method, "PATCH"},
		{"request URI", r.URI, "/api/database/rows/table/7/1/?user_field_names=true&a=1&a=2&b=%2F;c"},
		{"Host", r.Host, strings.TrimPrefix(up.URL, "http://")},
		{"body", string(r.Body), `{"Name":"x"}`},
		{"Authorization", r.Header.Get("Authorization"), "JWT " + accessToken("baserow", 0)},
		{"Content-Type", r.Header.Get("Content-Type"), "application/json"},
		{"X-App", r.Header.Get("X-App"), "kept"},
		{"X-Hop-Named", r.Header.Get("X-Hop-Named"), ""},
		{"Keep-Alive", r.Header.Get("Keep-Alive"), ""},
		{"Proxy-Authorization", r.Header.Get("Proxy-Authorization"), ""},
		{"Forwarded", r.Header.Get("Forwarded"), ""},
		{"X-Forwarded-For", r.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"), "http"},
		{"X-Forwarded-Host", r.Header.Get("X-Forwarded-Host"), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("upstream %s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if got := r.Header.Values("Authorization"); len(got) != 1 {
		t.Errorf("upstream got %d Authorization headers %q, want exactly ours", len(got), got)
	}
}

// TestHeaderTemplates runs each header template through the proxy and checks
// that the upstream gets exactly the injected header and never the app key.
func TestHeaderTemplates(t *testing.T) {
	cases := []struct {
		header tokenhub.Header
		want   string
	}{
		{tokenhub.Header{}, "Bearer " + accessToken("c", 0)}, // DefaultHeader
		{tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"}, "JWT " + accessToken("c", 0)},
		{tokenhub.Header{Name: "Authorization", Value: "Token {{.AccessToken}}"}, "Token " + accessToken("c", 0)},
		{tokenhub.Header{Name: "X-Api-Key", Value: "{{.AccessToken}}"}, accessToken("c", 0)},
		{tokenhub.Header{Name: "PRIVATE-TOKEN", Value: "{{.AccessToken}}"}, accessToken("c", 0)},
	}
	for _, c := range cases {
		name := c.header.Name + " " + c.header.Value
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t, ok)
			e := newEnv(t, proxy.Options{})
			e.tokens.add(t, "ws1", "c", up.URL, c.header)
			hn := c.header.Name
			if hn == "" {
				hn = "Authorization"
			}
			// The app also tries to set the injected header itself.
			res, _ := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil, hn, "forged-by-app")
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			r := up.requests()[0]
			if got := r.Header.Values(hn); len(got) != 1 || got[0] != c.want {
				t.Errorf("upstream %s = %q, want [%q]", hn, got, c.want)
			}
			if hn != "Authorization" && r.Header.Get("Authorization") != "" {
				t.Errorf("upstream got Authorization %q, want none (it was the app key)", r.Header.Get("Authorization"))
			}
			dump := r.URI + " " + string(r.Body)
			for k, v := range r.Header {
				dump += " " + k + ": " + strings.Join(v, ",")
			}
			if strings.Contains(dump, keyWS1) {
				t.Errorf("the app key reached the upstream: %s", dump)
			}
		})
	}
}

func TestBasePathJoin(t *testing.T) {
	cases := []struct{ base, path, want string }{
		{"/api", "/v1/proxy/c/rows", "/api/rows"},
		{"/api/", "/v1/proxy/c/rows", "/api/rows"},
		{"", "/v1/proxy/c/rows", "/rows"},
		{"/api", "/v1/proxy/c", "/api"},
		{"/api", "/v1/proxy/c/", "/api/"},
		{"/a%20b", "/v1/proxy/c/x%2Fy/z%3F?q=1", "/a%20b/x%2Fy/z%3F?q=1"},
		{"/a%2Fb", "/v1/proxy/c/x", "/a%2Fb/x"},
		{"/a%2Fb/", "/v1/proxy/c/x%2Fy", "/a%2Fb/x%2Fy"},
	}
	for _, c := range cases {
		up := newUpstream(t, ok)
		e := newEnv(t, proxy.Options{})
		e.tokens.add(t, "ws1", "c", up.URL+c.base, tokenhub.Header{})
		res, body := e.do(t, keyWS1, "GET", c.path, nil)
		if res.StatusCode != http.StatusOK {
			t.Errorf("base %q path %q: status %d %s", c.base, c.path, res.StatusCode, body)
			continue
		}
		if got := up.requests()[0].URI; got != c.want {
			t.Errorf("base %q path %q: upstream URI %q, want %q", c.base, c.path, got, c.want)
		}
	}
}

func TestOtherWorkspaceIsNotFound(t *testing.T) {
	up := newUpstream(t, ok)
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
	res, body := e.do(t, keyWS2, "GET", "/v1/proxy/c/x", nil)
	wantError(t, res, body, http.StatusNotFound, tokenhub.ENOTFOUND)
	res, body = e.do(t, keyWS1, "GET", "/v1/proxy/nope/x", nil)
	wantError(t, res, body, http.StatusNotFound, tokenhub.ENOTFOUND)
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

func TestTokenErrors(t *testing.T) {
	up := newUpstream(t, ok)
	cases := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"needs reauth", tokenhub.Errorf(tokenhub.ENEEDSREAUTH, "connection ws1/c needs re-authorisation: invalid_grant"), http.StatusConflict, tokenhub.ENEEDSREAUTH, ""},
		{"unavailable", &tokenhub.Error{Code: tokenhub.EUNAVAILABLE, Message: "provider unreachable", RetryAfter: 30 * time.Second}, http.StatusServiceUnavailable, tokenhub.EUNAVAILABLE, "30"},
		{"unavailable without hint", tokenhub.Errorf(tokenhub.EUNAVAILABLE, "provider unreachable"), http.StatusServiceUnavailable, tokenhub.EUNAVAILABLE, "5"},
		{"not found", tokenhub.Errorf(tokenhub.ENOTFOUND, "connection ws1/c not found"), http.StatusNotFound, tokenhub.ENOTFOUND, ""},
		{"internal", io.ErrUnexpectedEOF, http.StatusInternalServerError, tokenhub.EINTERNAL, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, proxy.Options{})
			e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{}).tokenErr = c.err
			res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
			eb := wantError(t, res, body, c.status, c.code)
			if got := res.Header.Get("Retry-After"); got != c.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, c.retryAfter)
			}
			if c.code == tokenhub.ENEEDSREAUTH && eb.Error.State != string(tokenhub.StateNeedsReauth) {
				t.Errorf("needs_reauth error state = %q, want %q", eb.Error.State, tokenhub.StateNeedsReauth)
			}
			if c.code == tokenhub.EINTERNAL && eb.Error.Message != "internal error" {
				t.Errorf("internal error message = %q, want it hidden", eb.Error.Message)
			}
		})
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

func TestNoBaseURL(t *testing.T) {
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", "", tokenhub.Header{})
	res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
	wantError(t, res, body, http.StatusBadRequest, tokenhub.EINVALID)
}

func TestAllowlist(t *testing.T) {
	up := newUpstream(t, ok)
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{},
		tokenhub.AllowRule{PathPrefix: "/api/database/rows", Methods: []string{"get", "HEAD"}},
		tokenhub.AllowRule{PathPrefix: "/api/user/"},
	)
	cases := []struct {
		method, path string
		allowed      bool
	}{
		{"GET", "/api/database/rows", true},
		{"GET", "/api/database/rows/", true},
		{"GET", "/api/database/rows/table/7/?size=1", true},
		{"HEAD", "/api/database/rows/table/7/", true},
		{"POST", "/api/database/rows/table/7/", false},
		{"DELETE", "/api/database/rows/table/7/1/", false},
		{"GET", "/api/database/rowsX", false},
		{"GET", "/api/database", false},
		{"GET", "/api/database%2Frows/table/7/", false},
		{"GET", "/", false},
		{"DELETE", "/api/user/1", true},
		{"POST", "/api/user", true},
		{"GET", "/api/users", false},
	}
	want := 0
	for _, c := range cases {
		res, body := e.do(t, keyWS1, c.method, "/v1/proxy/c"+c.path, nil)
		if c.allowed {
			want++
			if res.StatusCode != http.StatusOK {
				t.Errorf("%s %s: status %d %s, want 200", c.method, c.path, res.StatusCode, body)
			}
			continue
		}
		if c.method == "HEAD" {
			continue
		}
		wantError(t, res, body, http.StatusForbidden, tokenhub.EFORBIDDEN)
	}
	if got := len(up.requests()); got != want {
		t.Errorf("upstream saw %d requests, want %d (the allowed ones)", got, want)
	}
}

func TestUnreachableUpstreamIs502(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more: connection refused

	e := newEnv(t, proxy.Options{DialTimeout: 2 * time.Second})
	e.tokens.add(t, "ws1", "c", "http://"+addr+"/api", tokenhub.Header{})
	res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
	wantError(t, res, body, http.StatusBadGateway, tokenhub.EUNAVAILABLE)
}

func TestHangingUpstreamIs504(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	e := newEnv(t, proxy.Options{ResponseHeaderTimeout: 50 * time.Millisecond})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{Name: "X-Api-Key", Value: "{{.AccessToken}}"})
	res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/slow", nil)
	wantError(t, res, body, http.StatusGatewayTimeout, tokenhub.EUNAVAILABLE)
	if n := len(up.requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

// TestUpstreamBrokenAnswer: an upstream that closes the connection without
// answering is a 502.
func TestUpstreamBrokenAnswer(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		c.Close()
	})
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
	res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
	wantError(t, res, body, http.StatusBadGateway, tokenhub.EUNAVAILABLE)
}

// TestTLS: an app on HTTPS gets X-Forwarded-Proto https, and an https
// upstream works with a transport that trusts it.
func TestTLS(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto")+" "+r.Header.Get("Authorization"))
	}))
	defer up.Close()
	tokens := newFakeTokens()
	tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
	h := proxy.New(proxy.Options{Tokens: tokens, Transport: up.Client().Transport, Logger: newLogger(t)})
	fr := httptest.NewTLSServer(front(h))
	defer fr.Close()
	req, _ := http.NewRequest("GET", fr.URL+"/v1/proxy/c/x", nil)
	req.Header.Set("Authorization", "Bearer "+keyWS1)
	res, err := fr.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if want := "https Bearer " + accessToken("c", 0); res.StatusCode != http.StatusOK || string(b) != want {
		t.Errorf("got %d %q, want 200 %q", res.StatusCode, b, want)
	}
}
