package main_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	main "github.com/tokenhub/tokenhub/cmd/tokenhub"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/logtest"
)

// server is a real tokenhub server on 127.0.0.1:0 with its files in Dir.
type server struct {
	*main.Main
	Dir string
	Log *logtest.Buffer
}

// startServer runs the real server with a store in dir (a new temporary
// directory when dir is ""), and closes it when the test ends.
func startServer(t *testing.T, dir string) *server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	logs := &logtest.Buffer{}
	m := main.NewMain()
	m.Config.Addr = "127.0.0.1:0"
	m.Config.Store = "sqlite:" + filepath.Join(dir, "tokenhub.db")
	m.Config.KeyFile = filepath.Join(dir, "tokenhub.key")
	m.Config.AdminKeyFile = filepath.Join(dir, "tokenhub.admin-key")
	m.Config.LogLevel = "debug"
	m.Stderr = logs
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("Main.Run: %v", err)
	}
	s := &server{Main: m, Dir: dir, Log: logs}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop closes the server once.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.Main == nil {
		return
	}
	if err := s.Main.Close(); err != nil {
		t.Errorf("Main.Close: %v", err)
	}
	s.Main = nil
}

// admin returns a client with the admin key.
func (s *server) admin() *client.Client { return client.New(s.URL(), s.AdminKey()) }

// env is the environment a CLI command sees in tests: the server's URL and
// admin key, plus extra variables.
func (s *server) env(extra ...string) map[string]string {
	m := map[string]string{"TOKENHUB_URL": s.URL(), "TOKENHUB_ADMIN_KEY": s.AdminKey()}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// result is what a CLI run printed and its exit status.
type result struct {
	Stdout, Stderr string
	Code           int
}

// run runs the tokenhub command line with the given environment, exactly as
// main does but with buffers and a map for the process's streams and
// environment.
func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return runIn(t, env, "", args...)
}

// runIn is run with stdin.
func runIn(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb logtest.Buffer
	e := &main.Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
		LookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
	}
	code := main.Run(context.Background(), e, args)
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// startDemoProvider runs a demo (Baserow-compatible) provider for the test.
func startDemoProvider(t *testing.T, o demo.Options) (*demo.Server, string) {
	t.Helper()
	d := demo.New(o)
	hs := httptest.NewServer(d)
	t.Cleanup(hs.Close)
	return d, hs.URL
}

// putDemoConnection adds the demo provider and a connection "baserow" in
// workspace ws, which must exist, to the demo provider at provURL, and waits
// until the connection holds its first token.
func putDemoConnection(t *testing.T, admin *client.Client, ws, provURL string) *client.ConnectionView {
	t.Helper()
	ctx := context.Background()
	if _, _, err := admin.PutProvider(ctx, demo.Provider()); err != nil {
		t.Fatal(err)
	}
	cfg := demo.ConnectionConfig(provURL)
	if _, _, err := admin.PutConnection(ctx, ws, "baserow", &cfg); err != nil {
		t.Fatal(err)
	}
	return waitState(t, admin, ws, "baserow", tokenhub.StateHealthy)
}

// demoApp creates workspace acme with a healthy connection "baserow" to the
// demo provider at provURL (see putDemoConnection) and an app called name
// that may read every connection of acme, and returns the app's key.
func demoApp(t *testing.T, admin *client.Client, provURL, name string) *client.AppKey {
	t.Helper()
	ctx := context.Background()
	if _, err := admin.CreateWorkspace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	putDemoConnection(t, admin, "acme", provURL)
	app, err := admin.CreateApp(ctx, "acme", name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// waitState polls the connection until its state is one of want, and fails
// the test after a generous deadline.
func waitState(t *testing.T, c *client.Client, ws, name string, want ...tokenhub.State) *client.ConnectionView {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := c.Connection(context.Background(), ws, name)
		if err == nil {
			for _, s := range want {
				if v.State == s {
					return v
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection %s/%s: got %+v (err %v), want state %v", ws, name, v, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
