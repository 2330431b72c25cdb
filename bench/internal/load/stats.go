package load

import (
	"slices"
	"time"
)

// Percentile returns the p-quantile (0 ≤ p ≤ 1) of sorted, which must be
// in ascending order, by the nearest-rank method: the smallest value with
// at least p of the values at or below it. It returns 0 for no values; p
// outside [0, 1] is clamped.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	p = min(max(p, 0), 1)
	// rank = ceil(p*n), 1-based; rank 0 (p = 0) is the minimum.
	rank := int(p * float64(n))
	if float64(rank) < p*float64(n) {
		rank++
	}
	return sorted[max(rank, 1)-1]
}

// Median returns the median of xs (the mean of the middle two for an even
// count), without reordering xs; 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
