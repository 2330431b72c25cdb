package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tokenhub/tokenhub/client"
)

// Proxy calls a connection's API through tokenhub, so the app holds only its
// app key: tokenhub adds the token on the way. ErrorFrom tells tokenhub's
// own errors from the API's answers, which come back as they are.
func ExampleClient_Proxy() {
	url, _, appKey, stop := tokenhubForExamples()
	defer stop()
	c := client.New(url, appKey)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	get := func(conn, path string) {
		resp, err := c.Proxy(ctx, conn, http.MethodGet, path, nil, http.Header{"Accept": {"application/json"}})
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		if e, ok := client.ErrorFrom(resp); ok {
			// tokenhub's: an unknown connection, one that needs
			// re-authorisation, an upstream that cannot be reached, ...
			fmt.Println("tokenhub:", e.Code, errors.Is(e, client.ErrNotFound))
			return
		}
		if resp.StatusCode != http.StatusOK {
			// The API's own answer, with the API's body.
			fmt.Println("the API:", resp.Status)
			return
		}
		var rows struct {
			Count int `json:"count"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(rows.Count, "rows")
	}

	get("baserow", "/api/database/rows/table/1/?user_field_names=true")
	get("baserow", "/api/database/rows/table/2/")
	get("payroll", "/api/database/rows/table/1/")
	// Output:
	// 4 rows
	// the API: 404 Not Found
	// tokenhub: not_found true
}
