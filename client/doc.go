// Package client is the Go client of tokenhub's HTTP API: the one HTTP client
// of the API, used by the tokenhub CLI, by `tokenhub apply` and by Go
// services that read tokens.
//
// A Client holds a base URL and one key. With an app key it reads tokens of
// its workspace (Token, Refresh); with the admin key it manages workspaces,
// apps, providers and connections. Every method maps a non-2xx answer to an
// *Error that carries the server's error code, so callers branch with
// errors.Is(err, client.ErrNeedsReauth) or errors.As(err, &*client.Error).
//
// Go services that call an API with a connection's token should not fetch it
// per request. TokenSource returns an oauth2.TokenSource that keeps the token
// in the process until shortly before it expires (a read is one atomic load);
// Transport and HTTPClient add the connection's header to every request and,
// when the API answers 401, force one refresh and retry once if the body can
// be replayed. An app that should not hold the token at all calls the API
// through tokenhub's proxy with Proxy, and tells tokenhub's own errors from
// the API's answers with ErrorFrom.
//
// The view types (ConnectionView, Workspace, App, Event, Token, ...) are the
// API's JSON shapes, defined once here and used by package server as well.
// None of them carries a secret except Token (the access token an app asked
// for) and AppKey (the key, shown once when an app is created); both redact
// themselves when formatted or logged.
package client
