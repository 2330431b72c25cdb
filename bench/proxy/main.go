// Command proxy measures the overhead of tokenhub's header-injecting proxy.
//
// In one run it drives, with the same number of concurrent keep-alive
// connections, three targets on loopback:
//
//	direct  the upstream itself
//	bare    a bare httputil.ReverseProxy that adds a fixed header, tuned: a
//	        pooled transport with enough idle connections per host and a
//	        BufferPool
//	ours    tokenhub's proxy.Handler on the real engine (broker, SQLite,
//	        the demo Baserow provider's JWT header) behind a router shaped
//	        like the server's
//
// The upstream and each proxy run in their own child process (this binary
// re-executed with -role), so that the CPU time each proxy spends per request
// can be read from its own getrusage. Rounds interleave the targets to spread
// the noise of a shared machine evenly. It reports requests/s, p50 and p99
// latency, the proxies' CPU µs per request, and ours/bare ratios.
//
// Usage (loopback only; every loop is bounded by -d and -max):
//
//	go run ./bench/proxy -c 64 -d 1500ms -rounds 10
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/sqlite"
)

const (
	token      = "eyJhbGciOiJIUzI1NiJ9.bench.token"
	headerVal  = "JWT " + token
	appKey     = "bench-app-key"
	apiPath    = "/api/database/rows/table/1/"
	apiQuery   = "user_field_names=true"
	bodyLength = 512 // a small page of Baserow rows
)

func main() {
	role := flag.String("role", "", "internal: run as upstream, bare or ours")
	target := flag.String("upstream", "", "internal: upstream base URL for a proxy role")
	conns := flag.Int("c", 64, "concurrent keep-alive connections")
	dur := flag.Duration("d", 3*time.Second, "measured duration per target per round")
	warm := flag.Duration("warmup", time.Second, "unmeasured warm-up per target before the first round")
	rounds := flag.Int("rounds", 5, "rounds; each round runs every target once")
	maxReq := flag.Int("max", 2_000_000, "upper bound on requests per target per round")
	profDir := flag.String("cpuprofile", "", "write each child's CPU profile to DIR/ROLE.pprof")
	flag.Parse()

	if *role != "" {
		if err := serve(*role, *target, *profDir); err != nil {
			log.Fatalf("%s: %v", *role, err)
		}
		return
	}
	if err := run(*conns, *dur, *warm, *rounds, *maxReq, *profDir); err != nil {
		log.Fatal(err)
	}
}

// ---- children -------------------------------------------------------------

// serve runs one role: it listens on a loopback port for traffic and another
// for /cpu, prints both addresses, and serves until its parent closes stdin.
func serve(role, upstream, profDir string) error {
	var h http.Handler
	switch role {
	case "upstream":
		head, tail := `{"count":1,"next":null,"previous":null,"results":[{"id":1,"order":"1.00000000000000000000","Name":"`, `"}]}`
		body := []byte(head + strings.Repeat("x", bodyLength-len(head)-len(tail)) + tail)
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == headerVal {
				w.Header().Set("X-Auth-Seen", "token")
			} else if r.Header.Get("Authorization") != "" {
				w.Header().Set("X-Auth-Seen", "other")
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		})
	case "bare":
		u, err := url.Parse(upstream)
		if err != nil {
			return err
		}
		h = bareProxy(u)
	case "ours":
		u, err := url.Parse(upstream)
		if err != nil {
			return err
		}
		var cleanup func()
		if h, cleanup, err = ourProxy(u); err != nil {
			return err
		}
		defer cleanup()
	default:
		return fmt.Errorf("unknown role %q", role)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go http.Serve(ctl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, cpuMicros())
	}))
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	if profDir != "" {
		f, err := os.Create(filepath.Join(profDir, role+".pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("%s %s\n", ln.Addr(), ctl.Addr())
	io.Copy(io.Discard, os.Stdin) // the parent closes stdin when done, or dies
	return nil
}

// cpuMicros is the user+system CPU time this process has used, in µs.
func cpuMicros() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Utime.Nano()/1e3 + ru.Stime.Nano()/1e3
}

// bareProxy is the baseline: a ReverseProxy that adds a fixed header, tuned
// the same way as tokenhub's default transport (pooled, 256 idle connections
// per host, no decompression) with a pool of 32 KiB copy buffers.
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

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte    { return *b.p.Get().(*[]byte) }
func (b *bufPool) Put(buf []byte) { b.p.Put(&buf) }

// staticGranter hands out the same long-lived token without any request, so
// that the engine's read path is what the benchmark sees.
type staticGranter struct{}

func (staticGranter) Obtain(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection) (*tokenhub.Token, error) {
	now := time.Now()
	return &tokenhub.Token{AccessToken: token, TokenType: "JWT", ObtainedAt: now,
		ExpiresAt: now.Add(24 * time.Hour), ExpirySource: tokenhub.ExpiryExpiresIn}, nil
}

func (g staticGranter) Refresh(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection, rt string) (*tokenhub.Token, error) {
	return g.Obtain(ctx, p, c)
}

// ourProxy is tokenhub's proxy on the real engine (broker on a SQLite file in
// a temporary directory, the demo Baserow provider's JWT header) behind a
// router shaped like the server's: /v1/proxy/{conn}/..., with the app key
// checked first. It returns a cleanup function.
func ourProxy(base *url.URL) (http.Handler, func(), error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "tokenhub-bench-")
	if err != nil {
		return nil, nil, err
	}
	keys, err := seal.NewKeyring(make([]byte, 32))
	if err != nil {
		return nil, nil, err
	}
	st, err := sqlite.Open(filepath.Join(dir, "tokenhub.db"), keys)
	if err != nil {
		return nil, nil, err
	}
	b := broker.New(broker.Options{Store: st, Grant: staticGranter{}, Owner: "bench"})
	cleanup := func() { b.Close(); st.Close(); os.RemoveAll(dir) }
	cfg := demo.ConnectionConfig(base.String())
	if _, err := st.CreateWorkspace(ctx, "bench"); err != nil {
		cleanup()
		return nil, nil, err
	}
	if _, err := st.PutProvider(ctx, demo.Provider()); err != nil {
		cleanup()
		return nil, nil, err
	}
	if _, _, err := st.PutConnection(ctx, "bench", "baserow", &cfg, time.Now()); err != nil {
		cleanup()
		return nil, nil, err
	}
	if err := b.Open(ctx); err != nil {
		cleanup()
		return nil, nil, err
	}
	if _, err := b.Token(ctx, "bench", "baserow"); err != nil {
		cleanup()
		return nil, nil, err
	}
	h := proxy.New(proxy.Options{Tokens: b, Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/proxy/{conn}/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+appKey {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		conn := r.PathValue("conn")
		h.ServeProxy(w, r, "bench", conn, strings.TrimPrefix(r.URL.EscapedPath(), "/v1/proxy/"+conn))
	})
	return mux, cleanup, nil
}

// ---- parent ---------------------------------------------------------------

type child struct {
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	addr, ctrl string
}

func start(role, upstream, profDir string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-role", role, "-upstream", upstream, "-cpuprofile", profDir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("starting %s: %w", role, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		cmd.Process.Kill()
		return nil, fmt.Errorf("starting %s: got %q", role, line)
	}
	return &child{cmd: cmd, stdin: in, addr: f[0], ctrl: f[1]}, nil
}

func (c *child) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

func (c *child) cpu() (int64, error) {
	res, err := http.Get("http://" + c.ctrl + "/cpu")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(b), 10, 64)
}

type target struct {
	name   string
	url    string
	header string // Authorization sent by the load generator
	proc   *child // the process whose CPU is attributed to this target
	// accumulated over rounds
	reqs, errs int64
	elapsed    time.Duration
	lat        []time.Duration
	cpu        int64 // µs
	roundRPS   []float64
	roundP99   []time.Duration
}

func run(conns int, dur, warm time.Duration, rounds, maxReq int, profDir string) error {
	up, err := start("upstream", "", profDir)
	if err != nil {
		return err
	}
	defer up.stop()
	upURL := "http://" + up.addr
	bare, err := start("bare", upURL, profDir)
	if err != nil {
		return err
	}
	defer bare.stop()
	ours, err := start("ours", upURL, profDir)
	if err != nil {
		return err
	}
	defer ours.stop()

	targets := []*target{
		{name: "direct", url: upURL + apiPath + "?" + apiQuery, proc: up},
		{name: "bare", url: "http://" + bare.addr + apiPath + "?" + apiQuery, proc: bare},
		{name: "ours", url: "http://" + ours.addr + "/v1/proxy/baserow" + apiPath + "?" + apiQuery, header: "Bearer " + appKey, proc: ours},
	}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}}
	for _, t := range targets {
		if err := sanity(client, t); err != nil {
			return err
		}
	}

	fmt.Printf("%d concurrent keep-alive connections, %d rounds of %s per target (after %s warm-up each), %d-byte responses, GOMAXPROCS default, loopback\n",
		conns, rounds, dur, warm, bodyLength)
	for r := 0; r < rounds; r++ {
		for _, t := range targets {
			if r == 0 { // connections stay pooled from one round to the next
				load(client, t, conns, warm, maxReq, false)
			}
			c0, err := t.proc.cpu()
			if err != nil {
				return err
			}
			n, e, el, lat := load(client, t, conns, dur, maxReq, true)
			c1, err := t.proc.cpu()
			if err != nil {
				return err
			}
			t.reqs += n
			t.errs += e
			t.elapsed += el
			t.lat = append(t.lat, lat...)
			t.cpu += c1 - c0
			slices.Sort(lat)
			t.roundRPS = append(t.roundRPS, float64(n)/el.Seconds())
			t.roundP99 = append(t.roundP99, pct(lat, 0.99))
			fmt.Printf("  round %d %-6s %8.0f req/s  p99 %9s  cpu %5.1f µs/req\n", r+1, t.name, float64(n)/el.Seconds(),
				pct(lat, 0.99).Round(time.Microsecond), float64(c1-c0)/float64(n))
		}
	}

	fmt.Printf("\n%-7s %10s %9s %9s %12s %7s\n", "target", "req/s", "p50", "p99", "cpu µs/req", "errors")
	stats := map[string][3]float64{}
	for _, t := range targets {
		slices.Sort(t.lat)
		rps := float64(t.reqs) / t.elapsed.Seconds()
		p50, p99 := pct(t.lat, 0.50), pct(t.lat, 0.99)
		cpu := float64(t.cpu) / float64(t.reqs)
		stats[t.name] = [3]float64{rps, float64(p99), cpu}
		label := "(upstream)"
		if t.name != "direct" {
			label = "(proxy)"
		}
		fmt.Printf("%-7s %10.0f %9s %9s %8.1f %-10s %d\n", t.name, rps, p50.Round(time.Microsecond), p99.Round(time.Microsecond), cpu, label, t.errs)
	}
	b, o := stats["bare"], stats["ours"]
	fmt.Printf("\nours/bare over all rounds: throughput %.3fx (target >= 0.85), p99 %.3fx (target <= 1.2), cpu/req %.3fx\n",
		o[0]/b[0], o[1]/b[1], o[2]/b[2])
	// On a shared machine the load of other processes drifts; each round
	// measures bare and ours back to back, so the per-round ratios, and
	// their median, are less exposed to that drift than the totals.
	bt, ot := targets[1], targets[2]
	var tr, pr []float64
	for i := range bt.roundRPS {
		tr = append(tr, ot.roundRPS[i]/bt.roundRPS[i])
		pr = append(pr, float64(ot.roundP99[i])/float64(bt.roundP99[i]))
	}
	fmt.Printf("ours/bare per round: throughput %s (median %.3fx), p99 %s (median %.3fx)\n", ratios(tr), median(tr), ratios(pr), median(pr))
	return nil
}

// sanity checks that t answers 200 with the upstream's body, and that a
// proxy delivered the injected header.
func sanity(client *http.Client, t *target) error {
	req, _ := http.NewRequest("GET", t.url, nil)
	if t.header != "" {
		req.Header.Set("Authorization", t.header)
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	seen := res.Header.Get("X-Auth-Seen")
	switch {
	case res.StatusCode != http.StatusOK || len(b) != bodyLength:
		return fmt.Errorf("%s: got %d with %d bytes, want 200 with %d", t.name, res.StatusCode, len(b), bodyLength)
	case t.name != "direct" && seen != "token":
		return fmt.Errorf("%s: upstream saw Authorization %q, want the injected token", t.name, seen)
	}
	return nil
}

// load runs conns workers against t for d (and at most maxReq requests in
// all) and returns the requests done, errors, elapsed time and, when keep
// is set, every latency.
func load(client *http.Client, t *target, conns int, d time.Duration, maxReq int, keep bool) (int64, int64, time.Duration, []time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	per := maxReq / conns
	lats := make([][]time.Duration, conns)
	errs := make([]int64, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequest("GET", t.url, nil)
			if t.header != "" {
				req.Header.Set("Authorization", t.header)
			}
			var lat []time.Duration
			if keep {
				lat = make([]time.Duration, 0, 1<<14)
			}
			for n := 0; n < per && ctx.Err() == nil; n++ {
				t0 := time.Now()
				res, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if err == nil && res.StatusCode != http.StatusOK {
						err = errors.New(res.Status)
					}
				}
				if err != nil {
					errs[i]++
					continue
				}
				if keep {
					lat = append(lat, time.Since(t0))
				}
			}
			lats[i] = lat
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	var e int64
	for i := range lats {
		all = append(all, lats[i]...)
		e += errs[i]
	}
	return int64(len(all)), e, elapsed, all
}

func ratios(xs []float64) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.2f", x)
	}
	return b.String()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}
