// Package broker is tokenhub's engine. It keeps every connection's current
// token in memory, hands it out without locks, renews it ahead of expiry
// exactly once, coalesces concurrent demands for a token into one upstream
// request, backs off on transient failures and says loudly when a connection
// breaks.
//
// # How a read works
//
// Each connection has an entry whose current token sits behind an
// atomic.Pointer. A read is a map lookup in a copy-on-write map and one atomic
// load: no lock, no allocation, no clock read. That is safe because the
// pointer is only ever set to a token that was durably stored and is valid,
// and a timer clears it shortly before the token expires. Refresh happens
// well before expiry (by default at 75% of the lifetime), so in steady state
// readers never see an empty pointer and never wait.
//
// # How a refresh works
//
// Refreshes run in "flights": at most one per connection at a time. A
// scheduled refresh, a forced one and readers that found no valid token all
// join the same flight. A flight takes the connection's lease in the store
// (durably, so a restart sees a refresh that was cut off and so that only one
// replica refreshes), performs the request, commits the new token pair to the
// store, and only then publishes it to readers.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/clock"
)

// Granter performs the upstream requests. *grant.Client implements it.
type Granter interface {
	// Obtain gets a first token with the connection's grant (client
	// credentials, password or login).
	Obtain(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection) (*tokenhub.Token, error)
	// Refresh renews a token with refreshToken. The returned token's
	// RefreshToken is "" when the provider sent none.
	Refresh(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection, refreshToken string) (*tokenhub.Token, error)
}

// Options configure a Broker. Store is required; every other field has a
// default.
type Options struct {
	Store  tokenhub.Store
	Grant  Granter      // &grant.Client{Now: Clock.Now} when nil
	Clock  clock.Clock  // clock.Real{} when nil
	Logger *slog.Logger // discards when nil
	// Owner names this broker in leases. Brokers sharing a store must have
	// distinct owners. A random id when empty.
	Owner string
	// MaxConcurrent bounds the refreshes running at once (default 16).
	MaxConcurrent int
	// BackoffBase and BackoffMax shape the exponential backoff with full
	// jitter after transient failures (defaults 1s and 5m).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Rand returns a number in [0, 1) for jitter; math/rand/v2 when nil.
	Rand func() float64
}

// Current is a valid token together with the header apps present it in.
// A Current is immutable and shared: callers must not modify it.
type Current struct {
	Token       *tokenhub.Token
	HeaderName  string
	HeaderValue string
}

// String returns a redacted description (HeaderValue holds the token), so
// that %v and %+v are safe.
func (c *Current) String() string {
	if c == nil || c.Token == nil {
		return "Current(nil)"
	}
	return "Current(" + c.Token.String() + " header=" + c.HeaderName + ": REDACTED)"
}

// GoString is String, so that %#v is safe.
func (c *Current) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without the token.
func (c *Current) LogValue() slog.Value {
	if c == nil || c.Token == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.Any("token", *c.Token), slog.String("header", c.HeaderName))
}

// Upstream is where the proxy forwards a connection's requests.
type Upstream struct {
	BaseURL *url.URL
	Allow   []tokenhub.AllowRule
}

// Broker is the engine. Its methods are safe for concurrent use.
type Broker struct {
	store  tokenhub.Store
	grant  Granter
	clock  clock.Clock
	log    *slog.Logger
	owner  string
	base   time.Duration
	max    time.Duration
	rand   func() float64
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	index  atomic.Pointer[index] // what readers look entries up in
	seed   maphash.Seed
	mu     sync.Mutex     // guards all and closed
	all    map[key]*entry // every entry; index is rebuilt from it on change
	closed bool
	// closing is set once Shutdown or Close has begun: refreshes still
	// running then may finish, and their outcome reaches their waiters.
	closing atomic.Bool
}

type key struct{ ws, name string }

// New returns a Broker. Call Open to load the store's connections.
func New(o Options) *Broker {
	b := &Broker{store: o.Store, grant: o.Grant, clock: o.Clock, log: o.Logger, owner: o.Owner,
		base: o.BackoffBase, max: o.BackoffMax, rand: o.Rand}
	if b.clock == nil {
		b.clock = clock.Real{}
	}
	if b.grant == nil {
		b.grant = &grant.Client{Now: b.clock.Now}
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if b.owner == "" {
		var r [8]byte
		_, _ = rand.Read(r[:])
		b.owner = "broker-" + hex.EncodeToString(r[:])
	}
	if b.base <= 0 {
		b.base = time.Second
	}
	if b.max <= 0 {
		b.max = 5 * time.Minute
	}
	if b.rand == nil {
		b.rand = mrand.Float64
	}
	n := o.MaxConcurrent
	if n <= 0 {
		n = 16
	}
	b.sem = make(chan struct{}, n)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.seed = maphash.MakeSeed()
	b.all = map[key]*entry{}
	b.index.Store(newIndex(b.seed, b.all))
	return b
}

// Open loads every connection from the store. Valid tokens are served at once
// and renewed on schedule; connections without one obtain it now; a refresh
// that a previous process left unfinished is taken over. Open fails when the
// store cannot be read, for example with a wrong encryption key.
func (b *Broker) Open(ctx context.Context) error {
	conns, err := b.store.FindConnections(ctx, tokenhub.ConnectionFilter{})
	if err != nil {
		return fmt.Errorf("load connections: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range conns {
		k := key{c.Workspace, c.Name}
		if _, ok := b.all[k]; ok {
			continue
		}
		e := &entry{b: b, key: k}
		b.all[k] = e
		e.mu.Lock()
		e.load(ctx, c)
		e.mu.Unlock()
	}
	b.index.Store(newIndex(b.seed, b.all))
	b.log.Info("broker open", "connections", len(conns), "owner", b.owner)
	return nil
}

// Close stops every timer, cancels running refreshes and waits for them. It
// is Shutdown without the grace: see there.
func (b *Broker) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return b.Shutdown(ctx)
}

// Shutdown stops the broker gracefully. No refresh starts any more; the
// refreshes already running may finish until ctx is done, and those still
// running then are cancelled. It returns once all have ended.
//
// Meanwhile a valid token already held keeps being served, and callers
// waiting on a running refresh get its outcome. A caller that would need a
// new refresh gets EUNAVAILABLE, as does every waiter of a cancelled one. A
// refresh that got the provider's answer stores it even when cancelled, so a
// rotated refresh token is not lost. Calls after the first return at once.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.closing.Store(true)
	all := make([]*entry, 0, len(b.all))
	for _, e := range b.all {
		all = append(all, e)
	}
	b.mu.Unlock()
	// Once every entry is marked, no flight starts: each start checks the
	// mark under the entry's lock, so b.wg only goes down from here.
	for _, e := range all {
		e.mu.Lock()
		e.stopTimersLocked()
		e.deleted = true
		e.mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	b.cancel()
	<-done
	return nil
}

func (b *Broker) lookup(ws, name string) *entry {
	return b.index.Load().get(ws, name)
}

// Token returns a valid token of the connection ws/name.
//
// While the connection holds a valid token, Token returns it at once without
// locking or allocating. Otherwise it waits for the connection's one refresh
// flight, shared by every concurrent caller; cancelling ctx releases this
// caller without cancelling the flight. Errors are *tokenhub.Error:
// ENOTFOUND, ENEEDSREAUTH (naming the provider's error), or EUNAVAILABLE with
// RetryAfter set.
func (b *Broker) Token(ctx context.Context, ws, name string) (*Current, error) {
	e := b.lookup(ws, name)
	if e == nil {
		return nil, notFound(ws, name)
	}
	if c := e.cur.Load(); c != nil {
		return c, nil
	}
	return e.wait(ctx, false)
}

// Refresh renews the connection's token now, even if it is still valid, and
// returns the new one. It joins a refresh that is already running instead of
// starting another. It also retries a connection in needs_reauth or in
// backoff, except while the provider's Retry-After lasts: then it returns the
// current token if one is valid, or EUNAVAILABLE. Errors are as for Token.
func (b *Broker) Refresh(ctx context.Context, ws, name string) (*Current, error) {
	e := b.lookup(ws, name)
	if e == nil {
		return nil, notFound(ws, name)
	}
	return e.wait(ctx, true)
}

// Upstream returns where the proxy forwards the connection's requests:
// ENOTFOUND when the connection is unknown, EINVALID when it has no base_url.
func (b *Broker) Upstream(ws, name string) (*Upstream, error) {
	e := b.lookup(ws, name)
	if e == nil {
		return nil, notFound(ws, name)
	}
	if u := e.upstream.Load(); u != nil {
		return u, nil
	}
	return nil, tokenhub.Errorf(tokenhub.EINVALID, "connection %q has no base_url to forward to", ws+"/"+name)
}

// Record appends an event to the connection's log, for example an upstream
// 401 seen by the proxy. message must hold no secret.
func (b *Broker) Record(ctx context.Context, ws, name string, typ tokenhub.EventType, message string) error {
	for range 5 {
		c, err := b.store.FindConnection(ctx, ws, name)
		if err != nil {
			return err
		}
		_, err = b.store.UpdateConnection(ctx, c.ID, tokenhub.ConnectionUpdate{
			IfVersion: c.Version,
			Events:    []tokenhub.Event{{ConnectionID: c.ID, At: b.clock.Now(), Type: typ, Message: message}},
		})
		if tokenhub.ErrorCode(err) != tokenhub.ECONFLICT {
			return err
		}
	}
	return tokenhub.Errorf(tokenhub.ECONFLICT, "connection %q kept changing; event not recorded", ws+"/"+name)
}

// Sync makes the broker match the store for one connection after it was
// created, changed or deleted. A new connection, or one whose config changed,
// obtains its first token at once, so a wrong credential shows in its state
// within seconds.
func (b *Broker) Sync(ctx context.Context, ws, name string) error {
	c, err := b.store.FindConnection(ctx, ws, name)
	if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		b.forget(func(k key) bool { return k == key{ws, name} })
		return nil
	} else if err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return tokenhub.Errorf(tokenhub.EUNAVAILABLE, "broker is closed")
	}
	k := key{ws, name}
	e := b.all[k]
	if e == nil {
		e = &entry{b: b, key: k}
		b.all[k] = e
		e.mu.Lock()
		b.index.Store(newIndex(b.seed, b.all))
		b.mu.Unlock()
		e.load(ctx, c)
		e.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sync(ctx, c)
	return nil
}

// SyncWorkspace forgets every connection of a deleted workspace.
func (b *Broker) SyncWorkspace(ctx context.Context, ws string) error {
	b.forget(func(k key) bool { return k.ws == ws })
	return nil
}

func (b *Broker) forget(match func(key) bool) {
	b.mu.Lock()
	var gone []*entry
	for k, e := range b.all {
		if match(k) {
			gone = append(gone, e)
			delete(b.all, k)
		}
	}
	if len(gone) > 0 {
		b.index.Store(newIndex(b.seed, b.all))
	}
	b.mu.Unlock()
	for _, e := range gone {
		e.mu.Lock()
		e.deleted = true
		e.stopTimersLocked()
		e.cur.Store(nil)
		e.mu.Unlock()
	}
}

func notFound(ws, name string) error {
	return tokenhub.Errorf(tokenhub.ENOTFOUND, "connection %q not found", ws+"/"+name)
}

// gone is the error for a caller of an entry that was deleted: not found,
// or, when the broker is shutting down, unavailable.
func (b *Broker) gone(k key) error {
	if b.closing.Load() {
		return &tokenhub.Error{Code: tokenhub.EUNAVAILABLE, Message: "tokenhub is shutting down", RetryAfter: time.Second}
	}
	return notFound(k.ws, k.name)
}

// nextRefresh returns when a token obtained now should be renewed: at
// RefreshAt ± Jitter of its lifetime, no later than Margin before expiry, no
// sooner than MinRefreshInterval after it was obtained, and not in the past.
// A token that lives no longer than Margin is renewed at half its lifetime
// instead, so that it is not renewed the moment it arrives. A token that
// never expires is never renewed (zero time).
func (b *Broker) nextRefresh(t *tokenhub.Token, pol tokenhub.RefreshPolicy, now time.Time) time.Time {
	if t.ExpiresAt.IsZero() {
		return time.Time{}
	}
	life := t.Lifetime()
	frac := pol.RefreshAt + (2*b.rand()-1)*pol.Jitter
	at := t.ObtainedAt.Add(time.Duration(float64(life) * frac))
	latest := t.ExpiresAt.Add(-pol.Margin)
	if life <= pol.Margin {
		latest = t.ObtainedAt.Add(life / 2)
	}
	if at.After(latest) {
		at = latest
	}
	if earliest := t.ObtainedAt.Add(pol.MinRefreshInterval); at.Before(earliest) {
		at = earliest
	}
	if floor := now.Add(minGap); at.Before(floor) {
		at = floor
	}
	return at
}

// minGap is the least time between two scheduled refreshes of a connection,
// so that a provider issuing already-expired tokens is not hammered.
const minGap = time.Second

// backoff returns the delay before attempt number failures+1: full jitter
// over an exponential ceiling, but never less than the provider's
// Retry-After.
func (b *Broker) backoff(failures int, retryAfter time.Duration) time.Duration {
	ceil := b.base
	for i := 1; i < failures && ceil < b.max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.max)
	d := time.Duration(b.rand() * float64(ceil))
	d = max(d, b.base/10, retryAfter)
	return d
}

// expirySkew is how long before a token's expiry readers stop receiving it.
// The timer that withdraws the token may fire late under load; the skew
// absorbs that, so an expired token is never handed out.
func expirySkew(life time.Duration) time.Duration {
	return min(2*time.Second, life/20)
}

// errorInfo describes a failed attempt for the connection's status.
func errorInfo(err error, at time.Time) *tokenhub.ErrorInfo {
	info := &tokenhub.ErrorInfo{At: at, Message: err.Error()}
	var ge *grant.Error
	if errors.As(err, &ge) {
		info.Code, info.Description, info.Status = ge.Code, ge.Description, ge.StatusCode
	}
	return info
}
