// Package server is tokenhub's HTTP API: the admin routes that manage
// workspaces, apps, providers and connections, the app routes that hand out
// tokens, the health probes, and the OpenAPI description.
//
// Every route is in one table (see Routes), which docs/openapi.yaml is
// checked against. Errors are answered as {"error":{"code","message"}} with
// the status from client.StatusCode, the one code→status table shared with
// the Go client. Keys travel as "Authorization: Bearer <key>": the admin key
// is compared in constant time on its SHA-256, app keys are looked up by
// their SHA-256 in an in-memory cache backed by the store.
//
// The server never answers with a secret: connection views say which secret
// fields are set, not what they hold, and the token endpoint returns only the
// access token and its header, never a refresh token or a credential.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
)

// Broker is the part of the engine the server uses. *broker.Broker
// implements it.
type Broker interface {
	Token(ctx context.Context, ws, name string) (*broker.Current, error)
	Refresh(ctx context.Context, ws, name string) (*broker.Current, error)
	Sync(ctx context.Context, ws, name string) error
	SyncWorkspace(ctx context.Context, ws string) error
}

// Proxy serves the proxy route, /v1/proxy/{conn}/{path...}, for any method.
// *proxy.Handler implements it.
//
// The server calls ServeProxy after it has checked the app key and that the
// app may read conn (an app that may not gets the same 404 as for a missing
// connection, and ServeProxy is not called). ws is the app's workspace and
// path is the rest of the request path after /v1/proxy/{conn}, still escaped
// as sent: "" or starting with "/". The request reaches ServeProxy as
// received: the proxy route is dispatched before the router, so its path is
// not cleaned or redirected ("..", "//" and percent-encoded forms arrive
// untouched, for the proxy to refuse), and the Authorization header still
// holds the app key, for the proxy to remove.
type Proxy interface {
	ServeProxy(w http.ResponseWriter, r *http.Request, ws, conn, path string)
}

// Options configure a Server. Store and Broker are required.
type Options struct {
	Store  tokenhub.Store
	Broker Broker
	// AdminKeyHash is HashKey of the admin key. When empty, every admin
	// route answers 401.
	AdminKeyHash []byte
	// Logger receives, at debug level, one line per request (method,
	// route, status, duration; never a header or a body), and at error
	// level the detail of internal errors. It discards when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Proxy, when set, serves /v1/proxy/{conn}/{path...}. When nil that
	// route answers 404.
	Proxy Proxy
	// KeyCacheTTL bounds how long an app key found in the store is trusted
	// without reading the store again (default 30s). Revocations and
	// workspace deletions made through this server take effect at once
	// regardless; the TTL bounds how long one made through another replica
	// sharing the store may take.
	KeyCacheTTL time.Duration
}

// Server is tokenhub's HTTP API. Its methods are safe for concurrent use.
type Server struct {
	store        tokenhub.Store
	broker       Broker
	admin        []byte
	log          *slog.Logger
	now          func() time.Time
	proxy        Proxy
	keys         keyCache
	bodies       bodyCache
	mux          *http.ServeMux
	proxyHandler http.Handler
	handler      http.Handler
}

// New returns a Server. It does not start listening: serve Handler with an
// http.Server. It panics when o.Store or o.Broker is nil, a wiring mistake
// better found at start than on the first request.
func New(o Options) *Server {
	if o.Store == nil || o.Broker == nil {
		panic("server.New: Options.Store and Options.Broker are required")
	}
	s := &Server{
		store:  o.Store,
		broker: o.Broker,
		admin:  o.AdminKeyHash,
		log:    o.Logger,
		now:    o.Now,
		proxy:  o.Proxy,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.keys.ttl = o.KeyCacheTTL
	if s.keys.ttl <= 0 {
		s.keys.ttl = 30 * time.Second
	}
	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		if rt.Pattern == proxyPattern {
			s.proxyHandler = rt.h // dispatched before the router; see serveHTTP
			continue
		}
		p := rt.Pattern
		if rt.Method != "" {
			p = rt.Method + " " + p
		}
		s.mux.Handle(p, rt.h)
	}
	s.mux.HandleFunc("/", s.handleNoRoute)
	s.handler = s.logRequests(http.HandlerFunc(s.serveHTTP))
	return s
}

// Handler returns the http.Handler that serves the whole API. It is the same
// handler on every call.
func (s *Server) Handler() http.Handler { return s.handler }

// Auth says which key a route needs.
type Auth string

// The kinds of key a route may need.
const (
	AuthNone  Auth = "none"  // no key
	AuthAdmin Auth = "admin" // the admin key
	AuthApp   Auth = "app"   // an app key; the workspace is the key's
	// AuthAppOrAdmin is an app key, or the admin key naming the workspace
	// in the query (?workspace=W).
	AuthAppOrAdmin Auth = "app_or_admin"
)

// Route is one route of the API: a method ("" for any) and a path pattern in
// net/http.ServeMux syntax, with the key it needs.
type Route struct {
	Method  string
	Pattern string
	Auth    Auth
}

type route struct {
	Route
	h http.Handler
}

const (
	proxyPrefix  = "/v1/proxy/"
	proxyPattern = "/v1/proxy/{conn}/{path...}"
)

// routes is the one table of the API's routes.
func (s *Server) routes() []route {
	admin := func(m, p string, h http.HandlerFunc) route {
		return route{Route{m, p, AuthAdmin}, s.requireAdmin(h)}
	}
	app := func(m, p string, h appHandler) route {
		return route{Route{m, p, AuthApp}, s.requireAppKey(h)}
	}
	appOrAdmin := func(m, p string, h appHandler, admin http.HandlerFunc) route {
		return route{Route{m, p, AuthAppOrAdmin}, s.requireAppOrAdmin(h, admin)}
	}
	public := func(m, p string, h http.HandlerFunc) route {
		return route{Route{m, p, AuthNone}, h}
	}
	return []route{
		public("GET", "/healthz", s.handleHealth),
		public("GET", "/readyz", s.handleReady),
		public("GET", "/openapi.yaml", s.handleOpenAPI),

		admin("POST", "/v1/workspaces", s.handleWorkspaceCreate),
		admin("GET", "/v1/workspaces", s.handleWorkspaceList),
		admin("DELETE", "/v1/workspaces/{ws}", s.handleWorkspaceDelete),

		admin("POST", "/v1/workspaces/{ws}/apps", s.handleAppCreate),
		admin("GET", "/v1/workspaces/{ws}/apps", s.handleAppList),
		admin("DELETE", "/v1/workspaces/{ws}/apps/{app}", s.handleAppDelete),

		admin("PUT", "/v1/providers/{name}", s.handleProviderPut),
		admin("GET", "/v1/providers", s.handleProviderList),
		admin("GET", "/v1/providers/{name}", s.handleProviderGet),

		admin("GET", "/v1/workspaces/{ws}/connections", s.handleConnectionList),
		admin("PUT", "/v1/workspaces/{ws}/connections/{name}", s.handleConnectionPut),
		admin("GET", "/v1/workspaces/{ws}/connections/{name}", s.handleConnectionGet),
		admin("DELETE", "/v1/workspaces/{ws}/connections/{name}", s.handleConnectionDelete),
		admin("GET", "/v1/workspaces/{ws}/connections/{name}/events", s.handleEventList),
		admin("POST", "/v1/workspaces/{ws}/connections/{name}/refresh", s.handleConnectionRefresh),

		app("GET", "/v1/connections/{name}/token", s.handleTokenGet),
		appOrAdmin("POST", "/v1/connections/{name}/refresh", s.handleTokenRefresh, s.handleAdminRefreshByQuery),
		app("", proxyPattern, s.handleProxy),
	}
}

// Routes returns every route the server serves, in the order of its table.
// docs/openapi.yaml describes exactly these; a test holds the two together.
func Routes() []Route {
	rs := (&Server{}).routes()
	out := make([]Route, len(rs))
	for i, r := range rs {
		out[i] = r.Route
	}
	return out
}

// serveHTTP dispatches the proxy route itself, so that its paths reach the
// proxy as sent (ServeMux would clean them and redirect), and everything else
// through the router.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if s.proxy != nil && isProxyPath(r.URL) {
		r.Pattern = proxyPattern
		s.proxyHandler.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// isProxyPath reports whether u's escaped path is under proxyPrefix, without
// escaping the path when, as for most requests, it has no raw form of its
// own: the prefix is all characters that escaping keeps, so the escaped path
// starts with it exactly when the path does.
func isProxyPath(u *url.URL) bool {
	if u.RawPath == "" {
		return strings.HasPrefix(u.Path, proxyPrefix)
	}
	return strings.HasPrefix(u.EscapedPath(), proxyPrefix)
}

// proxyRoute splits the path of a request to the proxy route into the
// connection's name (unescaped) and the rest, still escaped as sent: "" or
// starting with "/". ok is false for a request to another route. The proxy
// route's handler calls it rather than reading path values:
// r.SetPathValue, on a request that ServeMux did not route, allocates a
// map, which ReverseProxy's Request.Clone then copies, and building
// "/" + rest allocated again: five allocations per proxied request, for
// values that these few comparisons give for free.
func proxyRoute(r *http.Request) (conn, path string, ok bool) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), proxyPrefix)
	if !ok {
		return "", "", false
	}
	conn = rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		conn, path = rest[:i], rest[i:]
	}
	if name, err := url.PathUnescape(conn); err == nil {
		conn = name
	}
	return conn, path, true
}
