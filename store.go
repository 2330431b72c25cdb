package tokenhub

import (
	"context"
	"time"
)

// MaxEventsPerConnection bounds each connection's event log. Stores drop the
// oldest events beyond it.
const MaxEventsPerConnection = 200

// PutResult says what PutConnection did.
type PutResult string

const (
	PutCreated   PutResult = "created"
	PutUpdated   PutResult = "updated"
	PutUnchanged PutResult = "unchanged"
)

// ConnectionFilter selects connections. A nil field does not filter.
type ConnectionFilter struct {
	Workspace *string
}

// ConnectionUpdate is a runtime change to a connection, written atomically.
// A nil field leaves the stored value as it is.
type ConnectionUpdate struct {
	// IfVersion must equal the stored Version, or the update fails with
	// ECONFLICT and nothing is written.
	IfVersion int64

	Token  *Token  // the new token; nil keeps the stored one
	Status *Status // the new status; nil keeps the stored one

	// ReleaseLease, when it names the lease's owner, frees the lease.
	ReleaseLease string

	// Events are appended to the connection's log in the same transaction.
	Events []Event
}

// Store persists tokenhub's state. Secrets (ConnectionConfig's secret fields,
// Token's access and refresh tokens) are encrypted at rest by every
// implementation; a secret that cannot be decrypted yields an error that names
// the connection, and nothing stored is overwritten because of it.
//
// Errors are *Error with ENOTFOUND for a missing object, ECONFLICT for a
// duplicate or a stale IfVersion, EINVALID for input the store refuses;
// anything else is an internal failure. Implementations are safe for
// concurrent use.
type Store interface {
	// CreateWorkspace creates a workspace; ECONFLICT if the name is taken.
	CreateWorkspace(ctx context.Context, name string) (*Workspace, error)
	FindWorkspace(ctx context.Context, name string) (*Workspace, error)
	// FindWorkspaces returns every workspace ordered by name.
	FindWorkspaces(ctx context.Context) ([]*Workspace, error)
	// DeleteWorkspace deletes a workspace with its connections, events and apps.
	DeleteWorkspace(ctx context.Context, name string) error

	// PutProvider creates or replaces a provider definition. It reports whether
	// anything changed.
	PutProvider(ctx context.Context, p *Provider) (changed bool, err error)
	FindProvider(ctx context.Context, name string) (*Provider, error)
	// FindProviders returns every stored provider ordered by name.
	FindProviders(ctx context.Context) ([]*Provider, error)

	// PutConnection creates the connection or updates its config. When the
	// config changes, Generation and Version increase, the token is dropped,
	// the status becomes pending, the lease is freed and an event is logged.
	// An identical config changes nothing and reports PutUnchanged. The
	// workspace must exist (ENOTFOUND otherwise).
	PutConnection(ctx context.Context, ws, name string, cfg *ConnectionConfig, now time.Time) (*Connection, PutResult, error)
	FindConnection(ctx context.Context, ws, name string) (*Connection, error)
	FindConnectionByID(ctx context.Context, id int64) (*Connection, error)
	// FindConnections returns the matching connections ordered by workspace and name.
	FindConnections(ctx context.Context, filter ConnectionFilter) ([]*Connection, error)
	// DeleteConnection deletes a connection and its events.
	DeleteConnection(ctx context.Context, ws, name string) error

	// AcquireLease gives owner the connection's lease until the given time,
	// when the lease is free, lapsed at now, or already owner's. It increases
	// Version and returns the connection as it is after the change, with the
	// previous lease in prev (to tell a cut-off refresh). It fails with
	// ECONFLICT when another owner holds a lease that has not lapsed, and
	// returns the current connection alongside so the caller can see its token.
	AcquireLease(ctx context.Context, id int64, owner string, now, until time.Time) (c *Connection, prev Lease, err error)

	// UpdateConnection applies upd atomically and durably (a new refresh token
	// is on disk before this returns) and returns the connection after it.
	UpdateConnection(ctx context.Context, id int64, upd ConnectionUpdate) (*Connection, error)

	// FindEvents returns up to limit of the connection's events, newest first.
	FindEvents(ctx context.Context, connID int64, limit int) ([]*Event, error)

	// CreateApp stores a; ECONFLICT if its name is taken in the workspace.
	// It sets a.ID and a.CreatedAt.
	CreateApp(ctx context.Context, a *App) error
	// FindApps returns the apps of a workspace ordered by name.
	FindApps(ctx context.Context, ws string) ([]*App, error)
	// FindAppByKeyHash returns the app whose key hashes to hash.
	FindAppByKeyHash(ctx context.Context, hash []byte) (*App, error)
	DeleteApp(ctx context.Context, ws, name string) error

	// Reseal re-encrypts every secret under the current primary key and
	// returns how many values it rewrote.
	Reseal(ctx context.Context) (int, error)
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}
