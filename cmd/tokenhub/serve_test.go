package main_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/client"
	main "github.com/tokenhub/tokenhub/cmd/tokenhub"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/internal/seal"
)

// TestServeFirstStart checks the files a first start creates, what it logs
// about them, and that a restart reuses them and keeps the state.
func TestServeFirstStart(t *testing.T) {
	s := startServer(t, "")
	if !s.KeyFileCreated || !s.AdminKeyFileCreated {
		t.Errorf("first start: KeyFileCreated=%v AdminKeyFileCreated=%v, want both true", s.KeyFileCreated, s.AdminKeyFileCreated)
	}
	for _, name := range []string{"tokenhub.key", "tokenhub.admin-key"} {
		st, err := os.Stat(filepath.Join(s.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", name, st.Mode().Perm())
		}
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, "tokenhub.admin-key"))
	if err != nil {
		t.Fatal(err)
	}
	adminKey := strings.TrimSpace(string(b))
	if adminKey == "" || adminKey != s.AdminKey() {
		t.Fatalf("admin key file holds %d bytes; it should hold the key the server accepts", len(adminKey))
	}
	keyData, err := os.ReadFile(filepath.Join(s.Dir, "tokenhub.key"))
	if err != nil {
		t.Fatal(err)
	}

	// The log says where both files are, warns about losing the key, and
	// shows neither key.
	log := s.Log.String()
	for _, want := range []string{
		"level=WARN", "ENCRYPTION KEY", "losing it loses them all", filepath.Join(s.Dir, "tokenhub.key"),
		"created the admin key", filepath.Join(s.Dir, "tokenhub.admin-key"),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(keyData)), "\n") {
		if strings.Contains(log, line) {
			t.Errorf("the log shows the encryption key")
		}
	}
	if strings.Contains(log, adminKey) {
		t.Errorf("the log shows the admin key")
	}

	ctx := context.Background()
	if _, err := s.admin().CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatalf("CreateWorkspace: %v", err)
	}
	if _, err := client.New(s.URL(), "thk_wrong").Workspaces(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("a wrong admin key: got %v, want unauthorized", err)
	}

	// Restart on the same files: nothing is created, the same admin key
	// works, and the workspace is still there.
	dir := s.Dir
	s.stop(t)
	s2 := startServer(t, dir)
	if s2.KeyFileCreated || s2.AdminKeyFileCreated {
		t.Errorf("restart: KeyFileCreated=%v AdminKeyFileCreated=%v, want both false", s2.KeyFileCreated, s2.AdminKeyFileCreated)
	}
	if s2.AdminKey() != adminKey {
		t.Errorf("restart: the admin key changed")
	}
	ws, err := s2.admin().Workspaces(ctx)
	if err != nil || len(ws) != 1 || ws[0].Name != "acme" {
		t.Errorf("restart: workspaces %v, %v; want acme", ws, err)
	}
}

// TestServeKeysFromEnv checks that TOKENHUB_KEY and TOKENHUB_ADMIN_KEY
// replace the files, which are then not created.
func TestServeKeysFromEnv(t *testing.T) {
	dir := t.TempDir()
	key, err := seal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	m := main.NewMain()
	m.Config.Addr = "127.0.0.1:0"
	m.Config.Store = "sqlite:" + filepath.Join(dir, "db")
	m.Config.KeyFile = filepath.Join(dir, "key")
	m.Config.AdminKeyFile = filepath.Join(dir, "admin-key")
	m.Config.Key = base64.StdEncoding.EncodeToString(key)
	m.Config.AdminKey = "thk_from-the-environment"
	m.Logger = quiet()
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	defer m.Close()
	for _, name := range []string{"key", "admin-key"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v, want no file", name, err)
		}
	}
	if _, err := client.New(m.URL(), "thk_from-the-environment").Workspaces(context.Background()); err != nil {
		t.Errorf("the admin key from the environment: %v", err)
	}
}

// TestServeRefusesUnsafeFiles checks that an admin key file others can read
// is refused, and that a store in use by another server is reported as such.
func TestServeRefusesUnsafeFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "tokenhub.admin-key"), "thk_x\n")
	if err := os.Chmod(filepath.Join(dir, "tokenhub.admin-key"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := main.NewMain()
	m.Config.Addr = "127.0.0.1:0"
	m.Config.Store = "sqlite:" + filepath.Join(dir, "tokenhub.db")
	m.Config.KeyFile = filepath.Join(dir, "tokenhub.key")
	m.Config.AdminKeyFile = filepath.Join(dir, "tokenhub.admin-key")
	m.Logger = quiet()
	err := m.Run(context.Background())
	if err == nil {
		m.Close()
		t.Fatal("Run with a world-readable admin key file: got no error")
	}
	if !strings.Contains(err.Error(), "--admin-key-file") || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("got %v, want an error naming --admin-key-file and the fix", err)
	}

	s := startServer(t, "")
	m2 := main.NewMain()
	m2.Config = s.Config
	m2.Logger = quiet()
	if err := m2.Run(context.Background()); err == nil {
		m2.Close()
		t.Fatal("a second server on the same store: got no error")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second server on the same store: got %v, want it to say the store is in use", err)
	}
}

// TestServeCommandStopsOnSignal runs `tokenhub serve` as main does and
// cancels its context, as SIGINT and SIGTERM do: it shuts down cleanly and
// exits 0.
func TestServeCommandStopsOnSignal(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr logtest.Buffer
	e := &main.Env{Stdout: &logtest.Buffer{}, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}
	var wg sync.WaitGroup
	var code int
	wg.Add(1)
	go func() {
		defer wg.Done()
		code = main.Run(ctx, e, []string{"serve", "--addr", "127.0.0.1:0",
			"--store", "sqlite:" + filepath.Join(dir, "db"),
			"--key-file", filepath.Join(dir, "key"), "--admin-key-file", filepath.Join(dir, "admin-key"),
			"--log-format", "json"})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "tokenhub is serving") {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if code != 0 {
		t.Errorf("exit status %d, want 0:\n%s", code, stderr.String())
	}
	log := stderr.String()
	if !strings.Contains(log, `"msg":"tokenhub stopped"`) {
		t.Errorf("--log-format json: want JSON lines ending with tokenhub stopped, got:\n%s", log)
	}
	// The store was closed and its lock released: a new server opens it,
	// with the key files the first one made.
	m := main.NewMain()
	m.Config.Addr = "127.0.0.1:0"
	m.Config.Store = "sqlite:" + filepath.Join(dir, "db")
	m.Config.KeyFile = filepath.Join(dir, "key")
	m.Config.AdminKeyFile = filepath.Join(dir, "admin-key")
	m.Logger = quiet()
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("reopening the store after shutdown: %v", err)
	}
	if m.KeyFileCreated || m.AdminKeyFileCreated {
		t.Errorf("reopening created new key files")
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestBadFlags checks that bad input is refused with exit status 2 and an
// error that names the flag (and the variable, when the value came from one).
func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad addr", nil, []string{"serve", "--addr", "localhost"}, `--addr: "localhost" is not host:port`},
		{"bad port", nil, []string{"serve", "--addr", "127.0.0.1:99999"}, `--addr: "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"unknown store scheme", nil, []string{"serve", "--store", "mysql://db/tokenhub"}, `--store: unknown store type "mysql"`},
		{"store without scheme", nil, []string{"serve", "--store", "./tokenhub.db"}, `--store: "./tokenhub.db" names no store type`},
		{"postgres not yet", nil, []string{"serve", "--store", "postgres://localhost/tokenhub"}, "--store: PostgreSQL stores are not supported yet"},
		{"store from env", map[string]string{"TOKENHUB_STORE": "redis://x"}, []string{"serve"}, `--store (from TOKENHUB_STORE): unknown store type "redis"`},
		{"bad log format", nil, []string{"serve", "--log-format", "xml"}, `--log-format: must be text or json, not "xml"`},
		{"bad log level", map[string]string{"TOKENHUB_LOG_LEVEL": "loud"}, []string{"serve"}, `--log-level (from TOKENHUB_LOG_LEVEL): must be debug, info, warn or error, not "loud"`},
		{"bad duration", nil, []string{"serve", "--shutdown-timeout", "soon"}, `invalid value "soon" for flag --shutdown-timeout`},
		{"bad duration from env", map[string]string{"TOKENHUB_SHUTDOWN_TIMEOUT": "soon"}, []string{"serve"}, `TOKENHUB_SHUTDOWN_TIMEOUT: "soon" is not a duration`},
		{"unknown flag", nil, []string{"serve", "--adress", "x"}, "flag provided but not defined: --adress"},
		{"serve takes no args", nil, []string{"serve", "extra"}, `takes no arguments`},
		{"bad url", map[string]string{"TOKENHUB_ADMIN_KEY": "k"}, []string{"status", "--url", "ftp://x"}, `--url: "ftp://x" is not an http or https URL`},
		{"url from env", map[string]string{"TOKENHUB_URL": "127.0.0.1:7470", "TOKENHUB_ADMIN_KEY": "k"}, []string{"status"}, `--url (from TOKENHUB_URL)`},
		{"apply needs -f", nil, []string{"apply"}, "-f: required"},
		{"app create needs workspace", nil, []string{"app", "create", "x"}, "--workspace: required"},
		{"token needs CONN", nil, []string{"token"}, "missing the connection name CONN"},
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown subcommand", nil, []string{"workspace", "rename"}, `unknown command "rename"`},
		{"demo bad addr", nil, []string{"demo", "--addr", "nope"}, `--addr: "nope" is not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.env, tt.args...)
			if r.Code != 2 {
				t.Errorf("exit status %d, want 2; stderr:\n%s", r.Code, r.Stderr)
			}
			if !strings.Contains(r.Stderr, tt.want) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", r.Stderr, tt.want)
			}
		})
	}
}

// TestMainValidate checks that Main.Run refuses a bad Config before it
// touches anything, naming the field's flag.
func TestMainValidate(t *testing.T) {
	dir := t.TempDir()
	m := main.NewMain()
	m.Config.Addr = "nonsense"
	m.Config.KeyFile = filepath.Join(dir, "key")
	m.Logger = quiet()
	err := m.Run(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "--addr: ") {
		t.Errorf("got %v, want an error starting with --addr:", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused config created the key file")
	}
}

// TestHelp checks that every command answers --help with its usage and an
// example, and exits 0.
func TestHelp(t *testing.T) {
	top := run(t, nil, "help")
	if top.Code != 0 || !strings.Contains(top.Stdout, "Commands:") {
		t.Fatalf("tokenhub help: status %d\n%s%s", top.Code, top.Stdout, top.Stderr)
	}
	// The command list is the part between "Commands:" and the blank line.
	list := strings.SplitN(strings.SplitN(top.Stdout, "Commands:\n", 2)[1], "\n\n", 2)[0]
	var n int
	for _, line := range strings.Split(list, "\n") {
		fields := strings.Fields(line)
		// "workspace create  Create a workspace": the command is the
		// leading words in lower case.
		var args []string
		for _, f := range fields {
			if strings.ToLower(f) != f || len(args) == 2 {
				break
			}
			args = append(args, f)
		}
		if len(args) == 0 {
			continue
		}
		n++
		for _, flag := range []string{"--help", "-h"} {
			r := run(t, nil, append(args, flag)...)
			_, example, _ := strings.Cut(r.Stdout, "\nExample:\n  ")
			if r.Code != 0 || !strings.Contains(r.Stdout, "Usage: tokenhub "+strings.Join(args, " ")) ||
				!strings.Contains(example, "tokenhub "+strings.Join(args, " ")) {
				t.Errorf("tokenhub %s %s: status %d, want 0 with usage and an example:\n%s%s", strings.Join(args, " "), flag, r.Code, r.Stdout, r.Stderr)
			}
		}
	}
	if n < 14 {
		t.Errorf("found %d commands in the help, want every one:\n%s", n, list)
	}
	if r := run(t, nil, "help", "app", "create"); r.Code != 0 || !strings.Contains(r.Stdout, "--connections") {
		t.Errorf("tokenhub help app create: status %d\n%s", r.Code, r.Stdout)
	}
}

func TestJSONLogsWriteDurationsAsText(t *testing.T) {
	var buf bytes.Buffer
	c := &main.Config{LogFormat: "json", LogLevel: "info"}
	c.NewLogger(&buf).Info("x", "wait", 90*time.Second)
	if !strings.Contains(buf.String(), `"wait":"1m30s"`) {
		t.Fatalf("log line %s, want \"wait\":\"1m30s\"", buf.String())
	}
}

// TestServeRefusesShortAdminKey checks that a guessable admin key is refused
// without being echoed.
func TestServeRefusesShortAdminKey(t *testing.T) {
	dir := t.TempDir()
	key, err := seal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	m := main.NewMain()
	m.Config.Addr = "127.0.0.1:0"
	m.Config.Store = "sqlite:" + filepath.Join(dir, "db")
	m.Config.Key = base64.StdEncoding.EncodeToString(key)
	m.Config.AdminKey = "hunter2"
	m.Logger = quiet()
	err = m.Run(context.Background())
	if err == nil {
		m.Close()
		t.Fatal("Run accepted a 7-character admin key")
	}
	if !strings.Contains(err.Error(), "TOKENHUB_ADMIN_KEY") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %q: want it to name TOKENHUB_ADMIN_KEY and not echo the key", err)
	}
}
