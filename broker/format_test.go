package broker_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
)

// A Current holds the token twice (in Token and in HeaderValue); neither
// may come out of fmt or slog.
func TestCurrentRedacts(t *testing.T) {
	cur := &broker.Current{Token: &tokenhub.Token{AccessToken: "ACCESS-1", RefreshToken: "REFRESH-2"},
		HeaderName: "Authorization", HeaderValue: "JWT ACCESS-1"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "cur", cur)
	out := logs.String() + fmt.Sprintf("%v %+v %#v %s", cur, cur, cur, cur)
	if strings.Contains(out, "ACCESS-1") || strings.Contains(out, "REFRESH-2") {
		t.Errorf("a secret leaked: %s", out)
	}
	if !strings.Contains(out, "Authorization") {
		t.Errorf("the header name is missing: %s", out)
	}
}
