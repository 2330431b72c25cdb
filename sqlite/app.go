package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tokenhub/tokenhub"
)

const appColumns = "a.id, w.name, a.name, a.key_hash, a.connections, a.created_at FROM apps a JOIN workspaces w ON w.id = a.workspace_id "

// CreateApp stores a and sets its ID and CreatedAt. a.Name must be a
// tokenhub.ValidName and a.KeyHash set (EINVALID otherwise); the workspace
// must exist (ENOTFOUND); the name must be free in the workspace and the key
// hash unused (ECONFLICT).
func (s *Store) CreateApp(ctx context.Context, a *tokenhub.App) error {
	if a == nil {
		return tokenhub.Errorf(tokenhub.EINVALID, "app: required")
	}
	if err := tokenhub.ValidateName("name", a.Name); err != nil {
		return err
	}
	if len(a.KeyHash) == 0 {
		return tokenhub.Errorf(tokenhub.EINVALID, "key_hash: required")
	}
	conns := a.Connections
	if conns == nil {
		conns = []string{}
	}
	connsJSON, err := json.Marshal(conns)
	if err != nil {
		return fmt.Errorf("encode app %q connections: %w", a.Name, err)
	}
	createdAt := s.now()
	var id int64
	err = s.write(ctx, func(tx queryer) error {
		wsID, err := workspaceID(ctx, tx, a.Workspace)
		if err != nil {
			return err
		}
		var one int
		err = tx.QueryRowContext(ctx, "SELECT 1 FROM apps WHERE workspace_id = ? AND name = ?", wsID, a.Name).Scan(&one)
		if err == nil {
			return tokenhub.Errorf(tokenhub.ECONFLICT, "app %q already exists in workspace %q", a.Name, a.Workspace)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("create app %q: %w", a.Name, err)
		}
		err = tx.QueryRowContext(ctx, "SELECT 1 FROM apps WHERE key_hash = ?", a.KeyHash).Scan(&one)
		if err == nil {
			return tokenhub.Errorf(tokenhub.ECONFLICT, "app %q: another app already has this key", a.Name)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("create app %q: %w", a.Name, err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO apps (workspace_id, name, key_hash, connections, created_at)
			VALUES (?, ?, ?, ?, ?)`, wsID, a.Name, a.KeyHash, string(connsJSON), createdAt.UnixNano())
		if err != nil {
			return fmt.Errorf("create app %q: %w", a.Name, err)
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return err
	}
	a.ID = id
	a.CreatedAt = fromNanos(sql.NullInt64{Int64: createdAt.UnixNano(), Valid: true})
	return nil
}

func scanApp(r scanner) (*tokenhub.App, error) {
	var (
		a     tokenhub.App
		conns []byte
		at    int64
	)
	if err := r.Scan(&a.ID, &a.Workspace, &a.Name, &a.KeyHash, &conns, &at); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(conns, &a.Connections); err != nil {
		return nil, fmt.Errorf("decode app %q connections: %w", a.Name, err)
	}
	if len(a.Connections) == 0 {
		a.Connections = nil
	}
	a.CreatedAt = fromNanos(sql.NullInt64{Int64: at, Valid: true})
	return &a, nil
}

// FindApps returns the apps of the workspace ordered by name, or ENOTFOUND
// when the workspace does not exist.
func (s *Store) FindApps(ctx context.Context, ws string) ([]*tokenhub.App, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("find apps: %w", err)
	}
	defer tx.Rollback()
	wsID, err := workspaceID(ctx, tx, ws)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, "SELECT "+appColumns+"WHERE a.workspace_id = ? ORDER BY a.name", wsID)
	if err != nil {
		return nil, fmt.Errorf("find apps: %w", err)
	}
	defer rows.Close()
	var out []*tokenhub.App
	for rows.Next() {
		a, err := scanApp(rows)
		if err != nil {
			return nil, fmt.Errorf("find apps: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find apps: %w", err)
	}
	return out, nil
}

// FindAppByKeyHash returns the app whose key hashes to hash, or ENOTFOUND.
// The message names neither the key nor its hash.
func (s *Store) FindAppByKeyHash(ctx context.Context, hash []byte) (*tokenhub.App, error) {
	a, err := scanApp(s.rdb.QueryRowContext(ctx, "SELECT "+appColumns+"WHERE a.key_hash = ?", hash))
	if errors.Is(err, sql.ErrNoRows) || len(hash) == 0 {
		return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "no app has this key")
	} else if err != nil {
		return nil, fmt.Errorf("find app by key: %w", err)
	}
	return a, nil
}

// DeleteApp deletes the named app of the workspace, or fails with ENOTFOUND.
func (s *Store) DeleteApp(ctx context.Context, ws, name string) error {
	return s.deleteOne(ctx, fmt.Sprintf("delete app %q", name),
		tokenhub.Errorf(tokenhub.ENOTFOUND, "app %q not found in workspace %q", name, ws),
		`DELETE FROM apps WHERE workspace_id = (SELECT id FROM workspaces WHERE name = ?) AND name = ?`, ws, name)
}
