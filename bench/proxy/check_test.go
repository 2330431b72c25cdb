package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/bench/internal/load"
	"github.com/tokenhub/tokenhub/bench/internal/wired"
)

// check passes a target only when it answers the upstream's page, which the
// upstream gives only to requests that carry the token's header: the two
// proxies inject it, and the upstream refuses a request without it.
func TestCheck(t *testing.T) {
	up := httptest.NewServer(newUpstream())
	defer up.Close()
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	bare := httptest.NewServer(bareProxy(u))
	defer bare.Close()
	hs := &http.Server{}
	o, cleanup, err := ours(hs, u)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	oursSrv := httptest.NewServer(hs.Handler)
	defer oursSrv.Close()
	info, err := o.Ready(oursSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// A proxy that forwards without adding the header.
	forgetful := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := http.Get(up.URL + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		w.WriteHeader(res.StatusCode)
		io.Copy(w, res.Body)
	}))
	defer forgetful.Close()
	// An API that answers something else.
	short := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"count":0,"results":[]}`))
	}))
	defer short.Close()

	app := http.Header{"Authorization": {"Bearer " + info[wired.InfoAppKey]}}
	for _, tc := range []struct {
		name    string
		target  load.Target
		wantErr string // "" for a pass
	}{
		{"direct with the token", load.Target{URL: up.URL + apiPath, Header: http.Header{"Authorization": {headerVal}}}, ""},
		{"direct without", load.Target{URL: up.URL + apiPath}, "no Authorization"},
		{"direct with another", load.Target{URL: up.URL + apiPath, Header: app}, "another Authorization"},
		{"bare", load.Target{URL: bare.URL + apiPath}, ""},
		{"ours", load.Target{URL: oursSrv.URL + "/v1/proxy/" + wired.Connection + apiPath, Header: app}, ""},
		{"ours without the app key", load.Target{URL: oursSrv.URL + "/v1/proxy/" + wired.Connection + apiPath}, "401"},
		{"a proxy that does not inject", load.Target{URL: forgetful.URL + apiPath}, "no Authorization"},
		{"another page", load.Target{URL: short.URL + apiPath}, "want the upstream's 512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := load.NewClient(1)
			defer c.Close()
			tc.target.Name = tc.name
			err := check(context.Background(), c, &tc.target)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("check: %v, want a pass", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("check: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
