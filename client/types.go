package client

import (
	"log/slog"
	"time"

	"github.com/tokenhub/tokenhub"
)

// Workspace is the API's view of a workspace.
type Workspace struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// App is the API's view of an app. It never holds the key or its hash.
type App struct {
	Workspace string `json:"workspace"`
	Name      string `json:"name"`
	// Connections, when non-empty, are the only connections the app may read.
	Connections []string  `json:"connections,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// AppKey is the answer to creating an app: the only time its key is shown.
// Its String, GoString and LogValue methods redact the key.
type AppKey struct {
	Workspace string `json:"workspace"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

// String returns a description with the key redacted.
func (k AppKey) String() string { return "AppKey(" + k.Workspace + "/" + k.Name + " key=REDACTED)" }

// GoString is String, so that %#v is safe.
func (k AppKey) GoString() string { return k.String() }

// LogValue implements slog.LogValuer without the key.
func (k AppKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("workspace", k.Workspace), slog.String("app", k.Name))
}

// ProviderView is the API's view of a provider definition: a stored one, or
// a built-in one (Builtin true) that cannot be replaced. Providers hold no
// secret.
type ProviderView struct {
	tokenhub.Provider
	Builtin bool `json:"builtin,omitempty"`
}

// PutProviderResult is the answer to PUT /v1/providers/{name}: the provider
// as stored and what the request did.
type PutProviderResult struct {
	ProviderView
	Result tokenhub.PutResult `json:"result"`
}

// ConnectionView is the API's view of a connection: its config without
// secrets (SecretsSet names the secret fields that are set, never their
// values), its current token's expiry and its runtime status.
type ConnectionView struct {
	Workspace string `json:"workspace"`
	Name      string `json:"name"`

	Provider   string               `json:"provider"`
	BaseURL    string               `json:"base_url,omitempty"`
	TokenURL   string               `json:"token_url,omitempty"`
	Grant      tokenhub.Grant       `json:"grant,omitempty"`
	AuthStyle  tokenhub.AuthStyle   `json:"auth_style,omitempty"`
	ClientID   string               `json:"client_id,omitempty"`
	Username   string               `json:"username,omitempty"`
	Scopes     []string             `json:"scopes,omitempty"`
	Params     map[string]string    `json:"params,omitempty"`
	Allow      []tokenhub.AllowRule `json:"allow,omitempty"`
	SecretsSet []string             `json:"secrets_set"`

	State tokenhub.State `json:"state"`
	// ExpiresAt is when the current token expires; zero when there is no
	// token or it never expires (HasToken tells the two apart).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	HasToken  bool      `json:"has_token"`
	// RefreshExpiresAt is when the refresh token dies, when the provider
	// said; a connection that cannot log in again needs re-authorisation then.
	RefreshExpiresAt time.Time           `json:"refresh_expires_at,omitzero"`
	NextRefreshAt    time.Time           `json:"next_refresh_at,omitzero"`
	LastRefreshAt    time.Time           `json:"last_refresh_at,omitzero"`
	RefreshCount     int64               `json:"refresh_count"`
	Failures         int                 `json:"failures"`
	LastError        *tokenhub.ErrorInfo `json:"last_error,omitempty"`
	Generation       int64               `json:"generation"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PutConnectionResult is the answer to PUT
// /v1/workspaces/{ws}/connections/{name}: the connection as stored and what
// the request did.
type PutConnectionResult struct {
	ConnectionView
	Result tokenhub.PutResult `json:"result"`
}

// Event is one entry of a connection's event log. Its message holds no secret.
type Event struct {
	At      time.Time          `json:"at"`
	Type    tokenhub.EventType `json:"type"`
	Message string             `json:"message"`
}

// Header is the HTTP header an app presents a token in, for example
// "Authorization: JWT eyJ…". Value contains the access token: String,
// GoString and LogValue redact it.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// String returns the header's name with its value redacted.
func (h Header) String() string { return h.Name + ": REDACTED" }

// GoString is String, so that %#v is safe.
func (h Header) GoString() string { return h.String() }

// LogValue implements slog.LogValuer without the value.
func (h Header) LogValue() slog.Value { return slog.StringValue(h.String()) }

// Token is the answer of the token endpoint: a valid access token and the
// header to present it in. It never holds a refresh token or a credential.
// ExpiresAt is zero when the token never expires. String, GoString and
// LogValue redact the token.
type Token struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	Header      Header    `json:"header"`
}

// Valid reports whether t holds an access token that has not expired at now.
// A nil Token is not valid.
func (t *Token) Valid(now time.Time) bool {
	return t != nil && t.AccessToken != "" && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// String returns a description with the token redacted.
func (t Token) String() string {
	return "Token(type=" + t.TokenType + " expires_at=" + t.ExpiresAt.UTC().Format(time.RFC3339) + " header=" + t.Header.Name + " access_token=REDACTED)"
}

// GoString is String, so that %#v is safe.
func (t Token) GoString() string { return t.String() }

// LogValue implements slog.LogValuer without the token.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", t.TokenType),
		slog.Time("expires_at", t.ExpiresAt),
		slog.String("header", t.Header.Name),
	)
}

// Status is the answer of GET /healthz and GET /readyz.
type Status struct {
	Status string `json:"status"`
}

// The request bodies of the API.

// CreateWorkspaceRequest is the body of POST /v1/workspaces.
type CreateWorkspaceRequest struct {
	Name string `json:"name"`
}

// CreateAppRequest is the body of POST /v1/workspaces/{ws}/apps.
type CreateAppRequest struct {
	Name        string   `json:"name"`
	Connections []string `json:"connections,omitempty"`
}

// The list answers of the API wrap their arrays in an object, so that fields
// can be added later without breaking clients.

// WorkspaceList is the answer of GET /v1/workspaces.
type WorkspaceList struct {
	Workspaces []*Workspace `json:"workspaces"`
}

// AppList is the answer of GET /v1/workspaces/{ws}/apps.
type AppList struct {
	Apps []*App `json:"apps"`
}

// ProviderList is the answer of GET /v1/providers.
type ProviderList struct {
	Providers []*ProviderView `json:"providers"`
}

// ConnectionList is the answer of GET /v1/workspaces/{ws}/connections.
type ConnectionList struct {
	Connections []*ConnectionView `json:"connections"`
}

// EventList is the answer of GET /v1/workspaces/{ws}/connections/{name}/events.
type EventList struct {
	Events []*Event `json:"events"`
}
