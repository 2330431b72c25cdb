package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenhub/tokenhub/internal/clock"
)

// How long before expires_at a cached token stops being handed out: a tenth
// of the life it had left when it was fetched, at most maxMargin. Tokenhub
// renews a token well before that (by default at 75% of its life), so the
// fetch made at the deadline normally returns the next token at once.
const maxMargin = 10 * time.Second

// wallCheck is the longest a cache timer sleeps before it compares the
// deadline with the wall clock again. Go's timers run on the monotonic clock,
// which stands still while the machine is suspended (laptop sleep, VM pause)
// while expires_at is wall-clock time; checking every wallCheck bounds how
// long after such a pause an expired token can still be handed out.
const wallCheck = 10 * time.Second

// minForceInterval is the least time between two forced refreshes asked by
// one Transport. An API that answers 401 to every request (a wrong URL, a
// missing permission) would otherwise make tokenhub renew the token, and
// call the provider, once per request.
const minForceInterval = 5 * time.Second

// errRecentlyForced is fetch's answer to a refused token when a forced
// refresh was asked less than minForceInterval ago: the 401 stands.
var errRecentlyForced = errors.New("the token was renewed moments ago; not renewing it again")

// TokenSource returns an oauth2.TokenSource for the connection conn that
// keeps the token in the process and asks tokenhub for a new one only
// shortly before it expires: min(10s, a tenth of its remaining life) before
// expires_at. A Go service thus reads its token in nanoseconds and calls
// tokenhub about once per token lifetime rather than once per request.
//
// ctx is used for every request the source makes to tokenhub, for as long as
// the source is used, as with x/oauth2's Config.TokenSource: when ctx is
// cancelled, a cached token is still returned until its deadline, and later
// fetches fail with ctx's error. Pass a long-lived context such as
// context.Background().
//
// The source is safe for concurrent use. Reading a cached token takes no
// lock, reads no clock and allocates nothing. When the cache is empty,
// concurrent callers share one request to tokenhub. Token returns the same
// *oauth2.Token to every caller until the next fetch: do not modify it.
//
// Token fails with the errors of (*Client).Token: an *Error such as
// ErrNeedsReauth, ErrNotFound or ErrUnavailable (test with errors.Is or
// errors.As), or a transport error. Errors are not cached: the next call
// asks tokenhub again.
//
// The cache is withdrawn by a timer (time.AfterFunc) at its deadline rather
// than by reading the clock on every call. The timer exists only while a
// token is cached and does not outlive that token's deadline, so a source
// that is no longer used holds no resources after it and needs no Close.
// Go's timers stand still while the machine is suspended (laptop sleep, VM
// pause), so the timer wakes at least every 10 s to compare the deadline
// with the wall clock: after a long suspension, a token past its deadline
// may still be handed out for up to 10 s (Transport's 401 retry covers
// that). A token without an expiry is cached for the source's lifetime.
// The deadline assumes the local clock agrees with tokenhub's to within
// the margin. A token that is already expired by the local clock when it
// arrives (a clock far ahead of tokenhub's) is returned but not cached.
//
// Each call makes a new, empty cache: create one source per connection and
// reuse it. The oauth2.Token carries the access token, its expiry and, as
// TokenType, the scheme of the connection's Authorization header (for
// example "JWT"), so that oauth2.Transport presents it as the provider
// expects. For a provider that wants another header (an API key header,
// say), use Transport, which sends the connection's own header.
func (c *Client) TokenSource(ctx context.Context, conn string) oauth2.TokenSource {
	return c.newTokenSource(ctx, conn, clock.Real{})
}

// tokenSource is the cache behind TokenSource and Transport.
type tokenSource struct {
	c    *Client
	ctx  context.Context // for Token; Transport passes each request's context instead
	conn string
	clk  clock.Clock

	// cur is the cached entry, or nil when a reader must fetch. It is set
	// and cleared only with mu held, and read without it.
	cur atomic.Pointer[entry]

	mu        sync.Mutex
	fl        *flight   // the request to tokenhub under way, or nil
	lastForce time.Time // when the last forced refresh started
}

// entry is one cached token. All fields but timer are immutable once
// published.
type entry struct {
	tok      *oauth2.Token
	name     string    // the header to present the token in
	value    string    // its value, for example "JWT eyJ…"
	deadline time.Time // wall-clock time at which the entry is withdrawn; zero: never
	timer    clock.Timer
}

// flight is one request to tokenhub, shared by every caller that needs its
// outcome.
type flight struct {
	done  chan struct{}
	force bool // a forced refresh (POST …/refresh) rather than a read
	e     *entry
	err   error
}

func (c *Client) newTokenSource(ctx context.Context, conn string, clk clock.Clock) *tokenSource {
	if ctx == nil {
		ctx = context.Background()
	}
	return &tokenSource{c: c, ctx: ctx, conn: conn, clk: clk}
}

// Token returns the cached token, or fetches one. See Client.TokenSource.
func (ts *tokenSource) Token() (*oauth2.Token, error) {
	if e := ts.cur.Load(); e != nil {
		return e.tok, nil
	}
	e, err := ts.fetch(ts.ctx, nil)
	if err != nil {
		return nil, err
	}
	return e.tok, nil
}

// entry returns the cached entry, or fetches one with ctx.
func (ts *tokenSource) entry(ctx context.Context) (*entry, error) {
	if e := ts.cur.Load(); e != nil {
		return e, nil
	}
	return ts.fetch(ctx, nil)
}

// fetch obtains an entry from tokenhub, sharing the request with concurrent
// callers. With stale nil it reads the token (GET …/token). With stale set,
// the upstream refused stale's token, and fetch returns a token other than
// stale's: one that another caller already obtained, or the result of a
// forced refresh (POST …/refresh).
//
// A forced refresh is asked at most once per minForceInterval; a refused
// token that comes sooner gets errRecentlyForced. When a forced refresh says
// that the connection needs re-authorisation or is gone, the refused token
// is dropped from the cache, so that later calls get that error from
// tokenhub at once instead of sending the token again.
//
// Each caller waits under its own ctx. When the caller that made the request
// gave up (its context ended) while another's context is still live, that
// other caller tries again rather than inheriting the cancellation.
func (ts *tokenSource) fetch(ctx context.Context, stale *entry) (*entry, error) {
	for {
		ts.mu.Lock()
		if e := ts.cur.Load(); e != nil && (stale == nil || e.tok.AccessToken != stale.tok.AccessToken) {
			ts.mu.Unlock()
			return e, nil
		}
		f, lead := ts.fl, false
		if f == nil {
			force := stale != nil
			if force {
				now := ts.clk.Now()
				if !ts.lastForce.IsZero() && now.Sub(ts.lastForce) < minForceInterval {
					ts.mu.Unlock()
					return nil, errRecentlyForced
				}
				ts.lastForce = now
			}
			f, lead = &flight{done: make(chan struct{}), force: force}, true
			ts.fl = f
		}
		ts.mu.Unlock()

		if lead {
			ts.run(ctx, f)
		} else {
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		switch {
		case f.err == nil && stale != nil && !f.force && f.e.tok.AccessToken == stale.tok.AccessToken:
			// A plain read brought back the token the upstream refused:
			// force a refresh.
			continue
		case f.err == nil:
			return f.e, nil
		case !lead && isContextError(f.err) && ctx.Err() == nil:
			continue // the leader gave up; try with our own context
		default:
			return nil, f.err
		}
	}
}

// run performs flight f's request, publishes its outcome and releases every
// caller waiting on it.
func (ts *tokenSource) run(ctx context.Context, f *flight) {
	var t *Token
	if f.force {
		t, f.err = ts.c.Refresh(ctx, ts.conn)
	} else {
		t, f.err = ts.c.Token(ctx, ts.conn)
	}
	ts.mu.Lock()
	switch {
	case f.err == nil:
		f.e = ts.publishLocked(t)
	case f.force && (errors.Is(f.err, ErrNeedsReauth) || errors.Is(f.err, ErrNotFound)):
		ts.dropLocked()
	}
	ts.fl = nil
	ts.mu.Unlock()
	close(f.done)
}

// publishLocked makes an entry of t, caches it until its deadline and
// returns it. A token already expired by the local clock is returned but
// not cached. ts.mu is held.
func (ts *tokenSource) publishLocked(t *Token) *entry {
	e := &entry{
		tok:   &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.ExpiresAt},
		name:  t.Header.Name,
		value: t.Header.Value,
	}
	if scheme, tok, ok := strings.Cut(e.value, " "); ok && tok == t.AccessToken && strings.EqualFold(e.name, "Authorization") {
		// The provider's scheme, so that oauth2.Transport presents the token
		// as the provider expects ("JWT", not "Bearer").
		e.tok.TokenType = scheme
	}
	if e.name == "" {
		// Not something tokenhub sends; present the token the OAuth way.
		e.name, e.value = "Authorization", e.tok.Type()+" "+t.AccessToken
	}
	ts.dropLocked()
	if t.ExpiresAt.IsZero() {
		ts.cur.Store(e)
		return e
	}
	// Both times are wall-clock readings (ExpiresAt came from JSON), so a
	// suspended machine's lost time counts.
	left := t.ExpiresAt.Sub(ts.clk.Now())
	if left <= 0 {
		return e
	}
	margin := min(maxMargin, left/10)
	e.deadline = t.ExpiresAt.Add(-margin)
	e.timer = ts.clk.AfterFunc(min(left-margin, wallCheck), func() { ts.expire(e) })
	ts.cur.Store(e)
	return e
}

// dropLocked empties the cache and stops its timer. ts.mu is held.
func (ts *tokenSource) dropLocked() {
	if old := ts.cur.Load(); old != nil {
		if old.timer != nil {
			old.timer.Stop()
			old.timer = nil
		}
		ts.cur.Store(nil)
	}
}

// expire runs when e's timer fires: it withdraws e once the wall clock has
// reached its deadline, and otherwise sleeps again.
func (ts *tokenSource) expire(e *entry) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.cur.Load() != e {
		return // replaced; the replacement has its own timer
	}
	if d := e.deadline.Sub(ts.clk.Now()); d > 0 {
		e.timer = ts.clk.AfterFunc(min(d, wallCheck), func() { ts.expire(e) })
		return
	}
	e.timer = nil
	ts.cur.Store(nil)
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
