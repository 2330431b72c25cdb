// Package tokenhub holds the domain of tokenhub: the tokens it keeps, the
// providers that issue them, the connections that bind a provider to a set of
// credentials inside a workspace, the apps that read them, and the Store that
// persists all of it.
//
// The package depends on the standard library only. Every other package talks
// to its neighbours through the types declared here: grant/ speaks the wire
// protocols, broker/ runs the engine, sqlite/ (and later postgres/) implement
// Store, and cmd/tokenhub wires them together.
package tokenhub
