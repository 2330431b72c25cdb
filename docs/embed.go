// Package docs holds tokenhub's documentation that the binary serves. Its
// one export is the OpenAPI description of the HTTP API, served by the
// server at GET /openapi.yaml, so that the description a client reads is
// always the one the running server was built with.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml: the OpenAPI 3.1 description of tokenhub's
// HTTP API. It must not be modified.
//
//go:embed openapi.yaml
var OpenAPI []byte
