package poll_test

import (
	"sync/atomic"
	"testing"

	"github.com/tokenhub/tokenhub/internal/poll"
)

// TestUntilReturnsOnceTrue checks that Until keeps calling cond until it
// holds, and then stops.
func TestUntilReturnsOnceTrue(t *testing.T) {
	var calls atomic.Int64
	poll.Until(t, "the third call", func() bool { return calls.Add(1) == 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}
