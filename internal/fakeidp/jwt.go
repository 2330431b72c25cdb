package fakeidp

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Errors returned by Signer.Verify. They say why a token was refused, so a
// server can answer the way the provider it imitates does.
var (
	ErrMalformed = errors.New("token is malformed")
	ErrSignature = errors.New("token signature is invalid")
	ErrExpired   = errors.New("token has expired")
)

// Signer mints and checks HS256 JWTs (RFC 7519) with a random secret that
// never leaves the process. Rotate replaces the secret, which invalidates
// every token signed before, the way a provider revokes a whole family of
// tokens. A Signer is safe for concurrent use.
type Signer struct {
	mu  sync.RWMutex
	key []byte
}

// NewSigner returns a Signer with a fresh random 256-bit secret.
func NewSigner() *Signer {
	s := &Signer{}
	s.Rotate()
	return s
}

// Rotate replaces the secret: tokens signed before no longer verify.
func (s *Signer) Rotate() {
	key := make([]byte, 32)
	rand.Read(key)
	s.mu.Lock()
	s.key = key
	s.mu.Unlock()
}

// jwtHeader is the fixed JOSE header of every token a Signer makes.
var jwtHeader = b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Sign returns the compact serialisation of a JWT carrying claims. It fails
// only if claims cannot be marshalled to JSON.
func (s *Signer) Sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("marshal claims: %w", err)
	}
	signingInput := jwtHeader + "." + b64.EncodeToString(payload)
	return signingInput + "." + b64.EncodeToString(s.mac(signingInput)), nil
}

// Verify checks token's signature and, when it has an exp claim, that exp is
// after now. It returns the claims (numbers as json.Number) or ErrMalformed,
// ErrSignature or ErrExpired.
func (s *Signer) Verify(token string, now time.Time) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, ErrMalformed
	}
	header, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, ErrMalformed
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(header, &h) != nil {
		return nil, ErrMalformed
	}
	if h.Alg != "HS256" {
		return nil, ErrSignature
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, ErrMalformed
	}
	if !hmac.Equal(sig, s.mac(parts[0]+"."+parts[1])) {
		return nil, ErrSignature
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, ErrMalformed
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if dec.Decode(&claims) != nil || claims == nil {
		return nil, ErrMalformed
	}
	if exp, ok := claims["exp"]; ok {
		n, ok := exp.(json.Number)
		if !ok {
			return nil, ErrMalformed
		}
		secs, err := n.Int64()
		if err != nil {
			return nil, ErrMalformed
		}
		if !now.Before(time.Unix(secs, 0)) {
			return nil, ErrExpired
		}
	}
	return claims, nil
}

func (s *Signer) mac(signingInput string) []byte {
	s.mu.RLock()
	m := hmac.New(sha256.New, s.key)
	s.mu.RUnlock()
	m.Write([]byte(signingInput))
	return m.Sum(nil)
}
