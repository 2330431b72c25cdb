package server_test

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/docs"
	"github.com/tokenhub/tokenhub/server"
)

type doc = map[string]any

func loadOpenAPI(t *testing.T) doc {
	t.Helper()
	var d doc
	if err := yaml.Unmarshal(docs.OpenAPI, &d); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if d["openapi"] != "3.1.0" {
		t.Fatalf("openapi: %v, want 3.1.0", d["openapi"])
	}
	return d
}

func child(t *testing.T, m any, keys ...string) doc {
	t.Helper()
	for _, k := range keys {
		mm, ok := m.(doc)
		if !ok {
			t.Fatalf("%s: not a mapping", strings.Join(keys, "."))
		}
		m = mm[k]
	}
	out, ok := m.(doc)
	if !ok {
		t.Fatalf("%s: missing or not a mapping", strings.Join(keys, "."))
	}
	return out
}

var methods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

var wildcard = regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}`)

// TestOpenAPIMatchesRoutes: every route the server registers is described,
// with the right key, and nothing described is missing from the server.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := loadOpenAPI(t)
	paths := child(t, d, "paths")

	described := map[string]doc{} // "GET /v1/…" → operation
	for p, item := range paths {
		for _, m := range methods {
			if op, ok := item.(doc)[m].(doc); ok {
				described[strings.ToUpper(m)+" "+p] = op
			}
		}
	}
	served := map[string]server.Route{}
	for _, r := range server.Routes() {
		p := wildcard.ReplaceAllString(r.Pattern, "{$1}")
		ms := []string{r.Method}
		if r.Method == "" {
			ms = []string{"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"}
		}
		for _, m := range ms {
			served[m+" "+p] = r
		}
	}
	for k := range served {
		if _, ok := described[k]; !ok {
			t.Errorf("route %s is served but not described in docs/openapi.yaml", k)
		}
	}
	for k := range described {
		if _, ok := served[k]; !ok {
			t.Errorf("docs/openapi.yaml describes %s, which the server does not serve", k)
		}
	}

	schemes := child(t, d, "components", "securitySchemes")
	for _, s := range []string{"adminKey", "appKey"} {
		sc := child(t, schemes, s)
		if sc["type"] != "http" || sc["scheme"] != "bearer" {
			t.Errorf("security scheme %s = %v, want http bearer", s, sc)
		}
	}
	for k, r := range served {
		op := described[k]
		if op == nil {
			continue
		}
		sec, ok := op["security"]
		if !ok {
			sec = d["security"]
		}
		want := map[server.Auth]string{server.AuthNone: "[]", server.AuthAdmin: "[map[adminKey:[]]]", server.AuthApp: "[map[appKey:[]]]",
			server.AuthAppOrAdmin: "[map[appKey:[]] map[adminKey:[]]]"}[r.Auth]
		if got := fmt.Sprint(sec); got != want {
			t.Errorf("%s: security %s, want %s (route needs %s)", k, got, want, r.Auth)
		}
		if _, ok := op["responses"].(doc); !ok {
			t.Errorf("%s: no responses", k)
		}
		// Every path wildcard is a declared path parameter.
		path := strings.SplitN(k, " ", 2)[1]
		declared := map[string]bool{}
		for _, src := range []any{paths[path].(doc)["parameters"], op["parameters"]} {
			list, _ := src.([]any)
			for _, p := range list {
				p := resolve(t, d, p)
				if p["in"] == "path" {
					declared[p["name"].(string)] = true
				}
			}
		}
		for _, m := range wildcard.FindAllStringSubmatch(path, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: path parameter %s is not declared", k, m[1])
			}
		}
	}
}

// resolve follows a $ref within the document.
func resolve(t *testing.T, d doc, v any) doc {
	t.Helper()
	m, ok := v.(doc)
	if !ok {
		t.Fatalf("%v is not a mapping", v)
	}
	ref, ok := m["$ref"].(string)
	if !ok {
		return m
	}
	return child(t, d, strings.Split(strings.TrimPrefix(ref, "#/"), "/")...)
}

// TestOpenAPIRefs: every $ref points at something.
func TestOpenAPIRefs(t *testing.T) {
	d := loadOpenAPI(t)
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case doc:
			if ref, ok := v["$ref"].(string); ok {
				if !strings.HasPrefix(ref, "#/") {
					t.Errorf("%s: external $ref %s", at, ref)
					return
				}
				var cur any = d
				for _, k := range strings.Split(ref[2:], "/") {
					m, ok := cur.(doc)
					if !ok {
						cur = nil
						break
					}
					cur = m[k]
				}
				if cur == nil {
					t.Errorf("%s: $ref %s points at nothing", at, ref)
				}
			}
			for k, x := range v {
				walk(x, at+"."+k)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s[%d]", at, i))
			}
		}
	}
	walk(d, "")
}

// TestOpenAPISchemasMatchTypes: each schema lists exactly the JSON fields of
// the Go type that is encoded or decoded for it.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	d := loadOpenAPI(t)
	schemas := child(t, d, "components", "schemas")
	pairs := map[string]any{
		"Error":                  client.ErrorBody{},
		"Status":                 client.Status{},
		"Workspace":              client.Workspace{},
		"WorkspaceList":          client.WorkspaceList{},
		"CreateWorkspaceRequest": client.CreateWorkspaceRequest{},
		"App":                    client.App{},
		"AppList":                client.AppList{},
		"CreateAppRequest":       client.CreateAppRequest{},
		"AppKey":                 client.AppKey{},
		"Header":                 tokenhub.Header{},
		"Request":                tokenhub.Request{},
		"ResponseMapping":        tokenhub.ResponseMapping{},
		"Provider":               tokenhub.Provider{},
		"ProviderView":           client.ProviderView{},
		"PutProviderResult":      client.PutProviderResult{},
		"ProviderList":           client.ProviderList{},
		"AllowRule":              tokenhub.AllowRule{},
		"ConnectionConfig": struct {
			Name string `json:"name"`
			tokenhub.ConnectionConfig
		}{},
		"ErrorInfo":           tokenhub.ErrorInfo{},
		"ConnectionView":      client.ConnectionView{},
		"PutConnectionResult": client.PutConnectionResult{},
		"ConnectionList":      client.ConnectionList{},
		"Event":               client.Event{},
		"EventList":           client.EventList{},
		"Token":               client.Token{},
	}
	for name, v := range pairs {
		s, ok := schemas[name]
		if !ok {
			t.Errorf("schema %s is missing", name)
			continue
		}
		got := schemaProps(t, d, s)
		want := jsonNames(reflect.TypeOf(v))
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("schema %s has properties %v; the Go type has %v", name, got, want)
		}
	}
	// The token's header is described field by field too.
	tok := child(t, schemas, "Token", "properties", "header")
	if got := schemaProps(t, d, tok); !slices.Equal(sorted(got), sorted(jsonNames(reflect.TypeFor[client.Header]()))) {
		t.Errorf("Token.header has %v", got)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

// schemaProps returns the property names of an object schema, following
// $ref and allOf.
func schemaProps(t *testing.T, d doc, s any) []string {
	m := resolve(t, d, s)
	var out []string
	if props, ok := m["properties"].(doc); ok {
		for k := range props {
			out = append(out, k)
		}
	}
	if all, ok := m["allOf"].([]any); ok {
		for _, x := range all {
			out = append(out, schemaProps(t, d, x)...)
		}
	}
	return out
}

// jsonNames returns the JSON field names of a struct type, with embedded
// structs flattened, as encoding/json sees them.
func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			out = append(out, jsonNames(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// TestOpenAPIErrorsMarked: every error response documents the header that
// marks tokenhub's own errors, with the codes the Error schema allows.
func TestOpenAPIErrorsMarked(t *testing.T) {
	d := loadOpenAPI(t)
	hdr := child(t, d, "components", "headers", "TokenhubError")
	codes := fmt.Sprint(child(t, hdr, "schema")["enum"])
	if want := fmt.Sprint(child(t, d, "components", "schemas", "Error", "properties", "error", "properties", "code")["enum"]); codes != want {
		t.Errorf("TokenhubError codes %s, want the Error schema's %s", codes, want)
	}
	n := 0
	for name, r := range child(t, d, "components", "responses") {
		schema := resolve(t, d, r)["content"].(doc)["application/json"].(doc)["schema"].(doc)
		if schema["$ref"] != "#/components/schemas/Error" {
			continue
		}
		n++
		headers, _ := resolve(t, d, r)["headers"].(doc)
		h, _ := headers[client.ErrorHeader].(doc)
		if h["$ref"] != "#/components/headers/TokenhubError" {
			t.Errorf("response %s: no %s header", name, client.ErrorHeader)
		}
	}
	if n == 0 {
		t.Fatal("no error responses in components.responses")
	}
}
