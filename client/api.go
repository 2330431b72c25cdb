package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tokenhub/tokenhub"
)

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }

func wsPath(ws string) string { return "/v1/workspaces/" + esc(ws) }

func connPath(ws, name string) string { return wsPath(ws) + "/connections/" + esc(name) }

// Admin methods. They need the admin key; with any other key they fail with
// ErrUnauthorized or ErrForbidden.

// CreateWorkspace creates a workspace. It fails with ErrConflict when the
// name is taken and ErrInvalid when the name is not valid.
func (c *Client) CreateWorkspace(ctx context.Context, name string) (*Workspace, error) {
	var out Workspace
	if _, err := c.do(ctx, http.MethodPost, "/v1/workspaces", CreateWorkspaceRequest{Name: name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Workspaces lists every workspace, ordered by name.
func (c *Client) Workspaces(ctx context.Context) ([]*Workspace, error) {
	var out WorkspaceList
	if _, err := c.do(ctx, http.MethodGet, "/v1/workspaces", nil, &out); err != nil {
		return nil, err
	}
	return out.Workspaces, nil
}

// DeleteWorkspace deletes a workspace with its connections, events and apps.
// The workspace's app keys stop working at once. It fails with ErrNotFound
// when there is no such workspace.
func (c *Client) DeleteWorkspace(ctx context.Context, ws string) error {
	_, err := c.do(ctx, http.MethodDelete, wsPath(ws), nil, nil)
	return err
}

// CreateApp creates an app in workspace ws and returns its key: the only time
// the key is shown. When conns is not empty, the app may read only those
// connections. It fails with ErrConflict when the name is taken, ErrNotFound
// when the workspace does not exist.
func (c *Client) CreateApp(ctx context.Context, ws, name string, conns []string) (*AppKey, error) {
	var out AppKey
	if _, err := c.do(ctx, http.MethodPost, wsPath(ws)+"/apps", CreateAppRequest{Name: name, Connections: conns}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Apps lists the apps of workspace ws, ordered by name, without their keys.
func (c *Client) Apps(ctx context.Context, ws string) ([]*App, error) {
	var out AppList
	if _, err := c.do(ctx, http.MethodGet, wsPath(ws)+"/apps", nil, &out); err != nil {
		return nil, err
	}
	return out.Apps, nil
}

// RevokeApp deletes an app; its key stops working at once. It fails with
// ErrNotFound when there is no such app.
func (c *Client) RevokeApp(ctx context.Context, ws, name string) error {
	_, err := c.do(ctx, http.MethodDelete, wsPath(ws)+"/apps/"+esc(name), nil, nil)
	return err
}

// PutProvider creates or replaces the provider definition p.Name and reports
// whether it was created, updated or left unchanged. When it changed, the
// server asks the engine to reload every connection that uses it. Built-in
// provider names are refused with ErrInvalid.
func (c *Client) PutProvider(ctx context.Context, p *tokenhub.Provider) (*ProviderView, tokenhub.PutResult, error) {
	var out PutProviderResult
	if _, err := c.do(ctx, http.MethodPut, "/v1/providers/"+esc(p.Name), p, &out); err != nil {
		return nil, "", err
	}
	return &out.ProviderView, out.Result, nil
}

// Provider returns the provider called name: a built-in or a stored one. It
// fails with ErrNotFound when there is none.
func (c *Client) Provider(ctx context.Context, name string) (*ProviderView, error) {
	var out ProviderView
	if _, err := c.do(ctx, http.MethodGet, "/v1/providers/"+esc(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Providers lists the built-in providers and then the stored ones, each
// group ordered by name.
func (c *Client) Providers(ctx context.Context) ([]*ProviderView, error) {
	var out ProviderList
	if _, err := c.do(ctx, http.MethodGet, "/v1/providers", nil, &out); err != nil {
		return nil, err
	}
	return out.Providers, nil
}

// PutConnection creates the connection ws/name or replaces its config with
// cfg, and reports whether it was created, updated or left unchanged. A new
// or changed connection starts obtaining its first token at once; poll
// Connection to see its state. It fails with ErrInvalid (the message names
// the field) and ErrNotFound when the workspace does not exist; a failed
// call changes nothing.
func (c *Client) PutConnection(ctx context.Context, ws, name string, cfg *tokenhub.ConnectionConfig) (*ConnectionView, tokenhub.PutResult, error) {
	var out PutConnectionResult
	if _, err := c.do(ctx, http.MethodPut, connPath(ws, name), cfg, &out); err != nil {
		return nil, "", err
	}
	return &out.ConnectionView, out.Result, nil
}

// Connection returns the connection ws/name: its config without secrets and
// its state. It fails with ErrNotFound when there is none.
func (c *Client) Connection(ctx context.Context, ws, name string) (*ConnectionView, error) {
	var out ConnectionView
	if _, err := c.do(ctx, http.MethodGet, connPath(ws, name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Connections lists the connections of workspace ws, ordered by name.
func (c *Client) Connections(ctx context.Context, ws string) ([]*ConnectionView, error) {
	var out ConnectionList
	if _, err := c.do(ctx, http.MethodGet, wsPath(ws)+"/connections", nil, &out); err != nil {
		return nil, err
	}
	return out.Connections, nil
}

// DeleteConnection deletes the connection ws/name and its events. It fails
// with ErrNotFound when there is none.
func (c *Client) DeleteConnection(ctx context.Context, ws, name string) error {
	_, err := c.do(ctx, http.MethodDelete, connPath(ws, name), nil, nil)
	return err
}

// Events returns up to limit of the connection's most recent events, newest
// first. A limit of 0 lets the server choose (50).
func (c *Client) Events(ctx context.Context, ws, name string, limit int) ([]*Event, error) {
	path := connPath(ws, name) + "/events"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var out EventList
	if _, err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// RefreshConnection forces the connection ws/name to renew its token now
// (joining a refresh that is already running) and returns its view
// afterwards. This is the admin form of Refresh. It fails with
// ErrNeedsReauth or ErrUnavailable when the renewal fails.
func (c *Client) RefreshConnection(ctx context.Context, ws, name string) (*ConnectionView, error) {
	var out ConnectionView
	if _, err := c.do(ctx, http.MethodPost, connPath(ws, name)+"/refresh", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// App methods. They need an app key; the workspace is the key's.

// Token returns a valid access token of the connection conn, with the header
// to present it in. It fails with ErrNotFound when the connection does not
// exist or the app may not read it, ErrNeedsReauth when the connection needs
// new credentials, and ErrUnavailable (with Error.RetryAfter) when the
// provider cannot be reached and no valid token exists.
func (c *Client) Token(ctx context.Context, conn string) (*Token, error) {
	var out Token
	if _, err := c.do(ctx, http.MethodGet, "/v1/connections/"+esc(conn)+"/token", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Refresh forces the connection conn to renew its token now, coalesced with
// any refresh already running, and returns the new token. Use it when an API
// refused a token that should still be valid. Errors are as for Token.
func (c *Client) Refresh(ctx context.Context, conn string) (*Token, error) {
	var out Token
	if _, err := c.do(ctx, http.MethodPost, "/v1/connections/"+esc(conn)+"/refresh", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Unauthenticated methods.

// Health reports whether the server process is up (GET /healthz).
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil)
	return err
}

// Ready reports whether the server can reach its store (GET /readyz); it
// fails with ErrUnavailable when it cannot.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil)
	return err
}
