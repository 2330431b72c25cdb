package load

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"
)

// Usage is what a process has consumed so far: CPU time from getrusage and
// heap allocations from the Go runtime.
type Usage struct {
	User   time.Duration `json:"user"`
	System time.Duration `json:"system"`
	// Allocs and AllocBytes count heap allocations since the process
	// started; GCs counts completed garbage collection cycles.
	Allocs     uint64 `json:"allocs"`
	AllocBytes uint64 `json:"alloc_bytes"`
	GCs        uint64 `json:"gcs"`
}

// CPU returns user plus system time.
func (u Usage) CPU() time.Duration { return u.User + u.System }

// Sub returns what was consumed between v and u (u taken after v).
func (u Usage) Sub(v Usage) Usage {
	return Usage{User: u.User - v.User, System: u.System - v.System,
		Allocs: u.Allocs - v.Allocs, AllocBytes: u.AllocBytes - v.AllocBytes, GCs: u.GCs - v.GCs}
}

// SelfUsage returns the usage of the calling process. The CPU times are -1
// when getrusage fails, which it does not on Linux.
func SelfUsage() Usage {
	var u Usage
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		u.User, u.System = -1, -1
	} else {
		u.User = time.Duration(ru.Utime.Nano())
		u.System = time.Duration(ru.Stime.Nano())
	}
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:objects"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(s)
	for i, p := range []*uint64{&u.Allocs, &u.AllocBytes, &u.GCs} {
		if s[i].Value.Kind() == metrics.KindUint64 {
			*p = s[i].Value.Uint64()
		}
	}
	return u
}

// ServeOptions configure Serve.
type ServeOptions struct {
	// Server serves the traffic under test; its Handler is required. Serve
	// sets nothing else on it, so its timeouts and ErrorLog are the
	// caller's choice (those of `tokenhub serve`, for a fair comparison).
	Server *http.Server
	// Ready, when set, runs once Server is serving at url (for example to
	// create what the benchmark needs through the server's own API). The
	// info it returns reaches the parent as Child.Info. An error stops Serve.
	Ready func(url string) (info map[string]string, err error)
	// Status, when set, answers Child.Status: anything the parent should
	// check after the run (such as how many refreshes happened).
	Status func() map[string]string
	// CPUProfile, when set, is a file to write a CPU profile to, covering
	// from the end of Ready to the end of Serve.
	CPUProfile string
}

// handshake is the one line a child writes to its standard output.
type handshake struct {
	Addr string            `json:"addr"`
	Ctrl string            `json:"ctrl"`
	Info map[string]string `json:"info,omitempty"`
}

// Serve is the body of a child process started by Start. It serves
// o.Server on a loopback port and a control API (usage, status) on another,
// runs o.Ready, announces both addresses on standard output, and serves
// until its standard input is closed: when the parent calls Child.Stop, or
// exits. Nothing else may write to standard output. It returns when done,
// with the first error met.
func Serve(o ServeOptions) (err error) {
	if o.Server == nil || o.Server.Handler == nil {
		return errors.New("load.Serve: ServeOptions.Server with a Handler is required")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	ctl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return fmt.Errorf("listening: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- o.Server.Serve(ln) }()
	defer func() {
		if cerr := o.Server.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing the server: %w", cerr)
		}
	}()
	cm := http.NewServeMux()
	cm.HandleFunc("GET /usage", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, SelfUsage())
	})
	cm.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		var st map[string]string
		if o.Status != nil {
			st = o.Status()
		}
		writeJSON(w, st)
	})
	cs := &http.Server{Handler: cm, ReadHeaderTimeout: 10 * time.Second}
	go cs.Serve(ctl)
	defer cs.Close()

	hs := handshake{Addr: ln.Addr().String(), Ctrl: ctl.Addr().String()}
	if o.Ready != nil {
		if hs.Info, err = o.Ready("http://" + hs.Addr); err != nil {
			return fmt.Errorf("getting ready: %w", err)
		}
	}
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	line, err := json.Marshal(hs)
	if err != nil {
		return err
	}
	if _, err := os.Stdout.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("announcing: %w", err)
	}
	stdin := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdin) }()
	select {
	case <-stdin:
		return nil
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Child is a server under test running in a child process: this binary
// re-executed with arguments that make it call Serve. Its methods are safe
// for concurrent use.
type Child struct {
	// Name labels the child in errors.
	Name string
	// Addr is the host:port the server under test listens on, on loopback.
	Addr string
	// Info is what ServeOptions.Ready returned in the child.
	Info map[string]string

	ctrl  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	hc    *http.Client
	once  sync.Once
	err   error
}

// StartTimeout bounds how long Start waits for a child to announce itself.
const StartTimeout = time.Minute

// Start runs this binary (os.Executable) again with args, which must make
// it call Serve, and waits for it to announce its addresses. The child's
// standard error, and its standard output after the announcement, go to
// this process's standard error. Call Stop when done; if this process dies
// first, the child sees its standard input close and exits.
func Start(name string, args ...string) (*Child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	type read struct {
		line []byte
		err  error
	}
	got := make(chan read, 1)
	br := bufio.NewReader(out)
	go func() {
		line, err := br.ReadBytes('\n')
		got <- read{line, err}
	}()
	var r read
	select {
	case r = <-got:
	case <-time.After(StartTimeout):
		r.err = fmt.Errorf("no announcement within %s", StartTimeout)
	}
	var hs handshake
	if r.err == nil {
		r.err = json.Unmarshal(r.line, &hs)
	}
	if r.err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("starting %s: %w", name, r.err)
	}
	go io.Copy(os.Stderr, br)
	return &Child{Name: name, Addr: hs.Addr, Info: hs.Info, ctrl: hs.Ctrl, cmd: cmd, stdin: in,
		hc: &http.Client{Timeout: 10 * time.Second}}, nil
}

// URL returns "http://" + Addr.
func (c *Child) URL() string { return "http://" + c.Addr }

// Usage returns the child's usage so far, as read by the child itself.
func (c *Child) Usage() (Usage, error) {
	var u Usage
	err := c.get("/usage", &u)
	return u, err
}

// Status returns what ServeOptions.Status answers in the child (nil when it
// is not set).
func (c *Child) Status() (map[string]string, error) {
	var st map[string]string
	err := c.get("/status", &st)
	return st, err
}

func (c *Child) get(path string, v any) error {
	res, err := c.hc.Get("http://" + c.ctrl + path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.Name, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", c.Name, path, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		return fmt.Errorf("%s %s: %w", c.Name, path, err)
	}
	return nil
}

// Stop closes the child's standard input and waits for it to exit, killing
// it after 10 s. It returns the child's failure, if any; calling it again
// returns the same.
func (c *Child) Stop() error {
	c.once.Do(func() {
		c.hc.CloseIdleConnections()
		c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				c.err = fmt.Errorf("%s: %w", c.Name, err)
			}
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-done
			c.err = fmt.Errorf("%s: did not exit within 10s of its stdin closing; killed", c.Name)
		}
	})
	return c.err
}
