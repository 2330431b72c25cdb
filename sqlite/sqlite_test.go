package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/sqlite"
	"github.com/tokenhub/tokenhub/storetest"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, seal.KeySize) }

func keyring(t testing.TB, primary []byte, old ...[]byte) *seal.Keyring {
	t.Helper()
	k, err := seal.NewKeyring(primary, old...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// open opens the store at path and closes it when the test ends.
func open(t testing.TB, path string, keys *seal.Keyring) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path, keys)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tokenhub.Store {
		return open(t, filepath.Join(t.TempDir(), "tokenhub.db"), keyring(t, testKey(1)))
	})
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)

// Secrets written by these tests; none may be found in the store's files.
var (
	clientSecret = "sqlite-test-client-secret-Qw8e"
	password     = "sqlite-test-password-Rt5y"
	credential   = "sqlite-test-credential-Ui3o"
	accessToken  = "sqlite-test-access-token-Pa1s"
	refreshToken = "sqlite-test-refresh-token-Df6g"
	rotatedToken = "sqlite-test-rotated-refresh-Hj9k"
	secrets      = []string{clientSecret, password, credential, accessToken, refreshToken, rotatedToken}
)

func config() *tokenhub.ConnectionConfig {
	return &tokenhub.ConnectionConfig{
		Provider:     "baserow",
		BaseURL:      "https://baserow.example.com",
		Grant:        tokenhub.GrantLogin,
		ClientID:     "client-id",
		ClientSecret: clientSecret,
		Username:     "alice@example.com",
		Password:     password,
		Credentials:  map[string]string{"api_key": credential},
	}
}

func token(access, refresh string) *tokenhub.Token {
	return &tokenhub.Token{
		AccessToken: access, RefreshToken: refresh, TokenType: "JWT",
		ExpiresAt: t0.Add(10 * time.Minute), ExpirySource: tokenhub.ExpiryJWT, ObtainedAt: t0,
	}
}

// populate writes workspace acme with connections reports (with a token that
// was rotated once, a status and a lease) and billing (pending, no token).
func populate(t *testing.T, s tokenhub.Store) (reports, billing *tokenhub.Connection) {
	t.Helper()
	ctx := t.Context()
	if _, err := s.CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	c, _, err := s.PutConnection(ctx, "acme", "reports", config(), t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range []string{refreshToken, rotatedToken} {
		if c, err = s.UpdateConnection(ctx, c.ID, tokenhub.ConnectionUpdate{
			IfVersion: c.Version,
			Token:     token(accessToken, rt),
			Status:    &tokenhub.Status{State: tokenhub.StateHealthy, LastRefreshAt: t0, RefreshCount: 1, NextRefreshAt: t0.Add(7 * time.Minute)},
			Events:    []tokenhub.Event{{At: t0, Type: tokenhub.EventObtained, Message: "obtained a token"}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if c, _, err = s.AcquireLease(ctx, c.ID, "replica-1", t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	b, _, err := s.PutConnection(ctx, "acme", "billing", config(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return c, b
}

// checkSame fails unless got matches want in everything a reopen must keep.
func checkSame(t *testing.T, what string, got, want *tokenhub.Connection) {
	t.Helper()
	if got.ID != want.ID || got.Version != want.Version || got.Generation != want.Generation || !got.Config.Equal(&want.Config) {
		t.Fatalf("%s: got %s id %d v%d g%d, want id %d v%d g%d (and an equal config)", what, got.Path(), got.ID, got.Version, got.Generation, want.ID, want.Version, want.Generation)
	}
	if (got.Token == nil) != (want.Token == nil) ||
		got.Token != nil && (got.Token.AccessToken != want.Token.AccessToken || got.Token.RefreshToken != want.Token.RefreshToken ||
			!got.Token.ExpiresAt.Equal(want.Token.ExpiresAt) || got.Token.ExpirySource != want.Token.ExpirySource) {
		t.Fatalf("%s: token: got %v, want %v", what, got.Token, want.Token)
	}
	if got.Status.State != want.Status.State || got.Status.RefreshCount != want.Status.RefreshCount ||
		!got.Status.NextRefreshAt.Equal(want.Status.NextRefreshAt) {
		t.Fatalf("%s: status: got %+v, want %+v", what, got.Status, want.Status)
	}
	if got.Lease.Owner != want.Lease.Owner || !got.Lease.Until.Equal(want.Lease.Until) {
		t.Fatalf("%s: lease: got %+v, want %+v", what, got.Lease, want.Lease)
	}
}

// TestNoSecretOnDisk is `strings tokenhub.db`: after secrets are written,
// none appears in the database file, its WAL or its shared-memory file.
func TestNoSecretOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	s := open(t, path, keyring(t, testKey(1)))
	populate(t, s)

	check := func(when string) {
		t.Helper()
		plain := false
		for _, suffix := range []string{"", "-wal", "-shm"} {
			b, err := os.ReadFile(path + suffix)
			if errors.Is(err, os.ErrNotExist) {
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			for _, secret := range secrets {
				if bytes.Contains(b, []byte(secret)) {
					t.Errorf("%s: %s holds the secret %q in clear", when, filepath.Base(path+suffix), secret)
				}
			}
			// Plain columns are there, so the test reads the right bytes.
			plain = plain || bytes.Contains(b, []byte("replica-1"))
		}
		if !plain {
			t.Fatalf("%s: the lease owner (a plain column) is in neither the db nor the WAL; is the test reading the right files?", when)
		}
	}
	check("open (data in the WAL)")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("closed (WAL checkpointed)")
}

// TestWrongKey reopens a store with another key: every read that needs a
// secret fails with an error naming the connection and the key id, every
// write that would replace a secret is refused, and reopening with the right
// key shows everything intact.
func TestWrongKey(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	right := keyring(t, testKey(1))
	s := open(t, path, right)
	reports, billing := populate(t, s)
	s.Close()

	s = open(t, path, keyring(t, testKey(2)))
	wantMsg := `decrypt connection "acme/billing" config: sealed with key ` + seal.KeyID(testKey(1)) +
		", which is not in the keyring (wrong TOKENHUB_KEY or key file?)"
	check := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s with the wrong key: got error %v, want one containing %q", what, err, want)
		}
		for _, secret := range secrets {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("%s: error %q holds a secret", what, err)
			}
		}
	}
	_, err := s.FindConnection(ctx, "acme", "billing")
	check("FindConnection", err, wantMsg)
	_, err = s.FindConnectionByID(ctx, reports.ID)
	check("FindConnectionByID", err, `connection "acme/reports"`)
	_, err = s.FindConnections(ctx, tokenhub.ConnectionFilter{})
	check("FindConnections", err, `decrypt connection "acme/billing" config: sealed with key`)
	changed := config()
	changed.Password = "another-password"
	_, _, err = s.PutConnection(ctx, "acme", "reports", changed, t0.Add(time.Hour))
	check("PutConnection", err, `connection "acme/reports"`)
	_, _, err = s.AcquireLease(ctx, billing.ID, "replica-2", t0, t0.Add(time.Minute))
	check("AcquireLease", err, `connection "acme/billing"`)
	_, err = s.UpdateConnection(ctx, reports.ID, tokenhub.ConnectionUpdate{IfVersion: reports.Version, Token: token("x", "y")})
	check("UpdateConnection", err, `connection "acme/reports"`)
	_, err = s.Reseal(ctx)
	check("Reseal", err, `connection "acme/`)
	// What holds no secret still works.
	if _, err := s.FindWorkspace(ctx, "acme"); err != nil {
		t.Fatalf("FindWorkspace with the wrong key: %v", err)
	}
	if evs, err := s.FindEvents(ctx, reports.ID, 0); err != nil || len(evs) == 0 {
		t.Fatalf("FindEvents with the wrong key: got %d events, %v", len(evs), err)
	}
	s.Close()

	s = open(t, path, right)
	got, err := s.FindConnection(ctx, "acme", "reports")
	if err != nil {
		t.Fatalf("FindConnection with the right key again: %v", err)
	}
	checkSame(t, "reports after the wrong key", got, reports)
	if got.Token.RefreshToken != rotatedToken || got.Config.Password != password {
		t.Fatal("reports after the wrong key: the secrets changed")
	}
	got, err = s.FindConnection(ctx, "acme", "billing")
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, "billing after the wrong key", got, billing)
}

// rawDB opens the store's file directly, as an attacker or a disk error
// might change it. The store must be closed.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestCorruptOrMovedCiphertext changes sealed values behind the store's
// back: a flipped bit, and values copied to another row. Each fails with an
// error that names the connection, and FindConnections does not skip the
// bad row.
func TestCorruptOrMovedCiphertext(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	keys := keyring(t, testKey(1))
	s := open(t, path, keys)
	populate(t, s)
	if _, _, err := s.PutConnection(ctx, "acme", "payroll", config(), t0); err != nil {
		t.Fatal(err)
	}
	s.Close()

	db := rawDB(t, path)
	if _, err := db.Exec(`UPDATE connections SET token = (SELECT token FROM connections WHERE name = 'reports') WHERE name = 'payroll'`); err != nil {
		t.Fatal(err)
	}
	var tok []byte
	if err := db.QueryRow(`SELECT token FROM connections WHERE name = 'reports'`).Scan(&tok); err != nil {
		t.Fatal(err)
	}
	tok[40] ^= 1
	if _, err := db.Exec(`UPDATE connections SET token = ? WHERE name = 'reports'`, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE connections SET config = (SELECT config FROM connections WHERE name = 'reports') WHERE name = 'billing'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = open(t, path, keys)
	tests := []struct {
		what string
		err  func() error
		want string
	}{
		{"corrupt token", func() error { _, err := s.FindConnection(ctx, "acme", "reports"); return err },
			`decrypt connection "acme/reports" token: wrong key or corrupt data (authentication failed)`},
		{"config moved from another row", func() error { _, err := s.FindConnection(ctx, "acme", "billing"); return err },
			`decrypt connection "acme/billing" config: wrong key or corrupt data (authentication failed)`},
		{"token moved from another row", func() error { _, err := s.FindConnection(ctx, "acme", "payroll"); return err },
			`decrypt connection "acme/payroll" token: wrong key or corrupt data (authentication failed)`},
		{"FindConnections", func() error { _, err := s.FindConnections(ctx, tokenhub.ConnectionFilter{}); return err },
			`decrypt connection "acme/billing" config`},
	}
	for _, tt := range tests {
		if err := tt.err(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%s: got error %v, want one containing %q", tt.what, err, tt.want)
		}
	}
}

// TestReseal rotates the key file, reseals, and reopens with only the new
// key.
func TestReseal(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path, keyFile := filepath.Join(dir, "tokenhub.db"), filepath.Join(dir, "tokenhub.key")
	load := func() *seal.Keyring {
		t.Helper()
		keys, _, err := seal.LoadOrCreateKeyFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return keyring(t, keys[0], keys[1:]...)
	}
	oldKeys := load()
	s := open(t, path, oldKeys)
	reports, billing := populate(t, s)
	s.Close()

	newID, err := seal.RotateKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	rotated := load()
	if rotated.PrimaryID() != newID {
		t.Fatalf("rotated keyring: primary %s, want %s", rotated.PrimaryID(), newID)
	}
	s = open(t, path, rotated)
	// Before resealing, the old values open with the old key kept in the ring.
	if got, err := s.FindConnection(ctx, "acme", "reports"); err != nil {
		t.Fatalf("FindConnection before Reseal: %v", err)
	} else {
		checkSame(t, "before Reseal", got, reports)
	}
	n, err := s.Reseal(ctx)
	if err != nil {
		t.Fatalf("Reseal: %v", err)
	}
	if want := 3; n != want { // two configs and one token
		t.Fatalf("Reseal: got %d values rewritten, want %d", n, want)
	}
	if n, err := s.Reseal(ctx); err != nil || n != 0 {
		t.Fatalf("second Reseal: got %d, %v; want 0", n, err)
	}
	s.Close()

	newOnly, err := seal.NewKeyring(mustKeys(t, keyFile)[0])
	if err != nil {
		t.Fatal(err)
	}
	s = open(t, path, newOnly)
	for _, want := range []*tokenhub.Connection{reports, billing} {
		got, err := s.FindConnection(ctx, want.Workspace, want.Name)
		if err != nil {
			t.Fatalf("FindConnection with only the new key: %v", err)
		}
		checkSame(t, "after Reseal, new key only", got, want)
	}
	s.Close()

	s = open(t, path, oldKeys)
	if _, err := s.FindConnection(ctx, "acme", "reports"); !errors.Is(err, seal.ErrUnknownKey) {
		t.Fatalf("FindConnection with only the old key after Reseal: got %v, want an unknown-key error", err)
	}
}

func mustKeys(t *testing.T, path string) [][]byte {
	t.Helper()
	keys, _, err := seal.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestReopen closes and reopens a store and finds everything it held.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	keys := keyring(t, testKey(1))
	s := open(t, path, keys)
	reports, billing := populate(t, s)
	p := &tokenhub.Provider{Name: "baserow", Login: &tokenhub.Request{URL: "{{.BaseURL}}/api/user/token-auth/"}}
	if _, err := s.PutProvider(ctx, p); err != nil {
		t.Fatal(err)
	}
	app := &tokenhub.App{Workspace: "acme", Name: "worker", KeyHash: bytes.Repeat([]byte{7}, 32), Connections: []string{"reports"}}
	if err := s.CreateApp(ctx, app); err != nil {
		t.Fatal(err)
	}
	evs, err := s.FindEvents(ctx, reports.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, path, keys)
	for _, want := range []*tokenhub.Connection{reports, billing} {
		got, err := s.FindConnection(ctx, want.Workspace, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, "after reopen", got, want)
	}
	got, err := s.FindEvents(ctx, reports.ID, 0)
	if err != nil || len(got) != len(evs) {
		t.Fatalf("events after reopen: got %d, %v; want %d", len(got), err, len(evs))
	}
	if gp, err := s.FindProvider(ctx, "baserow"); err != nil || gp.Login == nil || gp.Login.URL != p.Login.URL {
		t.Fatalf("provider after reopen: got %+v, %v", gp, err)
	}
	if ga, err := s.FindAppByKeyHash(ctx, app.KeyHash); err != nil || ga.ID != app.ID || ga.Connections[0] != "reports" {
		t.Fatalf("app after reopen: got %+v, %v", ga, err)
	}
	// IDs are not reused after a delete, even across a reopen.
	if err := s.DeleteConnection(ctx, "acme", "billing"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path, keys)
	c, _, err := s.PutConnection(ctx, "acme", "billing", config(), t0)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == billing.ID {
		t.Fatalf("a recreated connection reused the deleted ID %d", billing.ID)
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	keys := keyring(t, testKey(1))
	s, err := sqlite.Open(path, keys)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sqlite.Open(path, keys)
	if !errors.Is(err, sqlite.ErrLocked) || !strings.Contains(err.Error(), "another tokenhub process is using "+path) {
		t.Fatalf("second Open of %s: got %v, want ErrLocked saying another process uses it", path, err)
	}
	other, err := sqlite.Open(filepath.Join(t.TempDir(), "other.db"), keys)
	if err != nil {
		t.Fatalf("Open of another file while the first is open: %v", err)
	}
	other.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, err = sqlite.Open(path, keys)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

// TestLockOtherProcess holds the store in a child process (this test binary
// re-run as a helper) and checks that the parent is refused until the child
// exits, and that a killed child releases the lock.
func TestLockOtherProcess(t *testing.T) {
	if os.Getenv("TOKENHUB_SQLITE_LOCK_HELPER") != "" {
		lockHelper()
		return
	}
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	keys := keyring(t, testKey(1))
	for _, end := range []string{"exit", "kill"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockOtherProcess$")
		cmd.Env = append(os.Environ(), "TOKENHUB_SQLITE_LOCK_HELPER="+path)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "locked\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper: got %q, %v; want %q", line, err, "locked\n")
		}
		_, err = sqlite.Open(path, keys)
		if !errors.Is(err, sqlite.ErrLocked) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("Open while another process holds the store: got %v, want ErrLocked", err)
		}
		if end == "exit" {
			stdin.Close()
		} else {
			cmd.Process.Kill()
		}
		cmd.Wait()
		s, err := sqlite.Open(path, keys)
		if err != nil {
			t.Fatalf("Open after the other process's %s: %v", end, err)
		}
		s.Close()
	}
}

// lockHelper opens the store named by the environment, says so, and holds it
// until stdin closes.
func lockHelper() {
	keys, _ := seal.NewKeyring(testKey(1))
	s, err := sqlite.Open(os.Getenv("TOKENHUB_SQLITE_LOCK_HELPER"), keys)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n')
	s.Close()
	os.Exit(0)
}

// TestDurabilitySettings checks the pragmas that make a committed write
// durable and safe under concurrency.
func TestDurabilitySettings(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "tokenhub.db"), keyring(t, testKey(1)))
	for name, want := range map[string]string{
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"busy_timeout": "10000",
	} {
		got, err := sqlite.Pragma(s, name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PRAGMA %s: got %q, want %q", name, got, want)
		}
	}
}

func TestPathWithSpecialCharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "token hub.db")
	s := open(t, path, keyring(t, testKey(1)))
	if _, err := s.CreateWorkspace(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the store file is not at %q: %v", path, err)
	}
	s = open(t, path, keyring(t, testKey(1)))
	if _, err := s.FindWorkspace(t.Context(), "acme"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenhub.db")
	keys := keyring(t, testKey(1))
	open(t, path, keys).Close()
	// Reopening an up-to-date file applies nothing and keeps the data.
	s := open(t, path, keys)
	if _, err := s.CreateWorkspace(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path, keys)
	if _, err := s.FindWorkspace(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	db := rawDB(t, path)
	var v int
	if err := db.QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil || v < 1 {
		t.Fatalf("schema_migrations: got version %d, %v; want at least 1", v, err)
	}
	if _, err := db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := sqlite.Open(path, keys)
	if err == nil || !strings.Contains(err.Error(), "schema version 9999 is newer than this tokenhub") {
		t.Fatalf("Open of a newer schema: got %v, want a clear refusal", err)
	}
	// The failed Open released its lock.
	if _, err := sqlite.Open(path, keys); err == nil || errors.Is(err, sqlite.ErrLocked) {
		t.Fatalf("second Open of a newer schema: got %v, want the schema error again, not a lock error", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := sqlite.Open(filepath.Join(t.TempDir(), "x.db"), nil); err == nil {
		t.Fatal("Open with no keyring: got nil error")
	}
	if _, err := sqlite.Open(filepath.Join(t.TempDir(), "missing", "x.db"), keyring(t, testKey(1))); err == nil {
		t.Fatal("Open in a missing directory: got nil error")
	}
}

// BenchmarkUpdateConnection measures a durable token write: a new token pair
// and an event, committed with synchronous=FULL (fsync) before it returns.
func BenchmarkUpdateConnection(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "tokenhub.db"), keyring(b, testKey(1)))
	if _, err := s.CreateWorkspace(ctx, "acme"); err != nil {
		b.Fatal(err)
	}
	c, _, err := s.PutConnection(ctx, "acme", "reports", config(), t0)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		c, err = s.UpdateConnection(ctx, c.ID, tokenhub.ConnectionUpdate{
			IfVersion: c.Version,
			Token:     token(fmt.Sprintf("access-%d", i), fmt.Sprintf("refresh-%d", i)),
			Events:    []tokenhub.Event{{At: t0, Type: tokenhub.EventRefreshed, Message: "refreshed"}},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func TestDatabaseFileIsOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mode.db")
	keys, err := seal.NewKeyring(bytes.Repeat([]byte{1}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(path, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Fatalf("database file mode = %o, want 600", got)
	}
}
