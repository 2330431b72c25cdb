// Package proxy is tokenhub's header-injecting reverse proxy: an app sends
// its request to /v1/proxy/{connection}/{path...} with its own app key, and
// the proxy forwards it to the connection's base_url with the connection's
// token in the provider's header, so the app never holds the token.
//
// The package does not authenticate apps: the server checks the app key and
// the app's connection list, then hands the request to Handler.ServeProxy
// with the workspace and connection it resolved. The proxy owns everything
// after that: the SSRF checks on the path, the connection's allowlist, the
// header, streaming, the one refresh-and-retry on an upstream 401, timeouts,
// and turning failures into tokenhub's JSON errors.
//
// It is built on httputil.ReverseProxy with a Rewrite hook (not Director, see
// golang/go#50580), so hop-by-hop headers, headers named by the client's
// Connection header, and client-sent Forwarded/X-Forwarded-* headers are
// removed before the credential is added; the app's Authorization header
// (its app key) is removed too, and X-Forwarded-For and X-Forwarded-Proto
// are set afresh. Status, headers and body of the upstream's answer pass
// through unchanged, streamed in both directions, but for one header:
// client.ErrorHeader marks tokenhub's own error answers, so the proxy removes
// it from the upstream's, which could otherwise pass for tokenhub's.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/client"
)

// Tokens is what the proxy needs from the engine; *broker.Broker satisfies
// it. Implementations must be safe for concurrent use, and their errors
// should be *tokenhub.Error (ENOTFOUND, ENEEDSREAUTH, EUNAVAILABLE, ...), which
// the proxy maps to HTTP statuses; any other error is answered as an
// internal error.
type Tokens interface {
	// Token returns a valid token of the connection, with its header.
	Token(ctx context.Context, ws, name string) (*broker.Current, error)
	// Refresh forces a refresh, coalesced with any refresh already running.
	Refresh(ctx context.Context, ws, name string) (*broker.Current, error)
	// Upstream returns where the connection's requests go.
	Upstream(ws, name string) (*broker.Upstream, error)
	// Record appends an event, whose message holds no secret, to the connection's log.
	Record(ctx context.Context, ws, name string, typ tokenhub.EventType, message string) error
}

// Defaults used when the matching Options field is zero.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultMaxReplayBody         = 1 << 20
)

// recordTimeout bounds the store write that records an upstream 401.
const recordTimeout = 5 * time.Second

// Options configure a Handler. Only Tokens is required.
type Options struct {
	Tokens Tokens

	// Transport sends the upstream requests. When nil, the Handler builds a
	// pooled *http.Transport (many idle connections per host, no proxy from
	// the environment, no transparent decompression) with DialTimeout and
	// ResponseHeaderTimeout. When set, those two fields are ignored: the
	// given transport carries its own timeouts.
	Transport http.RoundTripper

	// Logger receives failures and upstream 401s; it never receives a token
	// or an app key. Nil discards.
	Logger *slog.Logger

	// DialTimeout bounds connecting (and the TLS handshake) to an upstream;
	// DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an upstream's response
	// headers once the request is sent; DefaultResponseHeaderTimeout when
	// zero. It does not bound a streaming response body.
	ResponseHeaderTimeout time.Duration

	// MaxReplayBody is the largest request body (with a known length) kept
	// in memory so that the request can be retried after a 401;
	// DefaultMaxReplayBody (1 MiB) when zero. A negative value keeps none:
	// only requests without a body are retried.
	MaxReplayBody int64
}

// Handler forwards app requests to their connection's upstream; the server
// mounts it through its Proxy interface. It is safe for concurrent use:
// create one with New and share it, so that upstream connections are pooled.
type Handler struct {
	tokens     Tokens
	transport  http.RoundTripper
	log        *slog.Logger
	errLog     *log.Logger
	buffers    httputil.BufferPool
	maxReplay  int64
	hdrTimeout time.Duration
	exchanges  sync.Pool // of *exchange; see newExchange
}

// New returns a Handler configured by o. It panics when o.Tokens is nil,
// which is a wiring bug rather than a runtime condition.
func New(o Options) *Handler {
	if o.Tokens == nil {
		panic("proxy.New: Options.Tokens is nil")
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if o.MaxReplayBody == 0 {
		o.MaxReplayBody = DefaultMaxReplayBody
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = newTransport(o.DialTimeout, o.ResponseHeaderTimeout)
	}
	h := &Handler{
		tokens:    o.Tokens,
		transport: o.Transport,
		log:       o.Logger,
		// ReverseProxy logs body-copy failures through a *log.Logger; those
		// messages carry no request header, so no secret.
		errLog:     slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		buffers:    newBufferPool(),
		maxReplay:  o.MaxReplayBody,
		hdrTimeout: o.ResponseHeaderTimeout,
	}
	h.exchanges.New = func() any { return h.newExchange() }
	return h
}

// ServeProxy forwards r to the upstream of connection conn in workspace ws
// and writes the upstream's answer, or a tokenhub JSON error, to w. path is
// the part of the request path after /v1/proxy/{connection}, still escaped
// (for example from r.URL.EscapedPath()); it is empty or starts with "/".
// The query is forwarded as sent.
//
// The caller must already have authorised the app for ws/conn. Errors are
// answered, never returned: 400 for a path that could leave the base URL
// (dot segments, //, @, backslash, control characters), 403 for a request the
// connection's allowlist refuses, 404 for an unknown connection, 409 when it
// needs re-authorisation, 503 (with Retry-After) when no token can be had,
// 502 when the upstream cannot be reached and 504 when it does not answer in
// time.
func (h *Handler) ServeProxy(w http.ResponseWriter, r *http.Request, ws, conn, path string) {
	dec, err := checkPath(path)
	if err != nil {
		writeError(w, err)
		return
	}
	up, err := h.tokens.Upstream(ws, conn)
	if err != nil {
		h.fail(w, ws, conn, "finding the upstream", err)
		return
	}
	if up == nil || up.BaseURL == nil || up.BaseURL.Host == "" ||
		(up.BaseURL.Scheme != "http" && up.BaseURL.Scheme != "https") {
		writeError(w, tokenhub.Errorf(tokenhub.EINVALID, "connection %q has no http(s) base_url to proxy to", conn))
		return
	}
	if !allowed(up.Allow, r.Method, path) {
		writeError(w, tokenhub.Errorf(tokenhub.EFORBIDDEN, "%s %s is not in the allowlist of connection %q", r.Method, path, conn))
		return
	}
	cur, err := h.tokens.Token(r.Context(), ws, conn)
	if err != nil {
		h.fail(w, ws, conn, "getting a token", err)
		return
	}

	var body []byte
	replayable := false
	switch {
	case r.ContentLength == 0:
		replayable = true
	case r.ContentLength > 0 && r.ContentLength <= h.maxReplay:
		// Kept whole so that a 401 can be retried with the same body.
		body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			writeError(w, tokenhub.Errorf(tokenhub.EINVALID, "reading the request body: %v", err))
			return
		}
		replayable = true
	}
	x := h.exchanges.Get().(*exchange)
	defer x.release()
	x.ws, x.conn, x.cur, x.body, x.replayable = ws, conn, cur, body, replayable
	x.target = target(up.BaseURL, path, dec, r.URL.RawQuery)
	x.rp.ServeHTTP(w, r)
}

// fail answers err from the engine, logging what is not a plain user error.
func (h *Handler) fail(w http.ResponseWriter, ws, conn, doing string, err error) {
	if tokenhub.ErrorCode(err) == tokenhub.EINTERNAL {
		h.log.Error("proxy: "+doing, "workspace", ws, "connection", conn, "err", err)
	}
	writeError(w, err)
}

// target returns base with the path appended (raw: escaped, dec: decoded)
// and the query added. The path has passed checkPath, so the result stays
// under base's path, on base's scheme, host and port. The query is the app's
// raw query, not ReverseProxy's cleaned copy: the proxy does not interpret
// it, so the upstream sees what the app sent. It returns a value, which
// rewrite copies into the outgoing request's own URL (a copy ReverseProxy
// has already made), so that a request allocates no URL of its own.
func target(base *url.URL, raw, dec, query string) url.URL {
	u := url.URL{Scheme: base.Scheme, Host: base.Host, Path: base.Path, RawPath: base.RawPath, RawQuery: base.RawQuery}
	if raw != "" {
		u.Path = strings.TrimSuffix(u.Path, "/") + dec
		if base.RawPath != "" || raw != dec {
			u.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + raw
		}
	}
	switch {
	case query == "":
	case u.RawQuery == "":
		u.RawQuery = query
	default:
		u.RawQuery += "&" + query
	}
	return u
}

// exchange is one proxied request: the ReverseProxy that serves it and the
// state its 401 retry needs. It is the RoundTripper of its own ReverseProxy.
//
// Exchanges are pooled (Handler.exchanges): the ReverseProxy's Rewrite and
// ErrorHandler are method values bound to the exchange, and building them,
// with the exchange itself, cost three allocations per request. An exchange
// is used by one request at a time, from ServeProxy until ServeHTTP returns:
// ReverseProxy calls Rewrite, RoundTrip and ErrorHandler only before then,
// and nothing that outlives the request (such as a transport still writing
// the request body) refers to the exchange; release clears the per-request
// fields so that a pooled exchange holds no token.
type exchange struct {
	h          *Handler
	ws, conn   string
	cur        *broker.Current // the token sent on the latest attempt
	target     url.URL
	body       []byte // the kept request body, when it had a length ≤ maxReplay
	replayable bool   // no body, or body holds all of it
	rp         httputil.ReverseProxy
}

// newExchange returns an exchange whose ReverseProxy calls back into it.
func (h *Handler) newExchange() *exchange {
	x := &exchange{h: h}
	x.rp = httputil.ReverseProxy{
		Rewrite:      x.rewrite,
		Transport:    x,
		BufferPool:   h.buffers,
		ErrorHandler: x.handleError,
		ErrorLog:     h.errLog,
	}
	return x
}

// release clears the request's state and returns x to its Handler's pool.
func (x *exchange) release() {
	x.ws, x.conn, x.cur, x.target, x.body, x.replayable = "", "", nil, url.URL{}, nil, false
	x.h.exchanges.Put(x)
}

// Shared values of X-Forwarded-Proto. net/http only reads header slices,
// and Header.Add copies a slice whose capacity is full, so sharing is safe.
var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// rewrite turns the inbound request into the upstream one. ReverseProxy has
// already removed hop-by-hop headers, the headers named by Connection, and
// the client's Forwarded and X-Forwarded-* headers.
//
// It sets X-Forwarded-For and X-Forwarded-Proto as SetXForwarded does, but
// not X-Forwarded-Host: tokenhub's host name means nothing to the upstream,
// and an upstream that trusts it would build links to paths that do not
// exist on tokenhub.
func (x *exchange) rewrite(pr *httputil.ProxyRequest) {
	*pr.Out.URL = x.target // pr.Out.URL is ReverseProxy's copy of the inbound URL
	pr.Out.Host = ""
	h := pr.Out.Header
	delete(h, "Authorization") // the app key (Header.Del would canonicalise a canonical name)
	// The token's header and X-Forwarded-For share one backing array, each
	// slice capped at its one value so that an Add elsewhere copies rather
	// than writes into the other: one allocation instead of two.
	vals := make([]string, 2)
	vals[0] = x.cur.HeaderValue
	h[http.CanonicalHeaderKey(x.cur.HeaderName)] = vals[0:1:1]
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		vals[1] = ip
		h["X-Forwarded-For"] = vals[1:2:2]
	}
	if pr.In.TLS != nil {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	if x.body != nil {
		pr.Out.Body = io.NopCloser(bytes.NewReader(x.body))
		pr.Out.ContentLength = int64(len(x.body))
		pr.Out.GetBody = bodyGetter(x.body) // not bound to x, which is reused after the request
		// The body is already here; waiting for the upstream's 100 Continue
		// would only add a round trip (or a second, if it sends none).
		h.Del("Expect")
	}
}

// bodyGetter returns a Request.GetBody that reads body from the start.
func bodyGetter(body []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// RoundTrip sends out and, when the upstream refuses the token with a 401
// and the body can be sent again, gets a fresh token (forcing one refresh
// unless another request already replaced the token) and sends it once more.
// The answer it returns never carries client.ErrorHeader, which is
// tokenhub's to set.
func (x *exchange) RoundTrip(out *http.Request) (*http.Response, error) {
	res, err := x.send(out)
	if res != nil {
		delete(res.Header, client.ErrorHeader)
	}
	return res, err
}

// send is RoundTrip but for the removal of client.ErrorHeader.
func (x *exchange) send(out *http.Request) (*http.Response, error) {
	res, err := x.h.transport.RoundTrip(out)
	if err != nil || res.StatusCode != http.StatusUnauthorized {
		return res, err
	}
	ctx := out.Context()
	if !x.replayable {
		x.record(ctx, "upstream answered 401; the request body could not be replayed, so the 401 was passed to the app without a refresh")
		return res, nil
	}
	// Let the connection be reused: read a little of the 401's body, then close.
	io.CopyN(io.Discard, res.Body, 64<<10)
	res.Body.Close()

	sent := x.cur
	cur, err := x.h.tokens.Token(ctx, x.ws, x.conn)
	if err == nil && cur.HeaderName == sent.HeaderName && cur.HeaderValue == sent.HeaderValue {
		cur, err = x.h.tokens.Refresh(ctx, x.ws, x.conn)
	}
	if err != nil {
		return nil, &refreshError{err}
	}
	x.cur = cur
	retry := out.Clone(ctx)
	if !strings.EqualFold(sent.HeaderName, cur.HeaderName) {
		retry.Header.Del(sent.HeaderName)
	}
	retry.Header.Set(cur.HeaderName, cur.HeaderValue)
	if x.body != nil {
		retry.Body = io.NopCloser(bytes.NewReader(x.body))
	}
	res, err = x.h.transport.RoundTrip(retry)
	if err == nil && res.StatusCode == http.StatusUnauthorized {
		x.record(ctx, "upstream answered 401 again after a refreshed token; passed to the app")
	}
	return res, err
}

// record logs an upstream 401 in the connection's event log. It outlives a
// client that hangs up, but not by more than recordTimeout.
func (x *exchange) record(ctx context.Context, msg string) {
	x.h.log.Warn("proxy: upstream 401", "workspace", x.ws, "connection", x.conn, "detail", msg)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := x.h.tokens.Record(ctx, x.ws, x.conn, tokenhub.EventUnauthorized, msg); err != nil {
		x.h.log.Warn("proxy: recording upstream 401", "workspace", x.ws, "connection", x.conn, "err", err)
	}
}

// refreshError marks a failure to get a token for the retry, so that error
// answers with the engine's code rather than as an upstream failure.
type refreshError struct{ err error }

func (e *refreshError) Error() string { return "refreshing after an upstream 401: " + e.err.Error() }
func (e *refreshError) Unwrap() error { return e.err }

// handleError is the ReverseProxy's ErrorHandler: it answers a failed upstream
// exchange with a tokenhub JSON error that names the cause but carries no
// secret and no upstream bytes.
func (x *exchange) handleError(w http.ResponseWriter, r *http.Request, err error) {
	var re *refreshError
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &re):
		x.h.fail(w, x.ws, x.conn, "refreshing after an upstream 401", re.err)
		return
	case r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded):
		// The app hung up; nobody reads this answer.
		x.h.log.Debug("proxy: client went away", "workspace", x.ws, "connection", x.conn)
		w.WriteHeader(http.StatusBadGateway)
		return
	case errors.As(err, &op) && op.Op == "dial":
		x.logUpstream("upstream unreachable", err)
		writeErrorStatus(w, http.StatusBadGateway, tokenhub.Errorf(tokenhub.EUNAVAILABLE,
			"the upstream of connection %q cannot be reached", x.conn))
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		x.logUpstream("upstream timed out", err)
		writeErrorStatus(w, http.StatusGatewayTimeout, tokenhub.Errorf(tokenhub.EUNAVAILABLE,
			"the upstream of connection %q did not answer in time (response header timeout %s)", x.conn, x.h.hdrTimeout))
	default:
		x.logUpstream("upstream failed", err)
		writeErrorStatus(w, http.StatusBadGateway, tokenhub.Errorf(tokenhub.EUNAVAILABLE,
			"the upstream of connection %q failed to answer", x.conn))
	}
}

// logUpstream logs a transport failure. The error text comes from the
// network stack and may quote upstream bytes, so the token is scrubbed from
// it in case an upstream echoed it back.
func (x *exchange) logUpstream(msg string, err error) {
	s := err.Error()
	if x.cur.HeaderValue != "" {
		s = strings.ReplaceAll(s, x.cur.HeaderValue, "[REDACTED]")
	}
	if x.cur.Token != nil && x.cur.Token.AccessToken != "" {
		s = strings.ReplaceAll(s, x.cur.Token.AccessToken, "[REDACTED]")
	}
	x.h.log.Warn("proxy: "+msg, "workspace", x.ws, "connection", x.conn, "host", x.target.Host, "err", s)
}
