package grant

import (
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"

	"github.com/tokenhub/tokenhub"
)

// Parsed templates are kept, so that a provider's templates are parsed once
// and not on every request. The cache is bounded: past maxCached distinct
// templates, new ones are parsed on each use instead.
var (
	cache       sync.Map // template text → *template.Template
	cacheLen    atomic.Int64
	errCtrlChar = errors.New("the header value holds a control character")
)

const maxCached = 1024

func parse(tmpl string) (*template.Template, error) {
	if t, ok := cache.Load(tmpl); ok {
		return t.(*template.Template), nil
	}
	t, err := template.New("t").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, err
	}
	if cacheLen.Load() < maxCached {
		if _, loaded := cache.LoadOrStore(tmpl, t); !loaded {
			cacheLen.Add(1)
		}
	}
	return t, nil
}

// Render executes tmpl, a Go text/template, over data. A reference to a
// credential the connection lacks ({{.Credentials.email}} without an email)
// is an error naming the missing key, rather than an empty string sent to
// the provider. Text without actions is returned as it is.
//
// Errors say what is wrong with the template, never what data holds. Render
// is safe for concurrent use.
func Render(tmpl string, data tokenhub.TemplateData) (string, error) {
	if !strings.Contains(tmpl, "{{") {
		return tmpl, nil
	}
	t, err := parse(tmpl)
	if err != nil {
		return "", renderError(err)
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", renderError(err)
	}
	return b.String(), nil
}

// renderError describes a failed template without quoting the data it ran
// over. text/template's execution errors may quote a value ("range can't
// iterate over <value>", "non-function <value> of type string"), and the
// data are secrets: the access token, passwords, credential fields. So only
// what comes from the template's own text is kept: a parse error, the action
// that failed ("cannot execute <.Password | call>"), the name of a missing
// credential (`map has no entry for key "email"`) or of an unknown field.
func renderError(err error) error {
	var ee template.ExecError
	if !errors.As(err, &ee) {
		// A parse error quotes only the template.
		s := err.Error()
		if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s, "template: ") {
			s = s[i+2:]
		}
		return errors.New("render template: " + s)
	}
	// The text is `template: t:1:8: executing "t" at <ACTION>: MESSAGE`,
	// where ACTION is template text (cut to about 20 characters) and MESSAGE
	// may hold data. A cut at the first ">: " yields ACTION or a prefix of
	// it, never data.
	loc := execPrefixRE.FindString(ee.Error())
	action, msg, ok := strings.Cut(strings.TrimPrefix(ee.Error(), loc), ">: ")
	if loc == "" || !ok {
		return errors.New("render template: cannot execute the template")
	}
	if safeExecRE.MatchString(msg) {
		return errors.New("render template: " + msg)
	}
	return errors.New("render template: cannot execute <" + action + "> (the details are withheld: they may quote a secret)")
}

// execPrefixRE matches the start of an execution error of a template parsed
// by parse (named "t"), up to its action.
var execPrefixRE = regexp.MustCompile(`^template: t:\d+:\d+: executing "t" at <`)

// safeExecRE matches the execution errors that name only what the template
// wrote and the data's types: a missing map key (missingkey=error) and an
// unknown field.
var safeExecRE = regexp.MustCompile(`^(map has no entry for key "[A-Za-z0-9_]*"|can't evaluate field [A-Za-z0-9_]+ in type [A-Za-z0-9_.*\[\]]+)$`)

// RenderHeader returns the header through which an app presents
// accessToken to p's API: p's header, or Authorization: Bearer <token>.
//
// It is on the path of every proxied request, so a value of the common form
// "prefix{{.AccessToken}}suffix" (or "{{ .AccessToken }}") is built by
// concatenation, allocating only the resulting string; other templates are
// executed with Render. A value holding a control character (a token with a
// line break would split the header) is an error. RenderHeader is safe for
// concurrent use.
func RenderHeader(p *tokenhub.Provider, accessToken string) (name, value string, err error) {
	h := p.HeaderOrDefault()
	if prefix, suffix, ok := splitSimple(h.Value); ok {
		if !validHeaderValue(prefix) || !validHeaderValue(accessToken) || !validHeaderValue(suffix) {
			return "", "", errCtrlChar
		}
		return h.Name, prefix + accessToken + suffix, nil
	}
	if !strings.Contains(h.Value, "{{") {
		if !validHeaderValue(h.Value) {
			return "", "", errCtrlChar
		}
		return h.Name, h.Value, nil
	}
	v, err := Render(h.Value, tokenhub.TemplateData{AccessToken: accessToken})
	if err != nil {
		return "", "", err
	}
	if !validHeaderValue(v) {
		return "", "", errCtrlChar
	}
	return h.Name, v, nil
}

// splitSimple splits "prefix{{.AccessToken}}suffix", where neither part
// holds another action, around its one action.
func splitSimple(v string) (prefix, suffix string, ok bool) {
	i := strings.Index(v, "{{")
	if i < 0 {
		return "", "", false
	}
	rest := v[i:]
	for _, action := range [...]string{"{{.AccessToken}}", "{{ .AccessToken }}"} {
		if strings.HasPrefix(rest, action) {
			suffix = rest[len(action):]
			if strings.Contains(suffix, "{{") {
				return "", "", false
			}
			return v[:i], suffix, true
		}
	}
	return "", "", false
}

// validHeaderValue reports whether s may be sent as a header value: no
// control characters other than horizontal tab (RFC 9110 §5.5).
//
// Tokens are long and checked on every proxied request, so s is scanned
// eight bytes at a time: a word whose bytes all lie in 0x20..0x7e is fine,
// and only a word holding something else (a tab, a control character, a
// byte above 0x7e) is looked at byte by byte.
func validHeaderValue(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		below := (x - 0x20*ones) &^ x & highs // some byte < 0x20
		above := ((x + ones) | x) & highs     // some byte > 0x7e
		if below|above != 0 && !validBytes(s[i:i+8]) {
			return false
		}
	}
	return validBytes(s[i:])
}

func validBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
