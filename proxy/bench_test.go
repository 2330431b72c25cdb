package proxy_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/proxy"
)

// BenchmarkProxy compares, in one process over loopback, a bare tuned
// ReverseProxy that adds a fixed header with proxy.Handler. It is the quick
// in-process view (allocations, CPU profile); bench/proxy is the load test
// with separate processes and 64 connections.
func BenchmarkProxy(b *testing.B) {
	body := strings.Repeat("x", 512)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer up.Close()
	base, _ := url.Parse(up.URL)

	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 256, DisableCompression: true, ForceAttemptHTTP2: true}
	bare, ours := benchProxies(b, base, tr, nil)

	for _, c := range []struct {
		name string
		h    http.Handler
		path string
	}{
		{"bare", bare, "/api/rows/?size=1"},
		{"ours", front(ours), "/v1/proxy/c/api/rows/?size=1"},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := httptest.NewServer(c.h)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
				req.Header.Set("Authorization", "Bearer "+keyWS1)
				for pb.Next() {
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
		})
	}
}

// BenchmarkHandler measures each proxy's own work per request, without the
// network: the handler is called directly with a request and a writer that
// discards, and the transport answers from memory. What it reports is the
// part of a proxied request's CPU and allocations that the proxy adds on
// top of net/http's reading and writing (which bench/proxy measures too).
//
//	go test -run '^$' -bench Handler -benchmem ./proxy/
func BenchmarkHandler(b *testing.B) {
	body := []byte(strings.Repeat("x", 512))
	base, _ := url.Parse("http://upstream.test")
	tr := memTransport{body: body}
	bare, ours := benchProxies(b, base, tr, tr)

	for _, c := range []struct {
		name string
		h    http.Handler
		key  string // the app key the request carries, as the server hands it on
	}{
		{"bare", bare, ""},
		{"ours", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ours.ServeProxy(w, r, "ws1", "c", "/api/rows/")
		}), "Bearer " + keyWS1},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background()) // as a server's request has
			defer cancel()
			r := httptest.NewRequestWithContext(ctx, "GET", "/api/rows/?size=1", nil)
			hdr := http.Header{"User-Agent": {"Go-http-client/1.1"}}
			if c.key != "" {
				hdr.Set("Authorization", c.key)
			}
			// One recorder for every request: after the first answer it
			// keeps only the status and collects the body, into a buffer
			// that is reset, so that it allocates nothing per request.
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				r.Header = hdr.Clone() // the server reads a new header per request
				clear(w.HeaderMap)
				w.Body.Reset()
				c.h.ServeHTTP(w, r)
				if w.Code != http.StatusOK || w.Body.Len() != len(body) {
					b.Fatalf("answered %d with %d bytes, want 200 with %d", w.Code, w.Body.Len(), len(body))
				}
			}
		})
	}
}

// memTransport answers every request with body, at once, when it carries
// the token's header; 401 otherwise.
type memTransport struct{ body []byte }

func (m memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res := &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(m.body)), ContentLength: int64(len(m.body))}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "JWT ") {
		res.StatusCode, res.Body, res.ContentLength = http.StatusUnauthorized, http.NoBody, 0
	}
	return res, nil
}

// benchProxies returns the two proxies the benchmarks compare, both sending
// to base with the token in Authorization: a bare ReverseProxy on bareTr
// that adds a fixed header, tuned with a BufferPool, and proxy.Handler on
// oursTr (its own default transport when nil) and a fake engine that serves
// its token from a cache, as the broker does.
func benchProxies(b *testing.B, base *url.URL, bareTr, oursTr http.RoundTripper) (http.Handler, *proxy.Handler) {
	bare := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(base)
			pr.Out.Header.Set("Authorization", "JWT fixed")
		},
		Transport:  bareTr,
		BufferPool: &benchPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
	}
	tokens := newFakeTokens()
	tokens.add(b, "ws1", "c", base.String(), tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"})
	ours := proxy.New(proxy.Options{Tokens: &cachedTokens{fakeTokens: tokens}, Transport: oursTr, Logger: slog.New(slog.DiscardHandler)})
	return bare, ours
}

type benchPool struct{ p sync.Pool }

func (b *benchPool) Get() []byte    { return *b.p.Get().(*[]byte) }
func (b *benchPool) Put(buf []byte) { b.p.Put(&buf) }

// cachedTokens serves the fake's current token without rendering its
// template on every read, as the broker serves its cached token.
type cachedTokens struct {
	*fakeTokens
	mu  sync.Mutex
	cur *broker.Current
}

func (c *cachedTokens) Token(ctx context.Context, ws, name string) (*broker.Current, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		cur, err := c.fakeTokens.Token(ctx, ws, name)
		if err != nil {
			return nil, err
		}
		c.cur = cur
	}
	return c.cur, nil
}
