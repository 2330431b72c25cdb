package load_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/internal/load"
)

// TestMain lets this test binary be its own child process: Start re-executes
// it with -role=child, and then it serves instead of testing.
func TestMain(m *testing.M) {
	if slices.Contains(os.Args[1:], "-role=fail") {
		os.Exit(3) // a child that dies before announcing itself
	}
	if slices.Contains(os.Args[1:], "-role=child") {
		if err := serveChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveChild answers "hello" to every request, hands "secret-of-the-test"
// to the parent through Ready, and counts requests for Status.
func serveChild() error {
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret-of-the-test" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		n.Add(1)
		w.Write([]byte("hello"))
	})
	return load.Serve(load.ServeOptions{
		Server: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		Ready: func(url string) (map[string]string, error) {
			if !strings.HasPrefix(url, "http://127.0.0.1:") {
				return nil, fmt.Errorf("url %q is not on loopback", url)
			}
			return map[string]string{"key": "secret-of-the-test"}, nil
		},
		Status: func() map[string]string { return map[string]string{"served": fmt.Sprint(n.Load())} },
	})
}

// clients are the two generators, run through the same checks.
var clients = []struct {
	name string
	new  func(conns int) *load.Client
}{
	{"http", load.NewClient},
	{"raw", load.NewRawClient},
}

// counting is a server that counts the requests and connections it sees.
type counting struct {
	*httptest.Server
	reqs, conns atomic.Int64
}

func newCounting(t *testing.T, h http.HandlerFunc) *counting {
	c := &counting{}
	c.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.reqs.Add(1)
		h(w, r)
	}))
	c.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	c.Start()
	t.Cleanup(c.Close)
	return c
}

// A run bounded by MaxRequests sends exactly that many requests, over no
// more connections than workers, and records a sorted latency for each.
func TestRunIsBoundedAndKeepsConnectionsAlive(t *testing.T) {
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			srv := newCounting(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Test") != "yes" || r.URL.RawQuery != "a=1" {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				w.Write([]byte(`{"ok":true}`))
			})
			c := cl.new(8)
			defer c.Close()
			tg := &load.Target{Name: "t", URL: srv.URL + "/x?a=1", Header: http.Header{"X-Test": {"yes"}}}
			r, err := load.Run(context.Background(), c, tg, load.Options{Conns: 8, Duration: time.Minute, MaxRequests: 500})
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests != 500 || r.Errors != 0 || r.Err != nil {
				t.Fatalf("requests %d, errors %d (%v); want 500 and 0", r.Requests, r.Errors, r.Err)
			}
			if got := srv.reqs.Load(); got != 500 {
				t.Errorf("the server saw %d requests, want 500", got)
			}
			if got := srv.conns.Load(); got > 8 || got != r.Dials {
				t.Errorf("the server saw %d connections and the client dialled %d; want the same, at most 8", got, r.Dials)
			}
			if len(r.Latencies) != 500 || !slices.IsSorted(r.Latencies) || r.Latencies[0] <= 0 {
				t.Errorf("got %d latencies (sorted: %v), want 500 sorted positive ones", len(r.Latencies), slices.IsSorted(r.Latencies))
			}
			if r.Rate() <= 0 || r.Percentile(0.99) < r.Percentile(0.5) {
				t.Errorf("rate %f, p50 %s, p99 %s", r.Rate(), r.Percentile(0.5), r.Percentile(0.99))
			}
			// A second run reuses the connections the first left open.
			r2, err := load.Run(context.Background(), c, tg, load.Options{Conns: 8, Duration: time.Minute, MaxRequests: 100, Discard: true})
			if err != nil {
				t.Fatal(err)
			}
			if r2.Requests != 100 || r2.Dials != 0 || r2.Latencies != nil {
				t.Errorf("second run: %d requests, %d dials, %d latencies; want 100, 0, none kept", r2.Requests, r2.Dials, len(r2.Latencies))
			}
		})
	}
}

// Answers with another status, and transport failures, are counted as
// errors, and the run goes on.
func TestRunCountsErrors(t *testing.T) {
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			var n atomic.Int64
			srv := newCounting(t, func(w http.ResponseWriter, r *http.Request) {
				switch n.Add(1) % 4 {
				case 0:
					http.Error(w, "boom", http.StatusInternalServerError)
				case 1:
					// Drop the connection without answering.
					conn, _, err := http.NewResponseController(w).Hijack()
					if err == nil {
						conn.Close()
					}
				default:
					w.Write([]byte("fine"))
				}
			})
			c := cl.new(4)
			defer c.Close()
			r, err := load.Run(context.Background(), c, &load.Target{Name: "t", URL: srv.URL}, load.Options{Conns: 4, Duration: time.Minute, MaxRequests: 400})
			if err != nil {
				t.Fatal(err)
			}
			// net/http retries some requests on a dropped reused
			// connection, so the split is not exact; every result counts.
			if r.Requests+r.Errors != 400 || r.Errors == 0 || r.Requests < 100 || r.Err == nil {
				t.Fatalf("requests %d, errors %d (first %v); want 400 in all, some errors", r.Requests, r.Errors, r.Err)
			}
			if int64(len(r.Latencies)) != r.Requests {
				t.Errorf("%d latencies for %d successes", len(r.Latencies), r.Requests)
			}
		})
	}
}

// The raw client refuses what it cannot delimit, rather than hang.
func TestRawClientNeedsContentLength(t *testing.T) {
	srv := newCounting(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("part one"))
		http.NewResponseController(w).Flush() // forces chunked encoding
		w.Write([]byte("part two"))
	})
	c := load.NewRawClient(2)
	defer c.Close()
	r, err := load.Run(context.Background(), c, &load.Target{Name: "t", URL: srv.URL}, load.Options{Conns: 2, Duration: time.Minute, MaxRequests: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 0 || r.Errors != 10 || r.Err == nil || !strings.Contains(r.Err.Error(), "Content-Length") {
		t.Fatalf("requests %d, errors %d (first %v); want 10 errors about Content-Length", r.Requests, r.Errors, r.Err)
	}
}

// barrier holds requests until n of them have arrived together, so that a
// test knows n connections were in use at once.
type barrier struct {
	n    int
	mu   sync.Mutex
	seen int
	gate chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, gate: make(chan struct{})} }

func (b *barrier) wait() {
	b.mu.Lock()
	g := b.gate
	b.seen++
	if b.seen == b.n {
		close(g)
		b.seen, b.gate = 0, make(chan struct{})
	}
	b.mu.Unlock()
	select {
	case <-g:
	case <-time.After(10 * time.Second): // a broken test fails instead of hanging
	}
}

// With net/http's default of 2 idle connections per host, a client with
// more workers than that closes connections after answers and dials new
// ones: the reason NewClient keeps one idle connection per worker.
func TestSmallIdlePoolRedials(t *testing.T) {
	for _, tc := range []struct {
		name      string
		client    *load.Client
		wantDials int64
	}{
		{"idle 2 (net/http's default)", load.NewClientIdle(8, 2), 6},
		{"idle = conns", load.NewClient(8), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBarrier(8)
			srv := newCounting(t, func(w http.ResponseWriter, r *http.Request) {
				b.wait()
				w.Write([]byte("ok"))
			})
			defer tc.client.Close()
			tg := &load.Target{Name: "t", URL: srv.URL}
			o := load.Options{Conns: 8, Duration: time.Minute, MaxRequests: 8}
			first, err := load.Run(context.Background(), tc.client, tg, o)
			if err != nil || first.Requests != 8 || first.Dials != 8 {
				t.Fatalf("first run: %+v, %v; want 8 requests over 8 new connections", first, err)
			}
			// All 8 went back to the pool at once; the pool kept only its
			// idle limit, so 8 concurrent requests need new connections.
			second, err := load.Run(context.Background(), tc.client, tg, o)
			if err != nil || second.Requests != 8 {
				t.Fatalf("second run: %+v, %v", second, err)
			}
			if second.Dials != tc.wantDials {
				t.Errorf("second run dialled %d connections, want %d", second.Dials, tc.wantDials)
			}
		})
	}
}

// A child process started with Start serves what Serve was given, hands
// Ready's info and Status to the parent, and reports its own CPU time.
func TestChild(t *testing.T) {
	ch, err := load.Start("child", "-role=child")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Stop() })
	key := ch.Info["key"]
	if key != "secret-of-the-test" {
		t.Fatalf("Info = %v, want the key from Ready", ch.Info)
	}
	c := load.NewClient(4)
	defer c.Close()
	tg := &load.Target{Name: "child", URL: ch.URL() + "/", Header: http.Header{"Authorization": {"Bearer " + key}}, Proc: ch}
	a, err := load.Fetch(context.Background(), c, tg)
	if err != nil || string(a.Body) != "hello" {
		t.Fatalf("Fetch: %v, %+v", err, a)
	}
	if _, err := load.Fetch(context.Background(), c, &load.Target{Name: "nokey", URL: ch.URL()}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Fetch without the key: %v, want an error naming the 401", err)
	}

	var progress strings.Builder
	p := load.Plan{Conns: 4, Duration: time.Minute, MaxRequests: 300, Rounds: 2, Warmup: 0, Progress: &progress}
	ms, err := p.Run(context.Background(), c, []*load.Target{tg})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || len(ms[0]) != 2 {
		t.Fatalf("got %d×%d measurements, want 1×2", len(ms), len(ms[0]))
	}
	for _, m := range ms[0] {
		if m.Requests != 300 || m.Usage.CPU() <= 0 || m.Usage.Allocs == 0 || m.Generator.CPU() <= 0 {
			t.Errorf("round %d: %d requests, child usage %+v, generator %+v; want 300 and some of each", m.Round, m.Requests, m.Usage, m.Generator)
		}
	}
	if got := strings.Count(progress.String(), "\n"); got != 2 {
		t.Errorf("progress has %d lines, want 2:\n%s", got, progress.String())
	}
	st, err := ch.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st["served"] != "601" { // the Fetch, and two rounds of 300
		t.Errorf("Status = %v, want served=601", st)
	}
	if err := ch.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := ch.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := ch.Usage(); err == nil {
		t.Error("Usage after Stop succeeded; want an error (the child is gone)")
	}
}

// A child that dies before announcing itself makes Start fail.
func TestStartFails(t *testing.T) {
	if _, err := load.Start("nochild", "-role=fail"); err == nil || !strings.Contains(err.Error(), "nochild") {
		t.Fatalf("Start of a child that dies at once: %v, want an error naming it", err)
	}
}
