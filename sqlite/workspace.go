package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tokenhub/tokenhub"
)

func workspaceNotFound(name string) error {
	return tokenhub.Errorf(tokenhub.ENOTFOUND, "workspace %q not found", name)
}

// workspaceID returns the id of the named workspace, or ENOTFOUND.
func workspaceID(ctx context.Context, q queryer, name string) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, qWorkspaceID, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, workspaceNotFound(name)
	} else if err != nil {
		return 0, fmt.Errorf("find workspace %q: %w", name, err)
	}
	return id, nil
}

// CreateWorkspace creates a workspace named name, which must be a
// tokenhub.ValidName (EINVALID otherwise); ECONFLICT if it exists.
func (s *Store) CreateWorkspace(ctx context.Context, name string) (*tokenhub.Workspace, error) {
	if err := tokenhub.ValidateName("name", name); err != nil {
		return nil, err
	}
	w := &tokenhub.Workspace{Name: name, CreatedAt: s.now()}
	err := s.write(ctx, func(tx queryer) error {
		if _, err := workspaceID(ctx, tx, name); err == nil {
			return tokenhub.Errorf(tokenhub.ECONFLICT, "workspace %q already exists", name)
		} else if tokenhub.ErrorCode(err) != tokenhub.ENOTFOUND {
			return err
		}
		res, err := tx.ExecContext(ctx, "INSERT INTO workspaces (name, created_at) VALUES (?, ?)", name, w.CreatedAt.UnixNano())
		if err != nil {
			return fmt.Errorf("create workspace %q: %w", name, err)
		}
		w.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return nil, err
	}
	w.CreatedAt = fromNanos(sql.NullInt64{Int64: w.CreatedAt.UnixNano(), Valid: true})
	return w, nil
}

// FindWorkspace returns the named workspace, or ENOTFOUND.
func (s *Store) FindWorkspace(ctx context.Context, name string) (*tokenhub.Workspace, error) {
	var (
		w  = tokenhub.Workspace{Name: name}
		at int64
	)
	err := s.rdb.QueryRowContext(ctx, "SELECT id, created_at FROM workspaces WHERE name = ?", name).Scan(&w.ID, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, workspaceNotFound(name)
	} else if err != nil {
		return nil, fmt.Errorf("find workspace %q: %w", name, err)
	}
	w.CreatedAt = fromNanos(sql.NullInt64{Int64: at, Valid: true})
	return &w, nil
}

// FindWorkspaces returns every workspace ordered by name.
func (s *Store) FindWorkspaces(ctx context.Context) ([]*tokenhub.Workspace, error) {
	rows, err := s.rdb.QueryContext(ctx, "SELECT id, name, created_at FROM workspaces ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("find workspaces: %w", err)
	}
	defer rows.Close()
	var out []*tokenhub.Workspace
	for rows.Next() {
		var (
			w  tokenhub.Workspace
			at int64
		)
		if err := rows.Scan(&w.ID, &w.Name, &at); err != nil {
			return nil, fmt.Errorf("find workspaces: %w", err)
		}
		w.CreatedAt = fromNanos(sql.NullInt64{Int64: at, Valid: true})
		out = append(out, &w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find workspaces: %w", err)
	}
	return out, nil
}

// DeleteWorkspace deletes the workspace with its connections, their events,
// and its apps (foreign keys cascade), or fails with ENOTFOUND.
func (s *Store) DeleteWorkspace(ctx context.Context, name string) error {
	return s.deleteOne(ctx, fmt.Sprintf("delete workspace %q", name), workspaceNotFound(name),
		"DELETE FROM workspaces WHERE name = ?", name)
}

// PutProvider stores p, replacing any provider of the same name, and reports
// whether the stored definition changed. p's name must be a
// tokenhub.ValidName. Providers hold no secrets and are stored as JSON.
func (s *Store) PutProvider(ctx context.Context, p *tokenhub.Provider) (bool, error) {
	if p == nil {
		return false, tokenhub.Errorf(tokenhub.EINVALID, "provider: required")
	}
	if err := tokenhub.ValidateName("name", p.Name); err != nil {
		return false, err
	}
	def, err := json.Marshal(p)
	if err != nil {
		return false, fmt.Errorf("encode provider %q: %w", p.Name, err)
	}
	changed := false
	err = s.write(ctx, func(tx queryer) error {
		var cur []byte
		err := tx.QueryRowContext(ctx, "SELECT def FROM providers WHERE name = ?", p.Name).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("find provider %q: %w", p.Name, err)
		}
		if err == nil && bytes.Equal(cur, def) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO providers (name, def, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET def = excluded.def, updated_at = excluded.updated_at`,
			p.Name, string(def), s.now().UnixNano()); err != nil {
			return fmt.Errorf("put provider %q: %w", p.Name, err)
		}
		changed = true
		return nil
	})
	if err != nil {
		return false, err
	}
	return changed, nil
}

// FindProvider returns the stored provider called name, or ENOTFOUND.
func (s *Store) FindProvider(ctx context.Context, name string) (*tokenhub.Provider, error) {
	var def []byte
	err := s.rdb.QueryRowContext(ctx, "SELECT def FROM providers WHERE name = ?", name).Scan(&def)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "provider %q not found", name)
	} else if err != nil {
		return nil, fmt.Errorf("find provider %q: %w", name, err)
	}
	var p tokenhub.Provider
	if err := json.Unmarshal(def, &p); err != nil {
		return nil, fmt.Errorf("decode provider %q: %w", name, err)
	}
	return &p, nil
}

// FindProviders returns every stored provider ordered by name.
func (s *Store) FindProviders(ctx context.Context) ([]*tokenhub.Provider, error) {
	rows, err := s.rdb.QueryContext(ctx, "SELECT name, def FROM providers ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("find providers: %w", err)
	}
	defer rows.Close()
	var out []*tokenhub.Provider
	for rows.Next() {
		var (
			name string
			def  []byte
			p    tokenhub.Provider
		)
		if err := rows.Scan(&name, &def); err != nil {
			return nil, fmt.Errorf("find providers: %w", err)
		}
		if err := json.Unmarshal(def, &p); err != nil {
			return nil, fmt.Errorf("decode provider %q: %w", name, err)
		}
		out = append(out, &p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find providers: %w", err)
	}
	return out, nil
}
