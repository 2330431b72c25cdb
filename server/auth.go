package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub"
)

// KeyPrefix starts every key made by NewKey, so that secret scanners can
// recognise a leaked tokenhub key.
const KeyPrefix = "thk_"

// NewKey returns a new random key: KeyPrefix followed by 32 random bytes in
// unpadded base64url. It is used for app keys and for the admin key. It
// fails only when the system's random source does.
func NewKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashKey returns the SHA-256 of key: what the store keeps of an app key,
// and what Options.AdminKeyHash holds of the admin key.
func HashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// sumKey is HashKey without allocating: a key of up to 128 bytes is copied
// to the stack (a []byte(key) conversion would go to the heap once the key
// is longer than 32 bytes).
func sumKey(key string) [sha256.Size]byte {
	var buf [128]byte
	if len(key) <= len(buf) {
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

// bearer returns the key of an "Authorization: Bearer <key>" header, or "".
func bearer(r *http.Request) string {
	// net/http canonicalises the keys of a request's headers, so the map is
	// read directly (Header.Get would canonicalise again).
	var h string
	if v := r.Header["Authorization"]; len(v) > 0 {
		h = v[0]
	}
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return ""
	}
	return strings.TrimSpace(h[len(p):])
}

func (s *Server) isAdmin(sum *[32]byte) bool {
	return len(s.admin) == sha256.Size && subtle.ConstantTimeCompare(sum[:], s.admin) == 1
}

var (
	errNoKey   = &tokenhub.Error{Code: tokenhub.EUNAUTHORIZED, Message: "missing key: send Authorization: Bearer <key>"}
	errBadKey  = &tokenhub.Error{Code: tokenhub.EUNAUTHORIZED, Message: "invalid key"}
	errAppKey  = &tokenhub.Error{Code: tokenhub.EFORBIDDEN, Message: "this route needs the admin key, not an app key"}
	errAdminOn = &tokenhub.Error{Code: tokenhub.EFORBIDDEN, Message: "this route needs an app key, not the admin key (admins refresh with POST /v1/workspaces/{ws}/connections/{name}/refresh)"}
)

// requireAdmin lets a request through only with the admin key. An app key
// gets 403, any other key 401.
func (s *Server) requireAdmin(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := bearer(r)
		if key == "" {
			s.writeError(w, r, errNoKey)
			return
		}
		sum := sumKey(key)
		if s.isAdmin(&sum) {
			h(w, r)
			return
		}
		if app, err := s.keys.lookup(r, s, &sum); err == nil && app != nil {
			s.writeError(w, r, errAppKey)
			return
		} else if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.writeError(w, r, errBadKey)
	})
}

// appHandler is a handler of an app route; app is the caller's app.
type appHandler func(w http.ResponseWriter, r *http.Request, app *tokenhub.App)

// requireAppKey lets a request through only with a valid app key, and passes
// the app on. The admin key gets 403, any other key 401. It allocates
// nothing for a key already in the cache.
func (s *Server) requireAppKey(h appHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := bearer(r)
		if key == "" {
			s.writeError(w, r, errNoKey)
			return
		}
		sum := sumKey(key)
		app, err := s.keys.lookup(r, s, &sum)
		switch {
		case err != nil:
			s.writeError(w, r, err)
		case app != nil:
			h(w, r, app)
		case s.isAdmin(&sum):
			s.writeError(w, r, errAdminOn)
		default:
			s.writeError(w, r, errBadKey)
		}
	})
}

// requireAppOrAdmin passes a request with an app key to app, and one with
// the admin key to admin; any other key gets 401.
func (s *Server) requireAppOrAdmin(app appHandler, admin http.HandlerFunc) http.Handler {
	appOnly := s.requireAppKey(app)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key := bearer(r); key != "" {
			if sum := sumKey(key); s.isAdmin(&sum) {
				admin(w, r)
				return
			}
		}
		appOnly.ServeHTTP(w, r)
	})
}

// sameHash compares a stored key hash with the hash of a presented key in
// constant time. The lookups that find the candidate (a map, an index) work
// on hashes of random 32-byte keys, so their timing reveals nothing usable
// about a key; this final check is the comparison itself.
func sameHash(stored []byte, sum *[sha256.Size]byte) bool {
	return subtle.ConstantTimeCompare(stored, sum[:]) == 1
}

// keyCache holds the apps whose keys were seen, by the SHA-256 of the key, so
// that the token endpoint does not read the store on every request. The map
// is copy-on-write behind an atomic pointer: reads take no lock and allocate
// nothing; inserts and purges copy it under mu (apps are few and keys are
// inserted once per TTL). gen increases on every purge, so that a lookup that
// raced with a revocation does not put the revoked app back.
type keyCache struct {
	ttl time.Duration
	m   atomic.Pointer[map[string]*cachedApp] // string(sha256) → app
	mu  sync.Mutex
	gen uint64 // guarded by mu
}

type cachedApp struct {
	app     *tokenhub.App
	expires time.Time
}

// lookup returns the app whose key hashes to sum, or nil when there is none.
// An error is a store failure.
func (k *keyCache) lookup(r *http.Request, s *Server, sum *[32]byte) (*tokenhub.App, error) {
	now := s.now()
	if m := k.m.Load(); m != nil {
		if ca := (*m)[string(sum[:])]; ca != nil && now.Before(ca.expires) && sameHash(ca.app.KeyHash, sum) {
			return ca.app, nil
		}
	}
	k.mu.Lock()
	gen := k.gen
	k.mu.Unlock()
	// A copy for the store, so that sum itself stays on the caller's stack.
	hash := append([]byte(nil), sum[:]...)
	app, err := s.store.FindAppByKeyHash(r.Context(), hash)
	if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
		if m := k.m.Load(); m != nil && (*m)[string(sum[:])] != nil {
			k.update(func(m map[string]*cachedApp) { delete(m, string(sum[:])) })
		}
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("find app by key: %w", err)
	}
	if !sameHash(app.KeyHash, sum) {
		return nil, fmt.Errorf("find app by key: the store answered app %s/%s, whose key hash differs", app.Workspace, app.Name)
	}
	k.mu.Lock()
	if k.gen == gen {
		k.updateLocked(func(m map[string]*cachedApp) {
			m[string(sum[:])] = &cachedApp{app: app, expires: now.Add(k.ttl)}
		})
	}
	k.mu.Unlock()
	return app, nil
}

// purge forgets every cached app that match selects.
func (k *keyCache) purge(match func(*tokenhub.App) bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen++
	k.updateLocked(func(m map[string]*cachedApp) {
		for key, ca := range m {
			if match(ca.app) {
				delete(m, key)
			}
		}
	})
}

func (k *keyCache) update(f func(map[string]*cachedApp)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.updateLocked(f)
}

// updateLocked replaces the map with a changed copy; k.mu must be held.
func (k *keyCache) updateLocked(f func(map[string]*cachedApp)) {
	var old map[string]*cachedApp
	if p := k.m.Load(); p != nil {
		old = *p
	}
	m := make(map[string]*cachedApp, len(old)+1)
	for key, v := range old {
		m[key] = v
	}
	f(m)
	k.m.Store(&m)
}
