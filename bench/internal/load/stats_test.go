package load_test

import (
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/internal/load"
)

func ms(xs ...int) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	ten := ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"min", ten, 0, 1 * time.Millisecond},
		{"p10 of 10", ten, 0.10, 1 * time.Millisecond},
		{"p50 of 10", ten, 0.50, 5 * time.Millisecond},
		{"p51 of 10", ten, 0.51, 6 * time.Millisecond},
		{"p99 of 10", ten, 0.99, 10 * time.Millisecond},
		{"max", ten, 1, 10 * time.Millisecond},
		{"above 1 is clamped", ten, 2, 10 * time.Millisecond},
		{"p99 of 100", hundred, 0.99, 99 * time.Millisecond},
		{"p50 of 100", hundred, 0.50, 50 * time.Millisecond},
	} {
		if got := load.Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: Percentile(%v) = %s, want %s", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), tc.xs...)
		if got := load.Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.xs[i] {
				t.Errorf("Median reordered its argument: %v, was %v", tc.xs, in)
			}
		}
	}
}

// measurement is a made-up round: n requests in d, all with latency lat,
// and cpu of the target's process.
func measurement(round int, n int64, d, lat, cpu time.Duration) *load.Measurement {
	lats := make([]time.Duration, n)
	for i := range lats {
		lats[i] = lat
	}
	return &load.Measurement{
		Result: &load.Result{Target: "t", Requests: n, Elapsed: d, Latencies: lats, Dials: 1},
		Round:  round,
		Usage:  load.Usage{User: cpu * 3 / 4, System: cpu / 4, Allocs: uint64(n) * 2},
	}
}

func TestSummarizeAndRatios(t *testing.T) {
	a := []*load.Measurement{
		measurement(1, 100, time.Second, 1*time.Millisecond, 1000*time.Microsecond),
		measurement(2, 300, time.Second, 2*time.Millisecond, 3000*time.Microsecond),
		measurement(3, 200, time.Second, 9*time.Millisecond, 4000*time.Microsecond),
	}
	s := load.Summarize(a)
	if s.Target != "t" || s.Rounds != 3 || s.Requests != 600 || s.Dials != 3 {
		t.Errorf("totals: %+v", s)
	}
	if s.Rate != 200 || s.PooledRate != 200 {
		t.Errorf("rate: median %v, pooled %v; want 200 and 200", s.Rate, s.PooledRate)
	}
	if s.P99 != 2*time.Millisecond || s.PooledP99 != 9*time.Millisecond || s.PooledP50 != 2*time.Millisecond {
		t.Errorf("p99: median %s, pooled %s, pooled p50 %s; want 2ms, 9ms, 2ms", s.P99, s.PooledP99, s.PooledP50)
	}
	// cpu per request: 10µs, 10µs, 20µs.
	if s.CPUPerRequest != 10*time.Microsecond || s.AllocsPerRequest != 2 {
		t.Errorf("per request: cpu %s, allocs %v; want 10µs and 2", s.CPUPerRequest, s.AllocsPerRequest)
	}

	b := []*load.Measurement{
		measurement(1, 200, time.Second, 1*time.Millisecond, 0),
		measurement(2, 300, time.Second, 1*time.Millisecond, 0),
	}
	got := load.RoundRatios(a, b, load.RateOf)
	if len(got) != 2 || got[0] != 0.5 || got[1] != 1 {
		t.Errorf("RoundRatios(rate) = %v, want [0.5 1] (one per round both have)", got)
	}
	if got := load.RoundRatios(a, b, load.P99Of); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("RoundRatios(p99) = %v, want [1 2]", got)
	}
	if got := load.RoundRatios(a, b, load.CPUOf); len(got) != 0 {
		t.Errorf("RoundRatios(cpu) with no cpu in b = %v, want none", got)
	}
}
