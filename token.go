package tokenhub

import (
	"log/slog"
	"time"
)

// ExpirySource says where a token's expiry came from. The order of the
// constants is the order of precedence used when several are present.
type ExpirySource string

const (
	ExpiryNone       ExpirySource = ""            // the token carries no expiry and the provider sets no default
	ExpiryExpiresIn  ExpirySource = "expires_in"  // a relative lifetime in the response, counted from when the request was sent
	ExpiryExpiresAt  ExpirySource = "expires_at"  // an absolute time in the response
	ExpiryJWT        ExpirySource = "jwt_exp"     // the exp claim of the token itself
	ExpiryDefaultTTL ExpirySource = "default_ttl" // the provider's default_ttl
)

// Token is a credential obtained from a provider.
//
// A Token is immutable once it is handed out: code that needs a different
// token builds a new one. Its String, GoString and LogValue methods redact the
// secrets, so a Token may be logged or formatted safely.
type Token struct {
	AccessToken  string
	RefreshToken string // "" when the provider issued none
	TokenType    string // as the provider said, e.g. "Bearer"; may be ""

	ExpiresAt    time.Time // zero when the token never expires
	ExpirySource ExpirySource
	ObtainedAt   time.Time // when the request that produced it was sent

	RefreshExpiresAt    time.Time // zero when unknown
	RefreshExpirySource ExpirySource
}

// Valid reports whether t holds an access token that has not expired at now.
// A nil Token is not valid.
func (t *Token) Valid(now time.Time) bool {
	return t != nil && t.AccessToken != "" && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// Lifetime returns the span between ObtainedAt and ExpiresAt, or 0 when the
// token never expires.
func (t *Token) Lifetime() time.Duration {
	if t == nil || t.ExpiresAt.IsZero() {
		return 0
	}
	return t.ExpiresAt.Sub(t.ObtainedAt)
}

// LogValue implements slog.LogValuer. It logs the token's shape, never its
// secrets.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", t.TokenType),
		slog.Time("expires_at", t.ExpiresAt),
		slog.String("expiry_source", string(t.ExpirySource)),
		slog.Bool("has_refresh_token", t.RefreshToken != ""),
	)
}

// String returns a redacted description of the token.
func (t Token) String() string {
	return "Token(type=" + t.TokenType + " expires_at=" + t.ExpiresAt.UTC().Format(time.RFC3339) + " access_token=REDACTED)"
}

// GoString returns the same redacted description as String, so %#v is safe.
func (t Token) GoString() string { return t.String() }
