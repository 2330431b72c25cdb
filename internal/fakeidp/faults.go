package fakeidp

import (
	"net/http"
	"sync"
)

// Faults makes a server misbehave on demand, the ways real providers do: an
// error status (5xx, 429) with an optional Retry-After, a request that hangs
// until the client gives up, or a 200 whose body is empty or garbage.
//
// Faults are queued: each call adds n faulty answers behind those already
// queued, and each request that the owner passes to Intercept takes the
// first one. The zero Faults has nothing queued and is ready to use. A Faults
// is safe for concurrent use.
type Faults struct {
	mu       sync.Mutex
	queue    []fault
	released chan struct{} // closed by Release; nil until needed
}

type faultKind int

const (
	faultFail faultKind = iota
	faultHang
	faultMalformed
)

type fault struct {
	kind       faultKind
	status     int
	retryAfter string
	body       string
}

// FailNext makes the next n calls answer status (for example 503 or 429)
// with a Retry-After header set to retryAfter when it is not "" (either
// delay-seconds or an HTTP-date, RFC 9110 §10.2.3).
func (f *Faults) FailNext(n, status int, retryAfter string) {
	f.push(n, fault{kind: faultFail, status: status, retryAfter: retryAfter})
}

// Hang makes the next n calls hang until the client gives up (the request's
// context ends) or Release is called.
func (f *Faults) Hang(n int) { f.push(n, fault{kind: faultHang}) }

// MalformedNext makes the next n calls answer 200 with Content-Type
// application/json and body as the body: "" for an empty body, or anything
// that is not a usable token response.
func (f *Faults) MalformedNext(n int, body string) {
	f.push(n, fault{kind: faultMalformed, body: body})
}

// Pending returns how many faulty answers are still queued.
func (f *Faults) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}

// Clear drops every queued fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	f.queue = nil
	f.mu.Unlock()
}

// Release ends every hanging request, now and later: they answer 503. A
// server calls it when it closes, so that a hung request never blocks the
// close.
func (f *Faults) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := f.releasedLocked()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (f *Faults) releasedLocked() chan struct{} {
	if f.released == nil {
		f.released = make(chan struct{})
	}
	return f.released
}

func (f *Faults) push(n int, ft fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.queue = append(f.queue, ft)
	}
}

// Intercept takes the first queued fault, if any, and plays it on w. It
// reports whether it wrote the response; when it returns false the owner
// answers normally. writeError writes the body of a failure in the dialect of
// the owner's protocol; Intercept has already set Retry-After when asked to.
func (f *Faults) Intercept(w http.ResponseWriter, r *http.Request, writeError func(w http.ResponseWriter, status int)) bool {
	f.mu.Lock()
	if len(f.queue) == 0 {
		f.mu.Unlock()
		return false
	}
	ft := f.queue[0]
	f.queue = f.queue[1:]
	released := f.releasedLocked()
	f.mu.Unlock()

	switch ft.kind {
	case faultHang:
		select {
		case <-r.Context().Done():
			// The client is gone; nobody reads an answer.
		case <-released:
			writeError(w, http.StatusServiceUnavailable)
		}
	case faultFail:
		if ft.retryAfter != "" {
			w.Header().Set("Retry-After", ft.retryAfter)
		}
		writeError(w, ft.status)
	case faultMalformed:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(ft.body))
	}
	return true
}
