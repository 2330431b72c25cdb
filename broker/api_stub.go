package broker

// THIS FILE IS A TEMPORARY STUB so that other packages compile against the
// broker's API while the engine is being written. It will be replaced.

import (
	"context"
	"log/slog"
	"net/url"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/clock"
)

// Granter performs the upstream requests. grant.Client implements it.
type Granter interface {
	// Obtain gets a first token with the connection's grant (client
	// credentials, password or login).
	Obtain(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection) (*tokenhub.Token, error)
	// Refresh renews a token with refreshToken. The returned token's
	// RefreshToken is "" when the provider sent none.
	Refresh(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection, refreshToken string) (*tokenhub.Token, error)
}

// Options configure a Broker.
type Options struct {
	Store  tokenhub.Store
	Grant  Granter
	Clock  clock.Clock  // clock.Real{} when nil
	Logger *slog.Logger // discards when nil
	Owner  string       // lease owner id
}

// Current is a valid token with the header apps present it in.
type Current struct {
	Token       *tokenhub.Token
	HeaderName  string
	HeaderValue string
}

// Broker is the engine.
type Broker struct{ o Options }

// New returns a Broker.
func New(o Options) *Broker { return &Broker{o: o} }

// Open loads connections and starts refreshing.
func (b *Broker) Open(ctx context.Context) error { return nil }

// Close stops.
func (b *Broker) Close() error { return nil }

// Token returns a valid token.
func (b *Broker) Token(ctx context.Context, ws, name string) (*Current, error) {
	return nil, tokenhub.Errorf(tokenhub.EUNAVAILABLE, "stub")
}

// Refresh forces a refresh.
func (b *Broker) Refresh(ctx context.Context, ws, name string) (*Current, error) {
	return nil, tokenhub.Errorf(tokenhub.EUNAVAILABLE, "stub")
}

// Sync reloads one connection after it was put or deleted.
func (b *Broker) Sync(ctx context.Context, ws, name string) error { return nil }

// Upstream is where the proxy forwards a connection's requests.
type Upstream struct {
	BaseURL *url.URL
	Allow   []tokenhub.AllowRule
}

// Upstream returns the connection's proxy target; ENOTFOUND when unknown,
// EINVALID when the connection has no base_url.
func (b *Broker) Upstream(ws, name string) (*Upstream, error) {
	return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "stub")
}

// Record appends an event to the connection's log (for example an upstream 401
// seen by the proxy). Message must hold no secret.
func (b *Broker) Record(ctx context.Context, ws, name string, typ tokenhub.EventType, message string) error {
	return nil
}

// SyncWorkspace forgets every connection of a deleted workspace.
func (b *Broker) SyncWorkspace(ctx context.Context, ws string) error { return nil }
