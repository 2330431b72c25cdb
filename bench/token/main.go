// Command token measures tokenhub's token endpoint against a bare net/http
// handler.
//
// In one run, with the same load generator and the same number of
// concurrent keep-alive connections, it drives two targets on loopback:
//
//	ours  GET /v1/connections/baserow/token on the real server:
//	      server.New(...).Handler() wired as `tokenhub serve` wires it
//	      (bench/internal/wired, shared with bench/proxy: a SQLite store in a temporary directory with sealed secrets, the
//	      real broker and grant client, the proxy mounted, logs at info),
//	      with an app key and a connection to the demo Baserow provider
//	      whose token is cached and valid for 24 h, so that no refresh
//	      happens during the run
//	bare  a bare net/http handler that answers the same path with a body
//	      of the same size and shape (ours' answer with the token replaced
//	      by x's of the same length) and the same headers, so that both
//	      answers have the same bytes on the wire
//
// Each server runs in its own child process (this binary re-executed with
// -role), so that the CPU time each spends per request is read from its own
// getrusage while the load generator shares the cores. Rounds interleave
// the two to spread the noise of a shared machine. It reports, as medians
// over rounds, requests/s, p50 and p99 latency, CPU µs and heap allocations
// per request for both, and ours/bare ratios against the targets (ours at
// least 0.8× bare's throughput, p99 within 1.25× of bare's).
//
// Usage (loopback only; every loop is bounded by -d and -max):
//
//	go run ./bench/token -c 64 -d 5s -rounds 3
//	go run ./bench/token -cpuprofile /tmp/prof   # then: go tool pprof /tmp/prof/ours.pprof
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub/bench/internal/load"
	"github.com/tokenhub/tokenhub/bench/internal/wired"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
)

const (
	tokenPath = "/v1/connections/" + wired.Connection + "/token"
	// tokenTTL is the demo access token's lifetime: far longer than any
	// run, so the broker never refreshes during one.
	tokenTTL = 24 * time.Hour

	// The targets of the issue.
	wantRate = 0.80 // ours/bare throughput, at least
	wantP99  = 1.25 // ours/bare p99, at most
)

func main() {
	role := flag.String("role", "", "internal: run as the `ours` or `bare` server")
	answer := flag.String("answer", "", "internal: the bare server's answer, as JSON")
	conns := flag.Int("c", 64, "concurrent keep-alive connections")
	dur := flag.Duration("d", 5*time.Second, "measured duration per target per round")
	warm := flag.Duration("warmup", time.Second, "unmeasured warm-up per target per round")
	rounds := flag.Int("rounds", 3, "rounds; each round runs every target once, in alternating order")
	maxReq := flag.Int("max", 2_000_000, "upper bound on requests per target per round")
	gen := flag.String("client", "http", "the load generator: `http` (Go's net/http client) or raw (a minimal HTTP/1.1 client, as wrk)")
	idle := flag.Int("idle", 0, "the load generator's MaxIdleConnsPerHost (default -c; 2 is net/http's default, to see what it does)")
	profDir := flag.String("cpuprofile", "", "write each server's CPU profile to `DIR`/ROLE.pprof")
	flag.Parse()

	if *role != "" {
		if err := serve(*role, *answer, *profDir); err != nil {
			log.Fatalf("%s: %v", *role, err)
		}
		return
	}
	if *idle <= 0 {
		*idle = *conns
	}
	p := load.Plan{Conns: *conns, Duration: *dur, Warmup: *warm, Rounds: *rounds, MaxRequests: *maxReq}
	if *gen != "http" && *gen != "raw" {
		log.Fatalf("-client: want http or raw, not %q", *gen)
	}
	if err := run(os.Stdout, p, *gen, *idle, *profDir); err != nil {
		log.Fatal(err)
	}
}

// ---- children -------------------------------------------------------------

// cannedAnswer is what the bare server answers: the headers and body of one
// of ours' answers with the token masked.
type cannedAnswer struct {
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
}

// serve runs one server role until the parent closes stdin.
func serve(role, answer, profDir string) error {
	hs := &http.Server{
		// `tokenhub serve`'s settings (cmd/tokenhub/serve.go).
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	o := load.ServeOptions{Server: hs}
	if profDir != "" {
		o.CPUProfile = filepath.Join(profDir, role+".pprof")
	}
	switch role {
	case "bare":
		var a cannedAnswer
		if err := json.Unmarshal([]byte(answer), &a); err != nil {
			return fmt.Errorf("-answer: %w", err)
		}
		hs.Handler = bareHandler(a)
	case "ours":
		o2, cleanup, err := ours(hs)
		if err != nil {
			return err
		}
		defer cleanup()
		o.Ready, o.Status = o2.Ready, o2.Status
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	return load.Serve(o)
}

// bareHandler is the baseline: whatever the request, the canned headers and
// body, set as cheaply as net/http allows (no canonicalising Set).
func bareHandler(a cannedAnswer) http.Handler {
	body := []byte(a.Body)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range a.Header {
			h[k] = v
		}
		w.Write(body)
	})
}

// ours is tokenhub wired as `tokenhub serve` wires it (bench/internal/wired)
// into hs, with a demo Baserow provider on another loopback port as the
// connection's base_url. Its Ready creates, through the admin API, the
// workspace, the provider, the connection and an app, fetches the first
// token (so that it is cached), and hands the app key to the parent, over
// the pipe between them. Its Status counts the provider's logins and
// refreshes. cleanup stops the provider and removes the store.
func ours(hs *http.Server) (load.ServeOptions, func(), error) {
	var o load.ServeOptions
	prov := demo.New(demo.Options{AccessTTL: tokenTTL})
	provSrv := &http.Server{Handler: prov, ReadHeaderTimeout: 10 * time.Second}
	provURL, stopProv, err := listen(provSrv)
	if err != nil {
		return o, nil, err
	}
	hub, err := wired.New(hs, wired.Options{BaseURL: provURL, MinTokenTTL: tokenTTL / 2})
	if err != nil {
		stopProv()
		return o, nil, err
	}
	o.Ready = hub.Ready
	o.Status = func() map[string]string {
		c := prov.Counts()
		return map[string]string{
			"logins":    strconv.FormatInt(c.TokenAuth, 10),
			"refreshes": strconv.FormatInt(c.TokenRefresh, 10),
		}
	}
	return o, func() { hub.Close(); stopProv() }, nil
}

// ---- parent ---------------------------------------------------------------

// run runs the benchmark p with the generator gen ("http" or "raw") and
// writes the report to w. It fails when a server cannot be started, the two
// answers differ in size, a request failed, or the token was not served
// from the cache throughout.
func run(w io.Writer, p load.Plan, gen string, idle int, profDir string) error {
	ctx := context.Background()
	p.Progress = w
	if profDir != "" {
		if err := os.MkdirAll(profDir, 0o755); err != nil {
			return err
		}
	}
	prof := []string{}
	if profDir != "" {
		prof = []string{"-cpuprofile", profDir}
	}
	ours, err := load.Start("ours", append([]string{"-role", "ours"}, prof...)...)
	if err != nil {
		return err
	}
	defer stop(ours)
	key := ours.Info[wired.InfoAppKey]
	if key == "" {
		return errors.New("ours: no app key announced")
	}
	auth := http.Header{"Authorization": {"Bearer " + key}}
	c := load.NewClientIdle(max(p.Conns, 1), idle)
	if gen == "raw" {
		c = load.NewRawClient(max(p.Conns, 1))
	}
	defer c.Close()

	oursT := &load.Target{Name: "ours", URL: ours.URL() + tokenPath, Header: auth, Proc: ours}
	got, err := load.Fetch(ctx, c, oursT)
	if err != nil {
		return err
	}
	canned, err := mask(got)
	if err != nil {
		return fmt.Errorf("ours' answer: %w", err)
	}
	spec, err := json.Marshal(canned)
	if err != nil {
		return err
	}
	bare, err := load.Start("bare", append([]string{"-role", "bare", "-answer", string(spec)}, prof...)...)
	if err != nil {
		return err
	}
	defer stop(bare)
	// The same request to both, Authorization included, so that requests
	// too have the same size.
	bareT := &load.Target{Name: "bare", URL: bare.URL() + tokenPath, Header: auth, Proc: bare}
	gotBare, err := load.Fetch(ctx, c, bareT)
	if err != nil {
		return err
	}
	if a, b := wireSize(got), wireSize(gotBare); a != b {
		return fmt.Errorf("answers differ in size: ours %d bytes, bare %d", a, b)
	}

	genDesc := fmt.Sprintf("net/http client, MaxIdleConnsPerHost %d", idle)
	if c.Raw() {
		genDesc = "raw HTTP/1.1 client"
	}
	fmt.Fprintf(w, "GET %s: %d concurrent keep-alive connections (%s), %d rounds of %s per target after %s warm-up\n",
		tokenPath, p.Conns, genDesc, max(p.Rounds, 1), p.Duration, p.Warmup)
	fmt.Fprintf(w, "answers: %d-byte JSON body, %d bytes of status line and headers, identical in size for both; loopback; %d CPUs, GOMAXPROCS %d in each process\n",
		len(got.Body), wireSize(got)-len(got.Body), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	targets := []*load.Target{bareT, oursT}
	ms, err := p.Run(ctx, c, targets)
	if err != nil {
		return err
	}

	fmt.Fprintf(w, "\nmedians over %d rounds (pooled over all rounds in brackets)\n", max(p.Rounds, 1))
	fmt.Fprintf(w, "%-6s %17s %21s %21s %11s %11s %11s %7s %6s\n", "target", "req/s", "p50", "p99",
		"cpu µs/req", "allocs/req", "gen µs/req", "errors", "dials")
	for i, t := range targets {
		s := load.Summarize(ms[i])
		fmt.Fprintf(w, "%-6s %8.0f [%6.0f] %9s [%9s] %9s [%9s] %11.1f %11.1f %11.1f %7d %6d\n", t.Name,
			s.Rate, s.PooledRate, us(s.P50), us(s.PooledP50), us(s.P99), us(s.PooledP99),
			micros(s.CPUPerRequest), s.AllocsPerRequest, micros(s.GeneratorCPUPerRequest), s.Errors, s.Dials)
	}
	fmt.Fprintf(w, "cpu µs/req and allocs/req are the server process's own, from getrusage and the Go runtime; gen µs/req is the load generator's;\n"+
		"dials counts connections opened during measured windows (0: keep-alive held after the warm-up)\n")
	b, o := ms[0], ms[1]
	rate := load.RoundRatios(o, b, load.RateOf)
	p99 := load.RoundRatios(o, b, load.P99Of)
	cpu := load.RoundRatios(o, b, load.CPUOf)
	fmt.Fprintf(w, "\nours/bare, per round and median:\n")
	fmt.Fprintf(w, "  throughput %s  median %.3f×  (target ≥ %.2f×: %s)\n", list(rate), load.Median(rate), wantRate, verdict(load.Median(rate) >= wantRate))
	fmt.Fprintf(w, "  p99        %s  median %.3f×  (target ≤ %.2f×: %s)\n", list(p99), load.Median(p99), wantP99, verdict(load.Median(p99) <= wantP99))
	fmt.Fprintf(w, "  cpu/req    %s  median %.3f×\n", list(cpu), load.Median(cpu))

	st, err := ours.Status()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nconnections opened by the load generator in the whole run, warm-ups included: %d\n", c.Dials())
	fmt.Fprintf(w, "demo provider during the whole run: %s login(s), %s refresh(es) (want 1 and 0: the token stayed cached)\n", st["logins"], st["refreshes"])
	var errs int64
	for i := range targets {
		errs += load.Summarize(ms[i]).Errors
	}
	if errs > 0 {
		return fmt.Errorf("%d requests failed", errs)
	}
	if st["logins"] != "1" || st["refreshes"] != "0" {
		return errors.New("the token was not served from the cache throughout")
	}
	if profDir != "" {
		fmt.Fprintf(w, "CPU profiles (written when the servers exit): %s\n", filepath.Join(profDir, "{ours,bare}.pprof"))
	}
	return nil
}

// stop stops a child and reports its failure, if any, on stderr.
func stop(c *load.Child) {
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// mask returns ours' answer with every occurrence of the access token
// replaced by x's of the same length: the same size and shape, no token.
func mask(a *load.Answer) (cannedAnswer, error) {
	var t client.Token
	if err := json.Unmarshal(a.Body, &t); err != nil {
		return cannedAnswer{}, err
	}
	if t.AccessToken == "" || t.Header.Value != "JWT "+t.AccessToken || a.Header.Get("Cache-Control") != "no-store" {
		return cannedAnswer{}, fmt.Errorf("not a token answer with a JWT header and Cache-Control: no-store (%d bytes)", len(a.Body))
	}
	body := bytes.ReplaceAll(a.Body, []byte(t.AccessToken), bytes.Repeat([]byte("x"), len(t.AccessToken)))
	h := http.Header{}
	for k, v := range a.Header {
		if k != "Date" && k != "Content-Length" {
			h[k] = v
		}
	}
	return cannedAnswer{Header: h, Body: string(body)}, nil
}

// wireSize is the size of an answer's headers (as net/http writes them,
// Date and Content-Length included) and body.
func wireSize(a *load.Answer) int {
	n := len(a.Body)
	for k, vs := range a.Header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n + len("HTTP/1.1 200 OK\r\n\r\n")
}

// listen serves s on a loopback port and returns its URL and a stop
// function.
func listen(s *http.Server) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go s.Serve(ln)
	return "http://" + ln.Addr().String(), func() { s.Close() }, nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func list(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, " ")
}

func us(d time.Duration) string { return d.Round(time.Microsecond).String() }

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
