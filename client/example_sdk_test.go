package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenhub/tokenhub/client"
)

// demoRowsURL returns the rows endpoint of the demo Baserow that the
// examples' connection "baserow" points at. A real app knows its API's URL;
// the examples look it up because their demo listens on a random port.
func demoRowsURL(url, adminKey string) string {
	v, err := client.New(url, adminKey).Connection(context.Background(), "acme", "baserow")
	if err != nil {
		panic(err)
	}
	return v.BaseURL + "/api/database/rows/table/1/?user_field_names=true"
}

// A Go service keeps one TokenSource per connection. Reading it costs
// nanoseconds while the token is valid; tokenhub is asked again only shortly
// before the token expires.
func ExampleClient_TokenSource() {
	url, adminKey, appKey, stop := tokenhubForExamples()
	defer stop()
	c := client.New(url, appKey)

	// The context is used for every fetch the source makes: give it one
	// that lives as long as the source.
	ts := c.TokenSource(context.Background(), "baserow")

	tok, err := ts.Token()
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := ts.Token() // from the cache: no call to tokenhub
	fmt.Println(tok.Type(), tok.Valid(), again == tok)

	// The token type is the connection's Authorization scheme, so x/oauth2's
	// own client presents it as Baserow wants: Authorization: JWT <token>.
	hc := oauth2.NewClient(context.Background(), ts)
	resp, err := hc.Get(demoRowsURL(url, adminKey))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output:
	// JWT true true
	// 200 OK
}

// Transport puts the connection's header on each request. When the API
// answers 401 (the token was revoked early, say), it asks tokenhub for a new
// token and sends the request again, once.
func ExampleClient_Transport() {
	url, adminKey, appKey, stop := tokenhubForExamples()
	defer stop()
	c := client.New(url, appKey)

	// Wrap the transport you already use; nil means http.DefaultTransport.
	hc := &http.Client{
		Transport: c.Transport("baserow", http.DefaultTransport),
		Timeout:   10 * time.Second,
	}
	resp, err := hc.Get(demoRowsURL(url, adminKey))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var rows struct {
		Count   int `json:"count"`
		Results []struct {
			Name string `json:"Name"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, rows.Count, rows.Results[0].Name)
	// Output: 200 4 Ada Lovelace
}

// HTTPClient is the shortest way to call a connection's API. Failures to get
// a token come back as *client.Error inside the *url.Error, so the app can
// tell "needs new credentials" from "tokenhub is down".
func ExampleClient_HTTPClient() {
	url, adminKey, appKey, stop := tokenhubForExamples()
	defer stop()
	c := client.New(url, appKey)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, demoRowsURL(url, adminKey), nil)
	resp, err := c.HTTPClient("baserow").Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)

	// A connection the app cannot read.
	_, err = c.HTTPClient("payroll").Get(demoRowsURL(url, adminKey))
	var e *client.Error
	switch {
	case errors.Is(err, client.ErrNeedsReauth):
		fmt.Println("the connection needs new credentials")
	case errors.As(err, &e):
		fmt.Println(e.Status, e.Code, strings.Contains(e.Message, "payroll"))
	case err != nil:
		fmt.Println(err)
	}
	// Output:
	// 200 OK
	// 404 not_found true
}
