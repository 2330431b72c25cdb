package server

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
)

// handleTokenGet answers GET /v1/connections/{name}/token: the connection's
// valid access token and the header to present it in. This is the hot path:
// with a cached key and a valid token it reads no store, takes no lock and
// encodes its answer by hand, once per token (see bodyCache).
func (s *Server) handleTokenGet(w http.ResponseWriter, r *http.Request, app *tokenhub.App) {
	s.serveToken(w, r, app, s.broker.Token)
}

// handleTokenRefresh answers POST /v1/connections/{name}/refresh: it forces
// a refresh, coalesced with any already running, and answers the new token
// as the token endpoint does.
func (s *Server) handleTokenRefresh(w http.ResponseWriter, r *http.Request, app *tokenhub.App) {
	s.serveToken(w, r, app, s.broker.Refresh)
}

// serveToken answers the token of the connection named in the path, which
// get (the broker's Token or Refresh) returns, when app may read that
// connection. A connection the app may not read and one that does not exist
// get the same 404.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, app *tokenhub.App,
	get func(ctx context.Context, ws, name string) (*broker.Current, error)) {
	ws, name := app.Workspace, r.PathValue("name")
	if !app.CanRead(name) {
		s.writeError(w, r, connNotFound(ws, name))
		return
	}
	cur, err := get(r.Context(), ws, name)
	if err != nil {
		if tokenhub.ErrorCode(err) == tokenhub.ENOTFOUND {
			err = connNotFound(ws, name) // the same answer as for a connection the app may not read
		}
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["X-Content-Type-Options"] = hdrNoSniff
	_, _ = w.Write(s.bodies.get(ws, name, cur))
}

// handleProxy hands a proxy request to the Proxy, for a connection the app
// may read.
func (s *Server) handleProxy(w http.ResponseWriter, r *http.Request, app *tokenhub.App) {
	conn, path, _ := proxyRoute(r)
	if !app.CanRead(conn) {
		s.writeError(w, r, connNotFound(app.Workspace, conn))
		return
	}
	s.proxy.ServeProxy(w, r, app.Workspace, conn, path)
}

// bodyCache keeps, for each connection, the token answer last encoded and
// the *broker.Current it was encoded from. The broker hands out the same
// immutable Current until the token changes, so in steady state the answer
// is encoded once per token instead of once per request; a different Current
// is encoded anew, so an answer never lags the broker. The map is
// copy-on-write: reads take no lock.
type bodyCache struct {
	m  atomic.Pointer[map[connKey]*atomic.Pointer[tokenBody]]
	mu sync.Mutex
}

type connKey struct{ ws, name string }

type tokenBody struct {
	cur  *broker.Current
	body []byte
}

// get returns the answer for cur, the current token of ws/name. The slice is
// shared: callers only read it.
func (c *bodyCache) get(ws, name string, cur *broker.Current) []byte {
	var slot *atomic.Pointer[tokenBody]
	if m := c.m.Load(); m != nil {
		slot = (*m)[connKey{ws, name}]
	}
	if slot != nil {
		if tb := slot.Load(); tb != nil && tb.cur == cur {
			return tb.body
		}
	} else {
		slot = c.slot(connKey{ws, name})
	}
	tb := &tokenBody{cur: cur, body: appendToken(make([]byte, 0, 512), cur)}
	slot.Store(tb)
	return tb.body
}

// slot returns the connection's slot, adding it when missing.
func (c *bodyCache) slot(k connKey) *atomic.Pointer[tokenBody] {
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[connKey]*atomic.Pointer[tokenBody]
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if s := old[k]; s != nil {
		return s
	}
	m := make(map[connKey]*atomic.Pointer[tokenBody], len(old)+1)
	maps.Copy(m, old)
	s := new(atomic.Pointer[tokenBody])
	m[k] = s
	c.m.Store(&m)
	return s
}

// forget drops the answers of the connections match selects, so that no
// token of a deleted connection stays in memory.
func (c *bodyCache) forget(match func(connKey) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.m.Load()
	if p == nil {
		return
	}
	m := make(map[connKey]*atomic.Pointer[tokenBody], len(*p))
	for k, s := range *p {
		if match(k) {
			s.Store(nil)
			continue
		}
		m[k] = s
	}
	c.m.Store(&m)
}

// appendToken appends the token answer as JSON:
// {"access_token","token_type","expires_at","header":{"name","value"}}, with
// expires_at left out for a token that never expires. It is what
// json.Marshal(client.Token) gives, without reflection or allocation.
func appendToken(b []byte, cur *broker.Current) []byte {
	t := cur.Token
	b = append(b, `{"access_token":`...)
	b = appendString(b, t.AccessToken)
	b = append(b, `,"token_type":`...)
	b = appendString(b, t.TokenType)
	if !t.ExpiresAt.IsZero() {
		b = append(b, `,"expires_at":"`...)
		b = t.ExpiresAt.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"header":{"name":`...)
	b = appendString(b, cur.HeaderName)
	b = append(b, `,"value":`...)
	b = appendString(b, cur.HeaderValue)
	b = append(b, "}}\n"...)
	return b
}

const hexDigits = "0123456789abcdef"

// jsonSafe says which bytes appendString copies as they are: printable
// ASCII except '"', '\\', '<', '>' and '&'. Bytes from 0x80 up are false and
// go through the UTF-8 check.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string, escaping as encoding/json does
// (including <, > and &, and U+2028/U+2029) and replacing invalid UTF-8 with
// U+FFFD. Runs of safe bytes are copied at once.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) {
		j := i
		for j < len(s) && jsonSafe[s[j]] {
			j++
		}
		b = append(b, s[i:j]...)
		if j == len(s) {
			break
		}
		c := s[j]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i = j + 1
			continue
		}
		r, size := utf8.DecodeRuneInString(s[j:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[j:j+size]...)
		}
		i = j + size
	}
	return append(b, '"')
}
