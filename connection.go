package tokenhub

import (
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// State is the health of a connection.
type State string

const (
	StatePending     State = "pending"      // no token yet
	StateHealthy     State = "healthy"      // holds a valid token and its last refresh worked
	StateDegraded    State = "degraded"     // transient failures; a still-valid token keeps being served
	StateNeedsReauth State = "needs_reauth" // permanent failure and no way to log in again
)

// ConnectionConfig is what a user writes about a connection: in the config
// file, or as the body of PUT /v1/workspaces/{ws}/connections/{name}.
//
// ClientSecret, Password and every Credentials value are secrets: stores keep
// them encrypted, and LogValue redacts them.
type ConnectionConfig struct {
	Provider     string    `json:"provider"`
	BaseURL      string    `json:"base_url,omitempty"`
	TokenURL     string    `json:"token_url,omitempty"`
	Grant        Grant     `json:"grant,omitempty"`
	AuthStyle    AuthStyle `json:"auth_style,omitempty"`
	ClientID     string    `json:"client_id,omitempty"`
	ClientSecret string    `json:"client_secret,omitempty"`
	Username     string    `json:"username,omitempty"`
	Password     string    `json:"password,omitempty"`
	// RefreshToken seeds a grant: refresh_token connection with a refresh token
	// obtained elsewhere (for example by an authorization-code flow). After the
	// first refresh the connection keeps its own, rotated, refresh token.
	RefreshToken string            `json:"refresh_token,omitempty"`
	Credentials  map[string]string `json:"credentials,omitempty"`
	Scopes       []string          `json:"scopes,omitempty"`
	Params       map[string]string `json:"params,omitempty"`
	// Allow, when set, limits what apps may do through the proxy.
	Allow []AllowRule `json:"allow,omitempty"`
}

// AllowRule lets apps use the proxy for the listed methods (all when empty)
// under PathPrefix.
type AllowRule struct {
	PathPrefix string   `json:"path_prefix"`
	Methods    []string `json:"methods,omitempty"`
}

// Validate checks c against its provider p and returns an EINVALID error that
// names the first bad field. p may be nil when the provider is unknown, which
// is itself an error.
func (c *ConnectionConfig) Validate(p *Provider) error {
	if c.Provider == "" {
		return Errorf(EINVALID, "provider: required")
	}
	if p == nil {
		return Errorf(EINVALID, "provider: no provider named %q", c.Provider)
	}
	if c.BaseURL != "" {
		if err := checkBaseURL(c.BaseURL); err != nil {
			return err
		}
	}
	if c.TokenURL != "" {
		if p.IsLogin() {
			return Errorf(EINVALID, "token_url: provider %q is a login API; it takes no token_url", p.Name)
		}
		if err := checkURLTemplate("token_url", c.TokenURL); err != nil {
			return err
		}
	}
	switch c.AuthStyle {
	case "", AuthStyleBasic, AuthStyleBody:
	default:
		return Errorf(EINVALID, "auth_style: must be %q or %q, not %q", AuthStyleBasic, AuthStyleBody, c.AuthStyle)
	}
	if err := validateAllow(c.Allow); err != nil {
		return err
	}
	grant := c.GrantOrDefault(p)
	if p.IsLogin() {
		if grant != GrantLogin {
			return Errorf(EINVALID, "grant: provider %q is a login API; grant must be %q, not %q", p.Name, GrantLogin, c.Grant)
		}
		if strings.Contains(p.Login.URL, ".BaseURL") && c.BaseURL == "" {
			return Errorf(EINVALID, "base_url: required, provider %q builds its login URL from it", p.Name)
		}
		return nil
	}
	if c.TokenURL == "" && p.TokenURL == "" {
		return Errorf(EINVALID, "token_url: required, provider %q names no token endpoint", p.Name)
	}
	if (c.TokenURL == "" && strings.Contains(p.TokenURL, ".BaseURL")) && c.BaseURL == "" {
		return Errorf(EINVALID, "base_url: required, provider %q builds its token URL from it", p.Name)
	}
	switch grant {
	case GrantClientCredentials:
		if c.ClientID == "" {
			return Errorf(EINVALID, "client_id: required for grant %s", grant)
		}
	case GrantPassword:
		if c.Username == "" {
			return Errorf(EINVALID, "username: required for grant %s", grant)
		}
		if c.Password == "" {
			return Errorf(EINVALID, "password: required for grant %s", grant)
		}
	case GrantRefreshToken:
		if c.RefreshToken == "" {
			return Errorf(EINVALID, "refresh_token: required for grant %s", grant)
		}
	case GrantLogin:
		return Errorf(EINVALID, "grant: %q needs a provider with a login: request; %q is OAuth 2.0", grant, p.Name)
	default:
		return Errorf(EINVALID, "grant: must be client_credentials, password, refresh_token or login, not %q", c.Grant)
	}
	return nil
}

// validateAllow checks the proxy allowlist: each rule needs a path prefix
// starting with "/", and methods, when given, must be HTTP method tokens.
func validateAllow(rules []AllowRule) error {
	for i, r := range rules {
		if !strings.HasPrefix(r.PathPrefix, "/") {
			return Errorf(EINVALID, "allow[%d].path_prefix: must start with /, not %q", i, r.PathPrefix)
		}
		if strings.ContainsAny(r.PathPrefix, "\\?#\r\n") {
			return Errorf(EINVALID, "allow[%d].path_prefix: must be a plain path, without query, fragment, backslash or line breaks", i)
		}
		for j, m := range r.Methods {
			if m == "" || m != strings.ToUpper(m) || !validHeaderName(m) {
				return Errorf(EINVALID, "allow[%d].methods[%d]: %q is not an upper-case HTTP method such as GET", i, j, m)
			}
		}
	}
	return nil
}

func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		// The parser's message quotes the URL, user info and all.
		return Errorf(EINVALID, "base_url: not a valid URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errorf(EINVALID, "base_url: %q is not an absolute http or https URL", u.Redacted())
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Errorf(EINVALID, "base_url: must have no user info, query or fragment")
	}
	return nil
}

// GrantOrDefault returns c's grant, defaulting to login for login providers
// and client_credentials for OAuth 2.0 ones.
func (c *ConnectionConfig) GrantOrDefault(p *Provider) Grant {
	if c.Grant != "" {
		return c.Grant
	}
	if p != nil && p.IsLogin() {
		return GrantLogin
	}
	return GrantClientCredentials
}

// CanLogin reports whether a connection with config c and provider p can get
// a new token without a refresh token: by logging in, or with its client or
// user credentials. A connection that cannot needs re-authorisation once its
// refresh token is refused.
func (c *ConnectionConfig) CanLogin(p *Provider) bool {
	switch c.GrantOrDefault(p) {
	case GrantLogin, GrantClientCredentials, GrantPassword:
		return true
	}
	return false
}

// Equal reports whether c and o describe the same connection.
func (c *ConnectionConfig) Equal(o *ConnectionConfig) bool {
	return c.Provider == o.Provider && c.BaseURL == o.BaseURL && c.TokenURL == o.TokenURL &&
		c.Grant == o.Grant && c.AuthStyle == o.AuthStyle && c.ClientID == o.ClientID &&
		c.ClientSecret == o.ClientSecret && c.Username == o.Username && c.Password == o.Password && c.RefreshToken == o.RefreshToken &&
		maps.Equal(c.Credentials, o.Credentials) && slices.Equal(c.Scopes, o.Scopes) &&
		maps.Equal(c.Params, o.Params) && slices.EqualFunc(c.Allow, o.Allow, func(a, b AllowRule) bool {
		return a.PathPrefix == b.PathPrefix && slices.Equal(a.Methods, b.Methods)
	})
}

// SecretFields returns the names of the secret fields that are set, sorted:
// "client_secret", "password" and "credentials.NAME". It is what the API shows
// instead of the secrets themselves.
func (c *ConnectionConfig) SecretFields() []string {
	var out []string
	if c.ClientSecret != "" {
		out = append(out, "client_secret")
	}
	if c.Password != "" {
		out = append(out, "password")
	}
	if c.RefreshToken != "" {
		out = append(out, "refresh_token")
	}
	for k := range c.Credentials {
		out = append(out, "credentials."+k)
	}
	sort.Strings(out)
	return out
}

// TemplateData returns the data that c's provider templates are rendered over.
func (c *ConnectionConfig) TemplateData() TemplateData {
	creds := c.Credentials
	if creds == nil {
		creds = map[string]string{}
	}
	return TemplateData{
		BaseURL:      strings.TrimRight(c.BaseURL, "/"),
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Username:     c.Username,
		Password:     c.Password,
		Credentials:  creds,
	}
}

// LogValue implements slog.LogValuer and redacts every secret.
func (c ConnectionConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("provider", c.Provider),
		slog.String("base_url", c.BaseURL),
		slog.String("grant", string(c.Grant)),
		slog.String("client_id", c.ClientID),
		slog.Any("secrets_set", c.SecretFields()),
	)
}

// String returns a redacted description, so that %v and %+v are safe.
func (c ConnectionConfig) String() string {
	return "ConnectionConfig(provider=" + c.Provider + " grant=" + string(c.Grant) + " secrets=REDACTED)"
}

// GoString is String, so that %#v is safe.
func (c ConnectionConfig) GoString() string { return c.String() }

// ErrorInfo is the last failure of a connection. It holds no secret: only
// what the provider said and what tokenhub concluded.
type ErrorInfo struct {
	At          time.Time `json:"at"`
	Code        string    `json:"code,omitempty"`        // the provider's OAuth error code, e.g. invalid_grant
	Description string    `json:"description,omitempty"` // the provider's error_description
	Message     string    `json:"message"`               // tokenhub's one-line account of the failure
	Status      int       `json:"status,omitempty"`      // the HTTP status of the token endpoint, 0 for network errors
}

// Status is the runtime state of a connection, written by the broker.
type Status struct {
	State         State
	LastError     *ErrorInfo // nil after a success
	LastRefreshAt time.Time  // when the last successful obtain or refresh was sent
	RefreshCount  int64      // successful obtains and refreshes
	Failures      int        // consecutive failed attempts
	NextRefreshAt time.Time  // when the broker will next renew; zero when it will not
}

// Lease records that a refresher is renewing the connection's token. It is
// written durably before the refresh request is sent, so a restart can see a
// refresh that was cut off, and so that only one replica refreshes at a time.
type Lease struct {
	Owner string    // "" when free
	Since time.Time // when the holder took it
	Until time.Time // when it lapses if not released
}

// Connection is a named instance of a provider in a workspace: its config,
// its current token and its runtime status.
type Connection struct {
	ID        int64
	Workspace string
	Name      string
	Config    ConnectionConfig

	// Generation increases each time Config changes. A change clears the
	// token and the status, so the connection obtains a fresh token.
	Generation int64

	Token  *Token // nil when none
	Status Status
	Lease  Lease

	// Version increases on every write; UpdateConnection compares it.
	Version int64

	CreatedAt time.Time
	UpdatedAt time.Time
}

// Path returns "workspace/name", how errors and logs name a connection.
func (c *Connection) Path() string { return c.Workspace + "/" + c.Name }

// LogValue implements slog.LogValuer and redacts every secret.
func (c *Connection) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("connection", c.Path()),
		slog.String("state", string(c.Status.State)),
		slog.Any("token", c.Token),
	)
}

// EventType names what happened to a connection.
type EventType string

const (
	EventCreated       EventType = "created"        // the connection was created
	EventConfigChanged EventType = "config_changed" // its config changed; the token was dropped
	EventObtained      EventType = "obtained"       // a token was obtained by logging in or a grant
	EventRefreshed     EventType = "refreshed"      // a token was renewed with a refresh token
	EventRotated       EventType = "rotated"        // the refresh brought a new refresh token
	EventRetried       EventType = "retried"        // a transient failure; another attempt is scheduled
	EventDegraded      EventType = "degraded"       // the connection entered the degraded state
	EventNeedsReauth   EventType = "needs_reauth"   // a permanent failure that tokenhub cannot repair
	EventRecovered     EventType = "recovered"      // a degraded or broken connection works again
	EventInterrupted   EventType = "interrupted"    // a refresh was cut off (crash or lapsed lease) and was taken over
	EventRelogin       EventType = "relogin"        // a refresh was refused and the connection logged in again
	EventUnauthorized  EventType = "upstream_401"   // an upstream API refused the token
	// EventRefreshExpiring warns that the refresh token expires before the
	// next refresh and that the connection cannot log in again, so it will
	// need re-authorisation then unless someone acts first.
	EventRefreshExpiring EventType = "refresh_expiring"
)

// Event is one entry of a connection's log. Message never holds a secret.
type Event struct {
	ID           int64
	ConnectionID int64
	At           time.Time
	Type         EventType
	Message      string
}
