package bench

import (
	"fmt"
	"math"
	"slices"
)

// Summary describes a sample of measurements (milliseconds).
type Summary struct {
	N                     int
	Min, Median, P99, Max float64
	Mean                  float64
}

// Summarize computes a Summary. P99 is the nearest-rank percentile.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{
		N:      len(s),
		Min:    s[0],
		Median: percentile(s, 50),
		P99:    percentile(s, 99),
		Max:    s[len(s)-1],
		Mean:   sum / float64(len(s)),
	}
}

// percentile returns the nearest-rank p-th percentile of sorted s.
func percentile(s []float64, p float64) float64 {
	if p == 50 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank-1, 0)]
}

func (s Summary) String() string {
	return fmt.Sprintf("n=%d median=%.2f p99=%.2f min=%.2f max=%.2f", s.N, s.Median, s.P99, s.Min, s.Max)
}
