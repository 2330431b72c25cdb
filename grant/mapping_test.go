package grant_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/grant"
)

func TestMapResponse(t *testing.T) {
	jwtExp := t0.Add(30 * time.Minute)
	accessJWT := jwt(`{"exp":` + strconv.FormatInt(jwtExp.Unix(), 10) + `}`)
	refreshJWT := jwt(`{"exp":` + strconv.FormatInt(t0.Add(72*time.Hour).Unix(), 10) + `}`)
	const jsonCT = "application/json; charset=utf-8"
	for _, tc := range []struct {
		name        string
		body, ct    string
		m           tokenhub.ResponseMapping
		defaultTTL  time.Duration
		want        tokenhub.Token
		wantErrPath string // when the call must fail, the path its error names ("-" for none)
	}{
		{name: "OAuth 2.0", ct: jsonCT,
			body: `{"access_token":"a","refresh_token":"r","token_type":"Bearer","expires_in":3600,"refresh_expires_in":86400}`,
			want: tokenhub.Token{AccessToken: "a", RefreshToken: "r", TokenType: "Bearer",
				ExpiresAt: t0.Add(time.Hour), ExpirySource: tokenhub.ExpiryExpiresIn,
				RefreshExpiresAt: t0.Add(24 * time.Hour), RefreshExpirySource: tokenhub.ExpiryExpiresIn}},
		{name: "fractional expires_in", ct: jsonCT, body: `{"access_token":"a","expires_in":1.5}`,
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(1500 * time.Millisecond), ExpirySource: tokenhub.ExpiryExpiresIn}},
		{name: "expires_in string", ct: jsonCT, body: `{"access_token":"a","expires_in":" 60 "}`,
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(time.Minute), ExpirySource: tokenhub.ExpiryExpiresIn}},
		{name: "negative expires_in falls to expires_at", ct: jsonCT, body: `{"access_token":"a","expires_in":-1,"expires_at":` + strconv.FormatInt(t0.Add(time.Hour).Unix(), 10) + `}`,
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(time.Hour), ExpirySource: tokenhub.ExpiryExpiresAt}},
		{name: "absurd expires_in falls to the JWT", ct: jsonCT, body: `{"access_token":"` + accessJWT + `","expires_in":1e300}`,
			want: tokenhub.Token{AccessToken: accessJWT, ExpiresAt: jwtExp, ExpirySource: tokenhub.ExpiryJWT}},
		{name: "expires_at in milliseconds", ct: jsonCT, body: `{"access_token":"a","expires_at":` + strconv.FormatInt(t0.Add(time.Hour).UnixMilli(), 10) + `}`,
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(time.Hour), ExpirySource: tokenhub.ExpiryExpiresAt}},
		{name: "expires_at RFC 3339 with offset", ct: jsonCT, body: `{"access_token":"a","expires_at":"2025-03-01T14:00:00+01:00"}`,
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(time.Hour), ExpirySource: tokenhub.ExpiryExpiresAt}},
		{name: "unparseable expires_at falls to default", ct: jsonCT, body: `{"access_token":"a","expires_at":"tomorrow"}`, defaultTTL: time.Minute,
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(time.Minute), ExpirySource: tokenhub.ExpiryDefaultTTL}},
		{name: "mapped expires_at", ct: jsonCT, body: `{"token":"a","valid_until":"2025-03-01T13:00:00Z","expires_at":"ignored"}`,
			m:    tokenhub.ResponseMapping{AccessToken: "token", ExpiresAt: "valid_until"},
			want: tokenhub.Token{AccessToken: "a", ExpiresAt: t0.Add(time.Hour), ExpirySource: tokenhub.ExpiryExpiresAt}},
		{name: "JWT access and refresh", ct: jsonCT, body: `{"access_token":"` + accessJWT + `","refresh_token":"` + refreshJWT + `"}`, defaultTTL: time.Minute,
			want: tokenhub.Token{AccessToken: accessJWT, RefreshToken: refreshJWT, ExpiresAt: jwtExp, ExpirySource: tokenhub.ExpiryJWT,
				RefreshExpiresAt: t0.Add(72 * time.Hour), RefreshExpirySource: tokenhub.ExpiryJWT}},
		{name: "no expiry", ct: jsonCT, body: `{"access_token":"a","refresh_token":null}`,
			want: tokenhub.Token{AccessToken: "a"}},
		{name: "dotted paths", ct: jsonCT,
			body: `{"data":{"session":{"jwt":"a","renew":"r"},"ttl":"120"},"meta":[{"type":"JWT"}]}`,
			m:    tokenhub.ResponseMapping{AccessToken: "data.session.jwt", RefreshToken: "data.session.renew", ExpiresIn: "data.ttl", TokenType: "meta.0.type"},
			want: tokenhub.Token{AccessToken: "a", RefreshToken: "r", TokenType: "JWT", ExpiresAt: t0.Add(2 * time.Minute), ExpirySource: tokenhub.ExpiryExpiresIn}},
		{name: "key holding a dot", ct: jsonCT, body: `{"auth.token":"a"}`, m: tokenhub.ResponseMapping{AccessToken: "auth.token"},
			want: tokenhub.Token{AccessToken: "a"}},
		{name: "form", ct: "application/x-www-form-urlencoded; charset=utf-8", body: `access_token=gho_x&scope=repo&token_type=bearer&expires_in=28800`,
			want: tokenhub.Token{AccessToken: "gho_x", TokenType: "bearer", ExpiresAt: t0.Add(8 * time.Hour), ExpirySource: tokenhub.ExpiryExpiresIn}},
		{name: "text/plain form", ct: "text/plain", body: `access_token=a`, want: tokenhub.Token{AccessToken: "a"}},
		{name: "text/plain JSON", ct: "text/plain", body: `{"access_token":"a"}`, want: tokenhub.Token{AccessToken: "a"}},
		{name: "no content type", body: ` {"access_token":"a"} `, want: tokenhub.Token{AccessToken: "a"}},

		{name: "empty", ct: jsonCT, body: "", wantErrPath: "-"},
		{name: "null", ct: jsonCT, body: "null", wantErrPath: "-"},
		{name: "no access token", ct: jsonCT, body: `{"token":"a"}`, wantErrPath: "access_token"},
		{name: "mapped path missing", ct: jsonCT, body: `{"data":{}}`, m: tokenhub.ResponseMapping{AccessToken: "data.token"}, wantErrPath: "data.token"},
		{name: "path through a string", ct: jsonCT, body: `{"data":"x"}`, m: tokenhub.ResponseMapping{AccessToken: "data.token"}, wantErrPath: "data.token"},
		{name: "array index out of range", ct: jsonCT, body: `{"a":[]}`, m: tokenhub.ResponseMapping{AccessToken: "a.0"}, wantErrPath: "a.0"},
		{name: "empty access token", ct: jsonCT, body: `{"access_token":""}`, wantErrPath: "access_token"},
		{name: "control character in refresh token", ct: jsonCT, body: `{"access_token":"a","refresh_token":"r\n"}`, wantErrPath: "refresh_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := grant.MapResponse([]byte(tc.body), tc.ct, tc.m, t0, tc.defaultTTL)
			if tc.wantErrPath != "" {
				if err == nil {
					t.Fatalf("MapResponse = %v, want an error", got)
				}
				if tc.wantErrPath != "-" && !strings.Contains(err.Error(), `"`+tc.wantErrPath+`"`) {
					t.Errorf("error %q does not name %q", err, tc.wantErrPath)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.ObtainedAt = t0
			if *got != tc.want {
				t.Errorf("got  %#v\nwant %#v", fields(got), fields(&tc.want))
			}
		})
	}
}

// fields shows every field of a token, secrets included, for test failures.
func fields(t *tokenhub.Token) []any {
	return []any{t.AccessToken, t.RefreshToken, t.TokenType, t.ExpiresAt.String(), t.ExpirySource,
		t.ObtainedAt.String(), t.RefreshExpiresAt.String(), t.RefreshExpirySource}
}

func FuzzMapResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"a","expires_in":3600,"refresh_token":"r","refresh_expires_in":"60"}`), "application/json", "", int64(0))
	f.Add([]byte(`{"data":{"token":"`+jwt(`{"exp":1741000000}`)+`"}}`), "application/json", "data.token", int64(60))
	f.Add([]byte(`access_token=x&expires_in=abc`), "application/x-www-form-urlencoded", "", int64(1))
	f.Add([]byte(`{"access_token":"a","expires_at":"2025-03-01T13:00:00Z"}`), "text/plain", "", int64(-5))
	f.Add([]byte(`{"a":[{"b":"tok"}]}`), "", "a.0.b", int64(3600))
	f.Add([]byte(`{"access_token":"a","expires_in":1e309}`), "application/json", "", int64(0))
	f.Add([]byte(`[]`), "application/json", "0", int64(0))
	f.Add([]byte{}, "", "", int64(0))
	f.Fuzz(func(t *testing.T, body []byte, ct, path string, ttlSecs int64) {
		ttl := time.Duration(ttlSecs) * time.Second
		tok, err := grant.MapResponse(body, ct, tokenhub.ResponseMapping{AccessToken: path}, t0, ttl)
		if err != nil {
			if tok != nil {
				t.Fatal("a token with an error")
			}
			if len(body) > 8 && strings.Contains(err.Error(), string(body)) {
				t.Errorf("error %q quotes the body", err)
			}
			return
		}
		if tok.AccessToken == "" || !tok.ObtainedAt.Equal(t0) {
			t.Errorf("token %v obtained %v", fields(tok), tok.ObtainedAt)
		}
		switch tok.ExpirySource {
		case tokenhub.ExpiryNone:
			if !tok.ExpiresAt.IsZero() {
				t.Errorf("no source but expires %v", tok.ExpiresAt)
			}
		case tokenhub.ExpiryExpiresIn, tokenhub.ExpiryDefaultTTL:
			if !tok.ExpiresAt.After(t0) {
				t.Errorf("relative expiry %v not after the send time", tok.ExpiresAt)
			}
		case tokenhub.ExpiryExpiresAt, tokenhub.ExpiryJWT:
			if tok.ExpiresAt.IsZero() {
				t.Error("absolute source with no expiry")
			}
		default:
			t.Errorf("unknown source %q", tok.ExpirySource)
		}
		if tok.ExpirySource == tokenhub.ExpiryDefaultTTL && !tok.ExpiresAt.Equal(t0.Add(ttl)) {
			t.Errorf("default_ttl expiry %v, want %v", tok.ExpiresAt, t0.Add(ttl))
		}
		if (tok.RefreshExpirySource == tokenhub.ExpiryNone) != tok.RefreshExpiresAt.IsZero() {
			t.Errorf("refresh expiry %v from %q", tok.RefreshExpiresAt, tok.RefreshExpirySource)
		}
	})
}
