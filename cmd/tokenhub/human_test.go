package main

import (
	"testing"
	"time"
)

// TestHuman checks the durations of the status table, which people read.
func TestHuman(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{400 * time.Millisecond, "0s"},
		{42 * time.Second, "42s"},
		{59600 * time.Millisecond, "1m"},
		{3*time.Minute + 10*time.Second, "3m10s"},
		{time.Hour, "1h"},
		{2*time.Hour + 5*time.Minute + 30*time.Second, "2h5m"},
		{76 * time.Hour, "3d4h"},
		{48 * time.Hour, "2d"},
		{-42 * time.Second, "42s"},
	} {
		if got := human(tt.d); got != tt.want {
			t.Errorf("human(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
