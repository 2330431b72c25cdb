package client

import (
	"context"
	"net/http"

	"golang.org/x/oauth2"

	"github.com/tokenhub/tokenhub/internal/clock"
)

// TokenSourceWithClock is TokenSource with its clock and timers taken from
// clk, so that tests drive expiry with a clock.Fake instead of sleeping.
func TokenSourceWithClock(c *Client, ctx context.Context, conn string, clk clock.Clock) oauth2.TokenSource {
	return c.newTokenSource(ctx, conn, clk)
}

// TransportWithClock is Transport with its clock and timers taken from clk.
func TransportWithClock(c *Client, conn string, base http.RoundTripper, clk clock.Clock) http.RoundTripper {
	return c.newTransport(conn, base, clk)
}
