package grant_test

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/grant"
)

// jwt builds a compact JWT with the given payload, unsigned (the signature is
// never checked).
func jwt(payload string) string {
	return "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

func TestJWTExpiry(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	secs := strconv.FormatInt(exp.Unix(), 10)
	padded := "h." + base64.URLEncoding.EncodeToString([]byte(`{"exp":`+secs+`}`)) + ".s"
	std := "h." + base64.RawStdEncoding.EncodeToString([]byte(`{"exp":`+secs+`,"n":"??>>"}`)) + ".s"
	for _, tc := range []struct {
		name  string
		token string
		want  time.Time
		ok    bool
	}{
		{"exp", jwt(`{"sub":"1","exp":` + secs + `}`), exp, true},
		{"padded payload", padded, exp, true},
		{"standard base64 payload", std, exp, true},
		{"fractional exp", jwt(`{"exp":` + secs + `.5}`), exp.Add(500 * time.Millisecond), true},
		{"exponent notation", jwt(`{"exp":1.7e9}`), time.Unix(1700000000, 0).UTC(), true},
		{"no signature part content", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":`+secs+`}`)) + ".", exp, true},
		{"no exp", jwt(`{"sub":"1"}`), time.Time{}, false},
		{"exp is a string", jwt(`{"exp":"` + secs + `"}`), time.Time{}, false},
		{"exp is null", jwt(`{"exp":null}`), time.Time{}, false},
		{"exp in upper case", jwt(`{"EXP":` + secs + `}`), time.Time{}, false},
		{"exp zero", jwt(`{"exp":0}`), time.Time{}, false},
		{"exp negative", jwt(`{"exp":-5}`), time.Time{}, false},
		{"exp past 9999", jwt(`{"exp":1e20}`), time.Time{}, false},
		{"payload not JSON", jwt(`not json`), time.Time{}, false},
		{"payload an array", jwt(`[1,2]`), time.Time{}, false},
		{"payload not base64", "h.!!!.s", time.Time{}, false},
		{"two parts", "h." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1}`)), time.Time{}, false},
		{"five parts (JWE)", "a.b.c.d.e", time.Time{}, false},
		{"opaque", "gho_16C7e42F292c6912E7710c838347Ae178B4a", time.Time{}, false},
		{"empty", "", time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := grant.JWTExpiry(tc.token)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Errorf("JWTExpiry = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzJWTExpiry(f *testing.F) {
	f.Add(jwt(`{"exp":1700000000}`), int64(1700000000))
	f.Add(jwt(`{"exp":1.5}`), int64(1))
	f.Add(jwt(`{"exp":"1"}`), int64(253402300799))
	f.Add("a.b.c", int64(-1))
	f.Add("..", int64(0))
	f.Add("a."+base64.RawStdEncoding.EncodeToString([]byte(`{"exp":99}`))+"==.s", int64(99))
	f.Add(jwt(`{"exp":1e400}`), int64(1<<62))
	f.Fuzz(func(t *testing.T, token string, exp int64) {
		// Any input: no panic, and a claimed expiry is a real date.
		if got, ok := grant.JWTExpiry(token); ok {
			if got.Unix() <= 0 || got.Year() > 9999 {
				t.Errorf("JWTExpiry(%q) = %v", token, got)
			}
		} else if !got.IsZero() {
			t.Errorf("JWTExpiry(%q) = %v with ok false", token, got)
		}
		// A well-formed token says exactly its exp.
		tok := jwt(`{"iss":"x","exp":` + strconv.FormatInt(exp, 10) + `}`)
		got, ok := grant.JWTExpiry(tok)
		if valid := exp > 0 && exp <= 253402300799; ok != valid || (ok && got.Unix() != exp) {
			t.Errorf("JWTExpiry(exp %d) = %v, %v", exp, got, ok)
		}
		// Padding never changes the answer.
		if strings.Count(tok, ".") == 2 {
			parts := strings.Split(tok, ".")
			padded := parts[0] + "." + parts[1] + strings.Repeat("=", (4-len(parts[1])%4)%4) + "." + parts[2]
			if g2, ok2 := grant.JWTExpiry(padded); ok2 != ok || !g2.Equal(got) {
				t.Errorf("padded: %v, %v; unpadded %v, %v", g2, ok2, got, ok)
			}
		}
	})
}
