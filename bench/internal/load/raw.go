package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// NewRawClient returns a Client whose Run speaks just enough HTTP/1.1
// itself, in the manner of wrk: each worker holds one connection, writes a
// request serialised once, and reads each answer only as far as needed to
// find its status and its end (Content-Length; chunked answers are counted
// as errors). It costs a fraction of net/http's client CPU per request, so
// on a machine where the generator shares the cores with the servers, more
// of the CPU goes to the servers and their differences show more. Fetch
// still uses net/http (through HTTP).
func NewRawClient(conns int) *Client {
	c := NewClient(conns)
	c.raw = true
	return c
}

// rawConn is a keep-alive connection of a raw Client.
type rawConn struct {
	nc net.Conn
	br *bufio.Reader
}

// rawPool keeps a raw Client's open connections between runs, so that, as
// with net/http's pool, a warm-up opens them and the measured run reuses
// them.
type rawPool struct {
	mu   sync.Mutex
	idle map[string][]*rawConn // by host:port
}

func (p *rawPool) get(addr string) *rawConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.idle[addr]
	if len(cs) == 0 {
		return nil
	}
	rc := cs[len(cs)-1]
	p.idle[addr] = cs[:len(cs)-1]
	return rc
}

func (p *rawPool) put(addr string, rc *rawConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*rawConn{}
	}
	p.idle[addr] = append(p.idle[addr], rc)
}

func (p *rawPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cs := range p.idle {
		for _, rc := range cs {
			rc.nc.Close()
		}
	}
	p.idle = nil
}

// rawRequest is a target's request serialised once.
type rawRequest struct {
	addr string
	wire []byte
	want int
}

func (t *Target) rawRequest() (*rawRequest, error) {
	u, err := url.Parse(t.URL)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("target %s: the raw client speaks plain http only, not %q", t.Name, u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	m := t.Method
	if m == "" {
		m = "GET"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tokenhub-bench\r\n", m, u.RequestURI(), u.Host)
	if err := t.Header.Write(&b); err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	b.WriteString("\r\n")
	return &rawRequest{addr: addr, wire: b.Bytes(), want: t.want()}, nil
}

// rawWorker runs one worker's loop for Run with a raw Client. It returns
// the successful requests, the errors, the first error and the latencies.
func (c *Client) rawWorker(ctx context.Context, rr *rawRequest, deadline time.Time, take func() bool, keep bool, capacity int) (ok, errs int64, first error, lat []time.Duration) {
	if keep {
		lat = make([]time.Duration, 0, capacity)
	}
	rc := c.pool.get(rr.addr)
	defer func() {
		if rc != nil {
			c.pool.put(rr.addr, rc)
		}
	}()
	var d net.Dialer
	for now := time.Now(); now.Before(deadline) && take(); {
		var err error
		if rc == nil {
			var nc net.Conn
			c.dials.Add(1)
			if nc, err = d.DialContext(ctx, "tcp", rr.addr); err == nil {
				rc = &rawConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}
			}
		}
		keepConn := false
		if err == nil {
			keepConn, err = rc.roundTrip(rr)
		}
		end := time.Now()
		if !keepConn && rc != nil {
			rc.nc.Close()
			rc = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			errs++
			if first == nil {
				first = err
			}
		} else {
			ok++
			if keep {
				lat = append(lat, end.Sub(now))
			}
		}
		now = end
	}
	return ok, errs, first, lat
}

var errChunked = errors.New("chunked or unsized answer: the raw client needs Content-Length")

// roundTrip writes the request and reads the answer to its end. It reports
// whether the connection may be reused.
func (rc *rawConn) roundTrip(rr *rawRequest) (reuse bool, err error) {
	if _, err := rc.nc.Write(rr.wire); err != nil {
		return false, err
	}
	line, err := rc.br.ReadSlice('\n')
	if err != nil {
		return false, fmt.Errorf("reading the status line: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return false, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return false, fmt.Errorf("bad status line %q", line)
	}
	length, reuse := -1, true
	for {
		line, err = rc.br.ReadSlice('\n')
		if err != nil {
			return false, fmt.Errorf("reading the headers: %w", err)
		}
		if len(line) <= 2 { // the blank line
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return false, fmt.Errorf("bad Content-Length %q", value)
			}
		case asciiEqualFold(name, "Connection"):
			reuse = !asciiEqualFold(value, "close")
		case asciiEqualFold(name, "Transfer-Encoding"):
			return false, errChunked
		}
	}
	if length < 0 {
		return false, errChunked
	}
	if _, err := rc.br.Discard(length); err != nil {
		return false, fmt.Errorf("reading the body: %w", err)
	}
	if status != rr.want {
		return reuse, fmt.Errorf("answered %d, want %d", status, rr.want)
	}
	return reuse, nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
