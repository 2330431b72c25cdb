package load

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// Plan is a benchmark of several targets in rounds. In every round each
// target gets an unmeasured warm-up and then a measured window, one target
// after the other; odd rounds go through the targets in reverse order, so
// that no target always runs first (on a warmer or a quieter machine).
type Plan struct {
	// Conns is the number of concurrent keep-alive connections. Default 64.
	Conns int
	// Duration is the measured window per target per round. Required.
	Duration time.Duration
	// Warmup is the unmeasured run before each window; none when 0.
	Warmup time.Duration
	// Rounds is the number of rounds. Default 1.
	Rounds int
	// MaxRequests bounds the requests per target per window (see Options).
	MaxRequests int
	// Progress, when set, receives a line per measured window.
	Progress io.Writer
}

// Measurement is one target measured in one round.
type Measurement struct {
	*Result
	// Round counts from 1.
	Round int
	// Usage is what the target's Proc consumed during the measured window;
	// zero when the target has no Proc.
	Usage Usage
	// Generator is what this process (the load generator) consumed during
	// the window.
	Generator Usage
}

// CPUPerRequest returns the target's process CPU time per successful
// request during the window; 0 when unknown.
func (m *Measurement) CPUPerRequest() time.Duration {
	if m.Requests == 0 {
		return 0
	}
	return m.Usage.CPU() / time.Duration(m.Requests)
}

// AllocsPerRequest returns the target's process heap allocations per
// successful request during the window.
func (m *Measurement) AllocsPerRequest() float64 {
	if m.Requests == 0 {
		return 0
	}
	return float64(m.Usage.Allocs) / float64(m.Requests)
}

// Run runs the plan with c and returns ms, where ms[i][r] is targets[i]
// in round r+1. Requests that fail are counted in each Result, not
// returned; Run fails when ctx is done, a target's request cannot be
// built, or a Proc's usage cannot be read.
func (p Plan) Run(ctx context.Context, c *Client, targets []*Target) ([][]*Measurement, error) {
	rounds := max(p.Rounds, 1)
	ms := make([][]*Measurement, len(targets))
	o := Options{Conns: p.Conns, Duration: p.Duration, MaxRequests: p.MaxRequests}
	for r := range rounds {
		order := make([]int, len(targets))
		for i := range order {
			order[i] = i
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			if err := ctx.Err(); err != nil {
				return ms, err
			}
			t := targets[i]
			if p.Warmup > 0 {
				w := o
				w.Duration, w.Discard = p.Warmup, true
				if _, err := Run(ctx, c, t, w); err != nil {
					return ms, err
				}
			}
			var before Usage
			if t.Proc != nil {
				var err error
				if before, err = t.Proc.Usage(); err != nil {
					return ms, err
				}
			}
			gen := SelfUsage()
			res, err := Run(ctx, c, t, o)
			if err != nil {
				return ms, err
			}
			m := &Measurement{Result: res, Round: r + 1, Generator: SelfUsage().Sub(gen)}
			if t.Proc != nil {
				after, err := t.Proc.Usage()
				if err != nil {
					return ms, err
				}
				m.Usage = after.Sub(before)
			}
			ms[i] = append(ms[i], m)
			if p.Progress != nil {
				fmt.Fprintf(p.Progress, "  round %d %-8s %s\n", m.Round, t.Name, m)
			}
		}
	}
	return ms, nil
}

// String is the measurement on one line.
func (m *Measurement) String() string {
	s := fmt.Sprintf("%8.0f req/s  p50 %8s  p99 %8s", m.Rate(),
		m.Percentile(0.50).Round(time.Microsecond), m.Percentile(0.99).Round(time.Microsecond))
	if m.Usage != (Usage{}) {
		s += fmt.Sprintf("  cpu %5.1f µs/req  %4.1f allocs/req", micros(m.CPUPerRequest()), m.AllocsPerRequest())
	}
	if m.Errors > 0 {
		s += fmt.Sprintf("  %d errors (first: %v)", m.Errors, m.Err)
	}
	return s
}

// Summary is a target's measurements over all rounds: medians of the
// per-round figures, which a noisy round moves less than a pooled figure,
// and the pooled figures beside them.
type Summary struct {
	Target string
	Rounds int
	// Requests, Errors and Dials are totals over the rounds.
	Requests, Errors, Dials int64
	// Rate, P50, P99, CPUPerRequest and AllocsPerRequest are medians over
	// rounds.
	Rate             float64
	P50, P99         time.Duration
	CPUPerRequest    time.Duration
	AllocsPerRequest float64
	// GeneratorCPUPerRequest is the median over rounds of the load
	// generator's own CPU time per request.
	GeneratorCPUPerRequest time.Duration
	// PooledRate is all requests over all windows' time; PooledP50 and
	// PooledP99 are over all latencies together.
	PooledRate           float64
	PooledP50, PooledP99 time.Duration
}

// Summarize returns the summary of one target's measurements.
func Summarize(ms []*Measurement) Summary {
	s := Summary{Rounds: len(ms)}
	if len(ms) == 0 {
		return s
	}
	s.Target = ms[0].Target
	var rate, p50, p99, cpu, allocs, gen []float64
	var elapsed time.Duration
	var all []time.Duration
	for _, m := range ms {
		s.Requests += m.Requests
		s.Errors += m.Errors
		s.Dials += m.Dials
		elapsed += m.Elapsed
		all = append(all, m.Latencies...)
		rate = append(rate, m.Rate())
		p50 = append(p50, float64(m.Percentile(0.50)))
		p99 = append(p99, float64(m.Percentile(0.99)))
		cpu = append(cpu, float64(m.CPUPerRequest()))
		allocs = append(allocs, m.AllocsPerRequest())
		if m.Requests > 0 {
			gen = append(gen, float64(m.Generator.CPU())/float64(m.Requests))
		}
	}
	slices.Sort(all)
	s.Rate = Median(rate)
	s.P50, s.P99 = time.Duration(Median(p50)), time.Duration(Median(p99))
	s.CPUPerRequest = time.Duration(Median(cpu))
	s.AllocsPerRequest = Median(allocs)
	s.GeneratorCPUPerRequest = time.Duration(Median(gen))
	if elapsed > 0 {
		s.PooledRate = float64(s.Requests) / elapsed.Seconds()
	}
	s.PooledP50, s.PooledP99 = Percentile(all, 0.50), Percentile(all, 0.99)
	return s
}

// RoundRatios returns, for each round both a and b were measured in,
// f(a)/f(b): a ratio of two targets measured back to back, which drift in
// the machine's load moves less than a ratio of totals.
func RoundRatios(a, b []*Measurement, f func(*Measurement) float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, 0, n)
	for i := range n {
		if d := f(b[i]); d != 0 {
			out = append(out, f(a[i])/d)
		}
	}
	return out
}

// RateOf returns m's successful requests per second, for RoundRatios.
func RateOf(m *Measurement) float64 { return m.Rate() }

// P99Of returns m's p99 latency in nanoseconds.
func P99Of(m *Measurement) float64 { return float64(m.Percentile(0.99)) }

// CPUOf returns m's CPU time per request in nanoseconds.
func CPUOf(m *Measurement) float64 { return float64(m.CPUPerRequest()) }

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
