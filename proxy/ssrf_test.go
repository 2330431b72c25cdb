package proxy_test

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/proxy"
)

// recordingTransport remembers the host of every request it is asked to send.
type recordingTransport struct {
	base  http.RoundTripper
	mu    sync.Mutex
	hosts []string
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.hosts = append(rt.hosts, r.URL.Host)
	rt.mu.Unlock()
	return rt.base.RoundTrip(r)
}

func (rt *recordingTransport) seen() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]string(nil), rt.hosts...)
}

// TestSSRF tries every way out of the connection's base URL and checks that
// each is refused with 400 before anything is sent: the upstream sees
// nothing, the "evil" server sees nothing, and the transport is never asked
// to contact any host.
func TestSSRF(t *testing.T) {
	var evilHits int
	var mu sync.Mutex
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		evilHits++
		mu.Unlock()
	}))
	defer evil.Close()
	eh := strings.TrimPrefix(evil.URL, "http://") // 127.0.0.1:port

	up := newUpstream(t, ok)
	rt := &recordingTransport{base: &http.Transport{}}
	tokens := newFakeTokens()
	tokens.add(t, "ws1", "c", up.URL+"/api/v1", tokenhub.Header{})
	h := proxy.New(proxy.Options{Tokens: tokens, Transport: rt, Logger: newLogger(t)})

	paths := []string{
		// dot segments, raw and percent-encoded
		"/..", "/../secret", "/a/../../secret", "/a/..", "/./x", "/.",
		"/%2e%2e/secret", "/%2E%2e/secret", "/%2e%2E", "/.%2e/secret", "/%2e./secret", "/a/%2e",
		"/..%2fsecret", "/..%2Fsecret", "/a%2f..%2f..%2fsecret", "/%2f../secret", "/..;/secret", "/%2e%2e;x=1/secret",
		"/..\\secret",
		// //host
		"//" + eh + "/x", "/%2f" + eh + "/x", "/%2F%2F" + eh + "/x", "/a//" + eh,
		// @ tricks
		"@" + eh + "/x", "/@" + eh + "/x", "/%40" + eh + "/x", "/x%40" + eh, "/user:pass@" + eh,
		// absolute URLs
		"http://" + eh + "/x", "https://" + eh, "/http://" + eh + "/x", "/http:%2f%2f" + eh + "/x", "http:" + eh, "x",
		// backslashes
		"/\\" + eh + "/x", "\\\\" + eh, "/%5c" + eh + "/x", "/%5C%5C" + eh, "/a\\b",
		// CR, LF and other control characters
		"/x\r\nHost: " + eh, "/x%0d%0aHost:%20" + eh, "/x%0D%0A%0D%0AGET%20/", "/x%0aX:y", "/x%0d", "/x%00", "/x%09y", "/x\x7f",
		// broken escapes
		"/%zz", "/%2", "/x%",
	}
	for _, p := range paths {
		t.Run(strings.NewReplacer("\r", "CR", "\n", "LF").Replace(p), func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("GET", "/v1/proxy/c/x", nil)
			r.Header.Set("Authorization", "Bearer "+keyWS1)
			h.ServeProxy(w, r, "ws1", "c", p)
			res := w.Result()
			wantError(t, res, w.Body.Bytes(), http.StatusBadRequest, tokenhub.EINVALID)
		})
	}

	// The same over the wire, through a front that passes the escaped path
	// as a server would, for every form a client can put in a request line.
	srv := httptest.NewServer(front(h))
	defer srv.Close()
	for _, p := range paths {
		if strings.ContainsAny(p, "\r\n\x7f ") || !strings.HasPrefix(p, "/") {
			continue // not a valid request target
		}
		status, body := rawGet(t, srv.Listener.Addr().String(), "/v1/proxy/c"+p)
		var e errorBody
		// Go's server itself refuses some targets with a plain 400.
		if status != http.StatusBadRequest || (json.Unmarshal([]byte(body), &e) == nil && e.Error.Code != tokenhub.EINVALID) {
			t.Errorf("GET /v1/proxy/c%s over the wire: %d %s, want 400", p, status, body)
		}
	}

	if n := len(up.requests()); n != 0 {
		var uris []string
		for _, r := range up.requests() {
			uris = append(uris, r.URI)
		}
		t.Errorf("upstream saw %d requests, want 0: %q", n, uris)
	}
	mu.Lock()
	if evilHits != 0 {
		t.Errorf("evil server was contacted %d times", evilHits)
	}
	mu.Unlock()
	if hosts := rt.seen(); len(hosts) != 0 {
		t.Errorf("transport was asked to contact %q, want nothing", hosts)
	}

	// The control: ordinary paths, including encoded characters that are
	// harmless inside a segment, do reach the upstream, and only it.
	for _, p := range []string{"/rows/", "/a%2Fb/c", "/file.json", "/..x/x..", "/a;b=c", "/%2e%2e%2e", "/caf%C3%A9"} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/v1/proxy/c/x", nil)
		h.ServeProxy(w, r, "ws1", "c", p)
		if w.Code != http.StatusOK {
			t.Errorf("control %q: %d %s, want 200", p, w.Code, w.Body)
		}
	}
	for _, host := range rt.seen() {
		if host != strings.TrimPrefix(up.URL, "http://") {
			t.Errorf("transport contacted %q, want only the upstream", host)
		}
	}
	for _, r := range up.requests() {
		if !strings.HasPrefix(r.URI, "/api/v1/") {
			t.Errorf("upstream got %q, outside the base path /api/v1", r.URI)
		}
	}
}

// rawGet writes a GET for target byte for byte (no client-side escaping or
// cleaning) and returns the status and body.
func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET " + target + " HTTP/1.1\r\nHost: tokenhub\r\nAuthorization: Bearer " + keyWS1 + "\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", target, err)
	}
	defer res.Body.Close()
	var b strings.Builder
	bufio.NewReader(res.Body).WriteTo(&b)
	return res.StatusCode, b.String()
}
