package proxy_test

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/proxy"
)

const (
	streamSize = 50 << 20 // the body that must not be held in memory
	firstPart  = 1 << 20  // sent before the sender waits for the receiver
	// enough is how much of firstPart the receiver must get before the
	// sender goes on. Less than all of it: each hop's write buffer (a few
	// KiB) may hold a tail back until more data comes, as any HTTP stack does.
	enough = firstPart - 64<<10
	// allocBudget bounds what the whole test process may allocate while
	// 50 MiB go through: a proxy that held the body would allocate more
	// than the body itself.
	allocBudget = 12 << 20
)

// pattern is a deterministic byte stream of a given length, so sender and
// receiver can agree on content without either holding it.
type pattern struct{ off, n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rest := p.n - p.off; int64(len(b)) > rest {
		b = b[:rest]
	}
	for i := range b {
		b[i] = byte((p.off + int64(i)) * 7 % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternSum(n int64) string {
	h := sha256.New()
	io.Copy(h, &pattern{n: n})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// countingReader counts and hashes what passes through it and closes
// reached once the first enough bytes were read.
type countingReader struct {
	r       io.Reader
	n       int64
	h       hash.Hash
	reached chan struct{}
}

func newCountingReader(r io.Reader) *countingReader {
	return &countingReader{r: r, h: sha256.New(), reached: make(chan struct{})}
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	before := c.n
	c.n += int64(n)
	c.h.Write(b[:n])
	if before < enough && c.n >= enough {
		close(c.reached)
	}
	return n, err
}

// gatedPattern yields the first firstPart bytes of a pattern, then waits
// for gate before yielding the rest. If anything between sender and
// receiver held the whole body before passing it on, the receiver would
// never get the first part and the gate would never open.
type gatedPattern struct {
	p    pattern
	gate <-chan struct{}
	t    *testing.T
}

func (g *gatedPattern) Read(b []byte) (int, error) {
	if g.p.off == firstPart {
		select {
		case <-g.gate:
		case <-time.After(20 * time.Second):
			g.t.Error("the receiver never got most of the first MiB: the body was not streamed")
			return 0, io.ErrUnexpectedEOF
		}
	}
	if rest := firstPart - g.p.off; rest > 0 && int64(len(b)) > rest {
		b = b[:rest]
	}
	return g.p.Read(b)
}

func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func TestStreamsLargeResponse(t *testing.T) {
	var gate chan struct{}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		w.Header().Set("Content-Length", strconv.Itoa(streamSize))
		io.Copy(w, &gatedPattern{p: pattern{n: streamSize}, gate: gate, t: t})
	})
	e := newEnv(t, proxy.Options{})
	e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})
	want := patternSum(streamSize)

	gate = make(chan struct{})
	req, _ := http.NewRequest("GET", e.front.URL+"/v1/proxy/c/export", nil)
	req.Header.Set("Authorization", "Bearer "+keyWS1)
	runtime.GC()
	before := allocated()
	res, err := e.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	cr := newCountingReader(res.Body)
	go func() { <-cr.reached; close(gate) }()
	if _, err := io.Copy(io.Discard, cr); err != nil {
		t.Fatal(err)
	}
	used := allocated() - before

	if cr.n != streamSize || fmt.Sprintf("%x", cr.h.Sum(nil)) != want {
		t.Fatalf("got %d bytes (sha256 match: %v), want %d", cr.n, fmt.Sprintf("%x", cr.h.Sum(nil)) == want, streamSize)
	}
	t.Logf("allocated %.1f MiB while 50 MiB went through", float64(used)/(1<<20))
	if used > allocBudget {
		t.Errorf("allocated %d bytes for a %d-byte response, want under %d: the body was buffered", used, streamSize, allocBudget)
	}
}

// TestStreamsLargeRequest sends 50 MiB up, once with a known length (over the
// replay limit) and once chunked, and checks that the upstream gets all of it
// while the sender is still sending, and that memory stays flat.
func TestStreamsLargeRequest(t *testing.T) {
	for _, known := range []bool{true, false} {
		t.Run(fmt.Sprintf("known length %v", known), func(t *testing.T) {
			gate := make(chan struct{})
			var got string
			up := newUpstream(t, ok)
			// This handler, unlike the recording one, never holds the body.
			up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cr := newCountingReader(r.Body)
				go func() { <-cr.reached; close(gate) }()
				io.Copy(io.Discard, cr)
				got = fmt.Sprintf("%d %x", cr.n, cr.h.Sum(nil))
				io.WriteString(w, "stored")
			})
			e := newEnv(t, proxy.Options{})
			e.tokens.add(t, "ws1", "c", up.URL, tokenhub.Header{})

			body := &gatedPattern{p: pattern{n: streamSize}, gate: gate, t: t}
			req, _ := http.NewRequest("POST", e.front.URL+"/v1/proxy/c/import", io.MultiReader(body))
			if known {
				req.ContentLength = streamSize
			}
			req.Header.Set("Authorization", "Bearer "+keyWS1)
			runtime.GC()
			before := allocated()
			res, err := e.front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			used := allocated() - before
			if res.StatusCode != http.StatusOK || string(b) != "stored" {
				t.Fatalf("got %d %s", res.StatusCode, b)
			}
			if want := fmt.Sprintf("%d %s", streamSize, patternSum(streamSize)); got != want {
				t.Errorf("upstream got %q, want %q", got, want)
			}
			t.Logf("allocated %.1f MiB while 50 MiB went up", float64(used)/(1<<20))
			if used > allocBudget {
				t.Errorf("allocated %d bytes for a %d-byte request, want under %d: the body was buffered", used, streamSize, allocBudget)
			}
		})
	}
}
