package grant_test

import (
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/grant"
)

func TestRender(t *testing.T) {
	data := tokenhub.TemplateData{
		BaseURL: "https://api.example.com", Username: "u", Password: "p&w",
		Credentials: map[string]string{"email": "a@example.com"}, RefreshToken: "rt",
	}
	for _, tc := range []struct {
		tmpl, want, wantErr string
	}{
		{tmpl: "{{.BaseURL}}/api/user/token-auth/", want: "https://api.example.com/api/user/token-auth/"},
		{tmpl: "{{.Credentials.email}}", want: "a@example.com"},
		{tmpl: "{{.RefreshToken}}", want: "rt"},
		{tmpl: "{{.Password | urlquery}}", want: "p%26w"},
		{tmpl: "no actions }} here", want: "no actions }} here"},
		{tmpl: `{{index .Credentials "absent"}}`, want: ""},
		{tmpl: "{{.Credentials.password}}", wantErr: `map has no entry for key "password"`},
		{tmpl: "{{.Nope}}", wantErr: "Nope"},
		{tmpl: "{{.BaseURL", wantErr: "render template"},
	} {
		got, err := grant.Render(tc.tmpl, data)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Render(%q) = %q, %v; want an error with %q", tc.tmpl, got, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "p&w") {
				t.Errorf("Render(%q) error %q holds data", tc.tmpl, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Render(%q) = %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
}

func TestRenderHeader(t *testing.T) {
	for _, tc := range []struct {
		header    tokenhub.Header
		token     string
		name, val string
		wantErr   bool
	}{
		{header: tokenhub.Header{}, token: "t", name: "Authorization", val: "Bearer t"},
		{header: tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"}, token: "eyJ.x.y", name: "Authorization", val: "JWT eyJ.x.y"},
		{header: tokenhub.Header{Name: "X-Api-Key", Value: "{{.AccessToken}}"}, token: "k", name: "X-Api-Key", val: "k"},
		{header: tokenhub.Header{Name: "X-Auth", Value: "token={{ .AccessToken }}; v=1 }}"}, token: "k", name: "X-Auth", val: "token=k; v=1 }}"},
		{header: tokenhub.Header{Name: "X-Twice", Value: "{{.AccessToken}}:{{.AccessToken}}"}, token: "k", name: "X-Twice", val: "k:k"},
		{header: tokenhub.Header{Name: "X-Fn", Value: `{{printf "%s-%d" .AccessToken 2}}`}, token: "k", name: "X-Fn", val: "k-2"},
		{header: tokenhub.Header{Name: "X-Static", Value: "fixed"}, token: "k", name: "X-Static", val: "fixed"},
		{header: tokenhub.Header{Name: "Authorization", Value: "Bearer {{.AccessToken}}"}, token: "a\r\nX-Evil: 1", wantErr: true},
		{header: tokenhub.Header{Name: "X-Fn", Value: `{{printf "%s\n" .AccessToken}}`}, token: "k", wantErr: true},
	} {
		p := &tokenhub.Provider{Name: "p", Header: tc.header}
		name, val, err := grant.RenderHeader(p, tc.token)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%+v: %s: %q, want an error", tc.header, name, val)
			}
			continue
		}
		if err != nil || name != tc.name || val != tc.val {
			t.Errorf("%+v: %q: %q, %v; want %q: %q", tc.header, name, val, err, tc.name, tc.val)
		}
	}
}

// The fast path must allocate nothing but the header value it returns.
func TestRenderHeaderAllocs(t *testing.T) {
	p := &tokenhub.Provider{Name: "p", Header: tokenhub.Header{Name: "Authorization", Value: "JWT {{.AccessToken}}"}}
	tok := strings.Repeat("x", 300)
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := grant.RenderHeader(p, tok); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Errorf("RenderHeader allocates %v times per call, want 1 (the value)", allocs)
	}
}

func FuzzRender(f *testing.F) {
	for _, s := range []string{
		"Bearer {{.AccessToken}}", "JWT {{ .AccessToken }}", "{{.AccessToken}}", "x{{.AccessToken}}y{{.AccessToken}}",
		"{{.BaseURL}}/login", "{{.Credentials.email}}", "{{.AccessToken", "}}{{.AccessToken}}{{",
		`{{printf "%q" .AccessToken}}`, "{{/* c */}}{{.AccessToken}}", "{{- .AccessToken -}}", "plain",
	} {
		f.Add(s, "tok-123")
	}
	f.Add("Bearer {{.AccessToken}}", "bad\ntoken")
	f.Fuzz(func(t *testing.T, tmpl, token string) {
		data := tokenhub.TemplateData{AccessToken: token}
		want, renderErr := grant.Render(tmpl, data)
		p := &tokenhub.Provider{Name: "p", Header: tokenhub.Header{Name: "X-H", Value: tmpl}}
		if tmpl == "" {
			p.Header = tokenhub.Header{}
			want, renderErr = grant.Render(tokenhub.DefaultHeader.Value, data)
		}
		// RenderHeader (fast path or not) must agree with Render, and refuse
		// exactly the values that hold a control character.
		_, got, err := grant.RenderHeader(p, token)
		switch {
		case renderErr != nil:
			if err == nil {
				t.Errorf("Render(%q) fails (%v) but RenderHeader gives %q", tmpl, renderErr, got)
			}
		case strings.ContainsFunc(want, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }):
			if err == nil {
				t.Errorf("RenderHeader(%q, %q) = %q with a control character", tmpl, token, got)
			}
		case err != nil:
			t.Errorf("RenderHeader(%q, %q): %v; Render gives %q", tmpl, token, err, want)
		case got != want:
			t.Errorf("RenderHeader(%q, %q) = %q; Render gives %q", tmpl, token, got, want)
		}
	})
}

func BenchmarkRenderHeader(b *testing.B) {
	tok := strings.Repeat("x", 300)
	for _, bc := range []struct{ name, value string }{
		{"fast", "JWT {{.AccessToken}}"},
		{"template", `{{printf "JWT %s" .AccessToken}}`},
	} {
		p := &tokenhub.Provider{Name: "p", Header: tokenhub.Header{Name: "Authorization", Value: bc.value}}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := grant.RenderHeader(p, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Every byte value, at every position of a word and of the tail, is judged
// exactly: only control characters other than tab are refused.
func TestRenderHeaderControlBytes(t *testing.T) {
	p := &tokenhub.Provider{Name: "p", Header: tokenhub.Header{Name: "X", Value: "{{.AccessToken}}"}}
	for b := range 256 {
		bad := (b < ' ' && b != '\t') || b == 0x7f
		for pos := range 19 {
			tok := []byte(strings.Repeat("~", 19))
			tok[pos] = byte(b)
			if _, _, err := grant.RenderHeader(p, string(tok)); (err != nil) != bad {
				t.Fatalf("byte %#x at %d: err %v, want refused %v", b, pos, err, bad)
			}
		}
	}
}
