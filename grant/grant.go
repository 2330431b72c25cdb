// Package grant speaks the wire protocols that obtain and renew tokens: the
// OAuth 2.0 token endpoint (RFC 6749: client credentials, resource owner
// password and refresh token grants) and provider-specific login APIs such as
// Baserow's /api/user/token-auth/, described declaratively by a
// tokenhub.Provider.
//
// A Client sends exactly one request per call and never retries: deciding
// when to try again is the broker's job. What it returns lets the broker
// decide: a *tokenhub.Token whose expiry says where it came from, or an
// *Error that says whether the failure is permanent (the grant is dead) or
// transient (try again, maybe after RetryAfter), and what the provider said,
// without ever holding a secret or the body of a response.
package grant

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
)

// Ops name what a Client was doing when it failed; they are Error.Op.
const (
	OpObtain  = "obtain"  // getting a first token: a login or a client_credentials / password grant
	OpRefresh = "refresh" // renewing a token with a refresh token
)

// maxBody bounds how much of a response is read.
const maxBody = 1 << 20

// Errors a Client returns, wrapped in a permanent *Error, when a refresh
// cannot even be attempted. Test for them with errors.Is.
var (
	ErrNoRefreshRequest = errors.New("the provider defines no refresh request; log in again")
	ErrNoRefreshToken   = errors.New("no refresh token to refresh with")
)

// Client performs obtain and refresh requests. The zero Client is ready to
// use. A Client is safe for concurrent use; its fields must not change once
// it is in use.
type Client struct {
	// HTTPClient sends the requests. When nil, a shared client with dial,
	// TLS handshake and response header timeouts is used; it does not follow
	// redirects (a token endpoint that redirects is misconfigured, and
	// following would resend credentials) and reads no proxy settings from
	// the environment.
	HTTPClient *http.Client
	// Now is the clock that stamps ObtainedAt and turns expires_in and
	// Retry-After into instants. time.Now when nil.
	Now func() time.Time
	// UserAgent is sent with every request; "tokenhub" when empty.
	UserAgent string
}

var defaultHTTPClient = &http.Client{
	Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return defaultHTTPClient
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) userAgent() string {
	if c.UserAgent != "" {
		return c.UserAgent
	}
	return "tokenhub"
}

// Obtain gets a first token for conn from p: by sending p's login request
// when p is a login API, or else with the connection's OAuth 2.0 grant
// (client_credentials or password) at the token endpoint. conn must not be
// nil.
//
// The attempt is bounded by p's timeout. On failure it returns an *Error;
// IsPermanent tells a dead grant (bad credentials) from a passing failure.
func (c *Client) Obtain(ctx context.Context, p *tokenhub.Provider, conn *tokenhub.Connection) (*tokenhub.Token, error) {
	sec := secretsOf(conn, "")
	if p.Login != nil {
		return c.login(ctx, OpObtain, p, "login", p.Login, conn.Config.TemplateData(), sec)
	}
	grant := conn.Config.GrantOrDefault(p)
	form := url.Values{}
	switch grant {
	case tokenhub.GrantClientCredentials:
	case tokenhub.GrantPassword:
		form.Set("username", conn.Config.Username)
		form.Set("password", conn.Config.Password)
	default:
		return nil, permanent(OpObtain, fmt.Errorf("grant %q cannot obtain a token from OAuth 2.0 provider %q", grant, p.Name))
	}
	return c.oauth(ctx, OpObtain, p, conn, grant, form, sec)
}

// Refresh renews conn's token with refreshToken: with p's refresh request
// when p is a login API (its templates see RefreshToken, and AccessToken from
// conn.Token), or else with the refresh_token grant at the token endpoint,
// sending the connection's scopes and params again.
//
// The returned token's RefreshToken is "" when the provider sent none, in
// which case the caller keeps the one it has. A login provider without a
// refresh request yields a permanent *Error wrapping ErrNoRefreshRequest, and
// an empty refreshToken one wrapping ErrNoRefreshToken, both without any
// request being sent.
func (c *Client) Refresh(ctx context.Context, p *tokenhub.Provider, conn *tokenhub.Connection, refreshToken string) (*tokenhub.Token, error) {
	if p.Login != nil && p.Refresh == nil {
		return nil, permanent(OpRefresh, ErrNoRefreshRequest)
	}
	if refreshToken == "" {
		return nil, permanent(OpRefresh, ErrNoRefreshToken)
	}
	sec := secretsOf(conn, refreshToken)
	if p.Login != nil {
		data := conn.Config.TemplateData()
		data.RefreshToken = refreshToken
		if conn.Token != nil {
			data.AccessToken = conn.Token.AccessToken
		}
		return c.login(ctx, OpRefresh, p, "refresh", p.Refresh, data, sec)
	}
	form := url.Values{"refresh_token": {refreshToken}}
	return c.oauth(ctx, OpRefresh, p, conn, tokenhub.GrantRefreshToken, form, sec)
}

// reservedParams may not be set by a connection's params: they are the
// protocol's own.
var reservedParams = map[string]bool{
	"grant_type": true, "client_id": true, "client_secret": true, "username": true,
	"password": true, "refresh_token": true, "scope": true,
}

// oauth sends a token request (RFC 6749 §4.3.2, §4.4.2, §6) with the
// grant-specific fields in form.
func (c *Client) oauth(ctx context.Context, op string, p *tokenhub.Provider, conn *tokenhub.Connection, grant tokenhub.Grant, form url.Values, sec []string) (*tokenhub.Token, error) {
	cfg := &conn.Config
	tmpl, field := cfg.TokenURL, "token_url"
	if tmpl == "" {
		tmpl = p.TokenURL
	}
	if tmpl == "" {
		return nil, permanent(op, fmt.Errorf("token_url: provider %q names no token endpoint and the connection sets none", p.Name))
	}
	u, err := renderURL(field, tmpl, cfg.TemplateData())
	if err != nil {
		return nil, permanent(op, err).redact(sec)
	}
	for k, v := range cfg.Params {
		if !reservedParams[k] {
			form.Set(k, v)
		}
	}
	form.Set("grant_type", string(grant))
	if len(cfg.Scopes) > 0 {
		form.Set("scope", strings.Join(cfg.Scopes, " "))
	}
	style := cfg.AuthStyle
	if style == "" {
		style = p.AuthStyle
	}
	basic := false
	switch {
	case cfg.ClientID == "":
	case cfg.ClientSecret == "":
		// A public client identifies itself and has nothing to prove (RFC 6749 §3.2.1).
		form.Set("client_id", cfg.ClientID)
	case style == tokenhub.AuthStyleBody:
		form.Set("client_id", cfg.ClientID)
		form.Set("client_secret", cfg.ClientSecret)
	default:
		basic = true
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, permanent(op, fmt.Errorf("token_url: %w", errNotHTTPURL)).redact(sec)
	}
	if basic {
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return c.send(ctx, op, p, req, tokenhub.ResponseMapping{}, sec)
}

// login sends a login API's request r, rendered over data. field names r in
// errors ("login" or "refresh").
func (c *Client) login(ctx context.Context, op string, p *tokenhub.Provider, field string, r *tokenhub.Request, data tokenhub.TemplateData, sec []string) (*tokenhub.Token, error) {
	tok, err := c.loginRequest(ctx, op, p, field, r, data, sec)
	if err == nil {
		return tok, nil
	}
	e, ok := err.(*Error)
	if !ok {
		// Rendering failed: the definition or the credentials are wrong.
		e = permanent(op, err)
	}
	return nil, e.redact(sec)
}

func (c *Client) loginRequest(ctx context.Context, op string, p *tokenhub.Provider, field string, r *tokenhub.Request, data tokenhub.TemplateData, sec []string) (*tokenhub.Token, error) {
	u, err := renderURL(field+".url", r.URL, data)
	if err != nil {
		return nil, err
	}
	method := strings.ToUpper(r.Method)
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	contentType := ""
	switch {
	case r.JSON != nil:
		v, err := renderJSON(field+".json", r.JSON, data)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%s.json: %w", field, err)
		}
		body, contentType = bytes.NewReader(b), "application/json"
	case r.Form != nil:
		form := url.Values{}
		for k, tmpl := range r.Form {
			v, err := Render(tmpl, data)
			if err != nil {
				return nil, fmt.Errorf("%s.form.%s: %w", field, k, err)
			}
			form.Set(k, v)
		}
		if method == http.MethodGet {
			pu, _ := url.Parse(u) // renderURL parsed it already
			q := pu.Query()
			for k, v := range form {
				q[k] = v
			}
			pu.RawQuery = q.Encode()
			u = pu.String()
		} else {
			body, contentType = strings.NewReader(form.Encode()), "application/x-www-form-urlencoded"
		}
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s.url: %w", field, errNotHTTPURL)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	for k, tmpl := range r.Headers {
		v, err := Render(tmpl, data)
		if err != nil {
			return nil, fmt.Errorf("%s.headers.%s: %w", field, k, err)
		}
		if !validHeaderValue(v) {
			return nil, fmt.Errorf("%s.headers.%s: the rendered value holds a control character", field, k)
		}
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	return c.send(ctx, op, p, req, p.Response, sec)
}

// renderJSON renders every string leaf of v as a template. The result is
// marshalled afterwards, so a value holding quotes or braces stays one JSON
// string: data can never change the shape of the body.
func renderJSON(field string, v any, data tokenhub.TemplateData) (any, error) {
	switch v := v.(type) {
	case string:
		s, err := Render(v, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return s, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			r, err := renderJSON(field+"."+k, x, data)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			r, err := renderJSON(fmt.Sprintf("%s[%d]", field, i), x, data)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	default:
		return v, nil
	}
}

var (
	errNotHTTPURL = errors.New("the rendered URL is not an absolute http or https URL")
	errUserInfo   = errors.New("the rendered URL holds user info (user:password@); put credentials in the connection's secret fields")
)

// renderURL renders tmpl and checks that the result is an absolute http(s)
// URL. Its errors never quote the URL, which may hold a secret in its query.
func renderURL(field, tmpl string, data tokenhub.TemplateData) (string, error) {
	s, err := Render(tmpl, data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s: %w", field, errNotHTTPURL)
	}
	if u.User != nil {
		// net/http would send it as an Authorization: Basic header. Providers
		// and connections defined since that was refused cannot get here.
		return "", fmt.Errorf("%s: %w", field, errUserInfo)
	}
	return s, nil
}

// send performs one attempt, bounded by p's timeout, and maps the answer
// through m.
func (c *Client) send(ctx context.Context, op string, p *tokenhub.Provider, req *http.Request, m tokenhub.ResponseMapping, sec []string) (*tokenhub.Token, error) {
	pol := p.Policy()
	actx, cancel := context.WithTimeout(ctx, pol.Timeout)
	defer cancel()
	req = req.WithContext(actx)
	req.Header.Set("User-Agent", c.userAgent())

	sentAt := c.now()
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, transportError(op, err, ctx, actx, pol.Timeout).redact(sec)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		e := transportError(op, fmt.Errorf("reading the response: %w", err), ctx, actx, pol.Timeout)
		e.StatusCode = resp.StatusCode
		return nil, e.redact(sec)
	}
	ct := resp.Header.Get("Content-Type")
	e := &Error{Op: op, StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now())}
	if len(body) > maxBody {
		e.Err = errors.New("the response body exceeds 1 MiB")
		return nil, e.redact(sec)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		tok, err := MapResponse(body, ct, m, sentAt, pol.DefaultTTL)
		if err == nil {
			return tok, nil
		}
		// A 200 may still carry an OAuth error, as some servers answer so
		// (x/oauth2 treats it as a failure too).
		e.Err = err
		e.Code, e.Description = parseErrorBody(body, ct, true)
		e.Permanent = permanentCodes[cleanCode(e.Code)]
		return nil, e.redact(sec)
	}
	e.Code, e.Description = parseErrorBody(body, ct, false)
	e.Permanent = permanentStatus(resp.StatusCode, cleanCode(e.Code))
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Err = errors.New("the endpoint redirects; configure the final URL")
	}
	return nil, e.redact(sec)
}

// transportError describes a request that got no complete answer. It is
// always transient. parent is the caller's context, actx the attempt's.
func transportError(op string, err error, parent, actx context.Context, timeout time.Duration) *Error {
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error quotes the whole URL, query included; keep only where it went.
		err = &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
	}
	if parent.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %s: %w", timeout, err)
	}
	return &Error{Op: op, Err: err}
}

// redactURL keeps the scheme and host of u.
func redactURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(url)"
	}
	return pu.Scheme + "://" + pu.Host
}

func permanent(op string, err error) *Error {
	return &Error{Op: op, Permanent: true, Err: err}
}

// secretsOf lists the secrets that must never appear in an error.
func secretsOf(conn *tokenhub.Connection, refreshToken string) []string {
	cfg := &conn.Config
	s := []string{cfg.ClientSecret, cfg.Password, refreshToken, cfg.RefreshToken}
	if cfg.ClientSecret != "" {
		// The Authorization: Basic credential, as a provider that echoes
		// its request headers would show it.
		s = append(s, base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(cfg.ClientID)+":"+url.QueryEscape(cfg.ClientSecret))))
	}
	for _, v := range cfg.Credentials {
		s = append(s, v)
	}
	if conn.Token != nil {
		s = append(s, conn.Token.AccessToken, conn.Token.RefreshToken)
	}
	return s
}
