package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Client calls one tokenhub server with one key. It is safe for concurrent
// use by multiple goroutines; create one per key and reuse it, so that its
// HTTP connections are reused.
type Client struct {
	base string // without a trailing slash
	auth string // "Bearer <key>"; never put in an error message
	ua   string
	hc   *http.Client
	now  func() time.Time
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc instead of a
// client built on http.DefaultTransport. Use it to set timeouts, proxies or
// TLS settings. A nil hc is ignored.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.ua = ua }
}

// DefaultUserAgent is the User-Agent a Client sends unless WithUserAgent says otherwise.
const DefaultUserAgent = "tokenhub-go-client"

// New returns a Client for the tokenhub server at baseURL (for example
// "http://127.0.0.1:7470") that authenticates with key, an app key or the
// admin key. An empty key sends no Authorization header. New does not
// contact the server; a malformed baseURL makes every call fail.
func New(baseURL, key string, opts ...Option) *Client {
	c := &Client{
		base: strings.TrimRight(baseURL, "/"),
		ua:   DefaultUserAgent,
		hc:   &http.Client{},
		now:  time.Now,
	}
	if key != "" {
		c.auth = "Bearer " + key
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// BaseURL returns the server URL the Client was made with, without a
// trailing slash.
func (c *Client) BaseURL() string { return c.base }

// The plumbing below (newRequest, do, errorFrom) is what every call of the
// API goes through, so that keys, user agents and error mapping are handled
// in one place. Code elsewhere in this package (TokenSource, Transport) uses
// it too.

// newRequest builds a request to the API path (which starts with "/" and has
// its variable segments escaped), with the key, the user agent and, when in
// is not nil, a JSON body. The key never appears in an error it returns.
func (c *Client) newRequest(ctx context.Context, method, path string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// do sends a request to the API and decodes a 2xx JSON answer into out (when
// out is not nil). A non-2xx answer yields an *Error; a transport failure
// yields an error that names the method and path. It returns the answer's
// status code.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (int, error) {
	req, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, c.errorFrom(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

// errorFrom turns a non-2xx answer into an *Error. It reads tokenhub's JSON
// error body when there is one, and otherwise takes the code from the
// ErrorHeader, or derives it from the status with CodeForStatus. It never
// copies a foreign body into the error, since a body it does not know may
// hold anything.
func (c *Client) errorFrom(resp *http.Response) *Error {
	return errorFrom(resp, c.now())
}

// errorFrom is Client.errorFrom with the time that an HTTP-date Retry-After
// is measured from.
func errorFrom(resp *http.Response, now time.Time) *Error {
	e := &Error{
		Status:     resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now),
	}
	var body ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message, e.State = body.Error.Code, body.Error.Message, body.Error.State
		return e
	}
	e.Code = resp.Header.Get(ErrorHeader)
	if e.Code == "" {
		e.Code = CodeForStatus(resp.StatusCode)
	}
	e.Message = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	return e
}
