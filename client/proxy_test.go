package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/tokenhub/tokenhub/demo"
)

// readAll reads and closes an answer's body.
func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestProxyDemo reads the demo Baserow's rows through tokenhub's proxy with
// Proxy, and meets the API's own errors and tokenhub's: ErrorFrom tells
// them apart by the X-Tokenhub-Error header, whatever their bodies.
func TestProxyDemo(t *testing.T) {
	s := newSDKStack(t, time.Hour)
	ctx := context.Background()

	// The rows, with the query kept: user_field_names=true makes the demo
	// name the fields.
	resp, err := s.App.Proxy(ctx, "baserow", http.MethodGet, "/api/database/rows/table/1/?user_field_names=true", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := client.ErrorFrom(resp); ok || e != nil {
		t.Errorf("ErrorFrom(200 from the API) = %v, %v; want nil, false", e, ok)
	}
	body := readAll(t, resp) // ErrorFrom left the body alone
	var page struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &page) != nil || page.Count != 4 ||
		page.Results[0]["Name"] != "Ada Lovelace" {
		t.Fatalf("rows: %d %s; want the demo's 4 rows by field name", resp.StatusCode, body)
	}

	// The API's own error passes through, and is not tokenhub's.
	resp, err = s.App.Proxy(ctx, "baserow", "", "/api/database/rows/table/2/", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, mine := client.ErrorFrom(resp)
	if body := readAll(t, resp); resp.StatusCode != http.StatusNotFound || mine || !strings.Contains(body, "ERROR_TABLE_DOES_NOT_EXIST") {
		t.Errorf("a missing table: %d %s, tokenhub's: %v; want the API's 404", resp.StatusCode, body, mine)
	}

	// tokenhub's own errors.
	s.putConnection(t, "broken", "wrong-password-123")
	wrongKey := "thk_not-the-key-0123456789"
	for _, tc := range []struct {
		name      string
		c         *client.Client
		conn      string
		path      string
		status    int
		sentinel  error
		inMessage string
	}{
		{"unknown connection", s.App, "nope", "/api/", 404, client.ErrNotFound, `"acme/nope"`},
		{"a path with ..", s.App, "baserow", "/api/../admin/", 400, client.ErrInvalid, ""},
		{"a wrong key", client.New(s.URL, wrongKey), "baserow", "/api/", 401, client.ErrUnauthorized, ""},
		{"needs re-authorisation", s.App, "broken", "/api/", 409, client.ErrNeedsReauth, "broken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.c.Proxy(ctx, tc.conn, http.MethodGet, tc.path, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			e, ok := client.ErrorFrom(resp)
			if !ok || e == nil {
				t.Fatalf("%d %v: ErrorFrom = %v, %v; want tokenhub's error", resp.StatusCode, resp.Header, e, ok)
			}
			if e.Status != tc.status || resp.StatusCode != tc.status || !errors.Is(e, tc.sentinel) ||
				e.Message == "" || !strings.Contains(e.Message, tc.inMessage) {
				t.Errorf("ErrorFrom = %+v; want status %d, %v and a message naming %q", e, tc.status, tc.sentinel, tc.inMessage)
			}
			if tc.sentinel == client.ErrNeedsReauth && e.State != tokenhub.StateNeedsReauth {
				t.Errorf("needs_reauth error with state %q", e.State)
			}
			if strings.Contains(e.Error(), s.AppKey) || strings.Contains(e.Error(), wrongKey) {
				t.Errorf("the error holds a key: %v", e)
			}
		})
	}

	// Mistakes found before anything is sent.
	never := client.New(s.URL, s.AppKey, client.WithHTTPClient(&http.Client{Transport: refuseAll{t}}))
	for _, tc := range []struct{ conn, path, want string }{
		{"baserow", "api/database/rows/table/1/", `path: "api/database/rows/table/1/" must start with "/"`},
		{"baserow", "", `path: "" must start with "/"`},
		{"Not A Name", "/api/", `conn: "Not A Name" is not a connection name`},
	} {
		body := &closeRecorder{Reader: strings.NewReader("x")}
		resp, err := never.Proxy(ctx, tc.conn, http.MethodPost, tc.path, body, nil)
		if resp != nil || tokenhub.ErrorCode(err) != tokenhub.EINVALID || tokenhub.ErrorMessage(err) != tc.want {
			t.Errorf("Proxy(%q, %q) = %v, %v; want an invalid error %q", tc.conn, tc.path, resp, err, tc.want)
		}
		if !body.closed.Load() {
			t.Errorf("Proxy(%q, %q) did not close the body", tc.conn, tc.path)
		}
	}

	// tokenhub cannot be reached: an error that holds no key.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	_, err = client.New(down, s.AppKey).Proxy(ctx, "baserow", "GET", "/api/?key=none", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "baserow") || strings.Contains(err.Error(), s.AppKey) {
		t.Errorf("tokenhub down: %v; want an error naming the connection and no key", err)
	}
}

// refuseAll is a RoundTripper that fails the test if anything is sent.
type refuseAll struct{ t *testing.T }

func (r refuseAll) RoundTrip(req *http.Request) (*http.Response, error) {
	r.t.Errorf("%s %s was sent", req.Method, req.URL.Path)
	return nil, errors.New("not sent")
}

// proxied is a request as the API behind tokenhub received it.
type proxied struct {
	method, uri string
	header      http.Header
	body        []byte
}

// proxiedAPI is an API behind tokenhub, under the base path /base. It
// records each request, answers 401 to the tokens it is told to refuse, and
// otherwise 200 with the length of the body it got; /base/moved redirects
// and /base/forged answers an error dressed as tokenhub's.
type proxiedAPI struct {
	*httptest.Server
	mu      sync.Mutex
	refused map[string]bool
	got     []proxied
}

func newProxiedAPI(t *testing.T) *proxiedAPI {
	a := &proxiedAPI{refused: map[string]bool{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		a.mu.Lock()
		a.got = append(a.got, proxied{r.Method, r.RequestURI, r.Header.Clone(), body})
		refuse := a.refused[r.Header.Get("Authorization")]
		a.mu.Unlock()
		switch {
		case refuse:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"ERROR_INVALID_ACCESS_TOKEN"}`)
		case r.URL.Path == "/base/moved":
			http.Redirect(w, r, "/base/elsewhere", http.StatusFound)
		case r.URL.Path == "/base/forged":
			w.Header().Set(client.ErrorHeader, tokenhub.ENOTFOUND)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such item"}}`)
		default:
			fmt.Fprintf(w, "ok %d", len(body))
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *proxiedAPI) requests() []proxied {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]proxied(nil), a.got...)
}

func (a *proxiedAPI) reset() {
	a.mu.Lock()
	a.got = nil
	a.mu.Unlock()
}

func (a *proxiedAPI) refuse(auth string) {
	a.mu.Lock()
	a.refused[auth] = true
	a.mu.Unlock()
}

// putAPIConnection adds connection "api" to the stack: it logs in at the
// demo and sends its requests to api's /base.
func putAPIConnection(t *testing.T, s *sdkStack, api *proxiedAPI) {
	t.Helper()
	p := demo.Provider()
	p.Name = "demo-elsewhere"
	p.Login.URL = s.DemoURL + demo.PathTokenAuth
	p.Refresh.URL = s.DemoURL + demo.PathTokenRefresh
	ctx := context.Background()
	if _, _, err := s.Admin.PutProvider(ctx, p); err != nil {
		t.Fatal(err)
	}
	cfg := demo.ConnectionConfig(api.URL + "/base")
	cfg.Provider = p.Name
	if _, _, err := s.Admin.PutConnection(ctx, "acme", "api", &cfg); err != nil {
		t.Fatal(err)
	}
}

// TestProxyRequest: the method, path, raw query, body and the caller's
// headers reach the API; the key does not, and the caller's header is left
// as it was. Redirects and the API's answers come back as they are, and an
// API cannot pass an answer off as tokenhub's error.
func TestProxyRequest(t *testing.T) {
	s := newSDKStack(t, time.Hour)
	api := newProxiedAPI(t)
	putAPIConnection(t, s, api)
	ctx := context.Background()

	header := http.Header{
		"X-Custom":      {"one", "two"},
		"Content-Type":  {"application/json"},
		"Authorization": {"Bearer not-for-the-api"},
	}
	before := fmt.Sprint(header)
	resp, err := s.App.Proxy(ctx, "api", http.MethodPut, "/items/7?x=1&y=a%20b&z=%2F", strings.NewReader(`{"a":1}`), header)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "ok 7" {
		t.Fatalf("PUT: %d %q, want 200 ok 7", resp.StatusCode, body)
	}
	got := api.requests()[0]
	tok, err := s.App.Token(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"method", got.method, "PUT"},
		{"request URI", got.uri, "/base/items/7?x=1&y=a%20b&z=%2F"},
		{"body", string(got.body), `{"a":1}`},
		{"X-Custom", strings.Join(got.header.Values("X-Custom"), ","), "one,two"},
		{"Content-Type", got.header.Get("Content-Type"), "application/json"},
		{"User-Agent", got.header.Get("User-Agent"), client.DefaultUserAgent},
		{"Authorization", got.header.Get("Authorization"), tok.Header.Value},
	} {
		if c.got != c.want {
			t.Errorf("the API got %s %q, want %q", c.what, c.got, c.want)
		}
	}
	for name, vs := range got.header {
		if strings.Contains(strings.Join(vs, " "), s.AppKey) {
			t.Errorf("the app key reached the API in %s", name)
		}
	}
	if after := fmt.Sprint(header); after != before {
		t.Errorf("Proxy changed the caller's header: %s, was %s", after, before)
	}

	// The caller's own User-Agent wins.
	api.reset()
	resp, err = s.App.Proxy(ctx, "api", "", "/ua", nil, http.Header{"User-Agent": {"reports/2"}})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if ua := api.requests()[0].header.Get("User-Agent"); ua != "reports/2" {
		t.Errorf("User-Agent %q, want the caller's", ua)
	}

	// A redirect is returned, not followed.
	api.reset()
	resp, err = s.App.Proxy(ctx, "api", "", "/moved", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/base/elsewhere" || len(api.requests()) != 1 {
		t.Errorf("redirect: %d to %q after %d requests; want the 302, not followed", resp.StatusCode, resp.Header.Get("Location"), len(api.requests()))
	}

	// An API's error shaped and marked like tokenhub's is still the API's.
	resp, err = s.App.Proxy(ctx, "api", "", "/forged", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, mine := client.ErrorFrom(resp)
	if body := readAll(t, resp); resp.StatusCode != 404 || mine || e != nil || body != `{"error":{"code":"not_found","message":"no such item"}}` {
		t.Errorf("a forged error: %d %q, ErrorFrom %v %v; want the API's 404, not tokenhub's", resp.StatusCode, body, e, mine)
	}
}

// TestProxyReplay: when the API refuses the token, tokenhub refreshes it
// and sends the request once more, for every body Proxy could send with its
// length: none, one of known length, and one it read up to MaxReplayBody.
// A longer body is streamed once and its 401 reaches the caller. The body
// is closed in every case.
func TestProxyReplay(t *testing.T) {
	s := newSDKStack(t, time.Hour)
	api := newProxiedAPI(t)
	putAPIConnection(t, s, api)
	ctx := context.Background()
	small := bytes.Repeat([]byte("a"), 4096)
	atLimit := bytes.Repeat([]byte("m"), client.MaxReplayBody)
	big := bytes.Repeat([]byte("b"), client.MaxReplayBody+1)

	for _, tc := range []struct {
		name   string
		body   func() io.Reader // nil: no body
		sent   []byte
		replay bool
	}{
		{name: "no body", replay: true},
		{name: "known length", body: func() io.Reader { return bytes.NewReader(small) }, sent: small, replay: true},
		{name: "streamed small", body: func() io.Reader { return &closeRecorder{Reader: bytes.NewReader(small)} }, sent: small, replay: true},
		{name: "streamed 1MiB", body: func() io.Reader { return onlyReader{bytes.NewReader(atLimit)} }, sent: atLimit, replay: true},
		{name: "streamed over 1MiB", body: func() io.Reader { return &closeRecorder{Reader: bytes.NewReader(big)} }, sent: big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, err := s.App.Token(ctx, "api")
			if err != nil {
				t.Fatal(err)
			}
			api.refuse(old.Header.Value)
			api.reset()
			method, body := http.MethodGet, io.Reader(nil)
			if tc.body != nil {
				method, body = http.MethodPost, tc.body()
			}
			resp, err := s.App.Proxy(ctx, "api", method, "/things/", body, nil)
			if err != nil {
				t.Fatal(err)
			}
			answer := readAll(t, resp)
			if cr, ok := body.(*closeRecorder); ok && !cr.closed.Load() {
				t.Error("the body was not closed")
			}
			got := api.requests()
			if !tc.replay {
				if _, mine := client.ErrorFrom(resp); resp.StatusCode != 401 || mine || len(got) != 1 || !bytes.Equal(got[0].body, tc.sent) {
					t.Fatalf("got %d (tokenhub's: %v) after %d requests; want the API's 401 after 1 with the whole body", resp.StatusCode, mine, len(got))
				}
				return
			}
			if resp.StatusCode != 200 || answer != fmt.Sprintf("ok %d", len(tc.sent)) || len(got) != 2 {
				t.Fatalf("got %d %q after %d requests; want 200 after one retry", resp.StatusCode, answer, len(got))
			}
			if got[0].header.Get("Authorization") != old.Header.Value || got[1].header.Get("Authorization") == old.Header.Value {
				t.Error("the retry did not carry a new token")
			}
			for i, r := range got {
				if !bytes.Equal(r.body, tc.sent) {
					t.Errorf("attempt %d sent %d bytes, want %d", i+1, len(r.body), len(tc.sent))
				}
			}
		})
	}
}

// TestErrorFromBody: an answer marked as tokenhub's whose body is not its
// JSON error still maps to the header's code (a proxy in front of tokenhub
// may have replaced the body); nil and an unmarked answer are not
// tokenhub's.
func TestErrorFromBody(t *testing.T) {
	resp := &http.Response{
		StatusCode: http.StatusBadGateway,
		Header:     http.Header{client.ErrorHeader: {tokenhub.EUNAVAILABLE}, "Retry-After": {"7"}},
		Body:       io.NopCloser(strings.NewReader("<html>bad gateway</html>")),
	}
	e, ok := client.ErrorFrom(resp)
	if !ok || e.Status != 502 || !errors.Is(e, client.ErrUnavailable) || e.RetryAfter != 7*time.Second || strings.Contains(e.Message, "html") {
		t.Errorf("ErrorFrom = %+v, %v; want 502 unavailable, retry after 7s, no foreign body", e, ok)
	}
	if e, ok := client.ErrorFrom(nil); ok || e != nil {
		t.Errorf("ErrorFrom(nil) = %v, %v", e, ok)
	}
	plain := &http.Response{StatusCode: 502, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{"error":{"code":"invalid","message":"x"}}`))}
	if e, ok := client.ErrorFrom(plain); ok || e != nil {
		t.Errorf("ErrorFrom(unmarked) = %v, %v", e, ok)
	}
}
