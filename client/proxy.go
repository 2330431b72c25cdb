package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"

	"github.com/tokenhub/tokenhub"
)

// Proxy sends a request to the API of connection conn through tokenhub's
// proxy route, /v1/proxy/{conn}{path}, with the Client's key (an app key of
// the connection's workspace), and returns the answer whatever its status.
// tokenhub puts the connection's header (for example "Authorization: JWT
// <token>") in place of the key on the way, so the token never reaches the
// caller. An empty method means GET.
//
// path is the API path under the connection's base_url, with its query. It
// must start with "/" and is sent as given: its percent-encoding and its
// raw query are kept, and a path that could leave the base URL (dot
// segments, "//", ...) is refused by tokenhub with a 400. header holds the
// request's own headers (nil for none) and is not modified; an
// Authorization in it is replaced by the key, which tokenhub removes before
// the request goes on, and User-Agent defaults to the Client's.
//
// The answer is returned unread, and the caller must close its body. Its
// status, headers and body are the API's, passed through unchanged, unless
// tokenhub answered itself (an unknown connection, one that needs
// re-authorisation, no token to be had, a refused path, an upstream that
// cannot be reached or does not answer in time): ErrorFrom tells the two
// apart. A redirect is returned, not followed, since its Location is in the
// API's URL space, not tokenhub's. The body streams as it arrives.
//
// When the API answers 401, tokenhub itself forces one refresh of the token
// and sends the request once more, provided it could keep the request body:
// none, or one of known length up to 1 MiB (the proxy's default
// MaxReplayBody). So that a body can be replayed, Proxy sends it with its
// length whenever it can: a *bytes.Buffer, *bytes.Reader or
// *strings.Reader as it is (as http.NewRequest does), and any other body
// after reading up to MaxReplayBody bytes of it, which it keeps in memory
// when the body ends by then. A longer body is streamed once, as it is
// read, and a 401 to it reaches the caller. A body that is also an
// io.Closer is closed, as http.Client.Do closes it, even on error.
//
// Errors: a conn that is not a valid name or a path that does not start
// with "/" is a *tokenhub.Error with code tokenhub.EINVALID, and nothing is
// sent. A failure to reach tokenhub or to read the body is returned
// wrapped; it names the connection and the URL, never the key. Proxy is
// safe for concurrent use.
func (c *Client) Proxy(ctx context.Context, conn, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	closer, _ := body.(io.Closer)
	fail := func(err error) (*http.Response, error) {
		if closer != nil {
			closer.Close()
		}
		return nil, err
	}
	if !tokenhub.ValidName(conn) {
		return fail(tokenhub.Errorf(tokenhub.EINVALID, "conn: %q is not a connection name", conn))
	}
	if !strings.HasPrefix(path, "/") {
		return fail(tokenhub.Errorf(tokenhub.EINVALID, "path: %q must start with \"/\"", path))
	}
	body, whole, err := replayableBody(body, closer)
	if err != nil {
		return fail(fmt.Errorf("proxy %s: reading the request body: %w", conn, err))
	}
	if whole && closer != nil {
		closer.Close()
		closer = nil
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/v1/proxy/"+esc(conn)+path, body)
	if err != nil {
		return fail(fmt.Errorf("proxy %s: %w", conn, err))
	}
	maps.Copy(req.Header, header.Clone())
	req.Header.Del("Authorization")
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if c.ua != "" && req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", c.ua)
	}
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", conn, err)
	}
	return resp, nil
}

// replayableBody returns body in a form that http.NewRequest sends with its
// length when it is at most MaxReplayBody bytes long, so that tokenhub can
// keep it for a retry: a body whose length NewRequest knows as it is, any
// other read into memory up to that size (whole reports that it was read to
// its end, so the caller can close it). A longer body is returned as what
// was read followed by the rest, to be streamed, and closing it closes
// closer.
func replayableBody(body io.Reader, closer io.Closer) (r io.Reader, whole bool, err error) {
	switch body.(type) {
	case nil, *bytes.Buffer, *bytes.Reader, *strings.Reader:
		return body, false, nil
	}
	buf, err := io.ReadAll(io.LimitReader(body, MaxReplayBody+1))
	if err != nil {
		return nil, false, err
	}
	if len(buf) <= MaxReplayBody {
		return bytes.NewReader(buf), true, nil
	}
	rest := io.MultiReader(bytes.NewReader(buf), body)
	if closer != nil {
		return struct {
			io.Reader
			io.Closer
		}{rest, closer}, false, nil
	}
	return rest, false, nil
}
