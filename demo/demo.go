// Package demo is a provider that behaves like Baserow's JWT login API and
// rows API, so that `tokenhub demo` can show the whole idea with no account
// anywhere, and so that tests can drive tokenhub against something that
// answers exactly the way Baserow does.
//
// It serves:
//
//   - POST /api/user/token-auth/ with {"email","password"}: a JWT access token
//     (exp AccessTTL ahead) and a JWT refresh token (exp RefreshTTL ahead);
//   - POST /api/user/token-refresh/ with {"refresh_token"}: a new access token
//     (the refresh token is not rotated, as in Baserow);
//   - GET /api/database/rows/table/{id}/: rows, for a request that carries
//     Authorization: JWT <valid access token>.
//
// Errors have Baserow's statuses and bodies, for example 401
// {"error":"ERROR_INVALID_CREDENTIALS","detail":"..."}.
//
// A Server also has hooks that a real demo never calls but tests need: call
// counts, queued faults (FailNext, Hang, MalformedNext, from the embedded
// Faults) and RevokeRefreshTokens.
package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/fakeidp"
)

// Paths of the endpoints a Server answers.
const (
	PathTokenAuth    = "/api/user/token-auth/"
	PathTokenRefresh = "/api/user/token-refresh/"
	PathRowsPrefix   = "/api/database/rows/table/" // followed by {id}/
)

// Defaults used when Options leave a field zero. The demo user is not a
// secret worth protecting: it exists only inside a demo Server.
const (
	DefaultAccessTTL  = 60 * time.Second
	DefaultRefreshTTL = 168 * time.Hour
	DefaultEmail      = "demo@tokenhub.local"
	DefaultPassword   = "demo-password"
	DefaultTableID    = 1
	// ProviderName is the name of the provider that Provider returns.
	ProviderName = "baserow-demo"
)

// Options configure a Server. The zero Options give a demo with one user
// (DefaultEmail, DefaultPassword), one table (DefaultTableID) holding a few
// rows, access tokens that live 60 s and refresh tokens that live 7 days.
type Options struct {
	// Now is the server's clock, used for iat and exp and to check them.
	// time.Now when nil; tests pass a fake clock's Now.
	Now func() time.Time
	// AccessTTL is the lifetime of an access token (DefaultAccessTTL when 0).
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of a refresh token (DefaultRefreshTTL when 0).
	RefreshTTL time.Duration
	// Users maps e-mail to password. One demo user when nil.
	Users map[string]string
	// TableID is the id of the one table that exists (DefaultTableID when 0).
	TableID int
	// Rows are the rows of that table, keyed by field name; a few people when
	// nil. Each row should have an "id".
	Rows []map[string]any
	// Logger receives one line per login and refresh (no secrets). Discards when nil.
	Logger *slog.Logger
}

// Counts is how many requests each endpoint received, faulty answers included.
type Counts struct {
	TokenAuth    int64
	TokenRefresh int64
	Rows         int64
}

// Server is the demo provider, an http.Handler. It is safe for concurrent use.
type Server struct {
	// Faults queue misbehaviour for the token-auth and token-refresh
	// endpoints: FailNext, Hang, MalformedNext, Release. A real demo never
	// uses them.
	fakeidp.Faults

	now        func() time.Time
	accessTTL  time.Duration
	refreshTTL time.Duration
	users      map[string]user // by normalised e-mail
	byID       map[int64]user
	tableID    int
	rows       []map[string]any
	fieldIDs   map[string]int // field name → Baserow field id, for user_field_names=false
	log        *slog.Logger

	access  *fakeidp.Signer
	refresh *fakeidp.Signer // rotated by RevokeRefreshTokens

	nAuth, nRefresh, nRows atomic.Int64
}

type user struct {
	id       int64
	email    string
	password string
}

var _ http.Handler = (*Server)(nil)

// New returns a demo Server configured by o.
func New(o Options) *Server {
	s := &Server{
		now:        o.Now,
		accessTTL:  o.AccessTTL,
		refreshTTL: o.RefreshTTL,
		tableID:    o.TableID,
		rows:       o.Rows,
		log:        o.Logger,
		access:     fakeidp.NewSigner(),
		refresh:    fakeidp.NewSigner(),
		users:      map[string]user{},
		byID:       map[int64]user{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.accessTTL <= 0 {
		s.accessTTL = DefaultAccessTTL
	}
	if s.refreshTTL <= 0 {
		s.refreshTTL = DefaultRefreshTTL
	}
	if s.tableID == 0 {
		s.tableID = DefaultTableID
	}
	if s.rows == nil {
		s.rows = defaultRows()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	users := o.Users
	if users == nil {
		users = map[string]string{DefaultEmail: DefaultPassword}
	}
	// Ids follow the sorted e-mails, so they are stable across restarts.
	for i, email := range slices.Sorted(maps.Keys(users)) {
		u := user{id: int64(i + 1), email: normalizeEmail(email), password: users[email]}
		s.users[u.email] = u
		s.byID[u.id] = u
	}
	s.fieldIDs = map[string]int{}
	names := map[string]bool{}
	for _, r := range s.rows {
		for k := range r {
			if k != "id" && k != "order" {
				names[k] = true
			}
		}
	}
	for i, name := range slices.Sorted(maps.Keys(names)) {
		s.fieldIDs[name] = 1001 + i
	}
	return s
}

func defaultRows() []map[string]any {
	people := []struct{ name, email, role string }{
		{"Ada Lovelace", "ada@example.com", "Engineer"},
		{"Grace Hopper", "grace@example.com", "Admiral"},
		{"Alan Turing", "alan@example.com", "Researcher"},
		{"Katherine Johnson", "katherine@example.com", "Mathematician"},
	}
	rows := make([]map[string]any, len(people))
	for i, p := range people {
		rows[i] = map[string]any{
			"id":     i + 1,
			"order":  fmt.Sprintf("%d.00000000000000000000", i+1),
			"Name":   p.name,
			"Email":  p.email,
			"Role":   p.role,
			"Active": i%3 != 2,
		}
	}
	return rows
}

// Counts returns how many requests each endpoint has received.
func (s *Server) Counts() Counts {
	return Counts{TokenAuth: s.nAuth.Load(), TokenRefresh: s.nRefresh.Load(), Rows: s.nRows.Load()}
}

// RevokeRefreshTokens invalidates every refresh token issued so far: the next
// refresh with one of them gets Baserow's 401 ERROR_INVALID_REFRESH_TOKEN,
// as after a password change or a logout. Access tokens stay valid.
func (s *Server) RevokeRefreshTokens() { s.refresh.Rotate() }

// ServeHTTP answers Baserow's token-auth, token-refresh and list-rows
// endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == PathTokenAuth:
		s.nAuth.Add(1)
		if body, ok := s.tokenRequest(w, r); ok {
			s.handleTokenAuth(w, body)
		}
	case p == PathTokenRefresh:
		s.nRefresh.Add(1)
		if body, ok := s.tokenRequest(w, r); ok {
			s.handleTokenRefresh(w, body)
		}
	case strings.HasPrefix(p, PathRowsPrefix) && strings.HasSuffix(p, "/"):
		s.nRows.Add(1)
		if s.allow(w, r, http.MethodGet) {
			s.handleRowsList(w, r, strings.TrimSuffix(strings.TrimPrefix(p, PathRowsPrefix), "/"))
		}
	default:
		writeError(w, http.StatusNotFound, "URL_NOT_FOUND", fmt.Sprintf("URL %s not found.", p))
	}
}

// tokenRequest checks the method, reads the body and plays a queued fault.
// It returns the body's fields, or false when it has answered. The body is
// read before a fault is played so that a hanging request notices when its
// client leaves.
func (s *Server) tokenRequest(w http.ResponseWriter, r *http.Request) (map[string]string, bool) {
	if !s.allow(w, r, http.MethodPost) {
		return nil, false
	}
	body, ok := readBody(w, r)
	if !ok || s.Intercept(w, r, writeFault) {
		return nil, false
	}
	return body, true
}

// allow answers 405 the way Django REST framework does when r's method is not method.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method+", OPTIONS")
	fakeidp.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"detail": fmt.Sprintf("Method %q not allowed.", r.Method)})
	return false
}

func (s *Server) handleTokenAuth(w http.ResponseWriter, body map[string]string) {
	// Baserow takes "email"; "username" is its deprecated alias.
	email, password := body["email"], body["password"]
	if email == "" {
		email = body["username"]
	}
	fieldErrs := map[string][]string{}
	if email == "" {
		fieldErrs["email"] = []string{"This field is required."}
	}
	if password == "" {
		fieldErrs["password"] = []string{"This field is required."}
	}
	if len(fieldErrs) > 0 {
		fakeidp.WriteJSON(w, http.StatusBadRequest, fieldErrs)
		return
	}
	u, ok := s.users[normalizeEmail(email)]
	if !ok || u.password != password {
		s.log.Info("demo: login refused", "email", normalizeEmail(email))
		writeError(w, http.StatusUnauthorized, "ERROR_INVALID_CREDENTIALS", "No active account found with the given credentials.")
		return
	}
	s.writeTokens(w, u, s.now(), "demo: login", true /* with a refresh token */)
}

func (s *Server) handleTokenRefresh(w http.ResponseWriter, body map[string]string) {
	tok := body["refresh_token"]
	if tok == "" {
		tok = body["token"] // deprecated alias
	}
	now := s.now()
	u, ok := s.verify(s.refresh, "refresh", tok, now)
	if !ok {
		s.log.Info("demo: refresh refused")
		writeError(w, http.StatusUnauthorized, "ERROR_INVALID_REFRESH_TOKEN", "Refresh token is expired or invalid.")
		return
	}
	s.writeTokens(w, u, now, "demo: refresh", false /* keep the refresh token */)
}

// writeTokens answers a login or a refresh of u as Baserow does: the user, a
// new access token (also as "token", Baserow's deprecated alias of
// access_token) and, for a login (withRefresh), a new refresh token; a
// refresh keeps the refresh token it was given. event is the log message.
// A token that cannot be signed is answered as Baserow's 500.
func (s *Server) writeTokens(w http.ResponseWriter, u user, now time.Time, event string, withRefresh bool) {
	body := map[string]any{"user": userJSON(u)}
	access, err := s.sign(s.access, "access", u, now, s.accessTTL)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "ERROR_SERVER", "Internal server error.")
		return
	}
	body["access_token"], body["token"] = access, access
	if withRefresh {
		refresh, err := s.sign(s.refresh, "refresh", u, now, s.refreshTTL)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "ERROR_SERVER", "Internal server error.")
			return
		}
		body["refresh_token"] = refresh
	}
	s.log.Info(event, "email", u.email, "access_expires_in", s.accessTTL)
	fakeidp.WriteJSON(w, http.StatusOK, body)
}

func (s *Server) handleRowsList(w http.ResponseWriter, r *http.Request, tableID string) {
	// Baserow (Django REST framework) names its scheme in WWW-Authenticate on every 401.
	unauthorized := func(body any) {
		w.Header().Set("WWW-Authenticate", `JWT realm="api"`)
		fakeidp.WriteJSON(w, http.StatusUnauthorized, body)
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch {
	case scheme == "Token":
		unauthorized(errorBody("ERROR_TOKEN_DOES_NOT_EXIST", "The token does not exist."))
		return
	case scheme != "JWT":
		unauthorized(map[string]string{"detail": "Authentication credentials were not provided."})
		return
	case tok == "" || strings.Contains(tok, " "):
		unauthorized(map[string]string{"detail": "Authorization header must contain two space-delimited values", "code": "bad_authorization_header"})
		return
	}
	if _, ok := s.verify(s.access, "access", tok, s.now()); !ok {
		unauthorized(errorBody("ERROR_INVALID_ACCESS_TOKEN", "Access token is expired or invalid."))
		return
	}
	if id, err := strconv.Atoi(tableID); err != nil || id != s.tableID {
		writeError(w, http.StatusNotFound, "ERROR_TABLE_DOES_NOT_EXIST", "The requested table does not exist.")
		return
	}
	userNames, _ := strconv.ParseBool(r.URL.Query().Get("user_field_names"))
	results := make([]map[string]any, len(s.rows))
	for i, row := range s.rows {
		out := make(map[string]any, len(row))
		for k, v := range row {
			if id, ok := s.fieldIDs[k]; ok && !userNames {
				k = "field_" + strconv.Itoa(id)
			}
			out[k] = v
		}
		results[i] = out
	}
	fakeidp.WriteJSON(w, http.StatusOK, map[string]any{
		"count":    len(results),
		"next":     nil,
		"previous": nil,
		"results":  results,
	})
}

// sign mints a token with the claims of djangorestframework-simplejwt, which
// Baserow uses: token_type, exp, iat, jti, user_id.
func (s *Server) sign(signer *fakeidp.Signer, typ string, u user, now time.Time, ttl time.Duration) (string, error) {
	return signer.Sign(map[string]any{
		"token_type": typ,
		"exp":        now.Add(ttl).Unix(),
		"iat":        now.Unix(),
		"jti":        fakeidp.RandomString(16),
		"user_id":    u.id,
	})
}

// verify checks a token of type typ and returns its user.
func (s *Server) verify(signer *fakeidp.Signer, typ, tok string, now time.Time) (user, bool) {
	if tok == "" {
		return user{}, false
	}
	claims, err := signer.Verify(tok, now)
	if err != nil || claims["token_type"] != typ {
		return user{}, false
	}
	n, _ := claims["user_id"].(json.Number)
	id, err := n.Int64()
	if err != nil {
		return user{}, false
	}
	u, ok := s.byID[id]
	return u, ok
}

// readBody reads a JSON or form body into string fields, as Django REST
// framework's parsers accept either. It answers the error itself and
// returns false when the body cannot be read.
func readBody(w http.ResponseWriter, r *http.Request) (map[string]string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	out := map[string]string{}
	switch ct {
	case "application/json":
		b, err := io.ReadAll(r.Body)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fakeidp.WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"detail": "Request body too large."})
			return nil, false
		}
		var raw map[string]any
		if err != nil || json.Unmarshal(b, &raw) != nil {
			fakeidp.WriteJSON(w, http.StatusBadRequest, map[string]string{"detail": "JSON parse error - Expecting value"})
			return nil, false
		}
		fieldErrs := map[string][]string{}
		for k, v := range raw {
			switch v := v.(type) {
			case string:
				out[k] = v
			case nil:
			default:
				fieldErrs[k] = []string{"Not a valid string."}
			}
		}
		if len(fieldErrs) > 0 {
			fakeidp.WriteJSON(w, http.StatusBadRequest, fieldErrs)
			return nil, false
		}
	case "application/x-www-form-urlencoded", "multipart/form-data":
		if err := r.ParseMultipartForm(1 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			fakeidp.WriteJSON(w, http.StatusBadRequest, map[string]string{"detail": "Malformed form data."})
			return nil, false
		}
		for k := range r.PostForm {
			out[k] = r.PostForm.Get(k)
		}
	case "":
		// An empty body with no type: every field is missing.
		if n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1)); n > 0 {
			fakeidp.WriteJSON(w, http.StatusUnsupportedMediaType, map[string]string{"detail": `Unsupported media type "" in request.`})
			return nil, false
		}
	default:
		fakeidp.WriteJSON(w, http.StatusUnsupportedMediaType, map[string]string{"detail": fmt.Sprintf("Unsupported media type %q in request.", ct)})
		return nil, false
	}
	return out, true
}

func userJSON(u user) map[string]any {
	name, _, _ := strings.Cut(u.email, "@")
	return map[string]any{
		"id":         u.id,
		"username":   u.email,
		"first_name": name,
		"language":   "en",
		"is_staff":   false,
	}
}

func normalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func errorBody(code, detail string) map[string]string {
	return map[string]string{"error": code, "detail": detail}
}

// writeError writes Baserow's error body {"error": code, "detail": detail}.
func writeError(w http.ResponseWriter, status int, code, detail string) {
	fakeidp.WriteJSON(w, status, errorBody(code, detail))
}

// writeFault answers a queued failure: 429 the way Django REST framework
// throttles, anything else as the plain-text page of a gateway in front of
// Baserow.
func writeFault(w http.ResponseWriter, status int) {
	if status == http.StatusTooManyRequests {
		fakeidp.WriteJSON(w, status, map[string]string{"detail": "Request was throttled."})
		return
	}
	http.Error(w, http.StatusText(status), status)
}

// Provider returns the definition of a provider that logs in to a demo
// Server (or to Baserow itself): a JSON login with the connection's
// credentials.email and credentials.password, a JSON refresh with the
// refresh token, and the token presented as Authorization: JWT <token>. The
// tokens' expiry comes from their JWT exp claim.
func Provider() *tokenhub.Provider {
	return &tokenhub.Provider{
		Name:   ProviderName,
		Header: tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"},
		Login: &tokenhub.Request{
			URL:  "{{.BaseURL}}" + PathTokenAuth,
			JSON: map[string]any{"email": "{{.Credentials.email}}", "password": "{{.Credentials.password}}"},
		},
		Refresh: &tokenhub.Request{
			URL:  "{{.BaseURL}}" + PathTokenRefresh,
			JSON: map[string]any{"refresh_token": "{{.RefreshToken}}"},
		},
	}
}

// ConnectionConfig returns the config of a connection to the demo Server at
// baseURL, logging in as the default demo user.
func ConnectionConfig(baseURL string) tokenhub.ConnectionConfig {
	return tokenhub.ConnectionConfig{
		Provider:    ProviderName,
		BaseURL:     baseURL,
		Grant:       tokenhub.GrantLogin,
		Credentials: map[string]string{"email": DefaultEmail, "password": DefaultPassword},
	}
}
