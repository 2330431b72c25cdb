package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
)

// connColumns and connFrom select a connection with its workspace's name, in
// the order scanConnection reads them.
const (
	connColumns = `c.id, w.name, c.name, c.config, c.generation, c.token, c.state, c.last_error,
		c.last_refresh_at, c.refresh_count, c.failures, c.next_refresh_at,
		c.lease_owner, c.lease_since, c.lease_until, c.version, c.created_at, c.updated_at`
	connFrom = ` FROM connections c JOIN workspaces w ON w.id = c.workspace_id `
)

// connQuery selects the connections matching where.
func connQuery(where string) string { return "SELECT " + connColumns + connFrom + "WHERE " + where }

const (
	qInsertEvent = "INSERT INTO events (connection_id, at, type, message) VALUES (?, ?, ?, ?)"
	qTrimEvents  = `DELETE FROM events WHERE connection_id = ? AND id <= (
		SELECT id FROM events WHERE connection_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`
	qWorkspaceID  = "SELECT id FROM workspaces WHERE name = ?"
	qAcquireLease = `UPDATE connections SET
		lease_owner = ?, lease_since = ?, lease_until = ?, version = version + 1, updated_at = ?
		WHERE id = ?`
)

// updateQuery is UpdateConnection's statement for the fields an update sets.
// Its arguments are updated_at, then token and token_expires_at when token
// is set, then the six status columns when status is set, then the id.
func updateQuery(token, status, release bool) string {
	sets := []string{"version = version + 1", "updated_at = ?"}
	if token {
		sets = append(sets, "token = ?", "token_expires_at = ?")
	}
	if status {
		sets = append(sets, "state = ?", "last_error = ?", "last_refresh_at = ?", "refresh_count = ?",
			"failures = ?", "next_refresh_at = ?")
	}
	if release {
		sets = append(sets, "lease_owner = ''", "lease_since = NULL", "lease_until = NULL")
	}
	return "UPDATE connections SET " + strings.Join(sets, ", ") + " WHERE id = ?"
}

// hotQueries are the statements of the token write path (AcquireLease,
// UpdateConnection), prepared once at Open.
func hotQueries() []string {
	qs := []string{connQuery("c.id = ?"), connQuery("c.workspace_id = ? AND c.name = ?"), qInsertEvent, qTrimEvents, qWorkspaceID, qAcquireLease}
	for _, t := range []bool{false, true} {
		for _, st := range []bool{false, true} {
			for _, r := range []bool{false, true} {
				qs = append(qs, updateQuery(t, st, r))
			}
		}
	}
	return qs
}

// sealedAD is the associated data that binds a sealed value to its
// connection (path, "ws/name") and column ("config" or "token"), so a value
// copied elsewhere fails to open.
func sealedAD(path, column string) []byte {
	return []byte("tokenhub:connection:" + path + ":" + column)
}

// sealedToken is how a Token is written inside its sealed value. Times are
// nanoseconds since the Unix epoch; absent means the zero time.
type sealedToken struct {
	AccessToken         string `json:"access_token"`
	RefreshToken        string `json:"refresh_token,omitempty"`
	TokenType           string `json:"token_type,omitempty"`
	ExpiresAt           *int64 `json:"expires_at,omitempty"`
	ExpirySource        string `json:"expiry_source,omitempty"`
	ObtainedAt          *int64 `json:"obtained_at,omitempty"`
	RefreshExpiresAt    *int64 `json:"refresh_expires_at,omitempty"`
	RefreshExpirySource string `json:"refresh_expiry_source,omitempty"`
}

func nanoPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromNanoPtr(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

// sealJSON encodes v as JSON and seals it as column ("config" or "token")
// of connection path. Errors name the connection and column, never the value.
func (s *Store) sealJSON(path, column string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode connection %q %s: %w", path, column, err)
	}
	ct, err := s.keys.Seal(b, sealedAD(path, column))
	if err != nil {
		return nil, fmt.Errorf("encrypt connection %q %s: %w", path, column, err)
	}
	return ct, nil
}

// openJSON opens ct, sealed as column of connection path, and decodes the
// JSON inside into v.
func (s *Store) openJSON(path, column string, ct []byte, v any) error {
	b, err := s.keys.Open(ct, sealedAD(path, column))
	if err != nil {
		return fmt.Errorf("decrypt connection %q %s: %w", path, column, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode connection %q %s: %w", path, column, err)
	}
	return nil
}

func (s *Store) sealToken(path string, t *tokenhub.Token) ([]byte, error) {
	return s.sealJSON(path, "token", sealedToken{
		AccessToken:         t.AccessToken,
		RefreshToken:        t.RefreshToken,
		TokenType:           t.TokenType,
		ExpiresAt:           nanoPtr(t.ExpiresAt),
		ExpirySource:        string(t.ExpirySource),
		ObtainedAt:          nanoPtr(t.ObtainedAt),
		RefreshExpiresAt:    nanoPtr(t.RefreshExpiresAt),
		RefreshExpirySource: string(t.RefreshExpirySource),
	})
}

func (s *Store) openToken(path string, ct []byte) (*tokenhub.Token, error) {
	var st sealedToken
	if err := s.openJSON(path, "token", ct, &st); err != nil {
		return nil, err
	}
	return &tokenhub.Token{
		AccessToken:         st.AccessToken,
		RefreshToken:        st.RefreshToken,
		TokenType:           st.TokenType,
		ExpiresAt:           fromNanoPtr(st.ExpiresAt),
		ExpirySource:        tokenhub.ExpirySource(st.ExpirySource),
		ObtainedAt:          fromNanoPtr(st.ObtainedAt),
		RefreshExpiresAt:    fromNanoPtr(st.RefreshExpiresAt),
		RefreshExpirySource: tokenhub.ExpirySource(st.RefreshExpirySource),
	}, nil
}

type scanner interface{ Scan(dest ...any) error }

// scanConnection reads a row selected with connColumns and decrypts its
// secrets. A value that does not decrypt yields an error naming the
// connection.
func (s *Store) scanConnection(r scanner) (*tokenhub.Connection, error) {
	var (
		c                                                tokenhub.Connection
		config, token                                    []byte
		state                                            string
		lastError                                        sql.NullString
		lastRefresh, nextRefresh, leaseSince, leaseUntil sql.NullInt64
		createdAt, updatedAt                             int64
	)
	if err := r.Scan(&c.ID, &c.Workspace, &c.Name, &config, &c.Generation, &token, &state, &lastError,
		&lastRefresh, &c.Status.RefreshCount, &c.Status.Failures, &nextRefresh,
		&c.Lease.Owner, &leaseSince, &leaseUntil, &c.Version, &createdAt, &updatedAt); err != nil {
		return nil, err
	}
	path := c.Path()
	if err := s.openJSON(path, "config", config, &c.Config); err != nil {
		return nil, err
	}
	if token != nil {
		var err error
		if c.Token, err = s.openToken(path, token); err != nil {
			return nil, err
		}
	}
	c.Status.State = tokenhub.State(state)
	if lastError.Valid {
		c.Status.LastError = new(tokenhub.ErrorInfo)
		if err := json.Unmarshal([]byte(lastError.String), c.Status.LastError); err != nil {
			return nil, fmt.Errorf("decode connection %q last error: %w", path, err)
		}
		c.Status.LastError.At = c.Status.LastError.At.UTC()
	}
	c.Status.LastRefreshAt = fromNanos(lastRefresh)
	c.Status.NextRefreshAt = fromNanos(nextRefresh)
	c.Lease.Since = fromNanos(leaseSince)
	c.Lease.Until = fromNanos(leaseUntil)
	c.CreatedAt = fromNanos(sql.NullInt64{Int64: createdAt, Valid: true})
	c.UpdatedAt = fromNanos(sql.NullInt64{Int64: updatedAt, Valid: true})
	return &c, nil
}

// findConnection returns the connection matching where, nil when none does.
func (s *Store) findConnection(ctx context.Context, q queryer, where string, args ...any) (*tokenhub.Connection, error) {
	c, err := s.scanConnection(q.QueryRowContext(ctx, connQuery(where), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return c, err
}

// connectionByID reads connection id through q, or fails with ENOTFOUND.
func (s *Store) connectionByID(ctx context.Context, q queryer, id int64) (*tokenhub.Connection, error) {
	c, err := s.findConnection(ctx, q, "c.id = ?", id)
	if err != nil {
		return nil, err
	} else if c == nil {
		return nil, connIDNotFound(id)
	}
	return c, nil
}

func connNotFound(ws, name string) error {
	return tokenhub.Errorf(tokenhub.ENOTFOUND, "connection %q not found", ws+"/"+name)
}

func connIDNotFound(id int64) error {
	return tokenhub.Errorf(tokenhub.ENOTFOUND, "connection with id %d not found", id)
}

// PutConnection creates the connection or updates its config; see
// tokenhub.Store. The stored config is decrypted and compared with cfg, so a
// config that no longer decrypts fails with an error naming the connection
// and is left as it is.
func (s *Store) PutConnection(ctx context.Context, ws, name string, cfg *tokenhub.ConnectionConfig, now time.Time) (*tokenhub.Connection, tokenhub.PutResult, error) {
	if err := tokenhub.ValidateName("name", name); err != nil {
		return nil, "", err
	}
	if cfg == nil {
		return nil, "", tokenhub.Errorf(tokenhub.EINVALID, "config: required")
	}
	path := ws + "/" + name
	sealed, err := s.sealJSON(path, "config", cfg)
	if err != nil {
		return nil, "", err
	}
	var (
		c      *tokenhub.Connection
		result tokenhub.PutResult
	)
	err = s.write(ctx, func(tx queryer) error {
		wsID, err := workspaceID(ctx, tx, ws)
		if err != nil {
			return err
		}
		cur, err := s.findConnection(ctx, tx, "c.workspace_id = ? AND c.name = ?", wsID, name)
		if err != nil {
			return err
		}
		var id int64
		var ev tokenhub.Event
		switch {
		case cur == nil:
			res, err := tx.ExecContext(ctx, `INSERT INTO connections
				(workspace_id, name, config, generation, state, version, created_at, updated_at)
				VALUES (?, ?, ?, 1, ?, 1, ?, ?)`,
				wsID, name, sealed, string(tokenhub.StatePending), now.UnixNano(), now.UnixNano())
			if err != nil {
				return fmt.Errorf("insert connection %q: %w", path, err)
			}
			if id, err = res.LastInsertId(); err != nil {
				return fmt.Errorf("insert connection %q: %w", path, err)
			}
			result = tokenhub.PutCreated
			ev = tokenhub.Event{At: now, Type: tokenhub.EventCreated, Message: "connection created"}
		case cur.Config.Equal(cfg):
			c, result = cur, tokenhub.PutUnchanged
			return nil
		default:
			id = cur.ID
			if _, err := tx.ExecContext(ctx, `UPDATE connections SET
				config = ?, generation = generation + 1, token = NULL, token_expires_at = NULL,
				state = ?, last_error = NULL, last_refresh_at = NULL, refresh_count = 0, failures = 0,
				next_refresh_at = NULL, lease_owner = '', lease_since = NULL, lease_until = NULL,
				version = version + 1, updated_at = ?
				WHERE id = ?`, sealed, string(tokenhub.StatePending), now.UnixNano(), id); err != nil {
				return fmt.Errorf("update connection %q: %w", path, err)
			}
			result = tokenhub.PutUpdated
			ev = tokenhub.Event{At: now, Type: tokenhub.EventConfigChanged,
				Message: fmt.Sprintf("config changed (generation %d); token dropped", cur.Generation+1)}
		}
		if err := s.insertEvents(ctx, tx, id, []tokenhub.Event{ev}); err != nil {
			return fmt.Errorf("connection %q: %w", path, err)
		}
		c, err = s.findConnection(ctx, tx, "c.id = ?", id)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return c, result, nil
}

// FindConnection returns the named connection, or ENOTFOUND.
func (s *Store) FindConnection(ctx context.Context, ws, name string) (*tokenhub.Connection, error) {
	c, err := s.findConnection(ctx, s.rdb, "w.name = ? AND c.name = ?", ws, name)
	if err != nil {
		return nil, err
	} else if c == nil {
		return nil, connNotFound(ws, name)
	}
	return c, nil
}

// FindConnectionByID returns the connection with id, or ENOTFOUND.
func (s *Store) FindConnectionByID(ctx context.Context, id int64) (*tokenhub.Connection, error) {
	return s.connectionByID(ctx, s.rdb, id)
}

// FindConnections returns the matching connections ordered by workspace and
// name. A connection whose secrets do not decrypt fails the whole call with
// an error naming it; it is never skipped silently.
func (s *Store) FindConnections(ctx context.Context, filter tokenhub.ConnectionFilter) ([]*tokenhub.Connection, error) {
	where, args := []string{"1 = 1"}, []any{}
	if filter.Workspace != nil {
		where, args = append(where, "w.name = ?"), append(args, *filter.Workspace)
	}
	rows, err := s.rdb.QueryContext(ctx, connQuery(strings.Join(where, " AND ")+" ORDER BY w.name, c.name"), args...)
	if err != nil {
		return nil, fmt.Errorf("find connections: %w", err)
	}
	defer rows.Close()
	var out []*tokenhub.Connection
	for rows.Next() {
		c, err := s.scanConnection(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find connections: %w", err)
	}
	return out, nil
}

// DeleteConnection deletes the named connection and its events, or fails
// with ENOTFOUND.
func (s *Store) DeleteConnection(ctx context.Context, ws, name string) error {
	return s.deleteOne(ctx, fmt.Sprintf("delete connection %q", ws+"/"+name), connNotFound(ws, name),
		`DELETE FROM connections WHERE workspace_id = (SELECT id FROM workspaces WHERE name = ?) AND name = ?`, ws, name)
}

// AcquireLease takes the connection's lease for owner; see tokenhub.Store.
// The check and the write happen in one immediate transaction. A lease has
// lapsed when now is at or after its Until.
func (s *Store) AcquireLease(ctx context.Context, id int64, owner string, now, until time.Time) (*tokenhub.Connection, tokenhub.Lease, error) {
	if owner == "" {
		return nil, tokenhub.Lease{}, tokenhub.Errorf(tokenhub.EINVALID, "lease owner: required")
	}
	if !until.After(now) {
		return nil, tokenhub.Lease{}, tokenhub.Errorf(tokenhub.EINVALID, "lease until: must be after now")
	}
	var (
		c    *tokenhub.Connection
		prev tokenhub.Lease
	)
	err := s.write(ctx, func(tx queryer) error {
		cur, err := s.connectionByID(ctx, tx, id)
		if err != nil {
			return err
		}
		prev = cur.Lease
		if prev.Owner != "" && prev.Owner != owner && now.Before(prev.Until) {
			c = cur
			return tokenhub.Errorf(tokenhub.ECONFLICT, "connection %q is leased by %q until %s",
				cur.Path(), prev.Owner, prev.Until.Format(time.RFC3339Nano))
		}
		if _, err := tx.ExecContext(ctx, qAcquireLease, owner, nanos(now), nanos(until), now.UnixNano(), id); err != nil {
			return fmt.Errorf("lease connection %q: %w", cur.Path(), err)
		}
		c, err = s.findConnection(ctx, tx, "c.id = ?", id)
		return err
	})
	if err != nil {
		if c == nil {
			return nil, tokenhub.Lease{}, err
		}
		return c, prev, err
	}
	return c, prev, nil
}

// UpdateConnection applies upd in one immediate transaction; see
// tokenhub.Store. The stored secrets are decrypted first, so a connection
// whose secrets no longer decrypt is not written. The commit is fsync'd
// (synchronous=FULL) before UpdateConnection returns.
func (s *Store) UpdateConnection(ctx context.Context, id int64, upd tokenhub.ConnectionUpdate) (*tokenhub.Connection, error) {
	if upd.Status != nil {
		switch upd.Status.State {
		case tokenhub.StatePending, tokenhub.StateHealthy, tokenhub.StateDegraded, tokenhub.StateNeedsReauth:
		default:
			return nil, tokenhub.Errorf(tokenhub.EINVALID, "status.state: %q is not a state", upd.Status.State)
		}
	}
	for i, ev := range upd.Events {
		if ev.Type == "" {
			return nil, tokenhub.Errorf(tokenhub.EINVALID, "events[%d].type: required", i)
		}
	}
	var c *tokenhub.Connection
	err := s.write(ctx, func(tx queryer) error {
		cur, err := s.connectionByID(ctx, tx, id)
		if err != nil {
			return err
		}
		path := cur.Path()
		if cur.Version != upd.IfVersion {
			return tokenhub.Errorf(tokenhub.ECONFLICT, "connection %q changed: it is at version %d, the update expected %d",
				path, cur.Version, upd.IfVersion)
		}
		args := []any{s.now().UnixNano()}
		if upd.Token != nil {
			sealed, err := s.sealToken(path, upd.Token)
			if err != nil {
				return err
			}
			args = append(args, sealed, nanos(upd.Token.ExpiresAt))
		}
		if st := upd.Status; st != nil {
			var lastError any
			if st.LastError != nil {
				e := *st.LastError
				e.At = e.At.UTC()
				b, err := json.Marshal(e)
				if err != nil {
					return fmt.Errorf("encode connection %q last error: %w", path, err)
				}
				lastError = string(b)
			}
			args = append(args, string(st.State), lastError, nanos(st.LastRefreshAt), st.RefreshCount,
				st.Failures, nanos(st.NextRefreshAt))
		}
		release := upd.ReleaseLease != "" && upd.ReleaseLease == cur.Lease.Owner
		args = append(args, id)
		if _, err := tx.ExecContext(ctx, updateQuery(upd.Token != nil, upd.Status != nil, release), args...); err != nil {
			return fmt.Errorf("update connection %q: %w", path, err)
		}
		if err := s.insertEvents(ctx, tx, id, upd.Events); err != nil {
			return fmt.Errorf("connection %q: %w", path, err)
		}
		c, err = s.findConnection(ctx, tx, "c.id = ?", id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// insertEvents appends evs to the connection's log and trims the log to
// tokenhub.MaxEventsPerConnection, oldest first, in the caller's transaction.
// An event without At gets the store's now.
func (s *Store) insertEvents(ctx context.Context, tx queryer, connID int64, evs []tokenhub.Event) error {
	if len(evs) == 0 {
		return nil
	}
	for _, ev := range evs {
		at := ev.At
		if at.IsZero() {
			at = s.now()
		}
		if _, err := tx.ExecContext(ctx, qInsertEvent, connID, at.UnixNano(), string(ev.Type), ev.Message); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, qTrimEvents, connID, connID, tokenhub.MaxEventsPerConnection); err != nil {
		return fmt.Errorf("trim events: %w", err)
	}
	return nil
}

// FindEvents returns up to limit of the connection's events, newest (last
// appended) first; a limit of 0 or less returns them all. It fails with
// ENOTFOUND when the connection does not exist.
func (s *Store) FindEvents(ctx context.Context, connID int64, limit int) ([]*tokenhub.Event, error) {
	if limit <= 0 {
		limit = -1 // no limit
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("find events: %w", err)
	}
	defer tx.Rollback()
	var one int
	if err := tx.QueryRowContext(ctx, "SELECT 1 FROM connections WHERE id = ?", connID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
		return nil, connIDNotFound(connID)
	} else if err != nil {
		return nil, fmt.Errorf("find events: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, connection_id, at, type, message FROM events
		WHERE connection_id = ? ORDER BY id DESC LIMIT ?`, connID, limit)
	if err != nil {
		return nil, fmt.Errorf("find events: %w", err)
	}
	defer rows.Close()
	var out []*tokenhub.Event
	for rows.Next() {
		var (
			ev  tokenhub.Event
			at  int64
			typ string
		)
		if err := rows.Scan(&ev.ID, &ev.ConnectionID, &at, &typ, &ev.Message); err != nil {
			return nil, fmt.Errorf("find events: %w", err)
		}
		ev.At, ev.Type = time.Unix(0, at).UTC(), tokenhub.EventType(typ)
		out = append(out, &ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find events: %w", err)
	}
	return out, nil
}

// Reseal re-encrypts under the primary key every sealed value that is under
// an old key, in one transaction, and returns how many it rewrote. It does
// not change Version: the values mean the same as before. A value that does
// not decrypt fails the whole call with an error naming its connection, and
// nothing is written.
func (s *Store) Reseal(ctx context.Context) (int, error) {
	type row struct {
		id            int64
		path          string
		config, token []byte
	}
	n := 0
	err := s.write(ctx, func(tx queryer) error {
		rows, err := tx.QueryContext(ctx, "SELECT c.id, w.name || '/' || c.name, c.config, c.token"+connFrom+"ORDER BY c.id")
		if err != nil {
			return fmt.Errorf("reseal: %w", err)
		}
		var all []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.path, &r.config, &r.token); err != nil {
				rows.Close()
				return fmt.Errorf("reseal: %w", err)
			}
			all = append(all, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reseal: %w", err)
		}
		// reseal rewrites one sealed column of row r under the primary key.
		// column is "config" or "token", a constant, never input.
		reseal := func(r row, column string, sealed []byte) error {
			ad := sealedAD(r.path, column)
			pt, err := s.keys.Open(sealed, ad)
			if err != nil {
				return fmt.Errorf("reseal: decrypt connection %q %s: %w", r.path, column, err)
			}
			ct, err := s.keys.Seal(pt, ad)
			if err != nil {
				return fmt.Errorf("reseal: encrypt connection %q %s: %w", r.path, column, err)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE connections SET "+column+" = ? WHERE id = ?", ct, r.id); err != nil {
				return fmt.Errorf("reseal connection %q: %w", r.path, err)
			}
			n++
			return nil
		}
		for _, r := range all {
			if !s.keys.IsPrimary(r.config) {
				if err := reseal(r, "config", r.config); err != nil {
					return err
				}
			}
			if r.token != nil && !s.keys.IsPrimary(r.token) {
				if err := reseal(r, "token", r.token); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
