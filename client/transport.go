package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/tokenhub/tokenhub/internal/clock"
)

// MaxReplayBody is the largest request body without GetBody that Transport
// keeps in memory so that it can send the request again after a 401. A body
// with GetBody set, or none, is always replayable; a longer body is
// streamed once, and its 401 reaches the caller.
const MaxReplayBody = 1 << 20

// Transport returns an http.RoundTripper that sends each request through
// base with the connection's header set (for example
// "Authorization: JWT <token>", as the connection's provider defines it),
// replacing any header of that name the request had. A nil base means
// http.DefaultTransport.
//
// The token comes from a cache like TokenSource's, so a request costs no
// call to tokenhub while the token is valid; when the cache is empty, the
// token is fetched with the request's context and concurrent requests share
// the fetch.
//
// When the upstream answers 401, the Transport asks tokenhub for a forced
// refresh (Refresh, shared by concurrent requests that saw the same token
// refused) and sends the request once more with the new token. It does so
// only when the body can be sent again: no body, a body with GetBody set
// (as http.NewRequest sets for bytes, strings and buffers), or a body of
// unknown length of at most MaxReplayBody bytes, which the Transport
// buffers for this purpose. Otherwise, and when the second attempt gets a
// 401 as well, the upstream's 401 is returned as it is. So that an API
// that refuses every request does not make tokenhub renew the token (and
// call the provider) once per request, the Transport forces at most one
// refresh every 5 seconds; a 401 that comes sooner after one is returned as
// it is. When the forced refresh finds that the connection needs
// re-authorisation, later requests fail with ErrNeedsReauth without being
// sent, until the connection is repaired.
//
// The header goes on every request the RoundTripper sends, whatever its
// host: send through it only requests meant for the connection's API (an
// http.Client follows redirects through its Transport; HTTPClient refuses
// those that leave the origin). The caller's request is never modified:
// each attempt sends a clone.
//
// Failures to get a token (including a failed forced refresh) are returned
// as the error of RoundTrip with the request body closed: an *Error such as
// ErrNeedsReauth, which errors.Is and errors.As find through the *url.Error
// that http.Client wraps it in.
//
// The RoundTripper is safe for concurrent use. Each call makes a new cache:
// create one per connection and reuse it.
func (c *Client) Transport(conn string, base http.RoundTripper) http.RoundTripper {
	return c.newTransport(conn, base, clock.Real{})
}

// HTTPClient returns an *http.Client whose requests carry the connection's
// header: its Transport is Transport(conn, http.DefaultTransport).
//
// Since the Transport adds the header to every request it sends, the client
// follows a redirect only to the same scheme, host and port as the request
// it came from; a redirect elsewhere is returned as the response, so that
// the token never reaches another server. It follows at most 10 redirects,
// as http.Client does by default. It has no overall timeout: set Timeout,
// or give each request a context with a deadline. Like Transport, create it
// once per connection and reuse it.
func (c *Client) HTTPClient(conn string) *http.Client {
	return &http.Client{Transport: c.Transport(conn, http.DefaultTransport), CheckRedirect: sameOrigin}
}

// sameOrigin is HTTPClient's redirect policy.
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if prev := via[len(via)-1].URL; req.URL.Scheme != prev.Scheme || req.URL.Host != prev.Host {
		return http.ErrUseLastResponse
	}
	return nil
}

func (c *Client) newTransport(conn string, base http.RoundTripper, clk clock.Clock) *transport {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{ts: c.newTokenSource(context.Background(), conn, clk), base: base}
}

// transport is the RoundTripper that Transport returns.
type transport struct {
	ts   *tokenSource
	base http.RoundTripper
}

// RoundTrip implements http.RoundTripper. See Client.Transport.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	e, err := t.ts.entry(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	body, getBody, again, err := replayable(req)
	if err != nil {
		return nil, err
	}
	resp, err := t.base.RoundTrip(withHeader(req, e, body, getBody))
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !again {
		return resp, err
	}

	// The upstream refused the token: renew it and try once more.
	next, err := t.ts.fetch(ctx, e)
	if errors.Is(err, errRecentlyForced) {
		return resp, nil
	}
	if err != nil {
		drain(resp)
		return nil, fmt.Errorf("renew the token of %q after the upstream answered 401: %w", t.ts.conn, err)
	}
	if getBody != nil {
		if body, err = getBody(); err != nil {
			// The body cannot be produced again after all: the 401 stands.
			return resp, nil
		}
	}
	drain(resp)
	return t.base.RoundTrip(withHeader(req, next, body, getBody))
}

// withHeader returns a clone of req that carries e's header and the given
// body.
func withHeader(req *http.Request, e *entry, body io.ReadCloser, getBody func() (io.ReadCloser, error)) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set(e.name, e.value)
	r.Body, r.GetBody = body, getBody
	return r
}

// replayable returns the body to send first, the function that returns it
// anew (nil when there is no body, or when it cannot be had again), and
// whether the request can be sent twice. A body of unknown length without
// GetBody is read up to MaxReplayBody bytes: when it ends by then it is kept
// in memory, and otherwise what was read is sent followed by the rest, once.
// It fails only when reading the body fails, and then closes it.
func replayable(req *http.Request) (body io.ReadCloser, getBody func() (io.ReadCloser, error), again bool, err error) {
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		return req.Body, nil, true, nil
	case req.GetBody != nil:
		return req.Body, req.GetBody, true, nil
	case req.ContentLength > MaxReplayBody:
		return req.Body, nil, false, nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, MaxReplayBody+1))
	if err != nil {
		req.Body.Close()
		return nil, nil, false, fmt.Errorf("read request body: %w", err)
	}
	if len(buf) > MaxReplayBody {
		rest := struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
		return rest, nil, false, nil
	}
	req.Body.Close()
	getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	body, _ = getBody()
	return body, getBody, true, nil
}

// drain reads a little of a response we are discarding, so that its
// connection can be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
