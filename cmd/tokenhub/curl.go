package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
)

// defaultCellWidth is how many characters a --table cell shows before it is
// cut, unless --max-width says otherwise: wide enough for an e-mail address
// or a timestamp, narrow enough that a few columns fit a terminal.
const defaultCellWidth = 40

func curlCommand() *Command {
	return &Command{
		Name:    "curl",
		Args:    "[-X METHOD] [-d BODY|@FILE|@-] [-H 'Name: value']... [-i] [--table PATH] CONN PATH",
		Summary: "Call a connection's API through tokenhub's proxy and print the answer",
		Help: `Sends a request to connection CONN's API through tokenhub's proxy
(/v1/proxy/CONN/PATH) with the app key in TOKENHUB_APP_KEY, and prints the
answer's body as it arrives. tokenhub adds the connection's token on the way, so
the token never reaches this command, its output or the shell.

PATH is the API path after the connection's base_url, with its query; it must
start with "/". Quote it in the shell when it has a ? or &.

The flags follow curl's: -X sets the method (GET by default, POST when -d is
given). -d sends a body: the text itself, @FILE for a file's bytes, @- for
stdin; without -H 'Content-Type: ...' it is sent as application/json when it
starts with { or [, and as application/x-www-form-urlencoded otherwise. -H adds
a header and may be repeated; tokenhub removes Authorization (which carries the
app key) before the request goes on, so -H 'Authorization: ...' is refused. -i
prints the status line and the response headers (sorted by name) before the
body. Redirects are printed, not followed. --timeout bounds the wait for the
answer to begin; its body then streams for as long as it takes.

--table PATH renders the JSON array at the dotted PATH of the answer (results,
data.items, a number to index an array, . for an answer that is itself an
array) as an aligned table: one row per element, one column per key in the
order the keys first appear, objects and arrays inside a cell as compact JSON,
null as null, a missing key as an empty cell, and cells cut at --max-width
characters. An element that is not an object goes in a column named (value).

When the API answers with a status that is not 2xx, its body is printed as
usual, the status goes to stderr and the exit status is 1, as with curl
--fail-with-body. tokenhub's own errors (an unknown connection, a connection
that needs re-authorisation, an upstream that cannot be reached or does not
answer) print their message on stderr and exit 1.`,
		Example: `tokenhub curl baserow '/api/database/rows/table/1/?user_field_names=true'
tokenhub curl baserow '/api/database/rows/table/1/?user_field_names=true' --table results
tokenhub curl -i baserow /api/database/rows/table/1/
tokenhub curl -X PATCH -d '{"Name":"Ada"}' baserow '/api/database/rows/table/1/1/?user_field_names=true'
tokenhub curl -d @row.json -H 'X-Request-Id: 42' baserow /api/database/rows/table/1/
echo '{"Name":"Grace"}' | tokenhub curl -d @- baserow '/api/database/rows/table/1/?user_field_names=true'`,
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var cf clientFlags
			o := &curlRun{f: f}
			cf.bind(f, false)
			f.String(&o.method, "X", "", "", "the request `METHOD` (default GET, or POST with -d)")
			f.Strings(&o.data, "d", "send `BODY`: the text itself, @FILE to read a file, @- to read stdin")
			f.Strings(&o.headers, "H", "add the request header `'Name: value'`; repeatable")
			f.Bool(&o.include, "i", false, "print the status line and response headers before the body")
			f.String(&o.table, "table", "", "", "render the JSON array at the dotted `PATH` as a table (results, data.items, . for the whole answer)")
			f.Int(&o.maxWidth, "max-width", defaultCellWidth, "with --table, cut cells longer than `N` characters; 0 never cuts")
			return func(ctx context.Context, e *Env, args []string) error {
				return o.run(ctx, e, &cf, args)
			}
		},
	}
}

// curlRun is one run of tokenhub curl: its flags once parsed.
type curlRun struct {
	f        *flags
	method   string
	data     []string
	headers  []string
	include  bool
	table    string
	maxWidth int
}

func (o *curlRun) run(ctx context.Context, e *Env, cf *clientFlags, args []string) error {
	switch len(args) {
	case 0:
		return usagef("missing CONN and PATH")
	case 1:
		return usagef("missing PATH, such as /api/database/rows/table/1/")
	case 2:
	default:
		return usagef("unexpected arguments %q", args[2:])
	}
	conn, path := args[0], args[1]
	if !tokenhub.ValidName(conn) {
		return usagef("CONN %q is not a connection name (1-63 of a-z 0-9 . _ -)", conn)
	}
	if !strings.HasPrefix(path, "/") {
		return usagef("PATH %q must start with \"/\", as in /api/database/rows/table/1/", path)
	}
	if strings.ContainsFunc(path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return usagef("PATH %q holds a space or a control character; percent-encode it (a space is %%20)", path)
	}
	if _, err := url.Parse(path); err != nil {
		return usagef("PATH %q is not a valid URL path: %v", path, errors.Unwrap(err))
	}
	header, err := parseHeaders(o.headers)
	if err != nil {
		return err
	}
	method := o.method
	if o.f.Given("X") && !validMethod(method) {
		return flagErrorf("X", "%q is not an HTTP method such as GET or POST", method)
	}
	if len(o.data) > 1 {
		return flagErrorf("d", "given %d times; give the whole body once", len(o.data))
	}
	withTable := o.f.Given("table")
	var tablePath []string
	if withTable {
		if tablePath, err = splitTablePath(o.table); err != nil {
			return err
		}
	}
	if o.maxWidth < 0 {
		return flagErrorf("max-width", "must be 0 or more")
	}
	key, err := cf.appKey(e)
	if err != nil {
		return err
	}

	var body io.Reader
	if len(o.data) == 1 {
		b, err := openBody(e, o.data[0])
		if err != nil {
			return err
		}
		defer b.Close()
		body = b.r
		if header.Get("Content-Type") == "" {
			header.Set("Content-Type", b.contentType())
		}
		if method == "" {
			method = http.MethodPost
		}
	}
	if method == "" {
		method = http.MethodGet
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	// --timeout bounds the wait for the answer to start; the body then
	// streams for as long as it takes, as a large download may.
	tr.ResponseHeaderTimeout = cf.Timeout
	// Show the answer's bytes and headers as the API sent them.
	tr.DisableCompression = true
	defer tr.CloseIdleConnections()
	c := client.New(cf.URL, key, client.WithHTTPClient(&http.Client{Transport: tr}), client.WithUserAgent("tokenhub-cli"))
	// Proxy sends a body of up to client.MaxReplayBody bytes with its
	// length, so that tokenhub can send it again after refreshing a refused
	// token, returns redirects rather than following them, and never puts
	// the key in an error.
	resp, err := c.Proxy(ctx, conn, method, path, body, header)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	if o.include {
		if err := writeHead(e.Stdout, resp); err != nil {
			return err
		}
	}
	if apiErr, ok := client.ErrorFrom(resp); ok {
		return apiErr
	}
	success := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if withTable && success {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		if err := renderTable(e, b, tablePath, o.maxWidth); err != nil {
			return fmt.Errorf("--table %s: %w", tableLabel(o.table), err)
		}
	} else if _, err := io.Copy(e.Stdout, resp.Body); err != nil {
		return fmt.Errorf("copying the answer: %w", err)
	}
	if !success {
		return fmt.Errorf("the API of connection %s answered %s", conn, resp.Status)
	}
	return nil
}

// parseHeaders reads the -H values, each "Name: value". A malformed one is a
// usage error naming -H. Authorization is refused: it carries the app key to
// tokenhub, which removes it before the request goes on.
func parseHeaders(hs []string) (http.Header, error) {
	h := http.Header{}
	for _, s := range hs {
		name, value, ok := strings.Cut(s, ":")
		if !ok || name == "" || !isToken(name) {
			return nil, flagErrorf("H", "%q is not a header in the form 'Name: value'", s)
		}
		value = strings.TrimSpace(value)
		if strings.ContainsAny(value, "\r\n\x00") {
			return nil, flagErrorf("H", "header %s: the value holds a line break or NUL", name)
		}
		if strings.EqualFold(name, "Authorization") {
			return nil, flagErrorf("H", "Authorization carries the app key to tokenhub and is never passed on; "+
				"tokenhub sends the connection's own header")
		}
		h.Add(name, value)
	}
	return h, nil
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2), the syntax
// of header names and methods.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c <= ' ' || c == 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func validMethod(m string) bool { return isToken(m) }

// curlBody is the request body of -d: text, a file or stdin.
type curlBody struct {
	r      io.Reader // the body
	head   []byte    // its first bytes, to choose a Content-Type
	closer io.Closer // the file, when one was opened
}

// openBody opens the body that -d names: the text itself, @FILE or @- for
// stdin. A file or stdin is not read here but for its first bytes; it is
// streamed as client.Proxy sends it, which reads up to client.MaxReplayBody
// bytes first so that a body of that size goes with its length and tokenhub
// can replay it after refreshing a refused token. A longer one is streamed
// whole, and a 401 on it reaches the caller.
func openBody(e *Env, arg string) (*curlBody, error) {
	name, isFile := strings.CutPrefix(arg, "@")
	if !isFile {
		return &curlBody{r: strings.NewReader(arg), head: []byte(arg)}, nil
	}
	var src io.Reader
	b := &curlBody{}
	if name == "-" {
		name, src = "stdin", e.Stdin
		if src == nil {
			src = strings.NewReader("")
		}
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, flagErrorf("d", "%v", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, flagErrorf("d", "%v", err)
		}
		if st.IsDir() {
			f.Close()
			return nil, flagErrorf("d", "%s is a directory", name)
		}
		b.closer = f
		src = f
	}
	br := bufio.NewReaderSize(src, 4096)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		b.Close()
		return nil, fmt.Errorf("reading the body from %s: %w", name, err)
	}
	b.r, b.head = br, head
	return b, nil
}

// contentType is the Content-Type of a body sent without one: JSON when it
// looks like JSON, and otherwise the form type curl sends with -d.
func (b *curlBody) contentType() string {
	t := bytes.TrimLeft(b.head, " \t\r\n")
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return "application/json"
	}
	return "application/x-www-form-urlencoded"
}

// Close closes the file the body was read from, if any.
func (b *curlBody) Close() error {
	if b.closer == nil {
		return nil
	}
	return b.closer.Close()
}

// writeHead writes the status line and the headers of resp, sorted by name
// (Go does not keep their order), and a blank line.
func writeHead(w io.Writer, resp *http.Response) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s\n", resp.Proto, resp.Status)
	for _, k := range slices.Sorted(maps.Keys(resp.Header)) {
		for _, v := range resp.Header[k] {
			fmt.Fprintf(&sb, "%s: %s\n", k, v)
		}
	}
	sb.WriteString("\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

// splitTablePath splits --table's dotted path into its keys; "" and "."
// name the whole answer, and a leading "." is allowed, as in jq.
func splitTablePath(p string) ([]string, error) {
	p = strings.TrimPrefix(p, ".")
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, ".")
	if slices.Contains(segs, "") {
		return nil, flagErrorf("table", "%q has an empty key; write keys separated by single dots, such as data.items", p)
	}
	return segs, nil
}

func tableLabel(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// findArray returns the elements of the JSON array at path in doc.
func findArray(doc []byte, path []string) ([]json.RawMessage, error) {
	if !json.Valid(doc) {
		return nil, errors.New("the answer is not JSON")
	}
	cur := json.RawMessage(bytes.TrimSpace(doc))
	at := "the answer"
	for i, seg := range path {
		switch cur[0] {
		case '{':
			var m map[string]json.RawMessage
			if err := json.Unmarshal(cur, &m); err != nil {
				return nil, err
			}
			v, ok := m[seg]
			if !ok {
				return nil, fmt.Errorf("%s has no key %q (its keys: %s)", at, seg, keyList(m, false))
			}
			cur = bytes.TrimSpace(v)
		case '[':
			var a []json.RawMessage
			if err := json.Unmarshal(cur, &a); err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 || n >= len(a) {
				return nil, fmt.Errorf("%s is an array of %d elements; %q is not an index in it", at, len(a), seg)
			}
			cur = bytes.TrimSpace(a[n])
		default:
			return nil, fmt.Errorf("%s is %s, not an object with key %q", at, jsonKind(cur), seg)
		}
		at = strings.Join(path[:i+1], ".")
	}
	if cur[0] != '[' {
		msg := fmt.Sprintf("%s is %s, not an array", at, jsonKind(cur))
		if cur[0] == '{' {
			var m map[string]json.RawMessage
			if json.Unmarshal(cur, &m) == nil {
				if arrays := keyList(m, true); arrays != "" {
					msg += " (its arrays: " + arrays + ")"
				}
			}
		}
		return nil, errors.New(msg)
	}
	var a []json.RawMessage
	if err := json.Unmarshal(cur, &a); err != nil {
		return nil, err
	}
	return a, nil
}

// keyList lists m's keys, sorted, the first ten; only those whose value is
// an array when arrays is set.
func keyList(m map[string]json.RawMessage, arrays bool) string {
	var keys []string
	for k, v := range m {
		if v = bytes.TrimSpace(v); !arrays || len(v) > 0 && v[0] == '[' {
			keys = append(keys, strconv.Quote(k))
		}
	}
	slices.Sort(keys)
	if len(keys) > 10 {
		keys = append(keys[:10], "…")
	}
	if len(keys) == 0 && !arrays {
		return "none"
	}
	return strings.Join(keys, ", ")
}

// jsonKind names the kind of the JSON value v (not empty, no leading space).
func jsonKind(v []byte) string {
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// renderTable writes the array at path of the JSON answer doc as a table.
// Columns are the elements' keys in the order they first appear (the API's
// own field order, which a sorted order would lose), plus "(value)" for
// elements that are not objects.
func renderTable(e *Env, doc []byte, path []string, maxWidth int) error {
	elems, err := findArray(doc, path)
	if err != nil {
		return err
	}
	if len(elems) == 0 {
		fmt.Fprintf(e.Stderr, "tokenhub curl: the array is empty\n")
		return nil
	}
	var cols []string
	index := map[string]int{}
	valueCol := -1
	rows := make([]map[int]string, len(elems))
	for i, el := range elems {
		el = bytes.TrimSpace(el)
		row := map[int]string{}
		rows[i] = row
		if el[0] != '{' {
			if valueCol < 0 {
				valueCol = len(cols)
				cols = append(cols, "(value)")
			}
			row[valueCol] = cellText(el, maxWidth)
			continue
		}
		kvs, err := objectFields(el)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			c, ok := index[kv.key]
			if !ok {
				c = len(cols)
				index[kv.key] = c
				cols = append(cols, clip(escapeCell(kv.key), maxWidth))
			}
			row[c] = cellText(kv.value, maxWidth)
		}
	}
	tw := newTable(e)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	line := make([]string, len(cols))
	for _, row := range rows {
		for c := range line {
			line[c] = row[c]
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	return tw.Flush()
}

type jsonField struct {
	key   string
	value json.RawMessage
}

// objectFields returns the members of the JSON object obj in their order.
func objectFields(obj json.RawMessage) ([]jsonField, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	var out []jsonField
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, jsonField{key, v})
	}
	return out, nil
}

// cellText is how a JSON value shows in a table cell: a string as itself,
// an object or array as compact JSON, anything else as written; on one
// line, without control characters, cut at maxWidth characters.
func cellText(v json.RawMessage, maxWidth int) string {
	v = bytes.TrimSpace(v)
	var s string
	switch v[0] {
	case '"':
		_ = json.Unmarshal(v, &s)
	case '{', '[':
		var b bytes.Buffer
		if json.Compact(&b, v) == nil {
			s = b.String()
		} else {
			s = string(v)
		}
	default:
		s = string(v)
	}
	return clip(escapeCell(s), maxWidth)
}

// escapeCell writes control characters as escapes, so that a cell stays on
// its line, keeps the table's tabs to itself, and cannot send terminal
// escape sequences.
func escapeCell(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// clip cuts s to max characters, the last of them "…"; 0 means no limit.
func clip(s string, max int) string {
	if max <= 0 || utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}
