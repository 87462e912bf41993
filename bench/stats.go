package bench

import (
	"math"
	"slices"
)

// Median returns the median of xs, ignoring NaNs: the middle value, or the
// mean of the two middle values when their count is even. It returns NaN
// when there is no value.
func Median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	mid := len(v) / 2
	if len(v)%2 == 1 {
		return v[mid]
	}
	return (v[mid-1] + v[mid]) / 2
}

// Ratios returns num[i]/den[i] for every i both slices have. A pair with a
// NaN, or a denominator that is zero, gives NaN, which Median ignores.
func Ratios(num, den []float64) []float64 {
	n := min(len(num), len(den))
	out := make([]float64, n)
	for i := range n {
		if den[i] == 0 || math.IsNaN(num[i]) || math.IsNaN(den[i]) {
			out[i] = math.NaN()
			continue
		}
		out[i] = num[i] / den[i]
	}
	return out
}

// MedianRatio is the median of the run-by-run ratios num[i]/den[i]: each
// ratio compares two runs of the same round, so slow phases of a shared
// machine, which hit both runs of a round, cancel out.
func MedianRatio(num, den []float64) float64 { return Median(Ratios(num, den)) }
