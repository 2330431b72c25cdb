package grant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
)

// maxLifetime bounds a believable expires_in: a larger one is ignored.
const maxLifetime = 100 * 365 * 24 * time.Hour

// MapResponse reads a successful token response: body as JSON, or as a form
// when contentType says application/x-www-form-urlencoded (as GitHub answers
// by default), with the fields where m's dotted paths say ("data.token";
// an empty path means the OAuth 2.0 name, and expires_at is read from
// "expires_at" unless m names another path).
//
// The expiry comes from the first of these that is present and valid:
// expires_in (seconds, a number or a numeric string, counted from sentAt,
// when the request was sent), expires_at (Unix seconds, milliseconds when
// larger than 1e11, or RFC 3339), the access token's JWT exp claim, and
// defaultTTL after sentAt when it is positive; else the token has no expiry.
// The refresh token's expiry comes from refresh_expires_in, else its JWT exp.
// ExpirySource and RefreshExpirySource say which applied; ObtainedAt is
// sentAt.
//
// A body that is empty, not a JSON object or form, or that holds no access
// token, is an error that names the path looked at and never quotes the body.
func MapResponse(body []byte, contentType string, m tokenhub.ResponseMapping, sentAt time.Time, defaultTTL time.Duration) (*tokenhub.Token, error) {
	m = m.WithDefaults()
	if m.ExpiresAt == "" {
		m.ExpiresAt = "expires_at"
	}
	doc, err := parseDoc(body, contentType)
	if err != nil {
		return nil, err
	}
	access, ok := lookup(doc, m.AccessToken).(string)
	if !ok || access == "" {
		return nil, fmt.Errorf("the response holds no access token at %q", m.AccessToken)
	}
	if !validHeaderValue(access) {
		return nil, fmt.Errorf("the access token at %q holds a control character", m.AccessToken)
	}
	tok := &tokenhub.Token{AccessToken: access, ObtainedAt: sentAt}
	if rt, ok := lookup(doc, m.RefreshToken).(string); ok {
		if !validHeaderValue(rt) {
			return nil, fmt.Errorf("the refresh token at %q holds a control character", m.RefreshToken)
		}
		tok.RefreshToken = rt
	}
	if tt, ok := lookup(doc, m.TokenType).(string); ok {
		tok.TokenType = tt
	}

	if d, ok := seconds(lookup(doc, m.ExpiresIn)); ok {
		tok.ExpiresAt, tok.ExpirySource = sentAt.Add(d), tokenhub.ExpiryExpiresIn
	} else if t, ok := instant(lookup(doc, m.ExpiresAt)); ok {
		tok.ExpiresAt, tok.ExpirySource = t, tokenhub.ExpiryExpiresAt
	} else if t, ok := JWTExpiry(access); ok {
		tok.ExpiresAt, tok.ExpirySource = t, tokenhub.ExpiryJWT
	} else if defaultTTL > 0 {
		tok.ExpiresAt, tok.ExpirySource = sentAt.Add(defaultTTL), tokenhub.ExpiryDefaultTTL
	}

	if tok.RefreshToken != "" {
		if d, ok := seconds(lookup(doc, m.RefreshExpiresIn)); ok {
			tok.RefreshExpiresAt, tok.RefreshExpirySource = sentAt.Add(d), tokenhub.ExpiryExpiresIn
		} else if t, ok := JWTExpiry(tok.RefreshToken); ok {
			tok.RefreshExpiresAt, tok.RefreshExpirySource = t, tokenhub.ExpiryJWT
		}
	}
	return tok, nil
}

var errNotObject = errors.New("the response body is not a JSON object")

// parseDoc decodes body as a JSON object (numbers kept as json.Number) or,
// for form content types, as a form whose values are strings.
func parseDoc(body []byte, contentType string) (map[string]any, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("the response body is empty")
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/x-www-form-urlencoded" || (mt == "text/plain" && body[0] != '{') {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, errors.New("the response body is not a valid form")
		}
		doc := make(map[string]any, len(v))
		for k := range v {
			doc[k] = v.Get(k)
		}
		return doc, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, errNotObject
	}
	if dec.More() {
		return nil, errNotObject
	}
	return doc, nil
}

// lookup follows a dotted path through objects (and arrays, by index). A
// key that itself holds dots is found too.
func lookup(doc map[string]any, path string) any {
	if v, ok := doc[path]; ok {
		return v
	}
	var cur any = doc
	for seg := range strings.SplitSeq(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[seg]
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// number reads a JSON number or a string holding one.
func number(v any) (float64, bool) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = strings.TrimSpace(v)
	default:
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// seconds reads a positive lifetime in seconds. Zero (which some providers
// send to mean "no expiry"), negative and absurd values are not lifetimes.
func seconds(v any) (time.Duration, bool) {
	f, ok := number(v)
	if !ok || f <= 0 || f > maxLifetime.Seconds() {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

// instant reads an absolute time: Unix seconds, Unix milliseconds (values
// beyond 1e11, which as seconds would lie past the year 5000), or RFC 3339.
func instant(v any) (time.Time, bool) {
	if f, ok := number(v); ok {
		if f > 1e11 {
			f /= 1000
		}
		if f < 1 || f > maxUnix {
			return time.Time{}, false
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
	}
	if s, ok := v.(string); ok {
		if t, err := time.Parse(time.RFC3339, strings.TrimSpace(s)); err == nil && t.Unix() > 0 && t.Unix() <= maxUnix {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}
