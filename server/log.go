package server

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// routeOf returns the route pattern that served r, or "-" when none did.
func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return "-"
}

// statusWriter records the status of an answer. It keeps Flush, Hijack and
// Unwrap working (http.ResponseController uses Unwrap), so that a streaming
// proxy behind it still streams. statusWriters are pooled: one request
// costs no allocation for logging.
type statusWriter struct {
	http.ResponseWriter
	status int
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush implements http.Flusher.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs one line per request at debug level: method, route
// pattern, status and duration. Never a header (the key is in
// Authorization), never a body, never the path itself (a proxied path may
// carry anything). When debug is off it adds nothing to a request, not even
// a clock read. Failures worth an operator's attention are logged where they
// happen (internal errors by writeError, at error level).
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now() // wall time even under a fake clock: this is a duration
		sw := statusWriters.Get().(*statusWriter)
		sw.ResponseWriter, sw.status = w, 0
		next.ServeHTTP(sw, r)
		status := sw.status
		sw.ResponseWriter = nil
		statusWriters.Put(sw)
		if status == 0 {
			status = http.StatusOK
		}
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("method", r.Method),
			slog.String("route", routeOf(r)),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)))
	})
}
