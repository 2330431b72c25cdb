package tokenhub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Grant names how a connection obtains a token when it has none.
type Grant string

const (
	// GrantClientCredentials is the OAuth 2.0 client credentials grant (RFC 6749 §4.4).
	GrantClientCredentials Grant = "client_credentials"
	// GrantPassword is the OAuth 2.0 resource owner password grant (RFC 6749 §4.3).
	GrantPassword Grant = "password"
	// GrantLogin is a provider-specific login request, such as Baserow's /api/user/token-auth/.
	GrantLogin Grant = "login"
	// GrantRefreshToken is the OAuth 2.0 refresh grant (RFC 6749 §6). It is never a
	// connection's grant: it is how tokens obtained with the others are renewed.
	GrantRefreshToken Grant = "refresh_token"
)

// AuthStyle says how an OAuth 2.0 client authenticates at the token endpoint.
type AuthStyle string

const (
	AuthStyleBasic AuthStyle = "basic" // HTTP Basic with client_id and client_secret (the RFC 6749 default)
	AuthStyleBody  AuthStyle = "body"  // client_id and client_secret as form parameters
)

// Defaults of the refresh policy. A zero knob in a Provider means the default.
const (
	DefaultRefreshAt     = 0.75
	DefaultRefreshJitter = 0.05
	DefaultRefreshMargin = 10 * time.Second
	DefaultTimeout       = 30 * time.Second
)

// Provider describes declaratively how to obtain, renew and present tokens.
//
// A provider is either standard OAuth 2.0 (Login is nil: tokens come from a
// token endpoint with the grant named by the connection), or a login API that
// is not OAuth (Login is set: tokens come from rendering and sending Login,
// and are renewed by Refresh when it is set, or by logging in again).
//
// URLs, header values, JSON string leaves and form values are Go templates
// over TemplateData. A Provider holds no secret.
type Provider struct {
	Name string `json:"name"`

	// TokenURL is the OAuth 2.0 token endpoint. A connection's token_url overrides it.
	TokenURL  string    `json:"token_url,omitempty"`
	AuthStyle AuthStyle `json:"auth_style,omitempty"`

	Login   *Request `json:"login,omitempty"`
	Refresh *Request `json:"refresh,omitempty"`

	// Response says where the fields sit in the token response, as dotted paths.
	Response ResponseMapping `json:"response,omitzero"`
	// Header is how apps present the token; Authorization: Bearer {{.AccessToken}} when unset.
	Header Header `json:"header,omitzero"`

	// DefaultTTL is the lifetime of a token that carries no expiry at all.
	// Zero means such a token never expires and is never refreshed.
	DefaultTTL Duration `json:"default_ttl,omitempty"`

	// RefreshAt is the share of a token's lifetime after which it is refreshed (default 0.75).
	RefreshAt float64 `json:"refresh_at,omitempty"`
	// RefreshJitter spreads RefreshAt by ± this share (default 0.05). Negative means none.
	RefreshJitter float64 `json:"refresh_jitter,omitempty"`
	// RefreshMargin: a token is refreshed no later than this before it expires (default 10s).
	RefreshMargin Duration `json:"refresh_margin,omitempty"`
	// MinRefreshInterval: a token is never refreshed sooner than this after it was obtained.
	MinRefreshInterval Duration `json:"min_refresh_interval,omitempty"`
	// Timeout bounds each upstream attempt (default 30s).
	Timeout Duration `json:"timeout,omitempty"`
}

// Request is a templated HTTP request of a login API.
type Request struct {
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"` // POST when empty
	Headers map[string]string `json:"headers,omitempty"`
	JSON    map[string]any    `json:"json,omitempty"` // string leaves are templates
	Form    map[string]string `json:"form,omitempty"` // values are templates
}

// ResponseMapping names, as dotted JSON paths such as "data.token", where the
// fields of a token response sit. An empty path means the OAuth 2.0 name.
type ResponseMapping struct {
	AccessToken      string `json:"access_token,omitempty"`
	RefreshToken     string `json:"refresh_token,omitempty"`
	TokenType        string `json:"token_type,omitempty"`
	ExpiresIn        string `json:"expires_in,omitempty"`
	ExpiresAt        string `json:"expires_at,omitempty"`
	RefreshExpiresIn string `json:"refresh_expires_in,omitempty"`
}

// WithDefaults returns m with every empty path set to its OAuth 2.0 name.
// ExpiresAt has no OAuth 2.0 name and stays empty unless set.
func (m ResponseMapping) WithDefaults() ResponseMapping {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&m.AccessToken, "access_token")
	def(&m.RefreshToken, "refresh_token")
	def(&m.TokenType, "token_type")
	def(&m.ExpiresIn, "expires_in")
	def(&m.RefreshExpiresIn, "refresh_expires_in")
	return m
}

// Header is how an app presents a token: a header name and a value template.
type Header struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// DefaultHeader is the header used when a provider names none.
var DefaultHeader = Header{Name: "Authorization", Value: "Bearer {{.AccessToken}}"}

// TemplateData is what provider templates may refer to. Credentials holds the
// connection's named credential fields, e.g. {{.Credentials.email}}.
type TemplateData struct {
	BaseURL      string
	ClientID     string
	ClientSecret string
	Username     string
	Password     string
	Credentials  map[string]string
	RefreshToken string
	AccessToken  string
}

// LogValue implements slog.LogValuer: TemplateData holds the connection's
// secrets, so only the base URL and the names of the credentials are logged.
func (d TemplateData) LogValue() slog.Value {
	names := make([]string, 0, len(d.Credentials))
	for k := range d.Credentials {
		names = append(names, k)
	}
	slices.Sort(names)
	return slog.GroupValue(slog.String("base_url", d.BaseURL), slog.Any("credentials", names))
}

// String returns a redacted description, so that %v and %+v are safe.
func (d TemplateData) String() string {
	return "TemplateData(base_url=" + d.BaseURL + " secrets=REDACTED)"
}

// GoString is String, so that %#v is safe.
func (d TemplateData) GoString() string { return d.String() }

// IsLogin reports whether p is a login API rather than standard OAuth 2.0.
func (p *Provider) IsLogin() bool { return p.Login != nil }

// HeaderOrDefault returns p's header, or DefaultHeader when p names none.
func (p *Provider) HeaderOrDefault() Header {
	if p.Header.Name == "" {
		return DefaultHeader
	}
	return p.Header
}

// Policy returns p's refresh knobs with defaults applied.
func (p *Provider) Policy() RefreshPolicy {
	r := RefreshPolicy{
		RefreshAt:          p.RefreshAt,
		Jitter:             p.RefreshJitter,
		Margin:             time.Duration(p.RefreshMargin),
		MinRefreshInterval: time.Duration(p.MinRefreshInterval),
		Timeout:            time.Duration(p.Timeout),
		DefaultTTL:         time.Duration(p.DefaultTTL),
	}
	if r.RefreshAt == 0 {
		r.RefreshAt = DefaultRefreshAt
	}
	if r.Jitter == 0 {
		r.Jitter = DefaultRefreshJitter
	} else if r.Jitter < 0 {
		r.Jitter = 0
	}
	if r.Margin == 0 {
		r.Margin = DefaultRefreshMargin
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultTimeout
	}
	return r
}

// RefreshPolicy is a provider's refresh knobs with defaults applied.
type RefreshPolicy struct {
	RefreshAt          float64
	Jitter             float64
	Margin             time.Duration
	MinRefreshInterval time.Duration
	Timeout            time.Duration
	DefaultTTL         time.Duration
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidName reports whether s may name a workspace, connection, app or provider:
// 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidateName returns an EINVALID error naming field when s is not a ValidName.
func ValidateName(field, s string) error {
	if s == "" {
		return Errorf(EINVALID, "%s: required", field)
	}
	if !ValidName(s) {
		return Errorf(EINVALID, "%s: %q is not a valid name (1-63 of a-z 0-9 . _ -, starting with a letter or digit)", field, s)
	}
	return nil
}

// Validate checks p and returns an EINVALID error naming the first bad field.
func (p *Provider) Validate() error {
	if err := ValidateName("name", p.Name); err != nil {
		return err
	}
	switch p.AuthStyle {
	case "", AuthStyleBasic, AuthStyleBody:
	default:
		return Errorf(EINVALID, "auth_style: must be %q or %q, not %q", AuthStyleBasic, AuthStyleBody, p.AuthStyle)
	}
	if p.TokenURL != "" {
		if err := checkURLTemplate("token_url", p.TokenURL); err != nil {
			return err
		}
	}
	if p.Login != nil {
		if err := p.Login.validate("login"); err != nil {
			return err
		}
		if p.TokenURL != "" {
			return Errorf(EINVALID, "token_url: a login provider renews tokens with refresh:, not a token_url")
		}
	} else if p.Refresh != nil {
		return Errorf(EINVALID, "refresh: needs login: as well (an OAuth 2.0 provider refreshes at its token_url)")
	}
	if p.Refresh != nil {
		if err := p.Refresh.validate("refresh"); err != nil {
			return err
		}
	}
	if p.Header.Name != "" || p.Header.Value != "" {
		if !validHeaderName(p.Header.Name) {
			return Errorf(EINVALID, "header.name: %q is not a valid HTTP header name", p.Header.Name)
		}
		if p.Header.Value == "" {
			return Errorf(EINVALID, "header.value: required when header.name is set")
		}
		if err := checkTemplate("header.value", p.Header.Value); err != nil {
			return err
		}
	}
	switch {
	case p.RefreshAt < 0 || p.RefreshAt >= 1:
		return Errorf(EINVALID, "refresh_at: must be a share of the lifetime between 0 and 1, not %v", p.RefreshAt)
	case p.RefreshJitter >= 0.5:
		return Errorf(EINVALID, "refresh_jitter: must be below 0.5, not %v", p.RefreshJitter)
	case p.DefaultTTL < 0:
		return Errorf(EINVALID, "default_ttl: must not be negative")
	case p.RefreshMargin < 0:
		return Errorf(EINVALID, "refresh_margin: must not be negative")
	case p.MinRefreshInterval < 0:
		return Errorf(EINVALID, "min_refresh_interval: must not be negative")
	case p.Timeout < 0:
		return Errorf(EINVALID, "timeout: must not be negative")
	}
	return nil
}

func (r *Request) validate(field string) error {
	if r.URL == "" {
		return Errorf(EINVALID, "%s.url: required", field)
	}
	if err := checkURLTemplate(field+".url", r.URL); err != nil {
		return err
	}
	switch strings.ToUpper(r.Method) {
	case "", http.MethodPost, http.MethodPut, http.MethodGet, http.MethodPatch:
	default:
		return Errorf(EINVALID, "%s.method: %q is not one of GET, POST, PUT, PATCH", field, r.Method)
	}
	if r.JSON != nil && r.Form != nil {
		return Errorf(EINVALID, "%s: set json: or form:, not both", field)
	}
	for k, v := range r.Headers {
		if !validHeaderName(k) {
			return Errorf(EINVALID, "%s.headers: %q is not a valid HTTP header name", field, k)
		}
		if err := checkTemplate(field+".headers."+k, v); err != nil {
			return err
		}
	}
	for k, v := range r.Form {
		if err := checkTemplate(field+".form."+k, v); err != nil {
			return err
		}
	}
	return checkJSONTemplates(field+".json", r.JSON)
}

func checkJSONTemplates(field string, v any) error {
	switch v := v.(type) {
	case string:
		return checkTemplate(field, v)
	case map[string]any:
		for k, x := range v {
			if err := checkJSONTemplates(field+"."+k, x); err != nil {
				return err
			}
		}
	case []any:
		for i, x := range v {
			if err := checkJSONTemplates(field+"["+strconv.Itoa(i)+"]", x); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTemplate parses s as a template and executes it over empty data, so
// that both syntax errors and references to unknown fields are caught when a
// provider is defined, not when a token is due.
func checkTemplate(field, s string) error {
	_, err := execEmpty(field, s)
	return err
}

// checkURLTemplate is checkTemplate for a URL, which must not carry user
// info: a password written there would be shown wherever the URL is (GET of
// a provider or a connection, apply's diffs), and sent as a credential
// behind the connection's back. Credentials belong in the secret fields.
func checkURLTemplate(field, s string) error {
	out, err := execEmpty(field, s)
	if err != nil {
		return err
	}
	if u, err := url.Parse(out); err == nil && u.User != nil {
		return Errorf(EINVALID, "%s: must have no user info (user:password@); put credentials in client_id and client_secret, or in credentials", field)
	}
	return nil
}

// execEmpty executes s over empty data and returns what it wrote.
func execEmpty(field, s string) (string, error) {
	t, err := template.New(field).Option("missingkey=zero").Parse(s)
	if err != nil {
		return "", Errorf(EINVALID, "%s: bad template: %s", field, templateErrText(err))
	}
	var b bytes.Buffer
	if err := t.Execute(&b, TemplateData{Credentials: map[string]string{}}); err != nil {
		return "", Errorf(EINVALID, "%s: bad template: %s", field, templateErrText(err))
	}
	return b.String(), nil
}

func templateErrText(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s, "template: ") {
		return s[i+2:]
	}
	return s
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// Duration is a time.Duration written as a Go duration string ("10m", "90s")
// in JSON and YAML. A bare JSON number is read as seconds.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 90s or 10m", b)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON accepts a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return d.UnmarshalText([]byte(s))
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("%s is not a duration such as \"90s\" or a number of seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}
