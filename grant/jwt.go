package grant

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxUnix is 9999-12-31T23:59:59Z: an exp beyond it is not a date.
const maxUnix = 253402300799

// JWTExpiry returns the exp claim of token when token is a JWT in compact
// form (header.payload.signature) whose payload is a JSON object with a
// numeric exp (RFC 7519 §4.1.4, seconds since the epoch, fractions allowed).
//
// It does not check the signature: tokenhub only wants to know when the
// provider means the token to expire, and the provider checks the rest. The
// payload may be base64url with or without padding (standard base64 is
// tolerated too). Anything else (an opaque token, a JWE, a payload that is
// not JSON, an exp that is missing, not a number, or not a date between 1970
// and 9999) yields false, so callers fall through to the next source of
// expiry.
func JWTExpiry(token string) (time.Time, bool) {
	header, rest, ok := strings.Cut(token, ".")
	if !ok || header == "" {
		return time.Time{}, false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return time.Time{}, false
	}
	payload = strings.TrimRight(payload, "=")
	if payload == "" || len(payload) > 64<<10 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(payload); err != nil {
			return time.Time{}, false
		}
	}
	// A map, not a struct: claim names are case-sensitive, and
	// encoding/json matches struct fields without regard to case.
	var claims map[string]json.RawMessage
	if json.Unmarshal(b, &claims) != nil {
		return time.Time{}, false
	}
	raw := bytes.TrimSpace(claims["exp"])
	if len(raw) == 0 || !(raw[0] >= '0' && raw[0] <= '9') {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 1 || f > maxUnix {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
}
