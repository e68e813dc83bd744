package bench

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Summary
	}{
		{nil, Summary{}},
		{[]float64{3}, Summary{N: 1, Min: 3, Median: 3, P99: 3, Max: 3, Mean: 3}},
		{[]float64{4, 1, 3, 2}, Summary{N: 4, Min: 1, Median: 2.5, P99: 4, Max: 4, Mean: 2.5}},
		{[]float64{5, 1, 4, 2, 3}, Summary{N: 5, Min: 1, Median: 3, P99: 5, Max: 5, Mean: 3}},
	} {
		if d := cmp.Diff(tc.want, Summarize(tc.in)); d != "" {
			t.Errorf("Summarize(%v) (-want +got):\n%s", tc.in, d)
		}
	}
	// 100 samples 1..100: p99 is the 99th value.
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i)
	}
	if s := Summarize(xs); s.P99 != 99 || s.Median != 50.5 {
		t.Errorf("1..100: p99 %v median %v", s.P99, s.Median)
	}
}
