package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/catalog"
	"github.com/tokenhub/tokenhub/grant"
)

// leaseFor is how long a refresher holds the lease: long enough for a refresh
// and a fresh login, each bounded by the provider's timeout.
func leaseFor(timeout time.Duration) time.Duration { return 2*timeout + 10*time.Second }

// run performs one refresh flight for e and returns the published token or a
// *tokenhub.Error. It runs without e.mu held.
func (e *entry) run(ctx context.Context, force bool) (*Current, error) {
	b := e.b
	e.mu.Lock()
	id, path, provider := e.id, e.key.ws+"/"+e.key.name, e.conn.Config.Provider
	e.mu.Unlock()

	// Size the lease from the provider's own timeout when it can be read.
	timeout := tokenhub.DefaultTimeout
	p, perr := catalog.Resolve(ctx, b.store, provider)
	if perr == nil {
		timeout = p.Policy().Timeout
	}
	now := b.clock.Now()
	conn, prev, err := b.store.AcquireLease(ctx, id, b.owner, now, now.Add(leaseFor(timeout)))
	switch tokenhub.ErrorCode(err) {
	case "":
	case tokenhub.ENOTFOUND:
		b.forget(func(k key) bool { return k == e.key })
		return nil, notFound(e.key.ws, e.key.name)
	case tokenhub.ECONFLICT:
		return e.leaseHeld(ctx, conn, now)
	default:
		b.log.Error("cannot take refresh lease", "connection", path, "err", err)
		return nil, e.retryLater(now, 0, fmt.Errorf("store: %w", err))
	}
	log := b.log.With("connection", conn.Path())
	var events []tokenhub.Event
	event := func(t tokenhub.EventType, format string, args ...any) {
		events = append(events, tokenhub.Event{ConnectionID: conn.ID, At: b.clock.Now(), Type: t, Message: fmt.Sprintf(format, args...)})
	}
	if prev.Owner != "" {
		log.Warn("taking over a refresh that did not finish; its refresh token may already be spent", "since", prev.Since, "previous_owner", prev.Owner)
		event(tokenhub.EventInterrupted, "a refresh started at %s by %s did not finish; taking it over", prev.Since.UTC().Format(time.RFC3339), prev.Owner)
	}

	// Resolve again only if the config changed provider since we looked.
	if perr != nil || conn.Config.Provider != provider {
		if p, perr = catalog.Resolve(ctx, b.store, conn.Config.Provider); perr != nil {
			return nil, e.fail(ctx, conn, now, nil, events, fmt.Errorf("provider %q: %w", conn.Config.Provider, perr), true)
		}
	}
	pol := p.Policy()

	// Another replica may have renewed the token while we waited for the lease.
	if !force && prev.Owner == "" && conn.Token.Valid(now) && !conn.Status.NextRefreshAt.IsZero() && now.Before(conn.Status.NextRefreshAt) {
		return e.commit(ctx, conn, p, conn.Token, conn.Status, nil)
	}

	old := conn.Token
	oldRT := ""
	if old != nil && (old.RefreshExpiresAt.IsZero() || now.Before(old.RefreshExpiresAt)) {
		oldRT = old.RefreshToken
	}
	if oldRT == "" && conn.Config.GrantOrDefault(p) == tokenhub.GrantRefreshToken {
		oldRT = conn.Config.RefreshToken
	}
	canRefresh := oldRT != "" && (!p.IsLogin() || p.Refresh != nil)

	op := "obtain"
	var tok *tokenhub.Token
	if canRefresh {
		op = "refresh"
		tok, err = b.grant.Refresh(ctx, p, conn, oldRT)
	} else {
		tok, err = b.grant.Obtain(ctx, p, conn)
	}
	if err != nil && grant.IsPermanent(err) && op == "refresh" {
		// Before deciding, re-read: another refresher may have succeeded
		// with this refresh token (a lapsed lease), and its result stands.
		if fresh, ferr := b.store.FindConnectionByID(ctx, conn.ID); ferr == nil && fresh.Version != conn.Version &&
			fresh.Token.Valid(now) && fresh.Token.RefreshToken != oldRT {
			log.Info("refresh refused, but another refresher already renewed the token; adopting it")
			return e.adopt(ctx, fresh, p)
		}
		if conn.Config.CanLogin(p) {
			log.Warn("refresh token refused; logging in again", "err", err)
			event(tokenhub.EventRelogin, "refresh refused (%s); logging in again", describe(err))
			op = "obtain"
			tok, err = b.grant.Obtain(ctx, p, conn)
		}
	}
	if err != nil {
		return nil, e.fail(ctx, conn, now, p, events, err, grant.IsPermanent(err))
	}

	// Success. Keep the old refresh token when the provider sent none.
	rotated := false
	if op == "refresh" {
		if tok.RefreshToken == "" {
			tok.RefreshToken = oldRT
			if old != nil {
				tok.RefreshExpiresAt, tok.RefreshExpirySource = old.RefreshExpiresAt, old.RefreshExpirySource
			}
		} else {
			rotated = tok.RefreshToken != oldRT
		}
		event(tokenhub.EventRefreshed, "token refreshed; expires %s (%s)", fmtTime(tok.ExpiresAt), tok.ExpirySource)
		if rotated {
			event(tokenhub.EventRotated, "the provider rotated the refresh token; the new one is stored")
		}
	} else {
		event(tokenhub.EventObtained, "token obtained with grant %s; expires %s (%s)", conn.Config.GrantOrDefault(p), fmtTime(tok.ExpiresAt), tok.ExpirySource)
	}
	if conn.Status.State == tokenhub.StateDegraded || conn.Status.State == tokenhub.StateNeedsReauth {
		event(tokenhub.EventRecovered, "connection works again after %d failed attempt(s)", conn.Status.Failures)
	}
	st := tokenhub.Status{
		State:         tokenhub.StateHealthy,
		LastRefreshAt: tok.ObtainedAt,
		RefreshCount:  conn.Status.RefreshCount + 1,
		NextRefreshAt: b.nextRefresh(tok, pol, b.clock.Now()),
	}
	if !tok.RefreshExpiresAt.IsZero() && !st.NextRefreshAt.IsZero() && tok.RefreshExpiresAt.Before(st.NextRefreshAt) && !conn.Config.CanLogin(p) {
		// Say so now, in the log and in the connection's events, while
		// there is still time to give it new credentials.
		log.Warn("the refresh token expires before the next refresh; the connection will need re-authorisation", "refresh_expires_at", tok.RefreshExpiresAt)
		event(tokenhub.EventRefreshExpiring, "the refresh token expires %s, before the next refresh at %s; this connection cannot log in again, so it will then need re-authorisation",
			fmtTime(tok.RefreshExpiresAt), fmtTime(st.NextRefreshAt))
	}
	cur, err := e.commit(ctx, conn, p, tok, st, events)
	if err != nil {
		return nil, err
	}
	log.Info("token "+map[string]string{"obtain": "obtained", "refresh": "refreshed"}[op],
		"expires_in", tok.ExpiresAt.Sub(b.clock.Now()).Round(time.Second).String(), "expiry_source", tok.ExpirySource,
		"next_refresh_in", st.NextRefreshAt.Sub(b.clock.Now()).Round(time.Second).String(), "rotated", rotated)
	return cur, nil
}

// commit stores tok and st, releasing the lease, and only then publishes the
// token to readers. If the store refuses the write, nothing is published.
//
// The write does not stop when ctx is cancelled (by Close, at shutdown): the
// provider has already issued tok and may have retired the refresh token it
// replaces, so losing tok now would leave the store with a dead refresh
// token. It is bounded by commitTimeout instead.
func (e *entry) commit(ctx context.Context, conn *tokenhub.Connection, p *tokenhub.Provider, tok *tokenhub.Token, st tokenhub.Status, events []tokenhub.Event) (*Current, error) {
	b := e.b
	cur, err := newCurrent(p, tok)
	if err != nil {
		return nil, e.fail(ctx, conn, b.clock.Now(), p, events, fmt.Errorf("render header: %w", err), true)
	}
	upd := tokenhub.ConnectionUpdate{IfVersion: conn.Version, Token: tok, Status: &st, ReleaseLease: b.owner, Events: events}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	saved, err := b.store.UpdateConnection(wctx, conn.ID, upd)
	cancel()
	if err != nil {
		return nil, e.notCommitted(conn, err)
	}
	now := b.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.deleted && !b.closing.Load() {
		return nil, notFound(e.key.ws, e.key.name)
	} else if saved.Generation != e.generation {
		return nil, changed(conn)
	}
	e.conn = saved
	e.broken, e.retryAt, e.holdUntil = nil, time.Time{}, time.Time{}
	e.publishLocked(cur, now)
	if !st.NextRefreshAt.IsZero() && !e.deleted {
		e.scheduleLocked(st.NextRefreshAt)
	}
	return cur, nil
}

// commitTimeout bounds the write of a new token pair, which a shutdown does
// not cancel.
const commitTimeout = 30 * time.Second

// adopt publishes a token that another refresher stored.
func (e *entry) adopt(ctx context.Context, c *tokenhub.Connection, p *tokenhub.Provider) (*Current, error) {
	cur, err := newCurrent(p, c.Token)
	if err != nil {
		return nil, tokenhub.Errorf(tokenhub.EINTERNAL, "render header: %v", err)
	}
	now := e.b.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conn = c
	e.broken, e.retryAt = nil, time.Time{}
	e.publishLocked(cur, now)
	at := c.Status.NextRefreshAt
	if at.IsZero() || at.Before(now) {
		at = e.b.nextRefresh(c.Token, p.Policy(), now)
	}
	if !at.IsZero() {
		e.scheduleLocked(at)
	}
	return cur, nil
}

// leaseHeld handles a lease held by another live refresher: serve its token
// if it is valid, and look again once the lease should be over.
func (e *entry) leaseHeld(ctx context.Context, c *tokenhub.Connection, now time.Time) (*Current, error) {
	wait := max(c.Lease.Until.Sub(now), minGap)
	e.b.log.Info("another refresher holds the lease; waiting for it", "connection", c.Path(), "owner", c.Lease.Owner, "until", c.Lease.Until)
	if c.Token.Valid(now) {
		if p, err := catalog.Resolve(ctx, e.b.store, c.Config.Provider); err == nil {
			if cur, err := newCurrent(p, c.Token); err == nil {
				e.mu.Lock()
				e.conn = c
				e.publishLocked(cur, now)
				e.scheduleLocked(now.Add(min(wait, 5*time.Second)))
				e.mu.Unlock()
				return cur, nil
			}
		}
	}
	e.mu.Lock()
	e.scheduleLocked(now.Add(min(wait, 5*time.Second)))
	e.mu.Unlock()
	return nil, unavailable(c, min(wait, 5*time.Second), tokenhub.Errorf(tokenhub.EUNAVAILABLE, "another replica is refreshing it"))
}

// fail records a failed attempt, schedules the next one for transient
// failures, and returns the error readers get.
func (e *entry) fail(ctx context.Context, conn *tokenhub.Connection, now time.Time, p *tokenhub.Provider, events []tokenhub.Event, cause error, permanent bool) error {
	b := e.b
	if b.ctx.Err() != nil {
		// Shutting down. The lease stays in the store, so the next start sees
		// that this refresh did not finish and takes it over.
		return tokenhub.Errorf(tokenhub.EUNAVAILABLE, "tokenhub is shutting down")
	}
	log := b.log.With("connection", conn.Path())
	st := conn.Status
	st.Failures++
	st.LastError = errorInfo(cause, now)
	ev := func(t tokenhub.EventType, format string, args ...any) {
		events = append(events, tokenhub.Event{ConnectionID: conn.ID, At: now, Type: t, Message: fmt.Sprintf(format, args...)})
	}
	var retry time.Duration
	if permanent {
		st.State = tokenhub.StateNeedsReauth
		st.NextRefreshAt = time.Time{}
		ev(tokenhub.EventNeedsReauth, "%s; the connection needs re-authorisation", describe(cause))
		log.Error("CONNECTION BROKEN: needs re-authorisation", "provider", conn.Config.Provider, "err", cause)
	} else {
		retry = b.backoff(st.Failures, grant.RetryAfter(cause))
		st.NextRefreshAt = now.Add(retry)
		if conn.Token.Valid(now) || conn.Status.State != tokenhub.StatePending {
			if st.State != tokenhub.StateDegraded {
				ev(tokenhub.EventDegraded, "connection degraded: %s", describe(cause))
			}
			st.State = tokenhub.StateDegraded
		}
		ev(tokenhub.EventRetried, "attempt %d failed: %s; next attempt in %s", st.Failures, describe(cause), retry.Round(time.Millisecond))
		log.Warn("token request failed; will retry", "attempt", st.Failures, "retry_in", retry.Round(time.Millisecond).String(), "err", cause)
	}
	saved, err := b.store.UpdateConnection(ctx, conn.ID, tokenhub.ConnectionUpdate{
		IfVersion: conn.Version, Status: &st, ReleaseLease: b.owner, Events: events,
	})
	if err != nil {
		if tokenhub.ErrorCode(err) == tokenhub.ECONFLICT {
			return changed(conn)
		}
		log.Error("cannot record failure", "err", err)
		saved = conn
		saved.Status = st
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.deleted && !b.closing.Load() {
		return notFound(e.key.ws, e.key.name)
	} else if saved.Generation != e.generation {
		return changed(conn)
	}
	e.conn = saved
	if permanent {
		e.broken = reauthError(saved)
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		return e.broken
	}
	e.retryAt = st.NextRefreshAt
	if ra := grant.RetryAfter(cause); ra > 0 {
		e.holdUntil = now.Add(ra)
	}
	if !e.deleted {
		e.scheduleLocked(st.NextRefreshAt)
	}
	return unavailable(saved, retry, errors.New(describe(cause)))
}

// retryLater schedules another attempt after a failure that happened before
// any upstream request (the store could not be reached).
func (e *entry) retryLater(now time.Time, failures int, cause error) error {
	retry := e.b.backoff(failures+1, 0)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retryAt = now.Add(retry)
	e.scheduleLocked(e.retryAt)
	return &tokenhub.Error{Code: tokenhub.EUNAVAILABLE, Message: fmt.Sprintf("no valid token for connection %q: tokenhub cannot reach its store; retrying in %s", e.key.ws+"/"+e.key.name, retry.Round(time.Second)), RetryAfter: max(retry, time.Second)}
}

// notCommitted handles a token that was obtained but could not be stored. It
// is never handed out: a token readers got but the store lost would be
// renewed with a refresh token the provider may already have retired.
func (e *entry) notCommitted(conn *tokenhub.Connection, err error) error {
	if tokenhub.ErrorCode(err) == tokenhub.ECONFLICT {
		// The config changed while we were refreshing; Sync starts over.
		return changed(conn)
	}
	e.b.log.Error("TOKEN NOT STORED: the new token was obtained but could not be written; it is not handed out",
		"connection", conn.Path(), "err", err)
	return e.retryLater(e.b.clock.Now(), conn.Status.Failures, fmt.Errorf("store: %w", err))
}

// describe is a one-line, secret-free account of a failed attempt.
func describe(err error) string {
	var ge *grant.Error
	if errors.As(err, &ge) {
		return ge.Error()
	}
	var te *tokenhub.Error
	if errors.As(err, &te) {
		return te.Message
	}
	return "internal error"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// changed is the error for a flight whose connection was reconfigured while
// it ran; its result is discarded and Sync starts a new flight.
func changed(c *tokenhub.Connection) error {
	return &tokenhub.Error{Code: tokenhub.EUNAVAILABLE, RetryAfter: time.Second,
		Message: fmt.Sprintf("connection %q changed while its token was being renewed; try again", c.Path())}
}
