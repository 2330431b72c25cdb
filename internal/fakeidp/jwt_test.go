package fakeidp_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/fakeidp"
)

func TestSigner(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s := fakeidp.NewSigner()
	tok, err := s.Sign(map[string]any{"sub": "x", "exp": now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Verify(tok, now); err != nil || c["sub"] != "x" {
		t.Fatalf("Verify = %v, %v", c, err)
	}
	if _, err := s.Verify(tok, now.Add(time.Minute)); !errors.Is(err, fakeidp.ErrExpired) {
		t.Errorf("at exp: %v, want ErrExpired", err)
	}
	noExp, _ := s.Sign(map[string]any{"sub": "y"})
	if _, err := s.Verify(noExp, now.Add(1000*time.Hour)); err != nil {
		t.Errorf("a token without exp: %v", err)
	}
	p := strings.Split(tok, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + p[1] + "."
	for name, bad := range map[string]string{"alg none": none, "two parts": p[0] + "." + p[1], "bad signature": p[0] + "." + p[1] + ".AAAA"} {
		if _, err := s.Verify(bad, now); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
	if _, err := fakeidp.NewSigner().Verify(tok, now); !errors.Is(err, fakeidp.ErrSignature) {
		t.Errorf("another signer: %v, want ErrSignature", err)
	}
	s.Rotate()
	if _, err := s.Verify(tok, now); !errors.Is(err, fakeidp.ErrSignature) {
		t.Errorf("after Rotate: %v, want ErrSignature", err)
	}
}
