// Package catalog holds the provider definitions built into tokenhub.
package catalog

import (
	"context"
	"sort"

	"github.com/tokenhub/tokenhub"
)

// builtin are the providers every tokenhub knows. A stored provider may not
// take one of these names.
var builtin = map[string]tokenhub.Provider{
	// oauth2 is generic OAuth 2.0: the connection names the token_url and grant.
	"oauth2": {Name: "oauth2", Header: tokenhub.DefaultHeader},
}

// Builtin returns a copy of the built-in provider called name, or nil.
func Builtin(name string) *tokenhub.Provider {
	p, ok := builtin[name]
	if !ok {
		return nil
	}
	return &p
}

// Names returns the names of the built-in providers, sorted.
func Names() []string {
	out := make([]string, 0, len(builtin))
	for n := range builtin {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ProviderFinder is the part of tokenhub.Store that Resolve needs.
type ProviderFinder interface {
	FindProvider(ctx context.Context, name string) (*tokenhub.Provider, error)
}

// Resolve returns the provider called name: a built-in one, or else the one
// in the store. A provider that exists nowhere yields ENOTFOUND.
func Resolve(ctx context.Context, store ProviderFinder, name string) (*tokenhub.Provider, error) {
	if p := Builtin(name); p != nil {
		return p, nil
	}
	return store.FindProvider(ctx, name)
}
