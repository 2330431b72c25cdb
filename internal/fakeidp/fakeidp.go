// Package fakeidp holds the parts that tokenhub's own identity providers
// share: the Baserow-compatible demo provider (package demo) and the OAuth 2.0
// authorization server used in tests (package providertest). Both mint
// HS256-signed JWTs, both must be made to fail on demand in the same ways, and
// both answer JSON; keeping that here means the two servers differ only in the
// protocol they speak.
package fakeidp

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// RandomString returns n random bytes as a hex string. It is what the servers
// use for opaque tokens and JWT ids.
func RandomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails, see crypto/rand.Read
	return hex.EncodeToString(b)
}

// WriteJSON writes v as the JSON body of a response with the given status.
// Extra headers must be set on w before the call.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// b64 is the encoding of JWT segments: base64url without padding (RFC 7515 §2).
var b64 = base64.RawURLEncoding
