package config

import (
	"encoding"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// This file walks a yaml.Node tree against a Go type, the way encoding/json
// would walk a JSON document against it (json field tags name the fields),
// and builds the equivalent JSON value. Each problem is reported at the line
// of the node that has it, and the line of every field is recorded so that
// later validation errors can be placed too.

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

type pair struct{ key, val *yaml.Node }

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindName describes what a node holds, for "must be X, not Y" messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "number"
		case "!!bool":
			return "boolean"
		case "!!null":
			return "null"
		}
		return "string"
	}
	return "value"
}

// typeName describes what a Go type expects.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map, reflect.Struct:
		return "mapping"
	}
	return t.String()
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// pairs returns the key/value pairs of mapping n, with YAML merge keys (<<)
// expanded and explicit keys taking precedence over merged ones. A key written
// twice, or a key that is not a string, is reported.
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	var out, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.mergePairs(v, path)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, path, "a key must be a string, not a %s", kindName(k))
			continue
		}
		if l, dup := seen[k.Value]; dup {
			d.errorf(k.Line, join(path, k.Value), "written twice (first at line %d)", l)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, pair{k, v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key.Value]; !ok {
			seen[p.key.Value] = p.key.Line
			out = append(out, p)
		}
	}
	return out
}

func (d *decoder) mergePairs(v *yaml.Node, path string) []pair {
	v = resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		return d.pairs(v, path)
	case yaml.SequenceNode:
		var out []pair
		seen := map[string]bool{}
		for _, e := range v.Content {
			e = resolve(e)
			if e.Kind != yaml.MappingNode {
				d.errorf(e.Line, path, "<< merges mappings, not a %s", kindName(e))
				continue
			}
			for _, p := range d.pairs(e, path) {
				if !seen[p.key.Value] { // the first mapping listed wins
					seen[p.key.Value] = true
					out = append(out, p)
				}
			}
		}
		return out
	}
	d.errorf(v.Line, path, "<< merges mappings, not a %s", kindName(v))
	return nil
}

// value walks n as a value of type t at the field path and returns its JSON
// equivalent; ok is false when a problem was reported. A YAML null is an
// unset field.
func (d *decoder) value(n *yaml.Node, t reflect.Type, path string) (v any, ok bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if pt := reflect.PointerTo(t); pt.Implements(jsonUnmarshaler) || pt.Implements(textUnmarshaler) {
		return d.custom(n, t, path)
	}
	switch t.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return d.mismatch(n, t, path)
		}
		return d.str(n, path)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			return d.mismatch(n, t, path)
		}
		return b, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			return d.mismatch(n, t, path)
		}
		return json.Number(strconv.FormatInt(i, 10)), true
	case reflect.Float32, reflect.Float64:
		return d.number(n, t, path)
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return d.mismatch(n, t, path)
		}
		out := make([]any, 0, len(n.Content))
		ok := true
		for i, e := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			d.pos[p] = resolve(e).Line
			v, eok := d.value(e, t.Elem(), p)
			ok = ok && eok
			out = append(out, v)
		}
		return out, ok
	case reflect.Map:
		if n.Kind != yaml.MappingNode || t.Key().Kind() != reflect.String {
			return d.mismatch(n, t, path)
		}
		out := map[string]any{}
		ok := true
		for _, kv := range d.pairs(n, path) {
			p := join(path, kv.key.Value)
			d.pos[p] = kv.key.Line
			v, eok := d.value(kv.val, t.Elem(), p)
			ok = ok && eok
			if v != nil || t.Elem().Kind() == reflect.Interface {
				out[kv.key.Value] = v
			}
		}
		return out, ok
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return d.mismatch(n, t, path)
		}
		fields, names := structFields(t)
		out := map[string]any{}
		ok := true
		for _, kv := range d.pairs(n, path) {
			p := join(path, kv.key.Value)
			d.pos[p] = kv.key.Line
			ft, known := fields[kv.key.Value]
			if !known {
				d.errorf(kv.key.Line, p, "unknown field%s", suggest(kv.key.Value, names))
				ok = false
				continue
			}
			v, fok := d.value(kv.val, ft, p)
			ok = ok && fok
			if v != nil {
				out[kv.key.Value] = v
			}
		}
		return out, ok
	case reflect.Interface:
		return d.generic(n, path)
	}
	d.errorf(n.Line, path, "cannot be set in a file")
	return nil, false
}

func (d *decoder) mismatch(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	d.errorf(n.Line, path, "must be a %s, not a %s", typeName(t), kindName(n))
	return nil, false
}

func (d *decoder) number(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	var f float64
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil {
		return d.mismatch(n, t, path)
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		d.errorf(n.Line, path, "must be a finite number")
		return nil, false
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), true
}

// custom handles a type with its own JSON decoding, such as
// tokenhub.Duration: numbers stay numbers, anything else is a string, and the
// type's own decoder judges the value so its message can be placed.
func (d *decoder) custom(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if n.Kind != yaml.ScalarNode {
		return d.mismatch(n, t, path)
	}
	var v any
	if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
		nv, ok := d.number(n, t, path)
		if !ok {
			return nil, false
		}
		v = nv
	} else {
		s, ok := d.str(n, path)
		if !ok {
			return nil, false
		}
		v = s
	}
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, reflect.New(t).Interface())
	}
	if err != nil {
		d.errorf(n.Line, path, "%s", jsonErrText(err))
		return nil, false
	}
	return v, true
}

// generic walks a node of any shape, as JSON decodes into an interface.
func (d *decoder) generic(n *yaml.Node, path string) (any, bool) {
	n = resolve(n)
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				d.errorf(n.Line, path, "%q is not a boolean", n.Value)
				return nil, false
			}
			return b, true
		case "!!int", "!!float":
			return d.number(n, typeOf[float64](), path)
		}
		return d.str(n, path)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		ok := true
		for i, e := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			d.pos[p] = resolve(e).Line
			v, eok := d.generic(e, p)
			ok = ok && eok
			out = append(out, v)
		}
		return out, ok
	case yaml.MappingNode:
		out := map[string]any{}
		ok := true
		for _, kv := range d.pairs(n, path) {
			p := join(path, kv.key.Value)
			d.pos[p] = kv.key.Line
			v, eok := d.generic(kv.val, p)
			ok = ok && eok
			out[kv.key.Value] = v
		}
		return out, ok
	}
	d.errorf(n.Line, path, "unsupported YAML value")
	return nil, false
}

// str returns a scalar's text, with secret references resolved when the
// decoder resolves them.
func (d *decoder) str(n *yaml.Node, path string) (any, bool) {
	if !d.refs {
		return n.Value, true
	}
	s, used, ok := d.expand(n.Line, path, n.Value)
	if used {
		d.referenced[path] = true
	}
	return s, ok
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand resolves the ${env:NAME} and ${file:PATH} references in s. "$${"
// stands for a literal "${". Messages name the reference, never its value.
func (d *decoder) expand(line int, path, s string) (out string, used, ok bool) {
	if !strings.Contains(s, "${") {
		return s, false, true
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				d.errorf(line, path, "a \"${\" with no closing \"}\"; write $${ for a literal ${")
				return "", used, false
			}
			ref := s[i : i+end+1]
			kind, arg, _ := strings.Cut(s[i+2:i+end], ":")
			used = true
			switch kind {
			case "env":
				if !envNameRE.MatchString(arg) {
					d.errorf(line, path, "%s: %q is not an environment variable name", ref, arg)
					return "", used, false
				}
				var v string
				var set bool
				if d.opts.LookupEnv != nil {
					v, set = d.opts.LookupEnv(arg)
				}
				if !set {
					d.errorf(line, path, "%s: environment variable %s is not set", ref, arg)
					return "", used, false
				}
				b.WriteString(v)
			case "file":
				if arg == "" {
					d.errorf(line, path, "%s: names no file", ref)
					return "", used, false
				}
				p := arg
				if !filepath.IsAbs(p) {
					p = filepath.Join(d.opts.Dir, p)
				}
				data, err := os.ReadFile(p)
				if err != nil {
					d.errorf(line, path, "%s: cannot read %s: %s", ref, p, fileErrText(err))
					return "", used, false
				}
				v := string(data)
				if strings.HasSuffix(v, "\r\n") {
					v = v[:len(v)-2]
				} else if strings.HasSuffix(v, "\n") {
					v = v[:len(v)-1]
				}
				b.WriteString(v)
			default:
				d.errorf(line, path, "%s: unknown reference; use ${env:NAME} or ${file:PATH} (or $${ for a literal ${)", ref)
				return "", used, false
			}
			i += end + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), used, true
}

// fileErrText is the cause of a file error without the path, which the
// message already names.
func fileErrText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// structFields returns the JSON field names of t, with embedded structs
// flattened as encoding/json flattens them, and the names in field order.
func structFields(t reflect.Type) (map[string]reflect.Type, []string) {
	out := map[string]reflect.Type{}
	var names []string
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := out[name]; !dup {
				names = append(names, name)
			}
			out[name] = f.Type
		}
	}
	walk(t)
	return out, names
}

// suggest names the closest known field when there is one that is probably
// what was meant, else lists them all.
func suggest(got string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if dist := editDistance(got, n); dist < bestD {
			best, bestD = n, dist
		}
	}
	if best != "" {
		return "; did you mean " + best + "?"
	}
	return "; known fields: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
