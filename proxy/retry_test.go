package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/proxy"
)

// rejectOld is an upstream that answers 401 unless it sees the token of the
// generation after the first one, as an API does after revoking a token.
func rejectOld(w http.ResponseWriter, r *http.Request, n int, body []byte) {
	if r.Header.Get("Authorization") != "Bearer "+accessToken("c", 1) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"ERROR_INVALID_ACCESS_TOKEN"}`)
		return
	}
	w.Write(append([]byte("got:"), body...))
}

func TestRetryOn401(t *testing.T) {
	cases := []struct {
		name, method string
		body         []byte
	}{
		{"no body", "GET", nil},
		{"small body", "POST", []byte(`{"Name":"row"}`)},
		{"body of exactly 1 MiB", "PUT", bytes.Repeat([]byte("b"), proxy.DefaultMaxReplayBody)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, rejectOld)
			e := newEnv(t, proxy.Options{})
			e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
			var body io.Reader
			if c.body != nil {
				body = bytes.NewReader(c.body)
			}
			res, got := e.do(t, keyWS1, c.method, "/v1/proxy/c/rows", body)
			if res.StatusCode != http.StatusOK || string(got) != "got:"+string(c.body) {
				t.Fatalf("got %d %.60q, want 200 from the retry", res.StatusCode, got)
			}
			if n := e.tokens.refreshCalls.Load(); n != 1 {
				t.Errorf("%d refreshes, want exactly 1", n)
			}
			reqs := up.requests()
			if len(reqs) != 2 {
				t.Fatalf("upstream saw %d requests, want exactly 2 (the first and one retry)", len(reqs))
			}
			for i, r := range reqs {
				if r.Method != c.method || !bytes.Equal(r.Body, c.body) {
					t.Errorf("attempt %d: %s with %d body bytes, want %s with the app's %d", i, r.Method, len(r.Body), c.method, len(c.body))
				}
			}
			if got, want := reqs[1].Header.Get("Authorization"), "Bearer "+accessToken("c", 1); got != want {
				t.Errorf("retry Authorization = %q, want the refreshed %q", got, want)
			}
		})
	}
}

// TestRetry401AgainPassesThrough: when the refreshed token is refused too,
// the second 401 reaches the app unchanged, after exactly one refresh and one
// retry, and the event is recorded.
func TestRetry401AgainPassesThrough(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		w.Header().Set(client.ErrorHeader, "unauthorized") // not the upstream's to set
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "denied")
	})
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
	res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
	if res.StatusCode != http.StatusUnauthorized || string(body) != "denied" || res.Header.Get("WWW-Authenticate") != "Bearer" ||
		res.Header.Get(client.ErrorHeader) != "" {
		t.Errorf("got %d %q %v, want the upstream's 401 without %s", res.StatusCode, body, res.Header, client.ErrorHeader)
	}
	if n := e.tokens.refreshCalls.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if n := len(up.requests()); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
	if ev := e.tokens.recorded(); len(ev) != 1 || ev[0].typ != tokenhub.EventUnauthorized || ev[0].ws != "ws1" || ev[0].name != "c" {
		t.Errorf("events = %+v, want one %s for ws1/c", ev, tokenhub.EventUnauthorized)
	}
}

// TestNoReplay401PassesThrough: a body over the replay limit, or of unknown
// length, is streamed once; its 401 goes to the app without a refresh and
// is recorded.
func TestNoReplay401PassesThrough(t *testing.T) {
	big := bytes.Repeat([]byte("x"), proxy.DefaultMaxReplayBody+1)
	cases := []struct {
		name string
		body func() io.Reader
		size int
	}{
		{"over 1 MiB", func() io.Reader { return bytes.NewReader(big) }, len(big)},
		// A reader of unknown type makes net/http send chunked: unknown length.
		{"unknown length", func() io.Reader { return io.MultiReader(strings.NewReader("small")) }, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, rejectOld)
			e := newEnv(t, proxy.Options{})
			e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
			res, body := e.do(t, keyWS1, "POST", "/v1/proxy/c/upload", c.body())
			if res.StatusCode != http.StatusUnauthorized || string(body) != `{"error":"ERROR_INVALID_ACCESS_TOKEN"}` {
				t.Errorf("got %d %q, want the upstream's 401 unchanged", res.StatusCode, body)
			}
			if n := e.tokens.refreshCalls.Load(); n != 0 {
				t.Errorf("%d refreshes, want 0", n)
			}
			reqs := up.requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream saw %d requests, want 1", len(reqs))
			}
			if got, want := len(reqs[0].Body), c.size; got != want {
				t.Errorf("upstream got %d body bytes, want %d", got, want)
			}
			ev := e.tokens.recorded()
			if len(ev) != 1 || ev[0].typ != tokenhub.EventUnauthorized || !strings.Contains(ev[0].msg, "401") {
				t.Errorf("events = %+v, want one %s", ev, tokenhub.EventUnauthorized)
			}
		})
	}
}

// TestRefreshAfter401Fails: when the forced refresh fails, the app gets the
// engine's error (here: the connection needs re-authorisation).
func TestRefreshAfter401Fails(t *testing.T) {
	up := newUpstream(t, rejectOld)
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{}).refreshErr =
		tokenhub.Errorf(tokenhub.ENEEDSREAUTH, "connection ws1/c needs re-authorisation")
	res, body := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
	wantError(t, res, body, http.StatusConflict, tokenhub.ENEEDSREAUTH)
	if n := len(up.requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

// TestTokenAlreadyReplaced: when another request already refreshed the token
// while this one was in flight, the retry uses the new token without forcing
// yet another refresh.
func TestTokenAlreadyReplaced(t *testing.T) {
	var e *env
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if n == 1 {
			// Someone else refreshes while this request is at the upstream.
			e.tokens.set("ws1", "c", func(c *fakeConn) { c.gen = 1 })
		}
		rejectOld(w, r, n, body)
	})
	e = newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
	res, _ := e.do(t, keyWS1, "GET", "/v1/proxy/c/x", nil)
	if res.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", res.StatusCode)
	}
	if n := e.tokens.refreshCalls.Load(); n != 0 {
		t.Errorf("%d forced refreshes, want 0: the token had already changed", n)
	}
	if n := len(up.requests()); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
}
