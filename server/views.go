package server

import (
	"slices"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
)

// The functions below turn domain objects into the API's views. They are the
// only place where a domain object becomes an answer, and they copy no
// secret: a connection's secret fields appear only as their names.

// views turns each of items into its view, for a list answer. The result
// is never nil, so that an empty list is answered as [], not null.
func views[T, V any](items []T, view func(T) V) []V {
	out := make([]V, 0, len(items))
	for _, it := range items {
		out = append(out, view(it))
	}
	return out
}

func workspaceView(w *tokenhub.Workspace) *client.Workspace {
	return &client.Workspace{Name: w.Name, CreatedAt: w.CreatedAt}
}

func appView(a *tokenhub.App) *client.App {
	return &client.App{Workspace: a.Workspace, Name: a.Name, Connections: slices.Clone(a.Connections), CreatedAt: a.CreatedAt}
}

func providerView(p *tokenhub.Provider, builtin bool) *client.ProviderView {
	return &client.ProviderView{Provider: *p, Builtin: builtin}
}

func connectionView(c *tokenhub.Connection) *client.ConnectionView {
	cfg := &c.Config
	v := &client.ConnectionView{
		Workspace:     c.Workspace,
		Name:          c.Name,
		Provider:      cfg.Provider,
		BaseURL:       cfg.BaseURL,
		TokenURL:      cfg.TokenURL,
		Grant:         cfg.Grant,
		AuthStyle:     cfg.AuthStyle,
		ClientID:      cfg.ClientID,
		Username:      cfg.Username,
		Scopes:        slices.Clone(cfg.Scopes),
		Params:        cfg.Params,
		Allow:         cfg.Allow,
		SecretsSet:    cfg.SecretFields(),
		State:         c.Status.State,
		NextRefreshAt: c.Status.NextRefreshAt,
		LastRefreshAt: c.Status.LastRefreshAt,
		RefreshCount:  c.Status.RefreshCount,
		Failures:      c.Status.Failures,
		LastError:     c.Status.LastError,
		Generation:    c.Generation,
		CreatedAt:     c.CreatedAt,
		UpdatedAt:     c.UpdatedAt,
	}
	if v.SecretsSet == nil {
		v.SecretsSet = []string{}
	}
	if v.State == "" {
		v.State = tokenhub.StatePending
	}
	if c.Token != nil {
		v.HasToken = true
		v.ExpiresAt = c.Token.ExpiresAt
		if c.Token.RefreshToken != "" {
			v.RefreshExpiresAt = c.Token.RefreshExpiresAt
		}
	}
	return v
}

func eventView(e *tokenhub.Event) *client.Event {
	return &client.Event{At: e.At, Type: e.Type, Message: e.Message}
}
