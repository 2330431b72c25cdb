package client

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenhub/tokenhub"
)

// statusByCode is THE table that maps tokenhub's error codes to HTTP status
// codes. The server answers with StatusCode(code) and the client maps a
// status without a JSON body back with CodeForStatus, so the two sides can
// never disagree.
var statusByCode = map[string]int{
	tokenhub.EINVALID:      http.StatusBadRequest,
	tokenhub.EUNAUTHORIZED: http.StatusUnauthorized,
	tokenhub.EFORBIDDEN:    http.StatusForbidden,
	tokenhub.ENOTFOUND:     http.StatusNotFound,
	tokenhub.ECONFLICT:     http.StatusConflict,
	tokenhub.ENEEDSREAUTH:  http.StatusConflict,
	tokenhub.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	tokenhub.EUNAVAILABLE:  http.StatusServiceUnavailable,
	tokenhub.EINTERNAL:     http.StatusInternalServerError,
}

// StatusCode returns the HTTP status that answers an error with the given
// tokenhub code (see tokenhub.EINVALID and its siblings). An unknown code is
// treated as internal and yields 500.
func StatusCode(code string) int {
	if s, ok := statusByCode[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeForStatus returns the tokenhub error code for an HTTP status that came
// without a tokenhub JSON error body, for example from a load balancer in
// front of tokenhub. 409 maps to ECONFLICT (a needs_reauth answer always
// carries its code in the body). It returns "" for a 2xx or 3xx status.
func CodeForStatus(status int) string {
	switch {
	case status < 400:
		return ""
	case status == http.StatusConflict:
		return tokenhub.ECONFLICT
	case status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return tokenhub.EUNAVAILABLE
	}
	for code, s := range statusByCode {
		if s == status && code != tokenhub.ENEEDSREAUTH {
			return code
		}
	}
	if status >= 500 {
		return tokenhub.EINTERNAL
	}
	return tokenhub.EINVALID
}

// Error is a non-2xx answer of the tokenhub API. Code is one of tokenhub's
// error codes (tokenhub.EINVALID, tokenhub.ENEEDSREAUTH, ...), Message is the
// server's explanation (it names the bad field of a 400, and never holds a
// secret), RetryAfter is the server's Retry-After (set on 503 answers), and
// State is the connection's state when the server reported one (on
// needs_reauth answers).
//
// Use errors.Is with the sentinel errors (ErrNotFound, ErrNeedsReauth, ...)
// to branch on the code, or errors.As to read the fields. An *Error also
// unwraps to an equivalent *tokenhub.Error, so tokenhub.ErrorCode(err) and
// tokenhub.ErrorMessage(err) report the server's code and message.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
	State      tokenhub.State
}

// Sentinel errors for errors.Is. Each matches any *Error with the same Code,
// whatever its status or message. Do not modify them.
var (
	ErrInvalid      = &Error{Code: tokenhub.EINVALID}
	ErrUnauthorized = &Error{Code: tokenhub.EUNAUTHORIZED}
	ErrForbidden    = &Error{Code: tokenhub.EFORBIDDEN}
	ErrNotFound     = &Error{Code: tokenhub.ENOTFOUND}
	ErrConflict     = &Error{Code: tokenhub.ECONFLICT}
	ErrNeedsReauth  = &Error{Code: tokenhub.ENEEDSREAUTH}
	ErrTooLarge     = &Error{Code: tokenhub.ETOOLARGE}
	ErrUnavailable  = &Error{Code: tokenhub.EUNAVAILABLE}
	ErrInternal     = &Error{Code: tokenhub.EINTERNAL}
)

// Error implements the error interface. The text holds the status, the code
// and the server's message; never the key the request was made with.
func (e *Error) Error() string {
	if e.Status == 0 {
		return "tokenhub: " + e.Code
	}
	s := fmt.Sprintf("tokenhub: %d %s: %s", e.Status, e.Code, e.Message)
	if e.RetryAfter > 0 {
		s += " (retry after " + e.RetryAfter.String() + ")"
	}
	return s
}

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, client.ErrNeedsReauth) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Unwrap returns the equivalent *tokenhub.Error, so that code written against
// the domain's errors (tokenhub.ErrorCode) works with API errors too.
func (e *Error) Unwrap() error {
	return &tokenhub.Error{Code: e.Code, Message: e.Message, RetryAfter: e.RetryAfter}
}

// ErrorHeader is the response header that marks an answer as one of
// tokenhub's own errors; its value is the error's code. The server and the
// proxy set it on every JSON error they write, and the proxy removes it from
// the upstream's answers. It is how a caller of the proxy route (Proxy) tells
// tokenhub's errors (an unknown connection, one that needs
// re-authorisation, an upstream that cannot be reached) from the API's own
// error answers, which pass through unchanged and may well look alike.
const ErrorHeader = "X-Tokenhub-Error"

// ErrorFrom reports whether resp is one of tokenhub's own error answers, as
// marked by ErrorHeader, and if so returns it as an *Error with the server's
// status, code, message, state and Retry-After. Use it on the answers of
// Proxy, where an error status may as well be the upstream API's.
//
// An answer without the header is not tokenhub's: ErrorFrom returns nil and
// false without reading its body. An answer with it has its body read (up to
// 64 KiB) but not closed; the caller still closes it. When that body holds
// no JSON error, the *Error carries the header's code. ErrorFrom is safe for
// concurrent use on different responses.
func ErrorFrom(resp *http.Response) (*Error, bool) {
	if resp == nil || resp.Header.Get(ErrorHeader) == "" {
		return nil, false
	}
	return errorFrom(resp, time.Now()), true
}

// ErrorBody is the JSON shape of every error answer of the API:
// {"error":{"code","message"}}, with "state" added when the error concerns a
// connection's state (needs_reauth). Package server writes it.
type ErrorBody struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		State   tokenhub.State `json:"state,omitempty"`
	} `json:"error"`
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3). It returns 0 when the header is absent or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
