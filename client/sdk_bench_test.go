package client_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// BenchmarkTokenSource compares reading a cached token from the SDK's
// TokenSource with x/oauth2's ReuseTokenSource over a static source, both
// serially and under b.RunParallel. ReuseTokenSource takes a mutex and reads
// the clock on every call; the SDK's source does one atomic load and leaves
// expiry to a timer. Run with
//
//	go test -run '^$' -bench TokenSource -benchmem -count 5 ./client/
//
// and compare tokenhub/parallel with oauth2.Reuse/parallel.
func BenchmarkTokenSource(b *testing.B) {
	s := newSDKStack(b, time.Hour)
	ours := s.App.TokenSource(context.Background(), "baserow")
	if _, err := ours.Token(); err != nil {
		b.Fatal(err)
	}
	reuse := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{
		AccessToken: "static", TokenType: "JWT", Expiry: time.Now().Add(time.Hour),
	}))
	if _, err := reuse.Token(); err != nil {
		b.Fatal(err)
	}
	for _, src := range []struct {
		name string
		ts   oauth2.TokenSource
	}{{"tokenhub", ours}, {"oauth2.Reuse", reuse}} {
		b.Run(src.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := src.ts.Token(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(src.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := src.ts.Token(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	if n := s.Calls.token.Load(); n != 1 {
		b.Fatalf("%d token calls during the benchmark, want 1", n)
	}
}

// BenchmarkTransport measures what the Transport adds to a request with a
// cached token (clone the request, set the header) over a base
// RoundTripper that answers at once, next to oauth2.Transport doing the
// same with ReuseTokenSource.
func BenchmarkTransport(b *testing.B) {
	s := newSDKStack(b, time.Hour)
	base := nopTransport{}
	ours := s.App.Transport("baserow", base)
	theirs := &oauth2.Transport{Base: base, Source: oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{
		AccessToken: "static", TokenType: "JWT", Expiry: time.Now().Add(time.Hour),
	}))}
	req, err := http.NewRequest(http.MethodGet, "http://upstream.invalid/api/database/rows/table/1/", nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, rt := range []struct {
		name string
		rt   http.RoundTripper
	}{{"tokenhub", ours}, {"oauth2.Transport", theirs}} {
		b.Run(rt.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := rt.rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
				}
			})
		})
	}
}

// nopTransport answers 200 with an empty body without sending anything.
type nopTransport struct{}

func (nopTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		panic("no Authorization header")
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
}
