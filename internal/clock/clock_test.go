package clock_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/clock"
)

func TestFakeRunsDueTimersInOrder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := clock.NewFake(start)
	var got []string
	var seen []time.Duration
	add := func(name string, d time.Duration) clock.Timer {
		return c.AfterFunc(d, func() {
			got = append(got, name)
			seen = append(seen, c.Now().Sub(start))
		})
	}
	add("c", 3*time.Second)
	add("a", time.Second)
	stopped := add("x", 2*time.Second)
	add("b", 2*time.Second)
	add("late", time.Hour)
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer = false")
	}
	if stopped.Stop() {
		t.Fatal("second Stop = true")
	}

	c.Advance(3 * time.Second)
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(seen, want) {
		t.Fatalf("clock read %v inside the timers, want each timer's deadline %v", seen, want)
	}
	if c.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1", c.Pending())
	}
	if next, ok := c.Next(); !ok || !next.Equal(start.Add(time.Hour)) {
		t.Fatalf("Next = %v, %v; want start+1h", next, ok)
	}
	c.Set(start) // never backwards
	if !c.Now().Equal(start.Add(3 * time.Second)) {
		t.Fatalf("Set moved the clock backwards to %v", c.Now())
	}
}

func TestFakeImmediateTimer(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	done := make(chan struct{})
	c.AfterFunc(0, func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a timer due at once never ran")
	}
}
