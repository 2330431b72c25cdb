package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
)

// defaultRetryAfter is the Retry-After sent with a 503 when the engine gave
// no hint of its own.
const defaultRetryAfter = 5 * time.Second

// writeError answers err in tokenhub's JSON error format with the status of
// its code, from the one code→status table the server and the client share
// (client.StatusCode).
func writeError(w http.ResponseWriter, err error) {
	writeErrorStatus(w, client.StatusCode(tokenhub.ErrorCode(err)), err)
}

// writeErrorStatus answers err as {"error":{"code","message"}} (client.ErrorBody,
// as the server writes it) with status. The message is
// tokenhub.ErrorMessage's, so an error that is not a *tokenhub.Error shows
// as "internal error". A 503 always carries Retry-After. The answer is
// marked with the code in client.ErrorHeader, so that the app can tell it
// from the upstream's own answers, from which the proxy removes that header.
func writeErrorStatus(w http.ResponseWriter, status int, err error) {
	var body client.ErrorBody
	body.Error.Code = tokenhub.ErrorCode(err)
	body.Error.Message = tokenhub.ErrorMessage(err)
	if body.Error.Code == tokenhub.ENEEDSREAUTH {
		body.Error.State = tokenhub.StateNeedsReauth
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(client.ErrorHeader, body.Error.Code)
	if status == http.StatusServiceUnavailable {
		after := defaultRetryAfter
		if te := (*tokenhub.Error)(nil); errors.As(err, &te) && te.RetryAfter > 0 {
			after = te.RetryAfter
		}
		h.Set("Retry-After", strconv.FormatInt(int64((after+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(&body)
}
