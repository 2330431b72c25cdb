package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/poll"
)

// TestTransportInjectsHeader: requests to the demo's rows endpoint carry
// Authorization: JWT <token>, the demo accepts them, the caller's request
// is left alone, and all of them together cost one call to tokenhub.
func TestTransportInjectsHeader(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	seen := &headerRecorder{base: http.DefaultTransport}
	hc := &http.Client{Transport: client.TransportWithClock(s.App, "baserow", seen, s.SDK)}
	const requests = 20
	for i := range requests {
		req, err := http.NewRequest(http.MethodGet, s.DemoURL+"/api/database/rows/table/1/?user_field_names=true", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer the-caller's-own")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rows struct {
			Count   int              `json:"count"`
			Results []map[string]any `json:"results"`
		}
		err = json.NewDecoder(resp.Body).Decode(&rows)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || rows.Count != 4 || rows.Results[0]["Name"] != "Ada Lovelace" {
			t.Fatalf("request %d: %d %v %+v", i, resp.StatusCode, err, rows)
		}
		if got := req.Header.Get("Authorization"); got != "Bearer the-caller's-own" {
			t.Fatalf("the caller's request was modified: Authorization %q", got)
		}
	}
	tok, err := s.App.Token(context.Background(), "baserow")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range seen.all() {
		if h != "JWT "+tok.AccessToken {
			t.Fatalf("the upstream saw Authorization %.12q…, want JWT <the connection's token>", h)
		}
	}
	if got := s.Demo.Counts().Rows; got != requests {
		t.Fatalf("demo served %d row requests, want %d", got, requests)
	}
	if got := s.Calls.token.Load(); got != 2 { // one by the Transport, one by the check above
		t.Fatalf("%d token calls for %d requests, want 1 (+1 by the test)", got-1, requests)
	}
}

// headerRecorder records the Authorization header of each request it sends.
type headerRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	auth []string
}

func (h *headerRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.auth = append(h.auth, r.Header.Get("Authorization"))
	h.mu.Unlock()
	return h.base.RoundTrip(r)
}

func (h *headerRecorder) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.auth...)
}

// refusingUpstream is an API that answers 401 to requests carrying a token
// it refuses, and 200 with what it received otherwise. It records every
// request's Authorization header and body.
type refusingUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	refused map[string]bool // Authorization values answered 401
	always  bool            // answer 401 to everything
	got     []upstreamRequest
}

type upstreamRequest struct {
	auth string
	body []byte
}

func newRefusingUpstream(t *testing.T) *refusingUpstream {
	u := &refusingUpstream{refused: map[string]bool{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		auth := r.Header.Get("Authorization")
		u.mu.Lock()
		u.got = append(u.got, upstreamRequest{auth, body})
		refuse := u.always || u.refused[auth]
		u.mu.Unlock()
		if refuse {
			w.Header().Set("WWW-Authenticate", `JWT realm="api"`)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"ERROR_INVALID_ACCESS_TOKEN"}`)
			return
		}
		fmt.Fprintf(w, "ok %d", len(body))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *refusingUpstream) refuse(auth string) {
	u.mu.Lock()
	u.refused[auth] = true
	u.mu.Unlock()
}

func (u *refusingUpstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.got...)
}

func (u *refusingUpstream) reset() {
	u.mu.Lock()
	u.got = nil
	u.mu.Unlock()
}

// onlyReader hides a reader's type, so that http.NewRequest cannot set
// GetBody or ContentLength: a streamed body of unknown length.
type onlyReader struct{ io.Reader }

// TestTransportRetriesOnce: when the upstream refuses the token, the
// Transport forces one refresh and sends the request once more with the new
// token and the same body, when the body can be replayed; otherwise the 401
// reaches the caller with no refresh.
func TestTransportRetriesOnce(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	up := newRefusingUpstream(t)
	hc := &http.Client{Transport: client.TransportWithClock(s.App, "baserow", nil, s.SDK)}
	small := bytes.Repeat([]byte("a"), 4096)
	atLimit := bytes.Repeat([]byte("m"), client.MaxReplayBody)
	big := bytes.Repeat([]byte("b"), client.MaxReplayBody+1)

	cases := []struct {
		name   string
		body   func() io.Reader // nil: no body
		sent   []byte
		length int64 // ContentLength to set when > 0
		replay bool
	}{
		{name: "no body", replay: true},
		{name: "GetBody", body: func() io.Reader { return bytes.NewReader(small) }, sent: small, replay: true},
		{name: "streamed small", body: func() io.Reader { return onlyReader{bytes.NewReader(small)} }, sent: small, replay: true},
		{name: "streamed 1MiB", body: func() io.Reader { return onlyReader{bytes.NewReader(atLimit)} }, sent: atLimit, replay: true},
		{name: "streamed over 1MiB", body: func() io.Reader { return onlyReader{bytes.NewReader(big)} }, sent: big, replay: false},
		{name: "sized over 1MiB", body: func() io.Reader { return onlyReader{bytes.NewReader(big)} }, sent: big, length: int64(len(big)), replay: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The Transport forces at most one refresh every 5 s.
			s.SDK.Advance(5 * time.Second)
			old, err := s.App.Token(context.Background(), "baserow")
			if err != nil {
				t.Fatal(err)
			}
			up.refuse(old.Header.Value)
			up.reset()
			refreshes := s.Calls.refresh.Load()

			method, body := http.MethodGet, io.Reader(nil)
			if tc.body != nil {
				method, body = http.MethodPost, tc.body()
			}
			req, err := http.NewRequest(method, up.URL+"/api/things/", body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.length > 0 {
				req.ContentLength = tc.length
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			got := up.requests()
			if !tc.replay {
				if resp.StatusCode != http.StatusUnauthorized || len(got) != 1 {
					t.Fatalf("got %d after %d requests; want the 401 passed through after 1", resp.StatusCode, len(got))
				}
				if !bytes.Equal(got[0].body, tc.sent) {
					t.Fatalf("the upstream got %d bytes, want %d", len(got[0].body), len(tc.sent))
				}
				if n := s.Calls.refresh.Load() - refreshes; n != 0 {
					t.Fatalf("%d refreshes for a request that cannot be retried, want 0", n)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || string(answer) != fmt.Sprintf("ok %d", len(tc.sent)) {
				t.Fatalf("got %d %q, want 200 after the retry", resp.StatusCode, answer)
			}
			if n := s.Calls.refresh.Load() - refreshes; n != 1 {
				t.Fatalf("%d forced refreshes, want 1", n)
			}
			if len(got) != 2 {
				t.Fatalf("the upstream got %d requests, want 2", len(got))
			}
			if got[0].auth != old.Header.Value || got[1].auth == old.Header.Value || !strings.HasPrefix(got[1].auth, "JWT ") {
				t.Fatal("the retry did not carry a new JWT")
			}
			for i, r := range got {
				if !bytes.Equal(r.body, tc.sent) {
					t.Fatalf("attempt %d sent %d bytes, want %d", i+1, len(r.body), len(tc.sent))
				}
			}
		})
	}

	t.Run("refused again", func(t *testing.T) {
		up.mu.Lock()
		up.always = true
		up.mu.Unlock()
		defer func() { up.mu.Lock(); up.always = false; up.mu.Unlock() }()
		s.SDK.Advance(5 * time.Second)
		refreshes := s.Calls.refresh.Load()
		post := func() int {
			up.reset()
			resp, err := hc.Post(up.URL+"/api/things/", "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := post(); code != http.StatusUnauthorized || len(up.requests()) != 2 || s.Calls.refresh.Load()-refreshes != 1 {
			t.Fatalf("got %d after %d requests and %d refreshes; want the second 401 after exactly one retry",
				code, len(up.requests()), s.Calls.refresh.Load()-refreshes)
		}
		// An API that refuses everything does not get a refresh per
		// request: within 5 s of a forced refresh, a 401 passes through.
		for range 3 {
			if code := post(); code != http.StatusUnauthorized || len(up.requests()) != 1 || s.Calls.refresh.Load()-refreshes != 1 {
				t.Fatalf("got %d after %d requests and %d refreshes; want the 401 passed through with no refresh",
					code, len(up.requests()), s.Calls.refresh.Load()-refreshes)
			}
			s.SDK.Advance(time.Second)
		}
		s.SDK.Advance(2 * time.Second)
		if code := post(); code != http.StatusUnauthorized || len(up.requests()) != 2 || s.Calls.refresh.Load()-refreshes != 2 {
			t.Fatalf("5s later: got %d after %d requests and %d refreshes; want one more refresh and retry",
				code, len(up.requests()), s.Calls.refresh.Load()-refreshes)
		}
	})
}

// TestTransportConcurrent401: many requests refused with the same token
// share one forced refresh, and all succeed with the new token.
func TestTransportConcurrent401(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	up := newRefusingUpstream(t)
	hc := &http.Client{Transport: client.TransportWithClock(s.App, "baserow", nil, s.SDK)}
	old, err := s.App.Token(context.Background(), "baserow")
	if err != nil {
		t.Fatal(err)
	}
	up.refuse(old.Header.Value)
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range 32 {
		wg.Go(func() {
			resp, err := hc.Get(up.URL + "/api/things/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 32 {
		t.Fatalf("%d of 32 requests succeeded", ok.Load())
	}
	if n := s.Calls.refresh.Load(); n != 1 {
		t.Fatalf("%d forced refreshes for 32 requests refused with one token, want 1", n)
	}
}

// closeRecorder is a request body that records whether it was closed.
type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error { c.closed.Store(true); return nil }

// TestTransportErrors: when no token can be had, the request is not sent,
// its body is closed, and the error is the *client.Error with the server's
// code, also through http.Client's *url.Error.
func TestTransportErrors(t *testing.T) {
	s := newSDKStack(t, time.Minute)
	up := newRefusingUpstream(t)

	body := &closeRecorder{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, up.URL, body)
	_, err := (&http.Client{Transport: client.TransportWithClock(s.App, "no-such", nil, s.SDK)}).Do(req)
	var e *client.Error
	if !errors.As(err, &e) || !errors.Is(err, client.ErrNotFound) || e.Status != http.StatusNotFound {
		t.Fatalf("unknown connection: err = %v, want ErrNotFound", err)
	}
	if !body.closed.Load() || len(up.requests()) != 0 {
		t.Fatalf("body closed %v, upstream requests %d; want closed and none", body.closed.Load(), len(up.requests()))
	}

	// A connection whose credentials stop working: the cached token still
	// goes out, the upstream refuses it, and the forced refresh says
	// needs_reauth.
	s.putConnection(t, "flaky", demo.DefaultPassword)
	hc := &http.Client{Transport: client.TransportWithClock(s.App, "flaky", nil, s.SDK)}
	resp, err := hc.Get(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.putConnection(t, "flaky", "a-wrong-password-5678")
	poll.Until(t, "the connection to need re-authorisation", func() bool {
		v, err := s.Admin.Connection(context.Background(), "acme", "flaky")
		return err == nil && v.State == tokenhub.StateNeedsReauth
	})
	up.mu.Lock()
	up.always = true
	up.mu.Unlock()
	_, err = hc.Get(up.URL)
	e = nil
	if !errors.As(err, &e) || !errors.Is(err, client.ErrNeedsReauth) || e.State != tokenhub.StateNeedsReauth {
		t.Fatalf("err = %v, want ErrNeedsReauth", err)
	}
	if strings.Contains(err.Error(), "a-wrong-password-5678") {
		t.Fatal("the error holds the password")
	}
	// The refused token is dropped: the next request is not sent, and
	// fails with the same error.
	up.reset()
	_, err = hc.Get(up.URL)
	if !errors.Is(err, client.ErrNeedsReauth) || len(up.requests()) != 0 {
		t.Fatalf("next request: err = %v after %d upstream requests; want ErrNeedsReauth and none", err, len(up.requests()))
	}
}

// TestTransportDefaultBase: a nil base sends through http.DefaultTransport.
func TestTransportDefaultBase(t *testing.T) {
	s := newSDKStack(t, time.Hour)
	hc := &http.Client{Transport: s.App.Transport("baserow", nil)}
	resp, err := hc.Get(s.DemoURL + "/api/database/rows/table/1/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestHTTPClientRedirects: HTTPClient follows a redirect within the origin
// with the header, and does not follow one to another server, which never
// sees the token.
func TestHTTPClientRedirects(t *testing.T) {
	s := newSDKStack(t, time.Hour)
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/rows", http.StatusFound)
		case "/away":
			http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
		case "/rows":
			if !strings.HasPrefix(r.Header.Get("Authorization"), "JWT ") {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			fmt.Fprint(w, "rows")
		}
	}))
	defer api.Close()
	hc := s.App.HTTPClient("baserow")

	resp, err := hc.Get(api.URL + "/moved")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "rows" {
		t.Fatalf("same-origin redirect: %d %q", resp.StatusCode, b)
	}

	resp, err = hc.Get(api.URL + "/away")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || elsewhere.Load() != 0 {
		t.Fatalf("cross-origin redirect: status %d, other server hit %d times; want 302 and 0", resp.StatusCode, elsewhere.Load())
	}
}
