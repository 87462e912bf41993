package bench

import (
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{2, nan, 1, 9}, 2},
		{[]float64{7, 7, 1, 7, 100}, 7},
	} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, in := range [][]float64{nil, {}, {nan, nan}} {
		if got := Median(in); !math.IsNaN(got) {
			t.Errorf("Median(%v) = %v, want NaN", in, got)
		}
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Errorf("Median reordered its input: %v", in)
	}
}

func TestRatios(t *testing.T) {
	got := Ratios([]float64{2, 3, 4, math.NaN(), 10}, []float64{1, 0, 8, 1})
	if len(got) != 4 {
		t.Fatalf("Ratios gave %d values, want 4 (the shorter input)", len(got))
	}
	if got[0] != 2 || !math.IsNaN(got[1]) || got[2] != 0.5 || !math.IsNaN(got[3]) {
		t.Errorf("Ratios = %v, want [2 NaN 0.5 NaN]", got)
	}
}

func TestMedianRatioIsPerRound(t *testing.T) {
	// The second tool is always twice as slow within a round, while the
	// machine's speed varies between rounds: the per-round ratio is exactly
	// 2, the ratio of the medians is not.
	a := []float64{1, 10, 3, 4, 100}
	b := []float64{2, 20, 6, 8, 200}
	if got := MedianRatio(b, a); got != 2 {
		t.Errorf("MedianRatio = %v, want 2", got)
	}
	if got := MedianRatio(a, []float64{0, 0}); !math.IsNaN(got) {
		t.Errorf("MedianRatio over zero denominators = %v, want NaN", got)
	}
}
