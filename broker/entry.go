package broker

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/catalog"
	"github.com/tokenhub/tokenhub/grant"
	"github.com/tokenhub/tokenhub/internal/clock"
)

// entry is the broker's state for one connection.
type entry struct {
	b   *Broker
	key key

	// cur is the valid token readers get; nil when there is none.
	cur atomic.Pointer[Current]
	// upstream is the proxy target; nil when the connection has no base_url.
	upstream atomic.Pointer[Upstream]

	mu         sync.Mutex // guards everything below
	id         int64
	generation int64
	conn       *tokenhub.Connection // as last read from or written to the store
	flight     *flight              // the refresh under way, or nil
	again      bool                 // start another flight when this one ends (config changed, or a timer fired during it)
	timer      clock.Timer          // the next scheduled refresh or retry
	expTimer   clock.Timer          // withdraws cur shortly before it expires
	retryAt    time.Time            // in backoff until then; readers get EUNAVAILABLE without a new attempt
	holdUntil  time.Time            // the provider's Retry-After; not even a forced refresh calls it before
	broken     error                // ENEEDSREAUTH error while the connection needs re-authorisation
	deleted    bool
}

// flight is one refresh shared by everyone who asked for it.
type flight struct {
	done  chan struct{}
	force bool
	cur   *Current
	err   error
}

// load initialises a new entry from the stored connection c and decides what
// to do next. e.mu is held.
func (e *entry) load(ctx context.Context, c *tokenhub.Connection) {
	e.id, e.generation, e.conn = c.ID, c.Generation, c
	e.setUpstream(c)
	now := e.b.clock.Now()
	switch {
	case c.Lease.Owner != "":
		// A refresh was under way when its process stopped, or another replica
		// is refreshing right now. Either way, let a flight find out.
		e.serveStoredLocked(ctx, c, now)
		e.startLocked(false)
	case c.Status.State == tokenhub.StateNeedsReauth:
		e.broken = reauthError(c)
		e.serveStoredLocked(ctx, c, now)
	case c.Token.Valid(now):
		if !e.serveStoredLocked(ctx, c, now) {
			e.startLocked(false)
			return
		}
		at := c.Status.NextRefreshAt
		if at.IsZero() && !c.Token.ExpiresAt.IsZero() {
			at = now
		}
		if !at.IsZero() {
			e.scheduleLocked(at)
		}
	default:
		e.startLocked(false)
	}
}

// serveStoredLocked publishes the stored token when it is valid and reports
// whether it did.
func (e *entry) serveStoredLocked(ctx context.Context, c *tokenhub.Connection, now time.Time) bool {
	if !c.Token.Valid(now) {
		return false
	}
	p, err := catalog.Resolve(ctx, e.b.store, c.Config.Provider)
	if err != nil {
		e.b.log.Error("cannot resolve provider", "connection", c.Path(), "provider", c.Config.Provider, "err", err)
		return false
	}
	cur, err := newCurrent(p, c.Token)
	if err != nil {
		e.b.log.Error("cannot render header", "connection", c.Path(), "err", err)
		return false
	}
	e.publishLocked(cur, now)
	return true
}

// sync brings an existing entry up to date with the stored connection c.
// e.mu is held.
func (e *entry) sync(ctx context.Context, c *tokenhub.Connection) {
	if e.deleted {
		return // forgotten or shutting down since Sync looked it up
	}
	e.setUpstream(c)
	if c.Generation == e.generation {
		now := e.b.clock.Now()
		// Same config. Another replica may have refreshed: adopt a newer token.
		if e.flight == nil && c.Version > e.conn.Version && c.Token.Valid(now) {
			e.conn = c
			if e.serveStoredLocked(ctx, c, now) && !c.Status.NextRefreshAt.IsZero() {
				e.scheduleLocked(c.Status.NextRefreshAt)
			}
			return
		}
		// The provider's definition may have changed (its header template,
		// say): present the current token the new way at once.
		if cur := e.cur.Load(); cur != nil {
			if p, err := catalog.Resolve(ctx, e.b.store, c.Config.Provider); err == nil {
				if next, err := newCurrent(p, cur.Token); err == nil && (next.HeaderName != cur.HeaderName || next.HeaderValue != cur.HeaderValue) {
					e.publishLocked(next, now)
				}
			}
		}
		return
	}
	// The config changed: drop the old token and obtain a new one now.
	e.b.log.Info("connection config changed; obtaining a new token", "connection", c.Path())
	e.id, e.generation, e.conn = c.ID, c.Generation, c
	e.stopTimersLocked()
	e.cur.Store(nil)
	e.broken, e.retryAt, e.holdUntil = nil, time.Time{}, time.Time{}
	if e.flight != nil {
		e.again = true
		return
	}
	e.startLocked(false)
}

func (e *entry) setUpstream(c *tokenhub.Connection) {
	if c.Config.BaseURL == "" {
		e.upstream.Store(nil)
		return
	}
	u, err := url.Parse(c.Config.BaseURL)
	if err != nil {
		e.upstream.Store(nil)
		return
	}
	e.upstream.Store(&Upstream{BaseURL: u, Allow: c.Config.Allow})
}

// wait joins the connection's flight, starting one when needed, and returns
// its outcome. Without force, a valid token is returned at once and a broken
// or backing-off connection fails at once.
func (e *entry) wait(ctx context.Context, force bool) (*Current, error) {
	e.mu.Lock()
	f := e.flight
	if f == nil && e.deleted {
		e.mu.Unlock()
		return nil, e.b.gone(e.key)
	}
	if f == nil {
		if now := e.b.clock.Now(); force && now.Before(e.holdUntil) {
			// The provider asked us to wait; a forced refresh must not
			// hammer it. Serve the current token if there is one.
			wait := e.holdUntil.Sub(now)
			e.mu.Unlock()
			if c := e.cur.Load(); c != nil {
				return c, nil
			}
			return nil, unavailable(e.conn, wait, tokenhub.Errorf(tokenhub.EUNAVAILABLE, "the provider asked to wait (Retry-After)"))
		}
		if !force {
			if c := e.cur.Load(); c != nil {
				e.mu.Unlock()
				return c, nil
			}
			if e.broken != nil {
				err := e.broken
				e.mu.Unlock()
				return nil, err
			}
			if now := e.b.clock.Now(); now.Before(e.retryAt) {
				wait := e.retryAt.Sub(now)
				e.mu.Unlock()
				return nil, unavailable(e.conn, wait, nil)
			}
		}
		f = e.startLocked(force)
	}
	e.mu.Unlock()
	select {
	case <-f.done:
		return f.cur, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startLocked starts a flight. e.mu is held.
func (e *entry) startLocked(force bool) *flight {
	f := &flight{done: make(chan struct{}), force: force}
	e.flight = f
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	b := e.b
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		var cur *Current
		var err error
		select {
		case b.sem <- struct{}{}:
			cur, err = e.run(b.ctx, force)
			<-b.sem
		case <-b.ctx.Done():
			err = tokenhub.Errorf(tokenhub.EUNAVAILABLE, "tokenhub is shutting down")
		}
		e.mu.Lock()
		f.cur, f.err = cur, err
		e.flight = nil
		if e.again && !e.deleted && b.ctx.Err() == nil {
			e.again = false
			e.startLocked(false)
		}
		e.mu.Unlock()
		close(f.done)
	}()
	return f
}

// scheduleLocked arranges a flight at time at. e.mu is held.
func (e *entry) scheduleLocked(at time.Time) {
	if e.timer != nil {
		e.timer.Stop()
	}
	// Count from the clock as it reads now: a deadline already gone fires at once.
	e.timer = e.b.clock.AfterFunc(at.Sub(e.b.clock.Now()), func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.deleted || e.b.ctx.Err() != nil {
			return
		}
		e.timer = nil
		if e.flight != nil {
			// The flight that armed this timer has not quite finished (only
			// a fake clock moves that fast). Run right after it.
			e.again = true
			return
		}
		e.startLocked(false)
	})
}

// publishLocked hands cur to readers and arranges its withdrawal shortly
// before it expires. e.mu is held.
func (e *entry) publishLocked(cur *Current, now time.Time) {
	if e.expTimer != nil {
		e.expTimer.Stop()
		e.expTimer = nil
	}
	t := cur.Token
	if !t.ExpiresAt.IsZero() {
		withdraw := t.ExpiresAt.Add(-expirySkew(t.Lifetime()))
		if !withdraw.After(now) {
			e.cur.Store(nil)
			return
		}
		e.expTimer = e.b.clock.AfterFunc(withdraw.Sub(e.b.clock.Now()), func() {
			if e.cur.CompareAndSwap(cur, nil) {
				e.b.log.Warn("token expired before it could be renewed; readers now wait for a new one",
					"connection", e.key.ws+"/"+e.key.name)
			}
		})
	}
	e.cur.Store(cur)
}

func (e *entry) stopTimersLocked() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if e.expTimer != nil {
		e.expTimer.Stop()
		e.expTimer = nil
	}
}

func newCurrent(p *tokenhub.Provider, t *tokenhub.Token) (*Current, error) {
	name, value, err := grant.RenderHeader(p, t.AccessToken)
	if err != nil {
		return nil, err
	}
	return &Current{Token: t, HeaderName: name, HeaderValue: value}, nil
}

func reauthError(c *tokenhub.Connection) error {
	msg := fmt.Sprintf("connection %q needs re-authorisation", c.Path())
	if le := c.Status.LastError; le != nil {
		switch {
		case le.Code != "" && le.Description != "":
			msg += fmt.Sprintf(": provider %q said %s: %s", c.Config.Provider, le.Code, le.Description)
		case le.Code != "":
			msg += fmt.Sprintf(": provider %q said %s", c.Config.Provider, le.Code)
		default:
			msg += ": " + le.Message
		}
	}
	return &tokenhub.Error{Code: tokenhub.ENEEDSREAUTH, Message: msg + "; update its credentials"}
}

func unavailable(c *tokenhub.Connection, retry time.Duration, cause error) error {
	msg := fmt.Sprintf("no valid token for connection %q", c.Path())
	if cause != nil {
		msg += ": " + tokenhub.ErrorMessage(cause)
	}
	secs := retry.Round(time.Second)
	if secs < time.Second {
		secs = time.Second
	}
	msg += fmt.Sprintf("; retrying in %s", secs)
	return &tokenhub.Error{Code: tokenhub.EUNAVAILABLE, Message: msg, RetryAfter: secs}
}
