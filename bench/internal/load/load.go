// Package load is the HTTP load generator of tokenhub's benchmarks. It
// drives a target with a fixed number of concurrent keep-alive connections,
// for a bounded time and a bounded number of requests, and records the
// latency of every request.
//
// The benchmarks run on small shared machines, where the load generator,
// the servers under test and other people's work compete for the same few
// cores. Two things follow, and this package provides both:
//
//   - Each server under test runs in a child process of the benchmark binary
//     (see Start and Serve), so that the CPU time it spends per request can be
//     read from its own getrusage, apart from the load generator's.
//   - A Plan runs several rounds and interleaves the targets within each
//     round, so that drift in the machine's load hits every target alike;
//     results are read as medians over rounds and as per-round ratios
//     between targets measured back to back.
//
// The generator is Go's net/http client on a Transport from NewClient, or
// a minimal HTTP/1.1 client in the manner of wrk (NewRawClient) that leaves
// more of a small machine's CPU to the servers. NewClient's Transport keeps
// one idle connection per worker. Go's default Transport keeps only two idle
// connections per host: with more workers than that, a connection that comes
// back while two are idle is closed and the next request dials a new one.
// On a 2-core machine with 64 workers that was over a thousand new
// connections a second, each closed socket left in TIME_WAIT (6,500 after
// five seconds of load), and a benchmark that measures connection setup as
// much as the server. Result.Dials shows whether keep-alive held: after a warm-up it
// is 0.
//
// Everything is for loopback benchmarks; nothing here is used by tokenhub
// itself.
package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Client is the HTTP client the generator sends with, counting the
// connections it opens. It is safe for concurrent use.
type Client struct {
	// HTTP is the underlying client. Its Transport is the one NewClient
	// built; replacing it stops Dials from counting.
	HTTP  *http.Client
	dials atomic.Int64
	raw   bool    // Run speaks HTTP/1.1 itself; see NewRawClient
	pool  rawPool // a raw client's idle connections
}

// NewClient returns a Client for conns concurrent keep-alive connections
// per host: MaxIdleConnsPerHost and MaxConnsPerHost are both conns, so each
// worker keeps its connection between requests and no more connections than
// workers are opened. Compression is off: bodies are counted as sent.
func NewClient(conns int) *Client {
	return NewClientIdle(conns, conns)
}

// NewClientIdle is NewClient with MaxIdleConnsPerHost set to idle, to show
// what a smaller idle pool does (http.DefaultTransport keeps 2): connections
// beyond idle are closed after each answer and dialled anew. MaxConnsPerHost
// stays conns.
func NewClientIdle(conns, idle int) *Client {
	c := &Client{}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        0, // no limit across hosts: each target keeps its own
		MaxIdleConnsPerHost: idle,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	c.HTTP = &http.Client{Transport: tr}
	return c
}

// Dials returns how many connections the client has opened so far.
func (c *Client) Dials() int64 { return c.dials.Load() }

// Close closes the client's idle connections.
func (c *Client) Close() {
	c.HTTP.CloseIdleConnections()
	c.pool.close()
}

// Raw reports whether c is a raw client (see NewRawClient).
func (c *Client) Raw() bool { return c.raw }

// Target is an endpoint to drive.
type Target struct {
	// Name labels the target in results.
	Name string
	// Method is the request method; GET when empty. Requests have no body.
	Method string
	// URL is the absolute URL requested.
	URL string
	// Header is sent with every request.
	Header http.Header
	// Status is the status an answer must have to count as a success; 200
	// when 0. Any other status counts as an error.
	Status int
	// Proc, when set, is the child process serving the target: a Plan
	// charges its CPU time during each measured window to the target.
	Proc *Child
}

func (t *Target) newRequest(ctx context.Context) (*http.Request, error) {
	m := t.Method
	if m == "" {
		m = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, m, t.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	for k, v := range t.Header {
		req.Header[k] = v
	}
	return req, nil
}

func (t *Target) want() int {
	if t.Status == 0 {
		return http.StatusOK
	}
	return t.Status
}

// Answer is one answer read in full.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// Fetch sends one request to t and reads the whole answer, for checking a
// target before loading it. It fails on a transport error or when the
// status is not the one t wants.
func Fetch(ctx context.Context, c *Client, t *Target) (*Answer, error) {
	req, err := t.newRequest(ctx)
	if err != nil {
		return nil, err
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("target %s: reading the answer: %w", t.Name, err)
	}
	a := &Answer{Status: res.StatusCode, Header: res.Header, Body: body}
	if res.StatusCode != t.want() {
		return a, fmt.Errorf("target %s: answered %s, want %d", t.Name, res.Status, t.want())
	}
	return a, nil
}

// Options bound one run of the generator.
type Options struct {
	// Conns is the number of workers, each sending one request at a time:
	// the number of concurrent connections. Default 64.
	Conns int
	// Duration is how long the run sends requests. Required.
	Duration time.Duration
	// MaxRequests bounds the requests sent in the whole run (and so the
	// memory the latencies take). Default 10,000,000.
	MaxRequests int
	// Discard drops the latencies (for a warm-up): Result.Latencies is nil.
	Discard bool
}

// Result is the outcome of one run.
type Result struct {
	Target string
	// Requests is the number of successful requests; Errors the number of
	// failed ones, and Err the first failure.
	Requests, Errors int64
	Err              error
	// Elapsed is the wall time from the first request sent to the last
	// answer read.
	Elapsed time.Duration
	// Latencies holds the latency of each successful request, sorted in
	// ascending order; nil when Options.Discard was set.
	Latencies []time.Duration
	// Dials is the number of connections opened during the run. With
	// keep-alive holding it is at most Options.Conns, and 0 when the
	// connections were already open.
	Dials int64
}

// Rate returns the successful requests per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Percentile returns the p-quantile (0 ≤ p ≤ 1) of the latencies; 0 when
// there are none.
func (r *Result) Percentile(p float64) time.Duration { return Percentile(r.Latencies, p) }

// Run drives t with o.Conns workers until o.Duration has passed, ctx is
// done, or o.MaxRequests requests were sent, whichever comes first, and
// returns what it measured. A worker that sees an error (a transport error
// or an unwanted status) counts it and goes on; Run itself fails only when
// the target's request cannot be built or the options are invalid. It is
// safe to call concurrently, though concurrent runs measure each other.
func Run(ctx context.Context, c *Client, t *Target, o Options) (*Result, error) {
	if o.Conns <= 0 {
		o.Conns = 64
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = 10_000_000
	}
	if o.Duration <= 0 {
		return nil, fmt.Errorf("load.Run %s: Duration must be positive", t.Name)
	}
	// Every request carries a context with a deadline, so that a hung
	// server cannot hold the run past Duration plus a grace period. The
	// context costs nothing per request, unlike a per-request timeout.
	ctx, cancel := context.WithTimeout(ctx, o.Duration+30*time.Second)
	defer cancel()
	var (
		reqs []*http.Request
		rr   *rawRequest
	)
	if c.raw {
		var err error
		if rr, err = t.rawRequest(); err != nil {
			return nil, err
		}
	} else {
		reqs = make([]*http.Request, o.Conns)
		for i := range reqs {
			var err error
			if reqs[i], err = t.newRequest(ctx); err != nil {
				return nil, err
			}
		}
	}
	var (
		budget atomic.Int64
		wg     sync.WaitGroup
		lats   = make([][]time.Duration, o.Conns)
		errs   = make([]int64, o.Conns)
		ok     = make([]int64, o.Conns)
		firsts = make([]error, o.Conns)
		want   = t.want()
	)
	budget.Store(int64(o.MaxRequests))
	take := func() bool { return budget.Add(-1) >= 0 }
	capacity := 0
	if !o.Discard {
		capacity = min(o.MaxRequests/o.Conns+1, 1<<15)
	}
	dials := c.Dials()
	start := time.Now()
	deadline := start.Add(o.Duration)
	for i := range o.Conns {
		wg.Go(func() {
			if c.raw {
				ok[i], errs[i], firsts[i], lats[i] = c.rawWorker(ctx, rr, deadline, take, !o.Discard, capacity)
				return
			}
			req := reqs[i]
			var lat []time.Duration
			if !o.Discard {
				lat = make([]time.Duration, 0, capacity)
			}
			for now := time.Now(); now.Before(deadline) && take(); {
				err := do(c.HTTP, req, want)
				end := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs[i]++
					if firsts[i] == nil {
						firsts[i] = err
					}
				} else {
					ok[i]++
					if !o.Discard {
						lat = append(lat, end.Sub(now))
					}
				}
				now = end
			}
			lats[i] = lat
		})
	}
	wg.Wait()
	r := &Result{Target: t.Name, Elapsed: time.Since(start), Dials: c.Dials() - dials}
	for i := range o.Conns {
		r.Requests += ok[i]
		r.Errors += errs[i]
		if r.Err == nil {
			r.Err = firsts[i]
		}
	}
	if !o.Discard {
		r.Latencies = make([]time.Duration, 0, r.Requests)
		for _, l := range lats {
			r.Latencies = append(r.Latencies, l...)
		}
		slices.Sort(r.Latencies)
	}
	return r, nil
}

// do sends req and reads and closes the answer's body, so that the
// connection goes back to the pool.
func do(hc *http.Client, req *http.Request, want int) error {
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if res.StatusCode != want {
		return fmt.Errorf("answered %s, want %d", res.Status, want)
	}
	return nil
}
