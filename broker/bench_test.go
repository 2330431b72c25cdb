package broker_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/broker"
	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/sqlite"
)

// staticGranter hands out long-lived tokens without any network, so the
// benchmarks measure the read path alone.
type staticGranter struct{ calls atomic.Int64 }

func (g *staticGranter) Obtain(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection) (*tokenhub.Token, error) {
	g.calls.Add(1)
	now := time.Now()
	return &tokenhub.Token{AccessToken: "bench-access-token", TokenType: "Bearer", ObtainedAt: now,
		ExpiresAt: now.Add(time.Hour), ExpirySource: tokenhub.ExpiryExpiresIn}, nil
}

func (g *staticGranter) Refresh(ctx context.Context, p *tokenhub.Provider, c *tokenhub.Connection, rt string) (*tokenhub.Token, error) {
	return g.Obtain(ctx, p, c)
}

// BenchmarkTokenCached reads a connection whose token is valid: the path every
// app request takes.
func BenchmarkTokenCached(b *testing.B) {
	ctx := context.Background()
	key := make([]byte, 32)
	keys, err := seal.NewKeyring(key)
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"), keys)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateWorkspace(ctx, "acme"); err != nil {
		b.Fatal(err)
	}
	cfg := &tokenhub.ConnectionConfig{Provider: "oauth2", TokenURL: "http://127.0.0.1:1/token", ClientID: "id", ClientSecret: "s"}
	if _, _, err := st.PutConnection(ctx, "acme", "reports", cfg, time.Now()); err != nil {
		b.Fatal(err)
	}
	br := broker.New(broker.Options{Store: st, Grant: &staticGranter{}})
	if err := br.Open(ctx); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	// Wait for the first token (obtained at once by Open).
	if _, err := br.Token(ctx, "acme", "reports"); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := br.Token(ctx, "acme", "reports"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := br.Token(ctx, "acme", "reports"); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

type staticSource struct{}

func (staticSource) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: "bench-access-token", TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)}, nil
}

// BenchmarkTokenCachedOAuth2 is the same read through golang.org/x/oauth2's
// ReuseTokenSource, for a side-by-side ratio.
func BenchmarkTokenCachedOAuth2(b *testing.B) {
	ts := oauth2.ReuseTokenSource(nil, staticSource{})
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ts.Token(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := ts.Token(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
