package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/internal/load"
	"github.com/tokenhub/tokenhub/bench/internal/wired"
)

// TestMain lets this test binary be the benchmark's child processes: run
// re-executes it with -role, and then it serves as main would.
func TestMain(m *testing.M) {
	if slices.Contains(os.Args[1:], "-role") {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The whole benchmark, in short: both servers start, their answers have the
// same size, no request fails, the token stays cached, and the report has
// its figures. It asserts nothing about speed.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers and loads them for a few seconds")
	}
	for _, gen := range []string{"http", "raw"} {
		t.Run(gen, func(t *testing.T) {
			var out bytes.Buffer
			p := load.Plan{Conns: 8, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Rounds: 2, MaxRequests: 2000}
			err := run(&out, p, gen, 8, "")
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			for _, want := range []string{
				"round 1 bare", "round 1 ours", "round 2 ours", "round 2 bare",
				"ours/bare", "throughput", "p99", "1 login(s), 0 refresh(es)",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("the report lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// mask keeps the size and shape of a token answer and drops the token.
func TestMask(t *testing.T) {
	body := []byte(`{"access_token":"eyJ.abc.def","token_type":"JWT","expires_at":"2030-01-01T00:00:00Z","header":{"name":"Authorization","value":"JWT eyJ.abc.def"}}` + "\n")
	a := &load.Answer{Status: 200, Body: body, Header: http.Header{
		"Content-Type": {"application/json"}, "Cache-Control": {"no-store"},
		"Date": {"Mon, 01 Jan 2029 00:00:00 GMT"}, "Content-Length": {"143"},
	}}
	got, err := mask(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"access_token":"xxxxxxxxxxx","token_type":"JWT","expires_at":"2030-01-01T00:00:00Z","header":{"name":"Authorization","value":"JWT xxxxxxxxxxx"}}` + "\n"
	if got.Body != want {
		t.Errorf("body:\n got %s\nwant %s", got.Body, want)
	}
	if len(got.Header) != 2 || got.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("header = %v, want Content-Type and Cache-Control only (net/http adds Date and Content-Length)", got.Header)
	}
	if _, err := mask(&load.Answer{Body: []byte(`{"error":{"code":"unauthorized"}}`)}); err == nil {
		t.Error("mask accepted an answer that is not a token")
	}
}

// BenchmarkHandler measures each handler's own work per request in this
// process, without the network or net/http's reading and writing: the part
// of the servers' CPU µs/req that is tokenhub's (ours) or nothing (bare).
//
//	go test -run XXX -bench Handler -benchmem ./bench/token/
func BenchmarkHandler(b *testing.B) {
	hs := &http.Server{}
	o, cleanup, err := ours(hs)
	if err != nil {
		b.Fatal(err)
	}
	defer cleanup()
	ts := httptest.NewServer(hs.Handler)
	defer ts.Close()
	info, err := o.Ready(ts.URL)
	if err != nil {
		b.Fatal(err)
	}
	c := load.NewClient(1)
	defer c.Close()
	tg := &load.Target{Name: "ours", URL: ts.URL + tokenPath, Header: http.Header{"Authorization": {"Bearer " + info[wired.InfoAppKey]}}}
	a, err := load.Fetch(context.Background(), c, tg)
	if err != nil {
		b.Fatal(err)
	}
	canned, err := mask(a)
	if err != nil {
		b.Fatal(err)
	}
	for _, h := range []struct {
		name string
		h    http.Handler
	}{{"bare", bareHandler(canned)}, {"ours", hs.Handler}} {
		b.Run(h.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", tokenPath, nil)
			req.Header = tg.Header.Clone()
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.n = 0
				h.h.ServeHTTP(w, req)
			}
			if w.n != len(a.Body) {
				b.Fatalf("wrote %d bytes, want %d", w.n, len(a.Body))
			}
		})
	}
}

type discard struct {
	h http.Header
	n int
}

func (w *discard) Header() http.Header         { return w.h }
func (w *discard) WriteHeader(int)             {}
func (w *discard) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
