// Package logtest holds what tests need to read back what a logger (or a
// command's output stream) wrote while other goroutines are still writing.
//
// Tests pass a *Buffer to slog.NewTextHandler, slog.NewJSONHandler or as a
// command's stdout/stderr, and read it with String, for example to check that
// no secret was ever logged. A bytes.Buffer alone would race.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer safe for concurrent use: the writes of a logger
// on many goroutines and the reads of a test. The zero value is an empty
// buffer ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p. It never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
