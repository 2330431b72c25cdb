package server

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/catalog"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/docs"
)

// DefaultEventLimit is how many events GET …/events answers without ?limit.
const DefaultEventLimit = 50

// syncTimeout bounds the broker calls made after a write.
const syncTimeout = 10 * time.Second

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, &client.Status{Status: "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("store not ready", "err", err)
		s.writeError(w, r, tokenhub.Errorf(tokenhub.EUNAVAILABLE, "store: unreachable"))
		return
	}
	s.writeJSON(w, http.StatusOK, &client.Status{Status: "ok"})
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(docs.OpenAPI)
}

// handleNoRoute answers requests that match no route: 405 when the path
// exists with other methods, 404 otherwise, both in the JSON error format.
func (s *Server) handleNoRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := s.mux.Handler(r2); p != "" && p != "/" {
			allowed = append(allowed, m)
		}
	}
	r.Pattern = ""
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		s.writeJSONError(w, http.StatusMethodNotAllowed, tokenhub.EINVALID,
			"method "+r.Method+" is not allowed here; use "+strings.Join(allowed, ", "))
		return
	}
	s.writeError(w, r, tokenhub.Errorf(tokenhub.ENOTFOUND, "no route %s %s", r.Method, r.URL.Path))
}

func (s *Server) writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	var body client.ErrorBody
	body.Error.Code, body.Error.Message = code, msg
	markError(w, code)
	s.writeJSON(w, status, &body)
}

// Workspaces.

func (s *Server) handleWorkspaceCreate(w http.ResponseWriter, r *http.Request) {
	var in client.CreateWorkspaceRequest
	if err := decodeJSON(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := tokenhub.ValidateName("name", in.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	ws, err := s.store.CreateWorkspace(r.Context(), in.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("workspace created", "workspace", ws.Name)
	s.writeJSON(w, http.StatusCreated, workspaceView(ws))
}

func (s *Server) handleWorkspaceList(w http.ResponseWriter, r *http.Request) {
	wss, err := s.store.FindWorkspaces(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, &client.WorkspaceList{Workspaces: views(wss, workspaceView)})
}

func (s *Server) handleWorkspaceDelete(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("ws")
	if _, err := s.findWorkspace(r.Context(), ws); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.store.DeleteWorkspace(r.Context(), ws); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The workspace's app keys stop working now, in this process.
	s.keys.purge(func(a *tokenhub.App) bool { return a.Workspace == ws })
	s.bodies.forget(func(k connKey) bool { return k.ws == ws })
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), syncTimeout)
	defer cancel()
	if err := s.broker.SyncWorkspace(ctx, ws); err != nil {
		s.log.Error("broker: forget workspace", "workspace", ws, "err", err)
	}
	s.log.Info("workspace deleted", "workspace", ws)
	w.WriteHeader(http.StatusNoContent)
}

// findWorkspace reads a workspace, with a not-found error that names it.
func (s *Server) findWorkspace(ctx context.Context, ws string) (*tokenhub.Workspace, error) {
	w, err := s.store.FindWorkspace(ctx, ws)
	if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "workspace %q not found", ws)
	}
	return w, err
}

// Apps.

func (s *Server) handleAppCreate(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("ws")
	var in client.CreateAppRequest
	if err := decodeJSON(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := tokenhub.ValidateName("name", in.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	for i, c := range in.Connections {
		if err := tokenhub.ValidateName("connections["+strconv.Itoa(i)+"]", c); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if _, err := s.findWorkspace(r.Context(), ws); err != nil {
		s.writeError(w, r, err)
		return
	}
	// A name that matches no connection is a mistake (a typo leaves the
	// app unable to read what it needs), and would silently grant a
	// connection created later under that name.
	for i, c := range in.Connections {
		_, err := s.store.FindConnection(r.Context(), ws, c)
		if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
			err = tokenhub.Errorf(tokenhub.EINVALID, "connections[%d]: workspace %q has no connection named %q", i, ws, c)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	key, err := NewKey()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	conns := slices.Clone(in.Connections)
	slices.Sort(conns)
	app := &tokenhub.App{Workspace: ws, Name: in.Name, KeyHash: HashKey(key), Connections: slices.Compact(conns)}
	if err := s.store.CreateApp(r.Context(), app); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("app created", "workspace", ws, "app", app.Name)
	w.Header()["Cache-Control"] = hdrNoStore // the answer holds the key
	s.writeJSON(w, http.StatusCreated, &client.AppKey{Workspace: ws, Name: app.Name, Key: key})
}

func (s *Server) handleAppList(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("ws")
	if _, err := s.findWorkspace(r.Context(), ws); err != nil {
		s.writeError(w, r, err)
		return
	}
	apps, err := s.store.FindApps(r.Context(), ws)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, &client.AppList{Apps: views(apps, appView)})
}

func (s *Server) handleAppDelete(w http.ResponseWriter, r *http.Request) {
	ws, name := r.PathValue("ws"), r.PathValue("app")
	err := s.store.DeleteApp(r.Context(), ws, name)
	if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		err = tokenhub.Errorf(tokenhub.ENOTFOUND, "app %q not found", ws+"/"+name)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The key stops working now, in this process.
	s.keys.purge(func(a *tokenhub.App) bool { return a.Workspace == ws && a.Name == name })
	s.log.Info("app revoked", "workspace", ws, "app", name)
	w.WriteHeader(http.StatusNoContent)
}

// nameMismatch is the error for a body whose name differs from the one in
// the path of a PUT.
func nameMismatch(body, path string) error {
	return tokenhub.Errorf(tokenhub.EINVALID, "name: %q does not match the name in the path, %q", body, path)
}

// Providers.

func (s *Server) handleProviderPut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var p tokenhub.Provider
	if err := decodeJSON(w, r, &p); err != nil {
		s.writeError(w, r, err)
		return
	}
	if p.Name == "" {
		p.Name = name
	} else if p.Name != name {
		s.writeError(w, r, nameMismatch(p.Name, name))
		return
	}
	if catalog.Builtin(name) != nil {
		s.writeError(w, r, tokenhub.Errorf(tokenhub.EINVALID, "name: %q is a built-in provider and cannot be replaced", name))
		return
	}
	if err := p.Validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	result := tokenhub.PutUpdated
	if _, err := s.store.FindProvider(ctx, name); tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		result = tokenhub.PutCreated
	} else if err != nil {
		s.writeError(w, r, err)
		return
	}
	changed, err := s.store.PutProvider(ctx, &p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	switch {
	case result == tokenhub.PutCreated:
		status = http.StatusCreated
		s.log.Info("provider created", "provider", name)
	case !changed:
		result = tokenhub.PutUnchanged
	default:
		s.log.Info("provider updated", "provider", name)
		s.syncProviderUsers(ctx, name)
	}
	stored, err := s.store.FindProvider(ctx, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, status, &client.PutProviderResult{ProviderView: *providerView(stored, false), Result: result})
}

// syncProviderUsers makes the broker reload every connection that uses the
// provider called name, so that they pick up its new definition.
func (s *Server) syncProviderUsers(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()
	conns, err := s.store.FindConnections(ctx, tokenhub.ConnectionFilter{})
	if err != nil {
		s.log.Error("find connections of a changed provider", "provider", name, "err", err)
		return
	}
	for _, c := range conns {
		if c.Config.Provider != name {
			continue
		}
		if err := s.broker.Sync(ctx, c.Workspace, c.Name); err != nil {
			s.log.Error("broker: sync connection", "connection", c.Path(), "err", err)
		}
	}
}

func (s *Server) handleProviderList(w http.ResponseWriter, r *http.Request) {
	stored, err := s.store.FindProviders(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := client.ProviderList{Providers: make([]*client.ProviderView, 0, len(stored)+len(catalog.Names()))}
	for _, n := range catalog.Names() {
		out.Providers = append(out.Providers, providerView(catalog.Builtin(n), true))
	}
	for _, p := range stored {
		out.Providers = append(out.Providers, providerView(p, false))
	}
	s.writeJSON(w, http.StatusOK, &out)
}

func (s *Server) handleProviderGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if p := catalog.Builtin(name); p != nil {
		s.writeJSON(w, http.StatusOK, providerView(p, true))
		return
	}
	p, err := s.store.FindProvider(r.Context(), name)
	if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		err = tokenhub.Errorf(tokenhub.ENOTFOUND, "provider %q not found", name)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, providerView(p, false))
}

// Connections.

// connectionBody is the body of PUT …/connections/{name}: a connection
// object as in the config file. Its name, when present, must match the path.
type connectionBody struct {
	Name string `json:"name,omitempty"`
	tokenhub.ConnectionConfig
}

func (s *Server) handleConnectionPut(w http.ResponseWriter, r *http.Request) {
	ws, name := r.PathValue("ws"), r.PathValue("name")
	var in connectionBody
	if err := decodeJSON(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if in.Name != "" && in.Name != name {
		s.writeError(w, r, nameMismatch(in.Name, name))
		return
	}
	if err := tokenhub.ValidateName("name", name); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	if _, err := s.findWorkspace(ctx, ws); err != nil {
		s.writeError(w, r, err)
		return
	}
	cfg := &in.ConnectionConfig
	var p *tokenhub.Provider
	if cfg.Provider != "" {
		var err error
		p, err = catalog.Resolve(ctx, s.store, cfg.Provider)
		if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
			p = nil
		} else if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if err := cfg.Validate(p); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, result, err := s.store.PutConnection(ctx, ws, name, cfg, s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if result == tokenhub.PutCreated {
		status = http.StatusCreated
	}
	if result != tokenhub.PutUnchanged {
		s.log.Info("connection "+string(result), "connection", c.Path())
		c = s.syncConnection(ctx, c)
	}
	s.writeJSON(w, status, &client.PutConnectionResult{ConnectionView: *connectionView(c), Result: result})
}

// syncConnection tells the broker that c changed and returns c as stored
// afterwards. A broker failure is logged, not answered: the store already
// holds the change and the broker loads it on its next start.
func (s *Server) syncConnection(ctx context.Context, c *tokenhub.Connection) *tokenhub.Connection {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()
	if err := s.broker.Sync(ctx, c.Workspace, c.Name); err != nil {
		s.log.Error("broker: sync connection", "connection", c.Path(), "err", err)
		return c
	}
	if now, err := s.store.FindConnection(ctx, c.Workspace, c.Name); err == nil {
		return now
	}
	return c
}

// findConnection reads a connection, with a not-found error that names it.
func (s *Server) findConnection(ctx context.Context, ws, name string) (*tokenhub.Connection, error) {
	c, err := s.store.FindConnection(ctx, ws, name)
	if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		return nil, connNotFound(ws, name)
	}
	return c, err
}

// connNotFound is the one answer for a connection that does not exist or is
// not visible to the caller, so that the two cannot be told apart. ws is the
// caller's workspace (the app's, or the one in an admin path), never the
// workspace where a connection of that name may exist. The text is the
// broker's, so that a 404 from the proxy (which asks the broker) reads the
// same.
func connNotFound(ws, name string) error {
	return tokenhub.Errorf(tokenhub.ENOTFOUND, "connection %q not found", ws+"/"+name)
}

func (s *Server) handleConnectionList(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("ws")
	if _, err := s.findWorkspace(r.Context(), ws); err != nil {
		s.writeError(w, r, err)
		return
	}
	conns, err := s.store.FindConnections(r.Context(), tokenhub.ConnectionFilter{Workspace: &ws})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, &client.ConnectionList{Connections: views(conns, connectionView)})
}

func (s *Server) handleConnectionGet(w http.ResponseWriter, r *http.Request) {
	c, err := s.findConnection(r.Context(), r.PathValue("ws"), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, connectionView(c))
}

func (s *Server) handleConnectionDelete(w http.ResponseWriter, r *http.Request) {
	ws, name := r.PathValue("ws"), r.PathValue("name")
	ctx := r.Context()
	if _, err := s.findConnection(ctx, ws, name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.store.DeleteConnection(ctx, ws, name); err != nil {
		if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
			err = connNotFound(ws, name)
		}
		s.writeError(w, r, err)
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()
	if err := s.broker.Sync(sctx, ws, name); err != nil {
		s.log.Error("broker: forget connection", "connection", ws+"/"+name, "err", err)
	}
	s.bodies.forget(func(k connKey) bool { return k == connKey{ws, name} })
	s.log.Info("connection deleted", "connection", ws+"/"+name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleEventList(w http.ResponseWriter, r *http.Request) {
	limit := DefaultEventLimit
	if q := r.URL.Query().Get("limit"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > tokenhub.MaxEventsPerConnection {
			s.writeError(w, r, tokenhub.Errorf(tokenhub.EINVALID, "limit: must be a number from 1 to %d", tokenhub.MaxEventsPerConnection))
			return
		}
		limit = n
	}
	c, err := s.findConnection(r.Context(), r.PathValue("ws"), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	evs, err := s.store.FindEvents(r.Context(), c.ID, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, &client.EventList{Events: views(evs, eventView)})
}

// handleAdminRefreshByQuery answers POST /v1/connections/{name}/refresh
// called with the admin key: the workspace comes from ?workspace=W, and the
// answer is the connection view, as for the workspace route; the admin API
// never answers a token.
func (s *Server) handleAdminRefreshByQuery(w http.ResponseWriter, r *http.Request) {
	ws := r.URL.Query().Get("workspace")
	if ws == "" {
		s.writeError(w, r, tokenhub.Errorf(tokenhub.EINVALID, "workspace: required with the admin key (POST /v1/connections/{name}/refresh?workspace=W)"))
		return
	}
	r.SetPathValue("ws", ws)
	s.handleConnectionRefresh(w, r)
}

func (s *Server) handleConnectionRefresh(w http.ResponseWriter, r *http.Request) {
	ws, name := r.PathValue("ws"), r.PathValue("name")
	ctx := r.Context()
	if _, err := s.findConnection(ctx, ws, name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.broker.Refresh(ctx, ws, name); err != nil {
		if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
			err = connNotFound(ws, name)
		}
		s.writeError(w, r, err)
		return
	}
	c, err := s.findConnection(ctx, ws, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, connectionView(c))
}
