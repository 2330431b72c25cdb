// Package config reads the file that `tokenhub apply` makes the server match:
// workspaces with their connections, and provider definitions.
//
// The file is YAML. Its fields are the JSON field names of the API's own
// types (tokenhub.ConnectionConfig and tokenhub.Provider), so what a user
// writes in the file is what the API takes in a PUT body. The package walks
// the parsed yaml.Node tree itself rather than using yaml.Unmarshal, so that
// every error, including an unknown field, a wrong type or a validation
// failure found by tokenhub's own Validate methods, names the file, the line
// and the field:
//
//	tokenhub.yaml:14: workspaces[0].connections[1].grant: must be client_credentials, password or login, not "pasword"
//
// Secrets are written as references, ${env:NAME} or ${file:PATH}, and are
// resolved when the file is loaded. Neither a resolved value nor any literal
// secret ever appears in an error.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/catalog"
)

// Plan is a loaded, validated config file with every secret reference
// resolved: what `tokenhub apply` makes the server match. A Plan holds
// secrets in its connections' configs; tokenhub.ConnectionConfig redacts them
// when formatted or logged.
type Plan struct {
	File       string // the path the file was read from, as given
	Providers  []*Provider
	Workspaces []*Workspace
	// Warnings are problems that do not stop an apply, such as a secret written
	// in plain text instead of as a reference. They name file, line and field.
	Warnings []*Error

	pos map[string]int // field path → line
}

// Locate returns where field (a path such as
// "workspaces[0].connections[1].grant") is written, or where its nearest
// enclosing object is when the field itself is not. Apply uses it to place
// an error the server reports about a field.
func (p *Plan) Locate(field string) Pos {
	pos := Pos{File: p.File, Field: field}
	for f := field; f != ""; f = parent(f) {
		if l, ok := p.pos[f]; ok {
			pos.Line = l
			break
		}
	}
	return pos
}

// Provider is a provider definition from the file.
type Provider struct {
	Def tokenhub.Provider
	Pos Pos
}

// Workspace is a workspace from the file with the connections it should hold.
type Workspace struct {
	Name        string
	Pos         Pos
	Connections []*Connection
}

// Connection is a connection from the file. Config holds the resolved secrets.
type Connection struct {
	Name   string
	Config tokenhub.ConnectionConfig
	Pos    Pos
}

// Pos is where something was written: the file, the line, and the field path
// such as "workspaces[0].connections[1]". It lets apply report a problem the
// server found at the place in the file that caused it.
type Pos struct {
	File  string
	Line  int
	Field string
}

// String returns "file:line".
func (p Pos) String() string { return p.File + ":" + strconv.Itoa(p.Line) }

// Provider returns the provider the connection names: one defined in the
// file, or else a built-in one; nil when neither exists (the provider may
// then be stored on the server).
func (p *Plan) Provider(name string) *tokenhub.Provider {
	for _, fp := range p.Providers {
		if fp.Def.Name == name {
			d := fp.Def
			return &d
		}
	}
	return catalog.Builtin(name)
}

// Error is one problem in a config file. Its message names the field and
// never holds a secret.
type Error struct {
	File    string
	Line    int    // 0 when the problem concerns the whole file
	Field   string // a path such as "workspaces[0].connections[1].grant"; "" when none applies
	Message string
}

// Error returns "file:line: field: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ErrorList is every problem found in a file, in the order of the file. Load
// returns one when a file has problems, so a user fixes them all in one go.
// errors.As with a *Error finds the first.
type ErrorList []*Error

// Error returns one problem per line.
func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap returns the problems as errors, so errors.As and errors.Is see them.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// maxErrors bounds how many problems one load reports.
const maxErrors = 50

// Options configure how a file is loaded. The zero value resolves no
// ${env:…} reference (each is an error) and knows only the built-in providers
// and those in the file.
type Options struct {
	// LookupEnv resolves ${env:NAME}; os.LookupEnv in the CLI. The package
	// never reads the environment itself.
	LookupEnv func(name string) (string, bool)
	// Dir is where relative ${file:PATH} references start; the directory of
	// the file when empty.
	Dir string
	// FindProvider, when set, is asked for a provider that is neither
	// built in nor defined in the file, such as one already stored on the
	// server. It returns nil when there is none.
	FindProvider func(name string) *tokenhub.Provider
}

// Load reads and validates the file at path. On a problem it returns an
// ErrorList whose entries name path, line and field. Load is safe for
// concurrent use as long as opts' functions are.
func Load(path string, opts Options) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Dir(path)
	}
	return Parse(path, data, opts)
}

// Parse validates data as the contents of a file called name, as Load does.
// Relative ${file:…} references start at opts.Dir, or the current directory
// when it is empty.
func Parse(name string, data []byte, opts Options) (*Plan, error) {
	d := &decoder{file: name, opts: opts, pos: map[string]int{}, referenced: map[string]bool{}}
	plan := d.plan(data)
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		return nil, d.errs
	}
	plan.Warnings = d.warnings
	plan.pos = d.pos
	return plan, nil
}

// file is the shape of the whole file.
type file struct {
	Workspaces []fileWorkspace     `json:"workspaces"`
	Providers  []tokenhub.Provider `json:"providers"`
}

type fileWorkspace struct {
	Name        string           `json:"name"`
	Connections []fileConnection `json:"connections"`
}

type fileConnection struct {
	Name string `json:"name"`
	tokenhub.ConnectionConfig
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

type decoder struct {
	file     string
	opts     Options
	errs     ErrorList
	warnings []*Error
	pos      map[string]int // field path → line of its key
	refs     bool           // resolve ${…} references in strings
	// referenced holds the field paths whose value came from a reference.
	referenced map[string]bool
}

func (d *decoder) errorf(line int, field, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) plan(data []byte) *Plan {
	plan := &Plan{File: d.file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(0, "", "empty file; expected workspaces: and/or providers:")
			return nil
		}
		d.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(extra.Line, "", "a second YAML document; the file holds one")
		return nil
	} else if !errors.Is(err, io.EOF) {
		d.yamlError(err)
		return nil
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			d.errorf(0, "", "empty file; expected workspaces: and/or providers:")
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		d.errorf(root.Line, "", "empty file; expected workspaces: and/or providers:")
		return nil
	}

	// Decode providers and workspaces separately so that secret references
	// are resolved in connections only: provider definitions hold no secret.
	root = resolve(root)
	if root.Kind != yaml.MappingNode {
		d.errorf(root.Line, "", "must be a mapping with workspaces: and/or providers:, not a %s", kindName(root))
		return nil
	}
	var f file
	for _, kv := range d.pairs(root, "") {
		switch kv.key.Value {
		case "providers":
			d.pos["providers"] = kv.key.Line
			d.refs = false
			// Take what decoded even when part of it did not, so that the
			// rest is still validated; objects with errors are skipped below.
			v, _ := d.value(kv.val, typeOf[[]tokenhub.Provider](), "providers")
			d.into(kv.val, "providers", v, &f.Providers)
		case "workspaces":
			d.pos["workspaces"] = kv.key.Line
			d.refs = true
			v, _ := d.value(kv.val, typeOf[[]fileWorkspace](), "workspaces")
			d.into(kv.val, "workspaces", v, &f.Workspaces)
		default:
			d.errorf(kv.key.Line, kv.key.Value, "unknown field; the file has workspaces: and providers:")
		}
	}
	if len(d.errs) == 0 && len(f.Workspaces) == 0 && len(f.Providers) == 0 {
		d.errorf(root.Line, "", "nothing to apply; expected workspaces: and/or providers:")
		return nil
	}

	seen := map[string]string{}  // valid providers → where
	defined := map[string]bool{} // every provider name in the file
	for i := range f.Providers {
		p := f.Providers[i]
		field := fmt.Sprintf("providers[%d]", i)
		defined[p.Name] = true
		if d.errorUnder(field) {
			continue
		}
		if err := p.Validate(); err != nil {
			d.validationError(field, err)
			continue
		}
		if catalog.Builtin(p.Name) != nil {
			d.errorf(d.line(field+".name"), field+".name", "%q is a built-in provider; choose another name", p.Name)
			continue
		}
		if prev, dup := seen[p.Name]; dup {
			d.errorf(d.line(field+".name"), field+".name", "provider %q is already defined at %s", p.Name, prev)
			continue
		}
		seen[p.Name] = fmt.Sprintf("line %d", d.line(field))
		plan.Providers = append(plan.Providers, &Provider{Def: p, Pos: d.at(field)})
	}

	seenWS := map[string]string{}
	for i, w := range f.Workspaces {
		field := fmt.Sprintf("workspaces[%d]", i)
		if !d.errorUnder(field + ".name") {
			if err := tokenhub.ValidateName("name", w.Name); err != nil {
				d.validationError(field, err)
			} else if prev, dup := seenWS[w.Name]; dup {
				d.errorf(d.line(field+".name"), field+".name", "workspace %q is already defined at %s", w.Name, prev)
			} else {
				seenWS[w.Name] = fmt.Sprintf("line %d", d.line(field))
			}
		}
		ws := &Workspace{Name: w.Name, Pos: d.at(field)}
		seenConn := map[string]string{}
		for j, c := range w.Connections {
			cfield := fmt.Sprintf("%s.connections[%d]", field, j)
			if d.errorUnder(cfield) {
				continue
			}
			if err := tokenhub.ValidateName("name", c.Name); err != nil {
				d.validationError(cfield, err)
				continue
			}
			if prev, dup := seenConn[c.Name]; dup {
				d.errorf(d.line(cfield+".name"), cfield+".name", "connection %q is already defined in workspace %q at %s", c.Name, w.Name, prev)
				continue
			}
			seenConn[c.Name] = fmt.Sprintf("line %d", d.line(cfield))
			p := plan.Provider(c.Provider)
			if p == nil && c.Provider != "" && d.opts.FindProvider != nil {
				p = d.opts.FindProvider(c.Provider)
			}
			if p == nil && defined[c.Provider] {
				continue // the provider is defined in the file but broken; that error is reported
			}
			if err := c.ConnectionConfig.Validate(p); err != nil {
				d.validationError(cfield, err)
				continue
			}
			d.warnPlainSecrets(cfield, &c.ConnectionConfig)
			ws.Connections = append(ws.Connections, &Connection{Name: c.Name, Config: c.ConnectionConfig, Pos: d.at(cfield)})
		}
		plan.Workspaces = append(plan.Workspaces, ws)
	}
	return plan
}

// into decodes the JSON-shaped value v into dst. The walk has already checked
// every field and type, so a failure here is a type the walk does not know;
// it is still reported at the node's line.
func (d *decoder) into(n *yaml.Node, field string, v any, dst any) {
	b, err := json.Marshal(v)
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(dst)
	}
	if err != nil {
		d.errorf(n.Line, field, "%s", jsonErrText(err))
	}
}

// errorUnder reports whether a problem was already reported for field or
// anything inside it, so that an object that did not decode whole is not
// validated as if its broken fields were missing.
func (d *decoder) errorUnder(field string) bool {
	for _, e := range d.errs {
		if e.Field == field || strings.HasPrefix(e.Field, field+".") || strings.HasPrefix(e.Field, field+"[") {
			return true
		}
	}
	return false
}

// validationError reports err, an error from a Validate method whose message
// starts with the name of the bad field, at the line where that field is
// written, or where its object starts when the field is missing.
func (d *decoder) validationError(prefix string, err error) {
	msg := tokenhub.ErrorMessage(err)
	field := prefix
	if f, rest, ok := strings.Cut(msg, ": "); ok && !strings.ContainsAny(f, " \t\"") {
		field = prefix + "." + f
		msg = rest
	}
	d.errorf(d.line(field), field, "%s", msg)
}

// line returns the line of field, or of its nearest enclosing object that is
// written in the file.
func (d *decoder) line(field string) int {
	for f := field; f != ""; f = parent(f) {
		if l, ok := d.pos[f]; ok {
			return l
		}
	}
	return 0
}

func (d *decoder) at(field string) Pos { return Pos{File: d.file, Line: d.line(field), Field: field} }

// parent strips the last ".name" or "[i]" from a field path.
func parent(f string) string {
	i := strings.LastIndexAny(f, ".[")
	if i < 0 {
		return ""
	}
	return f[:i]
}

func (d *decoder) yamlError(err error) {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, s := range te.Errors {
			d.yamlMessage(s)
		}
		return
	}
	d.yamlMessage(err.Error())
}

func (d *decoder) yamlMessage(s string) {
	if m := yamlLineRE.FindStringSubmatch(s); m != nil {
		l, _ := strconv.Atoi(m[1])
		d.errorf(l, "", "%s", m[2])
		return
	}
	d.errorf(0, "", "%s", strings.TrimPrefix(s, "yaml: "))
}

func jsonErrText(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("must be a %s, not a %s", ute.Type.Kind(), ute.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

var secretCredentialRE = regexp.MustCompile(`(?i)pass|secret|token|key`)

// warnPlainSecrets warns about a secret written in the file itself, so that
// a user notices before the file reaches version control.
func (d *decoder) warnPlainSecrets(field string, c *tokenhub.ConnectionConfig) {
	check := func(name, value string) {
		f := field + "." + name
		if value != "" && !d.referenced[f] {
			d.warnings = append(d.warnings, &Error{File: d.file, Line: d.line(f), Field: f,
				Message: "a secret written in plain text; use ${env:NAME} or ${file:PATH}"})
		}
	}
	check("client_secret", c.ClientSecret)
	check("password", c.Password)
	check("refresh_token", c.RefreshToken)
	for k, v := range c.Credentials {
		if secretCredentialRE.MatchString(k) {
			check("credentials."+k, v)
		}
	}
}
