// Command proxy measures the overhead of tokenhub's header-injecting proxy.
//
// In one run it drives, with the same load generator and the same number of
// concurrent keep-alive connections, three targets on loopback:
//
//	direct  the upstream itself, called with the JWT header an app would
//	        send if it held the token
//	bare    a bare httputil.ReverseProxy that adds that header, tuned: a
//	        pooled transport with enough idle connections per host (the
//	        settings of tokenhub's own) and a BufferPool
//	ours    tokenhub as users run it: /v1/proxy/baserow/... on the real
//	        server.New(...).Handler() with the proxy mounted, wired as
//	        `tokenhub serve` wires it (bench/internal/wired, shared with
//	        bench/token: a SQLite store with sealed secrets, the real broker
//	        and grant client), with an app key and a connection to the demo
//	        Baserow provider whose base_url is the upstream
//
// The upstream answers like an API that requires the token: a 512-byte page
// of rows with the JWT header, 401 without it. So a proxy that does not
// inject the header fails its requests instead of being fast. It also
// answers the demo provider's login, where ours obtains the token (valid for
// 24 h) before the run; the run fails if ours logs in again or refreshes,
// since the token must stay cached throughout.
//
// The upstream and each proxy run in their own child process (this binary
// re-executed with -role, see bench/internal/load), so that the CPU time each
// proxy spends per request is read from its own getrusage. Rounds interleave
// the targets to spread the noise of a shared machine evenly. It reports, as
// medians over rounds, requests/s, p50 and p99 latency, and the CPU µs and
// heap allocations per request of the process serving each target (the
// upstream for direct, the proxy for bare and ours); then the ours/bare
// ratios per round against the targets: at least 0.85× the throughput, p99
// within 1.2×.
//
// Usage (loopback only; every loop is bounded by -d and -max):
//
//	go run ./bench/proxy -c 64 -d 3s -rounds 5
//	go run ./bench/proxy -c 64 -d 3s -rounds 5 -client raw
//	go run ./bench/proxy -cpuprofile /tmp/prof   # then: go tool pprof /tmp/prof/ours.pprof
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub/bench/internal/load"
	"github.com/tokenhub/tokenhub/bench/internal/wired"
	"github.com/tokenhub/tokenhub/demo"
)

const (
	token     = "eyJhbGciOiJIUzI1NiJ9.bench.token"
	headerVal = "JWT " + token
	// tokenTTL is the token's lifetime: far longer than any run, so the
	// broker never refreshes during one.
	tokenTTL   = 24 * time.Hour
	apiPath    = "/api/database/rows/table/1/?user_field_names=true"
	bodyLength = 512 // a small page of Baserow rows

	// The targets of the issue.
	wantRate = 0.85 // ours/bare throughput, at least
	wantP99  = 1.2  // ours/bare p99, at most
)

func main() {
	role := flag.String("role", "", "internal: run as the `upstream`, bare or ours server")
	upstream := flag.String("upstream", "", "internal: the upstream's base `URL`, for a proxy role")
	conns := flag.Int("c", 64, "concurrent keep-alive connections")
	dur := flag.Duration("d", 3*time.Second, "measured duration per target per round")
	warm := flag.Duration("warmup", time.Second, "unmeasured warm-up per target per round")
	rounds := flag.Int("rounds", 5, "rounds; each round runs every target once, in alternating order")
	maxReq := flag.Int("max", 2_000_000, "upper bound on requests per target per round")
	gen := flag.String("client", "http", "the load generator: `http` (Go's net/http client) or raw (a minimal HTTP/1.1 client, as wrk)")
	profDir := flag.String("cpuprofile", "", "write each child's CPU profile to `DIR`/ROLE.pprof")
	flag.Parse()

	if *role != "" {
		if err := serve(*role, *upstream, *profDir); err != nil {
			log.Fatalf("%s: %v", *role, err)
		}
		return
	}
	if *gen != "http" && *gen != "raw" {
		log.Fatalf("-client: want http or raw, not %q", *gen)
	}
	p := load.Plan{Conns: *conns, Duration: *dur, Warmup: *warm, Rounds: *rounds, MaxRequests: *maxReq}
	if err := run(os.Stdout, p, *gen, *profDir); err != nil {
		log.Fatal(err)
	}
}

// ---- children -------------------------------------------------------------

// serve runs one role until the parent closes stdin.
func serve(role, upstream, profDir string) error {
	hs := &http.Server{
		// `tokenhub serve`'s settings (cmd/tokenhub/serve.go), for all three.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	o := load.ServeOptions{Server: hs}
	if profDir != "" {
		o.CPUProfile = filepath.Join(profDir, role+".pprof")
	}
	if role == "upstream" {
		up := newUpstream()
		hs.Handler, o.Status = up, up.status
		return load.Serve(o)
	}
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-upstream: want an http:// base URL, not %q", upstream)
	}
	switch role {
	case "bare":
		hs.Handler = bareProxy(u)
	case "ours":
		o2, cleanup, err := ours(hs, u)
		if err != nil {
			return err
		}
		defer cleanup()
		o.Ready = o2.Ready
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	return load.Serve(o)
}

// upstream is the API behind the proxies. Whatever the path, it answers a
// JSON page of bodyLength bytes to a request that carries the token's
// header, and 401 to any other; but for the demo Baserow provider's login
// and refresh (demo.PathTokenAuth and demo.PathTokenRefresh), which it
// answers with the bench token, valid for tokenTTL, and counts. ours obtains
// its token there, once: a second login or a refresh during the run would
// mean that the token was not served from the cache.
type upstream struct {
	body, tokenAnswer []byte
	length, ctype     []string
	logins, refreshes atomic.Int64
}

func newUpstream() *upstream {
	head, tail := `{"count":1,"next":null,"previous":null,"results":[{"id":1,"order":"1.00000000000000000000","Name":"`, `"}]}`
	body := []byte(head + strings.Repeat("x", bodyLength-len(head)-len(tail)) + tail)
	answer, _ := json.Marshal(map[string]any{"access_token": token, "refresh_token": "bench-refresh-token", "expires_in": int(tokenTTL / time.Second)})
	return &upstream{body: body, tokenAnswer: answer, length: []string{strconv.Itoa(len(body))}, ctype: []string{"application/json"}}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		switch r.URL.Path {
		case demo.PathTokenAuth:
			u.logins.Add(1)
			u.answerToken(w)
			return
		case demo.PathTokenRefresh:
			u.refreshes.Add(1)
			u.answerToken(w)
			return
		}
	}
	if got := r.Header.Get("Authorization"); got != headerVal {
		seen := "no Authorization"
		if got != "" {
			seen = "another Authorization"
		}
		http.Error(w, "upstream: want Authorization: JWT with the bench token, got "+seen, http.StatusUnauthorized)
		return
	}
	h := w.Header()
	h["Content-Type"], h["Content-Length"] = u.ctype, u.length
	w.Write(u.body)
}

func (u *upstream) answerToken(w http.ResponseWriter) {
	w.Header()["Content-Type"] = u.ctype
	w.Write(u.tokenAnswer)
}

// status is the upstream's load.ServeOptions.Status: its logins and
// refreshes so far.
func (u *upstream) status() map[string]string {
	return map[string]string{
		"logins":    strconv.FormatInt(u.logins.Load(), 10),
		"refreshes": strconv.FormatInt(u.refreshes.Load(), 10),
	}
}

// bareProxy is the baseline: a ReverseProxy that adds a fixed header, tuned
// the same way as tokenhub's default transport (proxy/transport.go: pooled,
// 256 idle connections per host, no decompression) with a pool of 32 KiB
// copy buffers.
func bareProxy(target *url.URL) http.Handler {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", headerVal)
		},
		Transport:  tr,
		BufferPool: &bufPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
		ErrorLog:   log.New(io.Discard, "", 0),
	}
}

// bufPool is an httputil.BufferPool on a sync.Pool.
type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte    { return *b.p.Get().(*[]byte) }
func (b *bufPool) Put(buf []byte) { b.p.Put(&buf) }

// ours is tokenhub as users run it (bench/internal/wired: the real server
// with the proxy mounted, a SQLite store, the real broker and grant client)
// with a connection to the demo Baserow provider whose base_url is the
// upstream, so that the first token comes from the upstream's login and
// the proxy forwards there. Its Ready hands the app key to the parent.
func ours(hs *http.Server, upstream *url.URL) (load.ServeOptions, func(), error) {
	hub, err := wired.New(hs, wired.Options{BaseURL: upstream.String(), MinTokenTTL: tokenTTL / 2})
	if err != nil {
		return load.ServeOptions{}, nil, err
	}
	return load.ServeOptions{Ready: hub.Ready}, hub.Close, nil
}

// ---- parent ---------------------------------------------------------------

// run runs the benchmark p with the generator gen ("http" or "raw") and
// writes the report to w. It fails when a child cannot be started or exits
// with an error, a target does not answer with the upstream's page, or a
// request failed during the run.
func run(w io.Writer, p load.Plan, gen, profDir string) (err error) {
	ctx := context.Background()
	p.Progress = w
	var prof []string
	if profDir != "" {
		if err := os.MkdirAll(profDir, 0o755); err != nil {
			return err
		}
		prof = []string{"-cpuprofile", profDir}
	}
	// Children are stopped when run returns; a child's own failure (such as
	// a profile it could not write) shows then, and fails the run.
	var children []*load.Child
	defer func() {
		for _, c := range children {
			err = errors.Join(err, c.Stop())
		}
	}()
	start := func(role string, args ...string) (*load.Child, error) {
		c, err := load.Start(role, append(append([]string{"-role", role}, args...), prof...)...)
		if err == nil {
			children = append(children, c)
		}
		return c, err
	}
	up, err := start("upstream")
	if err != nil {
		return err
	}
	bare, err := start("bare", "-upstream", up.URL())
	if err != nil {
		return err
	}
	ours, err := start("ours", "-upstream", up.URL())
	if err != nil {
		return err
	}
	appKey := ours.Info[wired.InfoAppKey]
	if appKey == "" {
		return errors.New("ours: no app key announced")
	}

	if p.Conns <= 0 {
		p.Conns = 64 // Plan's default, which the client must match
	}
	c := load.NewClient(p.Conns)
	if gen == "raw" {
		c = load.NewRawClient(p.Conns)
	}
	defer c.Close()
	targets := []*load.Target{
		{Name: "direct", URL: up.URL() + apiPath, Header: http.Header{"Authorization": {headerVal}}, Proc: up},
		{Name: "bare", URL: bare.URL() + apiPath, Proc: bare},
		{Name: "ours", URL: ours.URL() + "/v1/proxy/" + wired.Connection + apiPath, Header: http.Header{"Authorization": {"Bearer " + appKey}}, Proc: ours},
	}
	for _, t := range targets {
		if err := check(ctx, c, t); err != nil {
			return err
		}
	}

	genDesc := "net/http client"
	if c.Raw() {
		genDesc = "raw HTTP/1.1 client"
	}
	fmt.Fprintf(w, "GET %s: %d concurrent keep-alive connections (%s), %d rounds of %s per target after %s warm-up\n",
		apiPath, p.Conns, genDesc, max(p.Rounds, 1), p.Duration, p.Warmup)
	fmt.Fprintf(w, "answers: %d-byte JSON body; loopback; %d CPUs, GOMAXPROCS %d in each process\n",
		bodyLength, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	ms, err := p.Run(ctx, c, targets)
	if err != nil {
		return err
	}
	report(w, targets, ms)
	fmt.Fprintf(w, "connections opened by the load generator in the whole run, warm-ups included: %d\n", c.Dials())
	if profDir != "" {
		fmt.Fprintf(w, "CPU profiles (written when the children exit): %s\n", filepath.Join(profDir, "{upstream,bare,ours}.pprof"))
	}
	st, err := up.Status()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "upstream during the whole run: %s login(s), %s refresh(es) (want 1 and 0: ours' token stayed cached)\n", st["logins"], st["refreshes"])
	var failed int64
	for _, m := range ms {
		failed += load.Summarize(m).Errors
	}
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	if st["logins"] != "1" || st["refreshes"] != "0" {
		return errors.New("ours' token was not served from the cache throughout")
	}
	return nil
}

// check fetches t once and checks that the answer is the upstream's page:
// for a proxy, that it injected the token's header, without which the
// upstream answers 401.
func check(ctx context.Context, c *load.Client, t *load.Target) error {
	a, err := load.Fetch(ctx, c, t)
	if err != nil {
		if a != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(a.Body)))
		}
		return err
	}
	if len(a.Body) != bodyLength {
		return fmt.Errorf("target %s: answered %d bytes, want the upstream's %d", t.Name, len(a.Body), bodyLength)
	}
	return nil
}

// report writes the medians over rounds of each target, then the ours/bare
// ratios; targets must be direct, bare and ours, in that order.
func report(w io.Writer, targets []*load.Target, ms [][]*load.Measurement) {
	fmt.Fprintf(w, "\nmedians over rounds (pooled over all rounds in brackets); cpu and allocs are the serving process's own\n")
	fmt.Fprintf(w, "%-6s %-9s %17s %21s %21s %11s %11s %11s %7s %6s\n", "target", "process", "req/s", "p50", "p99",
		"cpu µs/req", "allocs/req", "gen µs/req", "errors", "dials")
	sums := make([]load.Summary, len(targets))
	for i, t := range targets {
		s := load.Summarize(ms[i])
		sums[i] = s
		proc := "proxy"
		if t.Name == "direct" {
			proc = "upstream"
		}
		fmt.Fprintf(w, "%-6s %-9s %8.0f [%6.0f] %9s [%9s] %9s [%9s] %11.1f %11.1f %11.1f %7d %6d\n", t.Name, proc,
			s.Rate, s.PooledRate, us(s.P50), us(s.PooledP50), us(s.P99), us(s.PooledP99),
			micros(s.CPUPerRequest), s.AllocsPerRequest, micros(s.GeneratorCPUPerRequest), s.Errors, s.Dials)
	}
	fmt.Fprintf(w, "gen µs/req is the load generator's; dials counts its connections opened during measured windows (0: keep-alive held)\n")

	b, o := ms[1], ms[2]
	rate := load.RoundRatios(o, b, load.RateOf)
	p99 := load.RoundRatios(o, b, load.P99Of)
	cpu := load.RoundRatios(o, b, load.CPUOf)
	verdict := map[bool]string{true: "met", false: "MISSED"}
	fmt.Fprintf(w, "\nours/bare, per round and median (each round measures both back to back):\n")
	fmt.Fprintf(w, "  throughput %.2f  median %.3f×  (target ≥ %.2f×: %s)\n", rate, load.Median(rate), wantRate, verdict[load.Median(rate) >= wantRate])
	fmt.Fprintf(w, "  p99        %.2f  median %.3f×  (target ≤ %.2f×: %s)\n", p99, load.Median(p99), wantP99, verdict[load.Median(p99) <= wantP99])
	sb, so := sums[1], sums[2]
	fmt.Fprintf(w, "  cpu/req    %.2f  median %.3f×  (medians: %+.1f µs/req)\n", cpu, load.Median(cpu),
		micros(so.CPUPerRequest-sb.CPUPerRequest))
	fmt.Fprintf(w, "ours/bare pooled over all rounds: throughput %.3f×, p99 %.3f×\n",
		so.PooledRate/sb.PooledRate, float64(so.PooledP99)/float64(sb.PooledP99))
}

func us(d time.Duration) string { return d.Round(time.Microsecond).String() }

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
