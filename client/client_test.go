package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
)

// The whole API is tested against the real server in package server; these
// tests cover what a real tokenhub never sends but something in front of it
// may: errors without tokenhub's JSON body, Retry-After as a date, and
// transport failures.

const testKey = "thk_test-key-that-must-never-leak-0123456789abcdef"

func TestErrorAnswers(t *testing.T) {
	retryAt := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	answers := map[string]func(w http.ResponseWriter){
		"/reauth": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(409)
			fmt.Fprint(w, `{"error":{"code":"needs_reauth","message":"connection \"x\" needs re-authorisation","state":"needs_reauth"}}`)
		},
		"/busy": func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
			fmt.Fprint(w, `{"error":{"code":"unavailable","message":"no valid token"}}`)
		},
		"/busy-date": func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", retryAt)
			w.WriteHeader(503)
			fmt.Fprint(w, `<html>Service Unavailable</html>`)
		},
		"/gateway": func(w http.ResponseWriter) {
			w.WriteHeader(502)
			fmt.Fprint(w, "upstream connect error "+testKey)
		},
		"/html404": func(w http.ResponseWriter) {
			w.WriteHeader(404)
			fmt.Fprint(w, "<h1>Not Found</h1>")
		},
		"/teapot": func(w http.ResponseWriter) { w.WriteHeader(418) },
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testKey || r.Header.Get("User-Agent") != "t/1" {
			w.WriteHeader(400)
			return
		}
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/connections/"), "/token")
		answers["/"+name](w)
	}))
	defer ts.Close()
	c := client.New(ts.URL+"/", testKey, client.WithUserAgent("t/1"), client.WithHTTPClient(ts.Client()))

	cases := []struct {
		name     string
		status   int
		code     string
		is       error
		retry    time.Duration
		message  string
		reauthed bool
	}{
		{"reauth", 409, tokenhub.ENEEDSREAUTH, client.ErrNeedsReauth, 0, `connection "x" needs re-authorisation`, true},
		{"busy", 503, tokenhub.EUNAVAILABLE, client.ErrUnavailable, 7 * time.Second, "no valid token", false},
		{"busy-date", 503, tokenhub.EUNAVAILABLE, client.ErrUnavailable, 90 * time.Second, "HTTP 503 Service Unavailable", false},
		{"gateway", 502, tokenhub.EUNAVAILABLE, client.ErrUnavailable, 0, "HTTP 502 Bad Gateway", false},
		{"html404", 404, tokenhub.ENOTFOUND, client.ErrNotFound, 0, "HTTP 404 Not Found", false},
		{"teapot", 418, tokenhub.EINVALID, client.ErrInvalid, 0, "HTTP 418 I'm a teapot", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Token(context.Background(), tc.name)
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %T %v, want *client.Error", err, err)
			}
			if e.Status != tc.status || e.Code != tc.code || e.Message != tc.message {
				t.Fatalf("got %d %s %q, want %d %s %q", e.Status, e.Code, e.Message, tc.status, tc.code, tc.message)
			}
			// A date is read against the clock, so allow for the time the test takes.
			if d := e.RetryAfter - tc.retry; d > time.Second || d < -5*time.Second {
				t.Fatalf("RetryAfter = %v, want about %v", e.RetryAfter, tc.retry)
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if errors.Is(err, client.ErrInternal) {
				t.Fatal("matches ErrInternal as well")
			}
			if (e.State == tokenhub.StateNeedsReauth) != tc.reauthed {
				t.Fatalf("State = %q", e.State)
			}
			if tokenhub.ErrorCode(err) != tc.code {
				t.Fatalf("tokenhub.ErrorCode = %q, want %q", tokenhub.ErrorCode(err), tc.code)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatal("the error holds the key")
			}
		})
	}
}

func TestTransportErrorHoldsNoKey(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	_, err = client.New(url, testKey).Token(context.Background(), "x")
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Fatalf("err = %v; want a failure without the key", err)
	}
	var e *client.Error
	if errors.As(err, &e) {
		t.Fatalf("a transport failure is not an API error: %v", err)
	}
	_, err = client.New("::not a url", testKey).Workspaces(context.Background())
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Fatalf("err = %v; want a failure without the key", err)
	}
}

// TestStatusTable: each code maps to its status and, without a body, back.
func TestStatusTable(t *testing.T) {
	want := map[string]int{
		tokenhub.EINVALID: 400, tokenhub.EUNAUTHORIZED: 401, tokenhub.EFORBIDDEN: 403, tokenhub.ENOTFOUND: 404,
		tokenhub.ECONFLICT: 409, tokenhub.ENEEDSREAUTH: 409, tokenhub.ETOOLARGE: 413, tokenhub.EUNAVAILABLE: 503,
		tokenhub.EINTERNAL: 500, "no-such-code": 500,
	}
	for code, status := range want {
		if got := client.StatusCode(code); got != status {
			t.Errorf("StatusCode(%q) = %d, want %d", code, got, status)
		}
		if code == tokenhub.ENEEDSREAUTH || code == "no-such-code" {
			continue
		}
		if got := client.CodeForStatus(status); got != code {
			t.Errorf("CodeForStatus(%d) = %q, want %q", status, got, code)
		}
	}
	if got := client.CodeForStatus(200); got != "" {
		t.Errorf("CodeForStatus(200) = %q", got)
	}
}

func TestRedaction(t *testing.T) {
	tok := client.Token{AccessToken: "eyJsecret", TokenType: "JWT", Header: client.Header{Name: "Authorization", Value: "JWT eyJsecret"}}
	k := client.AppKey{Workspace: "acme", Name: "a", Key: testKey}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v %#v", tok, tok), fmt.Sprint(&tok), fmt.Sprint(tok.Header),
		fmt.Sprint(k), fmt.Sprintf("%+v %#v", k, &k)} {
		if strings.Contains(s, "eyJsecret") || strings.Contains(s, testKey) {
			t.Errorf("formatted: %s", s)
		}
	}
}
