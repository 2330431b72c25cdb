// Package seal encrypts tokenhub's secrets at rest with AES-256-GCM.
//
// Every sealed value records which key sealed it, so keys can be rotated: a
// Keyring holds one primary key, used for all new values, and any number of
// old keys, used only to open values sealed before a rotation. Stores find
// values that need re-encrypting with IsPrimary.
//
// A sealed value is laid out as
//
//	version (1 byte, 0x01) | key id (4 bytes) | nonce (12 bytes) | ciphertext and GCM tag
//
// The version byte and key id are authenticated along with the caller's
// associated data, which should name the row and field a value belongs to, so
// that a ciphertext copied to another row or field fails to open.
//
// Only the standard library is used. No function in this package puts key
// bytes or plaintext in an error message.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

const (
	version   = 0x01
	idSize    = 4
	nonceSize = 12
	tagSize   = 16
	headSize  = 1 + idSize + nonceSize
)

// keyIDDomain separates key ids from any other SHA-256 use of the key bytes.
const keyIDDomain = "tokenhub seal key id v1\x00"

// Errors returned by Open. They can be tested with errors.Is; the messages
// are meant to be shown to operators as they are.
var (
	// ErrTruncated means the value is too short to be a sealed value.
	ErrTruncated = errors.New("truncated ciphertext")
	// ErrAuth means the value did not authenticate: the key is wrong (a key
	// with a colliding id), the data is corrupt, or the associated data does
	// not match, for instance because the value was copied from another row.
	ErrAuth = errors.New("wrong key or corrupt data (authentication failed)")
	// ErrUnknownKey matches an *UnknownKeyError.
	ErrUnknownKey = errors.New("sealed with a key that is not in the keyring")
)

// UnknownKeyError reports a value sealed with a key the keyring lacks. ID is
// the key id recorded in the value; it is derived from the key by a one-way
// function and is safe to show.
type UnknownKeyError struct {
	ID string
}

// Error implements the error interface.
func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("sealed with key %s, which is not in the keyring (wrong TOKENHUB_KEY or key file?)", e.ID)
}

// Is makes errors.Is(err, ErrUnknownKey) true for an *UnknownKeyError.
func (e *UnknownKeyError) Is(target error) bool { return target == ErrUnknownKey }

// VersionError reports a value whose leading version byte this package does
// not know: corrupt data, or a value written by a newer tokenhub.
type VersionError struct {
	Version byte
}

// Error implements the error interface.
func (e *VersionError) Error() string {
	return fmt.Sprintf("unknown sealed format version %d (corrupt data, or written by a newer tokenhub?)", e.Version)
}

// KeyID returns the short, stable id of key: the first 4 bytes, in hex, of
// SHA-256 over a domain-separated input. It reveals nothing useful about the
// key, so it may be logged and shown in errors.
func KeyID(key []byte) string {
	id := rawID(key)
	return hex.EncodeToString(id[:])
}

func rawID(key []byte) [idSize]byte {
	h := sha256.New()
	h.Write([]byte(keyIDDomain))
	h.Write(key)
	var id [idSize]byte
	copy(id[:], h.Sum(nil))
	return id
}

type entry struct {
	id   [idSize]byte
	aead cipher.AEAD
}

// Keyring seals values under its primary key and opens values sealed under
// any of its keys. A Keyring is immutable after NewKeyring and safe for
// concurrent use.
type Keyring struct {
	keys []entry // keys[0] is the primary
}

// NewKeyring returns a keyring whose primary key is primary; old keys are
// kept only to open values sealed before a rotation. Every key must be
// KeySize bytes, and no two keys may share an id. The error names a bad key
// by its position (key 1 is the primary) and never shows key bytes.
func NewKeyring(primary []byte, old ...[]byte) (*Keyring, error) {
	all := append([][]byte{primary}, old...)
	k := &Keyring{keys: make([]entry, 0, len(all))}
	for i, key := range all {
		if len(key) != KeySize {
			return nil, fmt.Errorf("%s: must be %d bytes, got %d", keyName(i), KeySize, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyName(i), err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyName(i), err)
		}
		e := entry{id: rawID(key), aead: aead}
		for j, prev := range k.keys {
			if prev.id == e.id {
				return nil, fmt.Errorf("%s has the same id %s as %s (the same key given twice?)", keyName(i), hex.EncodeToString(e.id[:]), keyName(j))
			}
		}
		k.keys = append(k.keys, e)
	}
	return k, nil
}

func keyName(i int) string {
	if i == 0 {
		return "key 1 (the primary)"
	}
	return fmt.Sprintf("key %d", i+1)
}

// PrimaryID returns the id of the primary key.
func (k *Keyring) PrimaryID() string {
	return hex.EncodeToString(k.keys[0].id[:])
}

// IDs returns the ids of every key, the primary first.
func (k *Keyring) IDs() []string {
	out := make([]string, len(k.keys))
	for i, e := range k.keys {
		out[i] = hex.EncodeToString(e.id[:])
	}
	return out
}

// Seal encrypts plaintext under the primary key with a fresh random nonce,
// binding it to ad, which must be given again to Open. It fails only if the
// system's random source does.
func (k *Keyring) Seal(plaintext, ad []byte) ([]byte, error) {
	p := k.keys[0]
	out := make([]byte, headSize, headSize+len(plaintext)+tagSize)
	out[0] = version
	copy(out[1:1+idSize], p.id[:])
	if _, err := rand.Read(out[1+idSize : headSize]); err != nil {
		return nil, fmt.Errorf("seal: read nonce: %w", err)
	}
	return p.aead.Seal(out, out[1+idSize:headSize], plaintext, additional(out[:1+idSize], ad)), nil
}

// Open decrypts a value made by Seal with the same ad. It fails with
// ErrTruncated for a value too short to be sealed, a *VersionError for an
// unknown format, an *UnknownKeyError when the key that sealed it is not in
// the keyring, and ErrAuth when the value does not authenticate.
func (k *Keyring) Open(ciphertext, ad []byte) ([]byte, error) {
	if len(ciphertext) < headSize+tagSize {
		return nil, ErrTruncated
	}
	if ciphertext[0] != version {
		return nil, &VersionError{Version: ciphertext[0]}
	}
	e := k.find(ciphertext[1 : 1+idSize])
	if e == nil {
		return nil, &UnknownKeyError{ID: hex.EncodeToString(ciphertext[1 : 1+idSize])}
	}
	pt, err := e.aead.Open(nil, ciphertext[1+idSize:headSize], ciphertext[headSize:], additional(ciphertext[:1+idSize], ad))
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// IsPrimary reports whether ciphertext was sealed under the primary key. It
// is false for values sealed under an old key, which need resealing, and for
// values that are not sealed values at all.
func (k *Keyring) IsPrimary(ciphertext []byte) bool {
	return len(ciphertext) >= headSize+tagSize && ciphertext[0] == version &&
		bytes.Equal(ciphertext[1:1+idSize], k.keys[0].id[:])
}

func (k *Keyring) find(id []byte) *entry {
	for i := range k.keys {
		if bytes.Equal(k.keys[i].id[:], id) {
			return &k.keys[i]
		}
	}
	return nil
}

// additional returns the GCM associated data: the value's header followed by
// the caller's ad, so that the version and key id are authenticated too.
func additional(head, ad []byte) []byte {
	out := make([]byte, 0, len(head)+len(ad))
	return append(append(out, head...), ad...)
}

// NewKey returns a new random key.
func NewKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	return key, nil
}
