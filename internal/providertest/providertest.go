// Package providertest runs an OAuth 2.0 authorization server (RFC 6749) on
// an httptest server, for tests that need a real token endpoint: the client
// credentials, resource owner password and refresh token grants; client
// authentication with HTTP Basic or body parameters; invalid_client,
// invalid_grant, invalid_scope and unsupported_grant_type errors with the
// statuses the RFC gives; refresh token rotation; and each way a provider
// may (or may not) say when a token expires.
//
// Tests drive its clock with Options.Now, queue faults (FailNext, Hang,
// MalformedNext) through the embedded Faults, revoke every grant with
// RevokeAll, and assert what was sent with LastRequest and Counts.
package providertest

import (
	"fmt"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/fakeidp"
)

// ExpiryStyle is how the server tells a client when an access token expires.
type ExpiryStyle string

const (
	// ExpiresIn sends expires_in, the lifetime in seconds (RFC 6749 §5.1). The default.
	ExpiresIn ExpiryStyle = "expires_in"
	// ExpiresAt sends expires_at, an absolute Unix time, as some providers do.
	ExpiresAt ExpiryStyle = "expires_at"
	// JWTExp sends no lifetime; the access token is a JWT whose exp claim says it.
	JWTExp ExpiryStyle = "jwt_exp"
	// JWTNoExp sends no lifetime; the access token is a JWT with no exp claim.
	JWTNoExp ExpiryStyle = "jwt_no_exp"
	// NoExpiry sends no lifetime and an opaque access token that never expires.
	NoExpiry ExpiryStyle = "none"
)

// Defaults of Options.
const (
	DefaultTTL = time.Hour
	// ClientID and ClientSecret are the one client registered by default. The
	// secret holds characters that RFC 6749 §2.3.1 requires to be
	// form-encoded inside HTTP Basic, so a client that skips the encoding fails.
	ClientID     = "test-client"
	ClientSecret = "s3cret:with/special+chars&=%"
	// Username and Password are the one resource owner registered by default.
	Username = "alice"
	Password = "alice:pässword+1"
	// TokenPath is the path of the token endpoint; ResourcePath that of a
	// protected resource that answers 200 to a valid Bearer token.
	TokenPath    = "/oauth/token"
	ResourcePath = "/resource"
)

// Options configure a Server. The zero Options give a server that accepts
// both client authentication styles, issues one-hour access tokens with
// expires_in, and issues no refresh token.
type Options struct {
	// Now is the server's clock; time.Now when nil.
	Now func() time.Time
	// TTL is the lifetime of access tokens (DefaultTTL when 0).
	TTL time.Duration
	// Expiry says how the lifetime is told (ExpiresIn when "").
	Expiry ExpiryStyle
	// TokenType is sent as token_type ("Bearer" when ""; "-" sends none).
	TokenType string

	// IssueRefreshToken makes every grant issue a refresh token.
	IssueRefreshToken bool
	// Rotate makes each refresh issue a new refresh token and retire the old
	// one; using a retired token gets invalid_grant. Without Rotate a refresh
	// answers with no refresh_token and the old one stays valid.
	Rotate bool
	// RefreshTTL is the lifetime of refresh tokens; 0 means they never expire.
	RefreshTTL time.Duration
	// RefreshJWT makes refresh tokens JWTs that carry their exp claim, in
	// place of a refresh_expires_in field (which is sent when RefreshTTL > 0).
	RefreshJWT bool

	// AuthStyle is the client authentication the server accepts: basic,
	// body, or both when "".
	AuthStyle tokenhub.AuthStyle
	// Clients maps client_id to client_secret ({ClientID: ClientSecret} when
	// nil). A client with an empty secret is public: it sends only client_id.
	Clients map[string]string
	// Users maps username to password for the password grant
	// ({Username: Password} when nil).
	Users map[string]string
	// Scopes, when set, is every scope the server knows; a request for
	// another gets invalid_scope.
	Scopes []string

	// FormResponse makes successful answers application/x-www-form-urlencoded,
	// as GitHub's token endpoint answers by default.
	FormResponse bool
	// Edit, when set, may change a successful answer before it is sent: for
	// example send expires_in as a string, or add a field.
	Edit func(resp map[string]any)
}

// Counts is how many token requests named each grant, faulty answers
// included. Total counts every request to the token endpoint.
type Counts struct {
	ClientCredentials int64
	Password          int64
	RefreshToken      int64
	Other             int64 // a missing or unsupported grant_type
	Total             int64
}

// Request is what a client sent to the token endpoint. It holds secrets (the
// form may carry client_secret, password, refresh_token): tests assert on it
// and never log it.
type Request struct {
	GrantType string
	Form      url.Values
	// ClientAuth is how the client authenticated: AuthStyleBasic,
	// AuthStyleBody, or "" when it sent no client secret.
	ClientAuth tokenhub.AuthStyle
	ClientID   string
	Header     http.Header
}

// Server is a running OAuth 2.0 authorization server. It is safe for
// concurrent use.
type Server struct {
	// Faults queue misbehaviour of the token endpoint: FailNext, Hang,
	// MalformedNext, Release.
	fakeidp.Faults

	// URL is the server's base URL, with no trailing slash.
	URL string
	// TokenURL is URL + TokenPath.
	TokenURL string

	o      Options
	ts     *httptest.Server
	signer *fakeidp.Signer

	nCC, nPassword, nRefresh, nOther, nTotal atomic.Int64

	mu      sync.Mutex
	last    Request
	access  map[string]grantInfo
	refresh map[string]*refreshInfo
}

type grantInfo struct {
	clientID string
	subject  string // the user, or the client for client_credentials
	scope    string
	expires  time.Time // zero: never
}

type refreshInfo struct {
	grantInfo
	retired bool
}

// New starts a Server configured by o and stops it when the test ends.
func New(t testing.TB, o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Expiry == "" {
		o.Expiry = ExpiresIn
	}
	if o.TokenType == "" {
		o.TokenType = "Bearer"
	}
	if o.Clients == nil {
		o.Clients = map[string]string{ClientID: ClientSecret}
	}
	if o.Users == nil {
		o.Users = map[string]string{Username: Password}
	}
	s := &Server{
		o:       o,
		signer:  fakeidp.NewSigner(),
		access:  map[string]grantInfo{},
		refresh: map[string]*refreshInfo{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(TokenPath, s.handleToken)
	mux.HandleFunc(ResourcePath, s.handleResource)
	s.ts = httptest.NewServer(mux)
	s.URL = s.ts.URL
	s.TokenURL = s.ts.URL + TokenPath
	t.Cleanup(s.Close)
	return s
}

// Close ends hanging requests and stops the server. It may be called more
// than once.
func (s *Server) Close() {
	s.Release()
	s.ts.Close()
}

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Counts returns how many requests the token endpoint received, by grant.
func (s *Server) Counts() Counts {
	return Counts{
		ClientCredentials: s.nCC.Load(),
		Password:          s.nPassword.Load(),
		RefreshToken:      s.nRefresh.Load(),
		Other:             s.nOther.Load(),
		Total:             s.nTotal.Load(),
	}
}

// LastRequest returns the last request to the token endpoint, or the zero
// Request when there was none.
func (s *Server) LastRequest() Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.last
	r.Form = maps.Clone(r.Form)
	r.Header = r.Header.Clone()
	return r
}

// RevokeAll revokes every access and refresh token issued so far, as when a
// user withdraws consent: refreshing with any of them gets invalid_grant.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.access)
	clear(s.refresh)
}

// ValidAccessToken reports whether tok was issued by s, is not revoked, and
// has not expired.
func (s *Server) ValidAccessToken(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.access[tok]
	return ok && (g.expires.IsZero() || s.o.Now().Before(g.expires))
}

// oauthError is an error answer of the token endpoint (RFC 6749 §5.2).
type oauthError struct {
	status      int
	code        string
	description string
}

func errorf(status int, code, format string, args ...any) *oauthError {
	return &oauthError{status: status, code: code, description: fmt.Sprintf(format, args...)}
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.nTotal.Add(1)
	// RFC 6749 §5.1: answers with tokens must not be cached; errors neither.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if r.Method != http.MethodPost {
		s.nOther.Add(1)
		w.Header().Set("Allow", http.MethodPost)
		writeOAuthError(w, errorf(http.StatusMethodNotAllowed, "invalid_request", "the token endpoint accepts POST only"))
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		s.nOther.Add(1)
		writeOAuthError(w, errorf(http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		s.nOther.Add(1)
		writeOAuthError(w, errorf(http.StatusBadRequest, "invalid_request", "the body is not a valid form"))
		return
	}
	grant := r.PostForm.Get("grant_type")
	switch tokenhub.Grant(grant) {
	case tokenhub.GrantClientCredentials:
		s.nCC.Add(1)
	case tokenhub.GrantPassword:
		s.nPassword.Add(1)
	case tokenhub.GrantRefreshToken:
		s.nRefresh.Add(1)
	default:
		s.nOther.Add(1)
	}
	req := Request{GrantType: grant, Form: maps.Clone(r.PostForm), Header: r.Header.Clone()}
	client, e := s.authenticate(r, &req)
	s.mu.Lock()
	s.last = req
	s.mu.Unlock()

	if s.Intercept(w, r, writeFault) {
		return
	}
	if e == nil {
		e = checkSingleValues(r.PostForm)
	}
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	resp, e := s.grant(client, grant, r.PostForm)
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	if s.o.Edit != nil {
		s.o.Edit(resp)
	}
	if s.o.FormResponse {
		v := url.Values{}
		for k, x := range resp {
			v.Set(k, fmt.Sprint(x))
		}
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(v.Encode()))
		return
	}
	fakeidp.WriteJSON(w, http.StatusOK, resp)
}

// authenticate identifies the client (RFC 6749 §2.3.1) and records how it
// authenticated in req.
func (s *Server) authenticate(r *http.Request, req *Request) (string, *oauthError) {
	invalid := func(format string, args ...any) *oauthError {
		return errorf(http.StatusUnauthorized, "invalid_client", format, args...)
	}
	bodyID, bodySecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	_, hasBodySecret := r.PostForm["client_secret"]
	var id, secret string
	if rawID, rawSecret, ok := r.BasicAuth(); ok {
		req.ClientAuth = tokenhub.AuthStyleBasic
		if hasBodySecret {
			return "", errorf(http.StatusBadRequest, "invalid_request", "the client used more than one authentication method")
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(rawID)
		secret, err2 = url.QueryUnescape(rawSecret)
		if err1 != nil || err2 != nil {
			return "", invalid("client credentials in the Authorization header are not form-encoded")
		}
		if bodyID != "" && bodyID != id {
			return "", errorf(http.StatusBadRequest, "invalid_request", "client_id differs from the authenticated client")
		}
	} else if hasBodySecret {
		req.ClientAuth = tokenhub.AuthStyleBody
		id, secret = bodyID, bodySecret
	} else {
		id = bodyID // a public client identifies itself only (RFC 6749 §3.2.1)
	}
	req.ClientID = id
	if id == "" {
		return "", invalid("client authentication is required")
	}
	want, known := s.o.Clients[id]
	switch {
	case !known:
		return "", invalid("unknown client")
	case req.ClientAuth == "" && want != "":
		return "", invalid("client authentication is required")
	case req.ClientAuth != "" && s.o.AuthStyle != "" && req.ClientAuth != s.o.AuthStyle:
		return "", invalid("this server does not accept client authentication by %s", req.ClientAuth)
	case secret != want:
		return "", invalid("client authentication failed")
	}
	return id, nil
}

// checkSingleValues enforces RFC 6749 §3.2: parameters must not repeat.
func checkSingleValues(form url.Values) *oauthError {
	for k, v := range form {
		if len(v) > 1 {
			return errorf(http.StatusBadRequest, "invalid_request", "parameter %s is repeated", k)
		}
	}
	return nil
}

func (s *Server) grant(client, grant string, form url.Values) (map[string]any, *oauthError) {
	now := s.o.Now()
	scope := strings.Join(strings.Fields(form.Get("scope")), " ")
	if e := s.checkScope(scope); e != nil {
		return nil, e
	}
	switch tokenhub.Grant(grant) {
	case tokenhub.GrantClientCredentials:
		return s.issue(grantInfo{clientID: client, subject: client, scope: scope}, now, s.o.IssueRefreshToken, scope != "")
	case tokenhub.GrantPassword:
		user, pw := form.Get("username"), form.Get("password")
		if user == "" || pw == "" {
			return nil, errorf(http.StatusBadRequest, "invalid_request", "username and password are required")
		}
		if want, ok := s.o.Users[user]; !ok || want != pw {
			return nil, errorf(http.StatusBadRequest, "invalid_grant", "invalid resource owner credentials")
		}
		return s.issue(grantInfo{clientID: client, subject: user, scope: scope}, now, s.o.IssueRefreshToken, scope != "")
	case tokenhub.GrantRefreshToken:
		return s.refreshGrant(client, form.Get("refresh_token"), scope, now)
	case "":
		return nil, errorf(http.StatusBadRequest, "invalid_request", "grant_type is required")
	default:
		return nil, errorf(http.StatusBadRequest, "unsupported_grant_type", "grant type %q is not supported", grant)
	}
}

func (s *Server) checkScope(scope string) *oauthError {
	if s.o.Scopes == nil || scope == "" {
		return nil
	}
	for sc := range strings.FieldsSeq(scope) {
		if !slices.Contains(s.o.Scopes, sc) {
			return errorf(http.StatusBadRequest, "invalid_scope", "unknown scope %q", sc)
		}
	}
	return nil
}

func (s *Server) refreshGrant(client, tok, scope string, now time.Time) (map[string]any, *oauthError) {
	if tok == "" {
		return nil, errorf(http.StatusBadRequest, "invalid_request", "refresh_token is required")
	}
	s.mu.Lock()
	ri, ok := s.refresh[tok]
	switch {
	case !ok:
		s.mu.Unlock()
		return nil, errorf(http.StatusBadRequest, "invalid_grant", "unknown or revoked refresh token")
	case ri.retired:
		s.mu.Unlock()
		return nil, errorf(http.StatusBadRequest, "invalid_grant", "refresh token was already used")
	case !ri.expires.IsZero() && !now.Before(ri.expires):
		s.mu.Unlock()
		return nil, errorf(http.StatusBadRequest, "invalid_grant", "refresh token expired")
	case ri.clientID != client:
		s.mu.Unlock()
		return nil, errorf(http.StatusBadRequest, "invalid_grant", "refresh token was issued to another client")
	}
	g := ri.grantInfo
	// RFC 6749 §6: a refresh may narrow the scope, never widen it.
	for sc := range strings.FieldsSeq(scope) {
		if !slices.Contains(strings.Fields(g.scope), sc) {
			s.mu.Unlock()
			return nil, errorf(http.StatusBadRequest, "invalid_scope", "scope %q was not granted", sc)
		}
	}
	if scope != "" {
		g.scope = scope
	}
	if s.o.Rotate {
		ri.retired = true
	}
	s.mu.Unlock()
	return s.issue(g, now, s.o.Rotate, scope != "")
}

// issue mints an access token (and a refresh token when withRefresh) for g
// and returns the answer's fields.
func (s *Server) issue(g grantInfo, now time.Time, withRefresh, echoScope bool) (map[string]any, *oauthError) {
	resp := map[string]any{}
	if s.o.TokenType != "-" {
		resp["token_type"] = s.o.TokenType
	}
	if echoScope {
		resp["scope"] = g.scope
	}
	exp := now.Add(s.o.TTL)
	var access string
	switch s.o.Expiry {
	case JWTExp, JWTNoExp:
		claims := map[string]any{"sub": g.subject, "client_id": g.clientID, "iat": now.Unix(), "jti": fakeidp.RandomString(8)}
		if g.scope != "" {
			claims["scope"] = g.scope
		}
		if s.o.Expiry == JWTExp {
			claims["exp"] = exp.Unix()
		} else {
			exp = time.Time{}
		}
		var err error
		if access, err = s.signer.Sign(claims); err != nil {
			return nil, errorf(http.StatusInternalServerError, "server_error", "cannot sign the token")
		}
	case NoExpiry:
		access, exp = fakeidp.RandomString(20), time.Time{}
	case ExpiresAt:
		access = fakeidp.RandomString(20)
		resp["expires_at"] = exp.Unix()
	default:
		access = fakeidp.RandomString(20)
		resp["expires_in"] = int64(s.o.TTL / time.Second)
	}
	resp["access_token"] = access

	g.expires = exp
	var refresh string
	var rexp time.Time
	if withRefresh {
		if s.o.RefreshTTL > 0 {
			rexp = now.Add(s.o.RefreshTTL)
		}
		if s.o.RefreshJWT {
			claims := map[string]any{"sub": g.subject, "typ": "Refresh", "iat": now.Unix(), "jti": fakeidp.RandomString(8)}
			if !rexp.IsZero() {
				claims["exp"] = rexp.Unix()
			}
			var err error
			if refresh, err = s.signer.Sign(claims); err != nil {
				return nil, errorf(http.StatusInternalServerError, "server_error", "cannot sign the token")
			}
		} else {
			refresh = fakeidp.RandomString(20)
			if !rexp.IsZero() {
				resp["refresh_expires_in"] = int64(s.o.RefreshTTL / time.Second)
			}
		}
		resp["refresh_token"] = refresh
	}

	s.mu.Lock()
	s.access[access] = g
	if refresh != "" {
		rg := g
		rg.expires = rexp
		s.refresh[refresh] = &refreshInfo{grantInfo: rg}
	}
	s.mu.Unlock()
	return resp, nil
}

// handleResource answers 200 to a request bearing a valid access token and
// 401 with RFC 6750's WWW-Authenticate otherwise.
func (s *Server) handleResource(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || !s.ValidAccessToken(tok) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="providertest", error="invalid_token"`)
		fakeidp.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	s.mu.Lock()
	g := s.access[tok]
	s.mu.Unlock()
	fakeidp.WriteJSON(w, http.StatusOK, map[string]string{"sub": g.subject, "client_id": g.clientID, "scope": g.scope})
}

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="providertest"`)
	}
	fakeidp.WriteJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.description})
}

// writeFault answers a queued failure with an OAuth error body.
func writeFault(w http.ResponseWriter, status int) {
	code := "server_error"
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		code = "temporarily_unavailable"
	}
	writeOAuthError(w, errorf(status, code, "%s", http.StatusText(status)))
}
