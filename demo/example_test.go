package demo_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/tokenhub/tokenhub/demo"
)

// Log in to a demo provider the way the hand-written recipe logged in to
// Baserow, then read rows with Authorization: JWT <token>.
func Example() {
	ts := httptest.NewServer(demo.New(demo.Options{}))
	defer ts.Close()

	resp, err := http.Post(ts.URL+demo.PathTokenAuth, "application/json",
		strings.NewReader(`{"email":"demo@tokenhub.local","password":"demo-password"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()

	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/database/rows/table/1/?user_field_names=true", nil)
	req.Header.Set("Authorization", "JWT "+login.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var rows struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}
	json.NewDecoder(resp.Body).Decode(&rows)
	fmt.Println(resp.StatusCode, rows.Count, rows.Results[0]["Name"])
	// Output: 200 4 Ada Lovelace
}
