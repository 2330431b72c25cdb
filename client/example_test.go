package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/demo"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/proxy"
	"github.com/tokenhub/tokenhub/server"
	"github.com/tokenhub/tokenhub/sqlite"
)

// tokenhubForExamples starts a complete tokenhub in this process (SQLite
// store in a temporary directory, the broker, the API with its proxy on a
// loopback port) next to a demo Baserow provider, and sets up what the
// examples assume: a workspace "acme" with a connection "baserow" to the
// demo, and an app key for it. It returns the server's URL, the admin key,
// the app key and a function that stops everything.
func tokenhubForExamples() (url, adminKey, appKey string, stop func()) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	must := func(err error) {
		if err != nil {
			stop()
			panic(err)
		}
	}
	dir, err := os.MkdirTemp("", "tokenhub-example")
	must(err)
	stops = append(stops, func() { os.RemoveAll(dir) })
	key, err := seal.NewKey()
	must(err)
	keys, err := seal.NewKeyring(key)
	must(err)
	st, err := sqlite.Open(filepath.Join(dir, "tokenhub.db"), keys)
	must(err)
	stops = append(stops, func() { st.Close() })
	b := broker.New(broker.Options{Store: st})
	must(b.Open(context.Background()))
	stops = append(stops, func() { b.Close() })
	adminKey, err = server.NewKey()
	must(err)
	srv := server.New(server.Options{Store: st, Broker: b, AdminKeyHash: server.HashKey(adminKey),
		Proxy: proxy.New(proxy.Options{Tokens: b})})
	ts := httptest.NewServer(srv.Handler())
	stops = append(stops, ts.Close)
	provider := httptest.NewServer(demo.New(demo.Options{}))
	stops = append(stops, provider.Close)

	ctx := context.Background()
	admin := client.New(ts.URL, adminKey)
	_, err = admin.CreateWorkspace(ctx, "acme")
	must(err)
	_, _, err = admin.PutProvider(ctx, demo.Provider())
	must(err)
	cfg := demo.ConnectionConfig(provider.URL)
	_, _, err = admin.PutConnection(ctx, "acme", "baserow", &cfg)
	must(err)
	k, err := admin.CreateApp(ctx, "acme", "reports", nil)
	must(err)
	return ts.URL, adminKey, k.Key, stop
}

// An app reads the token of a connection of its workspace and presents it
// in the header the provider wants.
func ExampleNew() {
	url, _, appKey, stop := tokenhubForExamples()
	defer stop()

	// One Client per key; it is safe for concurrent use.
	c := client.New(url, appKey, client.WithUserAgent("reports/1.0"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := c.Token(ctx, "baserow")
	if err != nil {
		fmt.Println(err)
		return
	}
	// Present it as the connection's provider says: Authorization: JWT <token>.
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://api.baserow.io/api/database/rows/table/1/", nil)
	req.Header.Set(tok.Header.Name, tok.Header.Value)

	fmt.Println(tok.Header.Name, strings.HasPrefix(req.Header.Get("Authorization"), "JWT "))
	fmt.Println(time.Until(tok.ExpiresAt) > 0)
	// Output:
	// Authorization true
	// true
}

// Token's errors carry the server's code: a connection that needs new
// credentials, one the app cannot see, and a provider that is down are told
// apart with errors.Is.
func ExampleClient_Token() {
	url, _, appKey, stop := tokenhubForExamples()
	defer stop()
	c := client.New(url, appKey)

	_, err := c.Token(context.Background(), "no-such-connection")
	switch {
	case errors.Is(err, client.ErrNeedsReauth):
		fmt.Println("update the connection's credentials")
	case errors.Is(err, client.ErrUnavailable):
		var e *client.Error
		errors.As(err, &e)
		fmt.Println("provider down; retry after", e.RetryAfter)
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("no such connection")
	case err != nil:
		fmt.Println(err)
	}
	// Output: no such connection
}

// An admin creates a connection and watches it obtain its first token.
func ExampleClient_PutConnection() {
	url, adminKey, _, stop := tokenhubForExamples()
	defer stop()
	admin := client.New(url, adminKey)
	ctx := context.Background()

	cfg := &tokenhub.ConnectionConfig{
		Provider: "oauth2",
		TokenURL: "https://auth.example.com/oauth/token",
		Grant:    tokenhub.GrantClientCredentials,
		ClientID: "reports-service",
		// A secret: stored encrypted, never shown again.
		ClientSecret: "s3cret",
		Scopes:       []string{"reports.read"},
	}
	v, result, err := admin.PutConnection(ctx, "acme", "reports", cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(result, v.Provider, v.SecretsSet)

	// A bad field is named in the error, and nothing is changed.
	cfg.TokenURL = ""
	_, _, err = admin.PutConnection(ctx, "acme", "reports", cfg)
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code, strings.SplitN(e.Message, ":", 2)[0])
	}
	// Output:
	// created oauth2 [client_secret]
	// 400 invalid token_url
}
