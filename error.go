package tokenhub

import (
	"errors"
	"fmt"
	"time"
)

// Error codes. The set is fixed: the HTTP server maps each code to one status,
// and the client maps the status back. Anything that is not an *Error is an
// internal error: users see "internal error" and the log gets the detail.
const (
	EINVALID      = "invalid"      // bad input: the message names the field
	ENOTFOUND     = "not_found"    // no such object, or not visible to the caller
	ECONFLICT     = "conflict"     // the object changed under the caller, or already exists
	EUNAUTHORIZED = "unauthorized" // missing or wrong key
	EFORBIDDEN    = "forbidden"    // the key is valid but may not do this
	ENEEDSREAUTH  = "needs_reauth" // the connection's grant is dead and it cannot log in again
	EUNAVAILABLE  = "unavailable"  // the provider cannot be reached and no valid token exists
	ETOOLARGE     = "too_large"    // request body too large
	EINTERNAL     = "internal"     // a bug or an unexpected failure
)

// Error is an error meant for the user of tokenhub. Its Message never holds a
// secret. RetryAfter, when set, tells the caller when trying again makes sense.
type Error struct {
	Code       string
	Message    string
	RetryAfter time.Duration
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("tokenhub: %s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for a nil
// error and EINTERNAL for any other error.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the first *Error in err's chain, ""
// for a nil error and "internal error" for any other error, so that details
// of unexpected failures never reach a user.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
