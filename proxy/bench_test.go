package proxy_test

import (
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
	bare := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(base)
			pr.Out.Header.Set("Authorization", "JWT fixed")
		},
		Transport:  tr,
		BufferPool: &benchPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
	}

	tokens := newFakeTokens()
	tokens.add(b, "ws1", "c", up.URL, tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"})
	ours := proxy.New(proxy.Options{Tokens: &cachedTokens{fakeTokens: tokens}, Logger: slog.New(slog.DiscardHandler)})

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
