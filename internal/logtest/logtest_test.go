package logtest_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub/internal/logtest"
)

// TestBufferConcurrent writes from many goroutines through a logger while
// reading, and finds every line afterwards (run with -race).
func TestBufferConcurrent(t *testing.T) {
	var b logtest.Buffer
	log := slog.New(slog.NewTextHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			log.Info("line", "n", i)
			_ = b.String()
		})
	}
	wg.Wait()
	out := b.String()
	for i := range 20 {
		if !strings.Contains(out, fmt.Sprintf("msg=line n=%d\n", i)) {
			t.Errorf("line %d missing from %q", i, out)
		}
	}
}
