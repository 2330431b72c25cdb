package catalog_test

import (
	"context"
	"testing"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/catalog"
)

type finder map[string]*tokenhub.Provider

func (f finder) FindProvider(ctx context.Context, name string) (*tokenhub.Provider, error) {
	if p, ok := f[name]; ok {
		return p, nil
	}
	return nil, tokenhub.Errorf(tokenhub.ENOTFOUND, "provider %q not found", name)
}

func TestResolve(t *testing.T) {
	stored := finder{"baserow-login": {Name: "baserow-login"}, "oauth2": {Name: "oauth2", TokenURL: "https://shadow"}}
	p, err := catalog.Resolve(context.Background(), stored, "oauth2")
	if err != nil || p.TokenURL != "" || p.HeaderOrDefault() != tokenhub.DefaultHeader {
		t.Fatalf("Resolve(oauth2) = %+v, %v; want the built-in, not a stored one of the same name", p, err)
	}
	p.Name = "changed" // a copy: callers cannot change the built-in
	if catalog.Builtin("oauth2").Name != "oauth2" {
		t.Fatal("Builtin returned shared state")
	}
	if p, err := catalog.Resolve(context.Background(), stored, "baserow-login"); err != nil || p.Name != "baserow-login" {
		t.Fatalf("Resolve(stored) = %+v, %v", p, err)
	}
	if _, err := catalog.Resolve(context.Background(), stored, "nope"); tokenhub.ErrorCode(err) != tokenhub.ENOTFOUND {
		t.Fatalf("Resolve(unknown) = %v, want not_found", err)
	}
	if names := catalog.Names(); len(names) != 1 || names[0] != "oauth2" {
		t.Fatalf("Names() = %v", names)
	}
}
