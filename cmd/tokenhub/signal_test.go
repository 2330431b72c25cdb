//go:build unix

package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/logtest"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/sqlite"
)

// buildBinary builds the real tokenhub binary into a temporary directory
// that lives as long as the test.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "tokenhub")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// child is `tokenhub serve` running as its own process.
type child struct {
	cmd    *exec.Cmd
	dir    string
	url    string
	lines  chan map[string]any // the JSON log lines, as they come
	log    *logtest.Buffer
	exited chan struct{}
	err    error
}

// startChild runs bin as `tokenhub serve` on 127.0.0.1:0 with its files in a
// new temporary directory, and waits until it says where it serves.
func startChild(t *testing.T, bin string, extra ...string) *child {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"serve", "--addr", "127.0.0.1:0",
		"--store", "sqlite:" + filepath.Join(dir, "tokenhub.db"),
		"--key-file", filepath.Join(dir, "tokenhub.key"),
		"--admin-key-file", filepath.Join(dir, "tokenhub.admin-key"),
		"--log-format", "json"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, dir: dir, lines: make(chan map[string]any, 1000), log: &logtest.Buffer{}, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.log.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case c.lines <- m:
				default:
				}
			}
		}
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			cmd.Process.Kill()
			<-c.exited
		}
	})
	deadline := time.After(30 * time.Second)
	for c.url == "" {
		select {
		case m := <-c.lines:
			if m["msg"] == "tokenhub is serving" {
				c.url, _ = m["url"].(string)
			}
		case <-c.exited:
			t.Fatalf("tokenhub serve exited before serving: %v\n%s", c.err, c.log)
		case <-deadline:
			t.Fatalf("tokenhub serve did not start:\n%s", c.log)
		}
	}
	return c
}

func (c *child) admin(t *testing.T) *client.Client {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "tokenhub.admin-key"))
	if err != nil {
		t.Fatal(err)
	}
	return client.New(c.url, strings.TrimSpace(string(b)))
}

// wait waits for the process to exit and returns its exit status.
func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("tokenhub serve did not exit:\n%s", c.log)
	}
	return c.cmd.ProcessState.ExitCode()
}

// TestServeGracefulShutdownOnSignal sends SIGINT and SIGTERM to a real
// `tokenhub serve` process while a request is in flight, waiting on a refresh
// that the provider does not answer. The refresh is cancelled, the request
// gets an answer rather than a cut connection, the process exits 0 after
// logging that it stopped, and the store is closed: its lock is released and
// it opens with the process's key.
func TestServeGracefulShutdownOnSignal(t *testing.T) {
	bin := buildBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			prov, provURL := startDemoProvider(t, demo.Options{Logger: quiet()})
			c := startChild(t, bin, "--shutdown-timeout", "2s")
			ctx := context.Background()
			admin := c.admin(t)
			app := demoApp(t, admin, provURL, "page")

			// A forced refresh that the provider leaves hanging, and a
			// request waiting on it.
			prov.Hang(1)
			type answer struct {
				status int
				err    error
			}
			inflight := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodPost, c.url+"/v1/connections/baserow/refresh", nil)
				req.Header.Set("Authorization", "Bearer "+app.Key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					inflight <- answer{err: err}
					return
				}
				resp.Body.Close()
				inflight <- answer{status: resp.StatusCode}
			}()
			deadline := time.Now().Add(20 * time.Second)
			for prov.Counts().TokenRefresh == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the refresh did not reach the provider")
				}
				time.Sleep(5 * time.Millisecond)
			}

			if err := c.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := c.wait(t); code != 0 {
				t.Errorf("exit status %d, want 0:\n%s", code, c.log)
			}
			a := <-inflight
			if a.err != nil {
				t.Errorf("the request in flight was cut off: %v", a.err)
			} else if a.status != http.StatusServiceUnavailable {
				t.Errorf("the request in flight got %d, want 503 (the refresh it waited for was cancelled)", a.status)
			}
			if !strings.Contains(c.log.String(), `"msg":"tokenhub stopped"`) {
				t.Errorf("the log does not say tokenhub stopped:\n%s", c.log)
			}

			// The store was closed: it opens, with the key the process made,
			// and holds the token obtained before the shutdown.
			keys, _, err := seal.LoadOrCreateKeyFile(filepath.Join(c.dir, "tokenhub.key"))
			if err != nil {
				t.Fatal(err)
			}
			ring, err := seal.NewKeyring(keys[0], keys[1:]...)
			if err != nil {
				t.Fatal(err)
			}
			st, err := sqlite.Open(filepath.Join(c.dir, "tokenhub.db"), ring)
			if err != nil {
				t.Fatalf("opening the store after shutdown: %v", err)
			}
			defer st.Close()
			conn, err := st.FindConnection(ctx, "acme", "baserow")
			if err != nil || conn.Token == nil {
				t.Fatalf("after shutdown: connection %v, err %v; want it with its token", conn, err)
			}
		})
	}
}
