package server

// This file is white-box on purpose: it checks the hand-written encoder of
// the token endpoint against encoding/json, on inputs no provider would send.

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/client"
)

func FuzzAppendToken(f *testing.F) {
	for _, s := range []string{"eyJhbGciOiJIUzI1NiJ9.e30.sig", `q"uote\back`, "<script>&", "tab\tnl\ncr\r\x00\x1f\x7f",
		"é ü 漢字 🎉", "\u2028\u2029", "\xff\xfe bad utf8 \xc3", ""} {
		f.Add(s, "Bearer", int64(1700000000123456789))
	}
	f.Fuzz(func(t *testing.T, s, typ string, nanos int64) {
		exp := time.Unix(0, nanos)
		if nanos%7 == 0 {
			exp = time.Time{}
		}
		cur := &broker.Current{
			Token:       &tokenhub.Token{AccessToken: s, TokenType: typ, ExpiresAt: exp},
			HeaderName:  "Authorization",
			HeaderValue: "JWT " + s,
		}
		got := appendToken(nil, cur)
		want, err := json.Marshal(&client.Token{
			AccessToken: s, TokenType: typ, ExpiresAt: exp.UTC(),
			Header: client.Header{Name: "Authorization", Value: "JWT " + s},
		})
		if err != nil {
			t.Skip(err) // a time encoding/json refuses, such as a year past 9999
		}
		if string(got) != string(want)+"\n" {
			t.Fatalf("appendToken\n got %s\nwant %s", got, want)
		}
	})
}

func TestAppendTokenAllocs(t *testing.T) {
	cur := &broker.Current{
		Token:       &tokenhub.Token{AccessToken: "eyJhbGciOiJIUzI1NiJ9.e30.sig", TokenType: "JWT", ExpiresAt: time.Now()},
		HeaderName:  "Authorization",
		HeaderValue: "JWT eyJhbGciOiJIUzI1NiJ9.e30.sig",
	}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = appendToken(buf[:0], cur) }); n != 0 {
		t.Fatalf("appendToken allocates %v times", n)
	}
}
