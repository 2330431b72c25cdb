package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/proxy"
)

// The Handler reuses the state of finished requests for new ones. Many
// concurrent requests to different connections, with and without bodies,
// some failing, must each reach their own upstream with their own token,
// path, query and body, and failures must name their own connection.
// Run with -race.
func TestConcurrentRequestsKeepTheirOwnState(t *testing.T) {
	e := newEnv(t, proxy.Options{})
	// Each upstream accepts only its own connection's token and echoes
	// what it received.
	echo := func(name string) *upstream {
		return newUpstream(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
			if got, want := r.Header.Get("Authorization"), "Bearer "+accessToken(name, 0); got != want {
				http.Error(w, "wrong token for "+name, http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.RequestURI, body)
		})
	}
	a, b := echo("a"), echo("b")
	e.tokens.add(t, "ws1", "a", a.URL, tokenhub.Header{})
	e.tokens.add(t, "ws2", "b", b.URL, tokenhub.Header{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + ln.Addr().String()
	ln.Close()
	e.tokens.add(t, "ws1", "down", downURL, tokenhub.Header{})

	const workers, each = 8, 40
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				if !oneRequest(t, e, g, i) {
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(a.requests()) + len(b.requests()); n == 0 {
		t.Fatal("no request reached an upstream")
	}
}

// oneRequest sends request i of worker g, to one of the three connections
// in turn, and checks its answer. It reports false after a failure.
func oneRequest(t *testing.T, e *env, g, i int) bool {
	var (
		key, method, path, body string
		wantStatus              int
		want                    string // the answer, or a word the error message holds
	)
	switch i % 3 {
	case 0:
		key, method, path = keyWS1, "GET", fmt.Sprintf("/v1/proxy/a/rows/%d/%d?page=%d", g, i, i)
		wantStatus, want = http.StatusOK, fmt.Sprintf("a GET /rows/%d/%d?page=%d ", g, i, i)
	case 1:
		key, method, path, body = keyWS2, "POST", fmt.Sprintf("/v1/proxy/b/items/%d", g), fmt.Sprintf("item %d of %d", i, g)
		wantStatus, want = http.StatusOK, fmt.Sprintf("b POST /items/%d item %d of %d", g, i, g)
	default:
		key, method, path = keyWS1, "GET", fmt.Sprintf("/v1/proxy/down/x/%d", i)
		wantStatus, want = http.StatusBadGateway, `"down"`
	}
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.front.URL+path, rb)
	if err != nil {
		t.Error(err)
		return false
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := e.front.Client().Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return false
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Errorf("%s %s: reading the answer: %v", method, path, err)
		return false
	}
	if res.StatusCode != wantStatus {
		t.Errorf("%s %s: status %d (%s), want %d", method, path, res.StatusCode, got, wantStatus)
		return false
	}
	if wantStatus != http.StatusOK {
		var eb errorBody
		if err := json.Unmarshal(got, &eb); err != nil || !strings.Contains(eb.Error.Message, want) {
			t.Errorf("%s %s: error %s, want a message naming %s", method, path, got, want)
			return false
		}
		return true
	}
	if string(got) != want {
		t.Errorf("%s %s: the upstream answered %q, want %q", method, path, got, want)
		return false
	}
	return true
}
