package proxy

import (
	"net/url"
	"strings"

	"github.com/tokenhub/tokenhub"
)

// checkPath refuses an escaped proxy path that could reach another host or
// leave the connection's base path, whatever an upstream, a framework in
// front of it or a URL parser does with it later. It looks at the path after
// percent-decoding, so %2e%2e, ..%2f, %2f.., %40, %5c and %0d%0a are refused
// like their raw forms:
//
//   - it must be empty or start with "/" (an absolute URL does not);
//   - no control character (CR, LF, NUL, ...), no backslash, no "@";
//   - no empty segment ("//host", "http://evil");
//   - no "." or ".." segment, also with a ";param" suffix.
//
// On success it returns the decoded path.
func checkPath(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	if raw[0] != '/' {
		return "", tokenhub.Errorf(tokenhub.EINVALID, "path: must start with /")
	}
	dec := raw // most paths have nothing to decode; IndexByte finds that fastest
	if strings.IndexByte(raw, '%') >= 0 {
		var err error
		if dec, err = url.PathUnescape(raw); err != nil {
			return "", tokenhub.Errorf(tokenhub.EINVALID, "path: bad percent-encoding")
		}
	}
	// One pass over the decoded path, on every request: a bad character is
	// answered at once; an empty or dot segment is noted and answered after
	// the pass, so that a path with several faults always gets the same
	// answer (characters first, then empty segments, then dot segments).
	var empty, dot bool
	start := 1 // of the current segment; dec[0] is the leading '/'
	for i := 1; i <= len(dec); i++ {
		if i < len(dec) {
			switch c := dec[i]; {
			case c == '/':
			case c < 0x20 || c == 0x7f:
				return "", tokenhub.Errorf(tokenhub.EINVALID, "path: control characters such as CR and LF are not allowed")
			case c == '\\':
				return "", tokenhub.Errorf(tokenhub.EINVALID, "path: backslashes are not allowed")
			case c == '@':
				return "", tokenhub.Errorf(tokenhub.EINVALID, "path: '@' is not allowed (put it in the query)")
			default:
				continue
			}
		}
		// dec[start:i] is a whole segment, followed by '/' or the end.
		seg := dec[start:i]
		if seg == "" && i < len(dec) {
			empty = true // "//"; a trailing "/" is not an empty segment
		}
		if k := strings.IndexByte(seg, ';'); k >= 0 {
			seg = seg[:k]
		}
		if seg == "." || seg == ".." {
			dot = true
		}
		start = i + 1
	}
	if empty {
		return "", tokenhub.Errorf(tokenhub.EINVALID, "path: empty segments (//) are not allowed")
	}
	if dot {
		return "", tokenhub.Errorf(tokenhub.EINVALID, "path: dot segments (. and ..) are not allowed")
	}
	return dec, nil
}

// segments splits a path that passed checkPath into its segments, each
// decoded on its own, so that an encoded slash stays inside its segment.
func segments(raw string) []string {
	raw = strings.Trim(raw, "/")
	if raw == "" {
		return nil
	}
	segs := strings.Split(raw, "/")
	for i, s := range segs {
		segs[i], _ = url.PathUnescape(s) // cannot fail: the whole path decoded
	}
	return segs
}

// allowed reports whether rules let method reach the escaped path raw, which
// passed checkPath. No rule allows everything. A rule's PathPrefix matches
// whole segments: "/api" allows "/api" and "/api/x" but not "/apix" nor
// "/api%2Fx"; "/" allows every path. An empty Methods list allows every
// method; names compare case-insensitively.
func allowed(rules []tokenhub.AllowRule, method, raw string) bool {
	if len(rules) == 0 {
		return true
	}
	segs := segments(raw)
	for _, r := range rules {
		if methodAllowed(r.Methods, method) && prefixMatch(r.PathPrefix, segs) {
			return true
		}
	}
	return false
}

func methodAllowed(methods []string, method string) bool {
	if len(methods) == 0 {
		return true
	}
	for _, m := range methods {
		if strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}

func prefixMatch(prefix string, segs []string) bool {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return strings.HasPrefix(prefix, "/")
	}
	for s := range strings.SplitSeq(p, "/") {
		if len(segs) == 0 || segs[0] != s {
			return false
		}
		segs = segs[1:]
	}
	return true
}
