package proxy

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// newTransport returns the pooled transport the proxy uses by default. Go's
// default keeps only 2 idle connections per host, so under concurrency most
// requests would open a new connection and leave one in TIME_WAIT; this one
// keeps up to 256 per upstream host. It ignores HTTP_PROXY and friends
// (libraries do not read the environment) and never decompresses, so the app
// gets the upstream's bytes and Content-Encoding as they were sent.
func newTransport(dialTimeout, headerTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ResponseHeaderTimeout: headerTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// bufferSize is the size of the copy buffers, ReverseProxy's own default.
const bufferSize = 32 << 10

// bufferPool recycles ReverseProxy's copy buffers; without it every request
// allocates 32 KiB. It pools pointers to arrays rather than to slices: Put
// turns the slice back into its array's pointer (a conversion, no
// allocation), where pooling a *[]byte would allocate a new slice header on
// every Put.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([bufferSize]byte) }}}
}

// Get returns a buffer of bufferSize bytes.
func (b *bufferPool) Get() []byte { return b.p.Get().(*[bufferSize]byte)[:] }

// Put returns buf to the pool, unless it is not one of its buffers' size.
func (b *bufferPool) Put(buf []byte) {
	if cap(buf) == bufferSize {
		b.p.Put((*[bufferSize]byte)(buf[:bufferSize]))
	}
}
