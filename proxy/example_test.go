package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/proxy"
)

// demoTokens stands in for *broker.Broker: one connection, one token.
type demoTokens struct{ base *url.URL }

func (d demoTokens) Token(ctx context.Context, ws, name string) (*broker.Current, error) {
	return &broker.Current{
		Token:      &tokenhub.Token{AccessToken: "eyJdemo"},
		HeaderName: "Authorization", HeaderValue: "JWT eyJdemo",
	}, nil
}

func (d demoTokens) Refresh(ctx context.Context, ws, name string) (*broker.Current, error) {
	return d.Token(ctx, ws, name)
}

func (d demoTokens) Upstream(ws, name string) (*broker.Upstream, error) {
	if ws != "demo" || name != "baserow" {
		return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "connection %s/%s not found", ws, name)
	}
	return &broker.Upstream{BaseURL: d.base}, nil
}

func (d demoTokens) Record(ctx context.Context, ws, name string, typ tokenhub.EventType, msg string) error {
	return nil
}

// The server mounts the proxy under /v1/proxy/{connection}/ after checking
// the app key; the app asks for a Baserow table and never sees the token.
func Example() {
	baserow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("Baserow got %s %s with Authorization %q\n", r.Method, r.RequestURI, r.Header.Get("Authorization"))
		io.WriteString(w, `{"count":1,"results":[{"id":1,"Name":"Ada"}]}`)
	}))
	defer baserow.Close()
	base, _ := url.Parse(baserow.URL)

	h := proxy.New(proxy.Options{Tokens: demoTokens{base: base}})
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/proxy/{conn}/", func(w http.ResponseWriter, r *http.Request) {
		// The real server authenticates the app key here and finds its workspace.
		conn := r.PathValue("conn")
		h.ServeProxy(w, r, "demo", conn, strings.TrimPrefix(r.URL.EscapedPath(), "/v1/proxy/"+conn))
	})
	tokenhubSrv := httptest.NewServer(mux)
	defer tokenhubSrv.Close()

	req, _ := http.NewRequest("GET", tokenhubSrv.URL+"/v1/proxy/baserow/api/database/rows/table/1/?user_field_names=true", nil)
	req.Header.Set("Authorization", "Bearer app-key")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Println(res.StatusCode, string(body))

	// Output:
	// Baserow got GET /api/database/rows/table/1/?user_field_names=true with Authorization "JWT eyJdemo"
	// 200 {"count":1,"results":[{"id":1,"Name":"Ada"}]}
}
