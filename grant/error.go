package grant

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Error is a failed obtain or refresh. It says what the provider answered
// (StatusCode, and its error Code and Description when it sent them) and
// what the failure means for the caller (Permanent, RetryAfter).
//
// Its text names the operation, the status and the provider's code and
// description; it never holds a request or response body, the query of a
// URL, or a secret of the connection (any that a provider echoes in its
// description is replaced by REDACTED).
type Error struct {
	// Op is OpObtain or OpRefresh.
	Op string
	// StatusCode is the HTTP status of the answer; 0 when none came.
	StatusCode int
	// Code and Description are the provider's error code and explanation:
	// OAuth 2.0's error and error_description (RFC 6749 §5.2), or a login
	// API's equivalents, such as Baserow's error and detail.
	Code, Description string
	// RetryAfter is the provider's Retry-After, as a delay from now; 0 when
	// it sent none.
	RetryAfter time.Duration
	// Permanent means the grant is dead: trying again with the same
	// credentials or refresh token will fail the same way (invalid_grant,
	// invalid_client, a 400 or 401). Transient failures (no answer, a
	// timeout, 5xx, 429, a 200 without a usable token) may pass.
	Permanent bool
	// Err is the underlying failure when there is one: a network error, a
	// timeout, a response that could not be read, a template that would not
	// render.
	Err error
}

// Error returns a one-line account such as
// "grant: refresh: HTTP 400: invalid_grant: refresh token expired".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("grant: ")
	b.WriteString(e.Op)
	if e.StatusCode != 0 {
		b.WriteString(": HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		if e.Code == "" && e.Description == "" && e.Err == nil {
			b.WriteString(" ")
			b.WriteString(http.StatusText(e.StatusCode))
		}
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns Err, so errors.Is(err, context.DeadlineExceeded) and
// errors.As(err, &netErr) see through an *Error.
func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err holds an *Error marked Permanent. Any
// other error, nil included, is not permanent.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// RetryAfter returns the Retry-After delay of the *Error in err's chain, or
// 0 when there is none.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// permanentCodes are the OAuth 2.0 error codes (RFC 6749 §5.2) that no retry
// will cure.
var permanentCodes = map[string]bool{
	"invalid_request":        true,
	"invalid_client":         true,
	"invalid_grant":          true,
	"unauthorized_client":    true,
	"unsupported_grant_type": true,
	"invalid_scope":          true,
	"access_denied":          true,
}

// transientCodes are error codes that say "try later" whatever the status.
var transientCodes = map[string]bool{
	"temporarily_unavailable": true,
	"server_error":            true,
	"slow_down":               true,
}

// permanentStatus classifies a failed answer: timeouts, throttling and
// server errors pass; other client errors (400, 401, 403, 404, ...) and
// redirects do not, unless the provider's code says to try later.
func permanentStatus(status int, code string) bool {
	switch {
	case transientCodes[code]:
		return false
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return false
	case status >= 500:
		return false
	case status >= 300:
		return true
	}
	return false
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): a number
// of seconds or an HTTP-date, which is turned into a delay from now. A
// missing, malformed or past value gives 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	const limit = 7 * 24 * time.Hour
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(limit/time.Second) {
			return limit
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), limit)
}

// parseErrorBody finds the provider's error code and description in an
// error answer. It knows OAuth 2.0's {"error","error_description"} (as JSON
// or a form), login APIs' {"error","detail"} where detail is a string, a
// list or an object of field errors, Django REST framework's
// {"detail"}, {"non_field_errors":[...]} and {"field":["..."]}, and
// {"error":{"code","message","status"}} and {"message"}.
//
// success says the answer was a 2xx that did not map to a token. Such an
// answer may hold new tokens, so only its explicit error fields are read,
// never bare field lists ({"tokens":["..."]} is not an error).
//
// The texts are returned raw: redact removes the secrets from them and only
// then cleans them, so that cutting or folding a text cannot break up a
// secret before it is looked for.
func parseErrorBody(body []byte, contentType string, success bool) (code, description string) {
	mt, _, _ := mime.ParseMediaType(contentType)
	trimmed := bytes.TrimSpace(body)
	if mt == "application/x-www-form-urlencoded" || (mt == "text/plain" && !bytes.HasPrefix(trimmed, []byte("{"))) {
		v, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return "", ""
		}
		return v.Get("error"), v.Get("error_description")
	}
	var doc map[string]any
	if json.Unmarshal(trimmed, &doc) != nil {
		return "", ""
	}
	switch v := doc["error"].(type) {
	case string:
		code = v
	case map[string]any:
		// {"error":{"code":401,"message":"...","status":"UNAUTHENTICATED"}}
		if s, ok := v["status"].(string); ok {
			code = s
		} else if s, ok := v["code"].(string); ok {
			code = s
		} else if n, ok := v["code"].(float64); ok {
			code = strconv.FormatFloat(n, 'f', -1, 64)
		}
		description = messages(v["message"])
	}
	for _, k := range []string{"error_description", "detail", "non_field_errors", "message", "error_message"} {
		if description != "" {
			break
		}
		description = messages(doc[k])
	}
	if code == "" && description == "" && !success {
		// {"email":["This field is required."]}: field errors only.
		description = fieldErrors(doc)
	}
	return code, description
}

// messages flattens a string, a list of messages, or an object of field
// errors into one line.
func messages(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []any:
		var parts []string
		for _, x := range v {
			switch x := x.(type) {
			case string:
				parts = append(parts, x)
			case map[string]any:
				// Baserow: [{"error":"This field is required.","code":"required"}]
				if s := messages(x["error"]); s != "" {
					parts = append(parts, s)
				} else if s := messages(x["message"]); s != "" {
					parts = append(parts, s)
				}
			}
		}
		return strings.Join(parts, " ")
	case map[string]any:
		return fieldErrors(v)
	}
	return ""
}

// fieldErrors renders {"field": ["message", ...], ...} as
// "field: message; field: message", in field order.
func fieldErrors(doc map[string]any) string {
	var parts []string
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if _, isList := doc[k].([]any); !isList {
			if _, isObj := doc[k].(map[string]any); !isObj {
				continue
			}
		}
		if m := messages(doc[k]); m != "" {
			parts = append(parts, k+": "+m)
		}
	}
	return strings.Join(parts, "; ")
}

// cleanText makes a provider's text safe to log on one line: control
// characters become spaces, runs of space collapse, and it is cut to 300
// characters.
func cleanText(s string) string {
	if s == "" {
		return ""
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	var b strings.Builder
	space := false
	n := 0
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if n++; n > 300 {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// cleanCode keeps an error code only when it looks like one: short and
// printable.
func cleanCode(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 100 {
		return ""
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || !unicode.IsPrint(r) {
			return ""
		}
	}
	return s
}

// minSecretLen is the shortest secret that redact looks for: shorter
// strings would match ordinary text.
const minSecretLen = 4

// redact replaces every secret found in e's code and description with
// REDACTED, and hides Err behind a redacted text when its text holds one;
// then it cleans the code and the description (cleanCode, cleanText). Every
// *Error a Client returns has been through it; it may run twice.
//
// Each secret is looked for as it is and form-encoded (as a provider that
// echoes its request body would show it), longest first, so that a secret
// that holds a shorter one is replaced whole. It returns e.
func (e *Error) redact(secrets []string) *Error {
	var forms []string
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		forms = append(forms, s)
		if q := url.QueryEscape(s); q != s {
			forms = append(forms, q)
		}
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	for _, s := range forms {
		e.Code = strings.ReplaceAll(e.Code, s, "REDACTED")
		e.Description = strings.ReplaceAll(e.Description, s, "REDACTED")
		if e.Err != nil {
			if msg := e.Err.Error(); strings.Contains(msg, s) {
				e.Err = &redactedError{msg: strings.ReplaceAll(msg, s, "REDACTED"), err: e.Err}
			}
		}
	}
	e.Code, e.Description = cleanCode(e.Code), cleanText(e.Description)
	return e
}

// redactedError shows a redacted text while keeping the original error
// reachable with errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (r *redactedError) Error() string { return r.msg }
func (r *redactedError) Unwrap() error { return r.err }
