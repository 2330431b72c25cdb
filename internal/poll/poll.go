// Package poll waits in tests for effects that arrive asynchronously (a
// refresh that runs on its own goroutine, a log line written after an
// answer), without asserting anything about how long they take.
package poll

import (
	"testing"
	"time"
)

// Deadline is how long Until waits before failing the test: generous, so
// that a slow or busy machine does not fail a correct test.
const Deadline = 10 * time.Second

// Interval is how often Until checks its condition.
const Interval = 5 * time.Millisecond

// Until calls cond every Interval until it returns true, and fails the test
// with "timed out waiting for <what>" when it has not after Deadline. cond
// runs on the calling goroutine; Until returns only once cond held, so what
// cond saw is visible to the caller afterwards.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(Interval)
	}
}
