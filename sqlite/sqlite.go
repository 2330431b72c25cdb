// Package sqlite implements tokenhub.Store on an embedded SQLite database,
// tokenhub's default store: one file, no server, no cgo (modernc.org/sqlite).
//
// The database runs in WAL mode with synchronous=FULL, so every committed
// write, and in particular one that stores a new refresh token, is on disk
// before the method that made it returns. Writes go through a single
// connection in immediate transactions, which serialises them inside the
// process without SQLITE_BUSY retries; reads use a separate pool and run
// concurrently with writes.
//
// Secrets are sealed with an internal/seal Keyring: a connection's whole
// config is one sealed value and its token another, each bound by associated
// data to its connection and field. Status, lease and timestamps are plain
// columns, since none of them is secret.
//
// Only one process may use a store file at a time: Open takes an exclusive
// lock on "<path>.lock" and Close releases it.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/seal"
)

var _ tokenhub.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrationFS embed.FS

// busyTimeout is how long a statement waits for a lock held by another
// connection of this process (a reader holding up a checkpoint, say).
const busyTimeout = 10 * time.Second

// ErrLocked is matched (with errors.Is) by the error Open returns when
// another process holds the store file.
var ErrLocked = errors.New("store file is in use by another process")

type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("another tokenhub process is using %s (it holds the lock on %s.lock)", e.path, e.path)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// Store is a tokenhub.Store on a SQLite file. It is safe for concurrent use.
type Store struct {
	path string
	db   *sql.DB // writes: one connection, BEGIN IMMEDIATE
	rdb  *sql.DB // reads
	keys *seal.Keyring
	now  func() time.Time
	lock unlocker

	stmts map[string]*sql.Stmt // prepared on the write connection at Open, by query

	closeOnce sync.Once
	closeErr  error
}

// An Option configures Open.
type Option func(*Store)

// WithNow sets the clock the store reads for timestamps that no caller
// supplies (CreatedAt of workspaces and apps, UpdatedAt after
// UpdateConnection, the At of events given without one). The default is
// time.Now.
func WithNow(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// Open opens the store file at path, creating it when absent, locks it
// against other processes, and brings its schema up to date. keys seals and
// opens secrets; Open itself decrypts nothing, so a wrong key shows up on the
// first read of a connection, as an error that names it.
//
// Open fails with an error matching ErrLocked when another process has the
// file open, and when the file's schema is newer than this tokenhub.
func Open(path string, keys *seal.Keyring, opts ...Option) (_ *Store, err error) {
	if keys == nil {
		return nil, errors.New("sqlite: open: no keyring")
	}
	if path == "" {
		return nil, errors.New("sqlite: open: no path")
	}
	s := &Store{path: path, keys: keys, now: time.Now, stmts: map[string]*sql.Stmt{}}
	for _, o := range opts {
		o(s)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if s.lock, err = lockFile(abs + ".lock"); err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, &lockedError{path: path}
		}
		return nil, fmt.Errorf("sqlite: open %s: lock: %w", path, err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Create the database owner-only. Its secrets are sealed, but its shape
	// (workspaces, connection names, provider errors) is nobody else's business.
	if f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	u := (&url.URL{Path: abs}).EscapedPath()
	q := "_pragma=busy_timeout(" + strconv.Itoa(int(busyTimeout/time.Millisecond)) + ")&_pragma=foreign_keys(1)"
	if s.db, err = sql.Open("sqlite", "file:"+u+"?"+q+"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.db.SetMaxOpenConns(1)
	s.db.SetMaxIdleConns(1)
	s.db.SetConnMaxLifetime(0)
	s.db.SetConnMaxIdleTime(0)

	ctx := context.Background()
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	} else if !strings.EqualFold(mode, "wal") {
		return nil, fmt.Errorf("sqlite: open %s: journal mode is %q, want wal", path, mode)
	}
	if err := migrate(ctx, s.db); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := s.prepare(ctx, hotQueries()); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	if s.rdb, err = sql.Open("sqlite", "file:"+u+"?"+q+"&_query_only=1"); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.rdb.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.rdb.SetConnMaxIdleTime(time.Minute)
	return s, nil
}

// Close closes the database and releases the file lock. It is safe to call
// more than once; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, st := range s.stmts {
			errs = append(errs, st.Close())
		}
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		if s.db != nil {
			errs = append(errs, s.db.Close())
		}
		if s.lock != nil {
			errs = append(errs, s.lock.Unlock())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("sqlite: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// Ping checks that the database file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var v int
	if err := s.rdb.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// write runs fn in an immediate transaction on the write connection and
// commits when fn returns nil. With synchronous=FULL the commit is durable
// when write returns.
func (s *Store) write(ctx context.Context, fn func(tx queryer) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(txQueryer{s, tx}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// deleteOne runs query, a DELETE of at most one row, in a write
// transaction. It returns notFound when no row matched, and wraps any other
// failure with op (such as `delete app "x"`).
func (s *Store) deleteOne(ctx context.Context, op string, notFound error, query string, args ...any) error {
	return s.write(ctx, func(tx queryer) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		} else if n == 0 {
			return notFound
		}
		return nil
	})
}

// prepare prepares the queries of the write path on the write connection,
// before any transaction can hold it. Parsing is otherwise most of a write's
// CPU; a prepared statement is parsed once and reused by every transaction.
func (s *Store) prepare(ctx context.Context, queries []string) error {
	for _, q := range queries {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		s.stmts[q] = st
	}
	return nil
}

// txQueryer runs a write transaction's statements, through the statements
// prepared at Open when the query is one of them. s.stmts is not changed
// after Open, so it is read without a lock.
type txQueryer struct {
	s  *Store
	tx *sql.Tx
}

func (q txQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st, ok := q.s.stmts[query]; ok {
		return q.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q txQueryer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st, ok := q.s.stmts[query]; ok {
		return q.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}

func (q txQueryer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st, ok := q.s.stmts[query]; ok {
		return q.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return q.tx.ExecContext(ctx, query, args...)
}

// queryer is what *sql.DB, *sql.Tx and txQueryer have in common.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// migration is one numbered file of migrations/.
type migration struct {
	version int
	name    string
}

// migrate applies, each in its own transaction, the embedded migrations
// newer than the version recorded in schema_migrations.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if latest := ms[len(ms)-1].version; current > latest {
		return fmt.Errorf("database schema version %d is newer than this tokenhub knows (%d); upgrade tokenhub", current, latest)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		body, err := fs.ReadFile(migrationFS, "migrations/"+m.name)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.version, m.name, time.Now().UnixNano()); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
	}
	return nil
}

// migrations lists the embedded migrations in order. Their names start with
// their version number, counting up from 1 without gaps.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", e.Name())
		}
		ms = append(ms, migration{version: v, name: e.Name()})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	if len(ms) == 0 {
		return nil, errors.New("no migrations embedded")
	}
	return ms, nil
}

// nanos returns t as a column value: nanoseconds since the Unix epoch, or
// NULL for the zero time.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos. Times come back in UTC.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
