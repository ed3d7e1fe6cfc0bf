package analytics_test

import (
	"math"
	"testing"

	"github.com/cartlift/cartlift/analytics"
)

// Newcombe (1998), "Interval estimation for the difference between
// independent proportions: comparison of eleven methods", Statistics in
// Medicine 17:873–890. The worked example of the text is (a), 56/70 vs
// 48/80: 0.2000, 0.0524 to 0.3339 by method 10. The others are the
// examples of its Table II, method 10; every row was also recomputed with
// an independent python implementation at authoring time.
func TestNewcombeDiffPublished(t *testing.T) {
	for _, c := range []struct {
		x1, n1, x2, n2 int64
		diff, lo, hi   float64
	}{
		{56, 70, 48, 80, 0.2000, 0.0524, 0.3339}, // (a), the text's example
		{9, 10, 3, 10, 0.6000, 0.1705, 0.8090},
		{6, 7, 2, 7, 0.5714, 0.0582, 0.8062},
		{5, 56, 0, 29, 0.0893, -0.0381, 0.1926},
		{0, 10, 0, 20, 0, -0.1611, 0.2775},
		{10, 10, 0, 20, 1, 0.6791, 1},
		{10, 10, 0, 10, 1, 0.6075, 1},
	} {
		d, lo, hi := analytics.NewcombeDiff(c.x1, c.n1, c.x2, c.n2)
		if math.Abs(d-c.diff) > 1e-4 || math.Abs(lo-c.lo) > 1e-4 || math.Abs(hi-c.hi) > 1e-4 {
			t.Errorf("NewcombeDiff(%d/%d, %d/%d) = %.4f [%.4f, %.4f], want %.4f [%.4f, %.4f]",
				c.x1, c.n1, c.x2, c.n2, d, lo, hi, c.diff, c.lo, c.hi)
		}
	}
}

// Newcombe (1998), "Two-sided confidence intervals for the single
// proportion: comparison of seven methods", Statistics in Medicine
// 17:857–872, Table I, method 3 (score, no continuity correction).
func TestWilsonPublished(t *testing.T) {
	for _, c := range []struct {
		x, n   int64
		lo, hi float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
	} {
		lo, hi := analytics.Wilson(c.x, c.n)
		if math.Abs(lo-c.lo) > 1e-4 || math.Abs(hi-c.hi) > 1e-4 {
			t.Errorf("Wilson(%d, %d) = [%.4f, %.4f], want [%.4f, %.4f]", c.x, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

// The edges are documented choices: n = 0 knows nothing ([0, 1] for a
// proportion, diff 0 in [−1, 1] for a difference), x = 0 and x = n hit the
// bounds exactly, x outside [0, n] is clamped; nothing is NaN.
func TestStatsEdges(t *testing.T) {
	if lo, hi := analytics.Wilson(0, 0); lo != 0 || hi != 1 {
		t.Errorf("Wilson(0, 0) = [%v, %v], want [0, 1]", lo, hi)
	}
	if lo, hi := analytics.Wilson(0, 7); lo != 0 || hi <= 0 || hi >= 1 {
		t.Errorf("Wilson(0, 7) = [%v, %v], want [0, h) with 0 < h < 1", lo, hi)
	}
	if lo, hi := analytics.Wilson(7, 7); hi != 1 || lo <= 0 || lo >= 1 {
		t.Errorf("Wilson(7, 7) = [%v, %v], want (l, 1] with 0 < l < 1", lo, hi)
	}
	l9, h9 := analytics.Wilson(9, 7)
	l7, h7 := analytics.Wilson(7, 7)
	lm, hm := analytics.Wilson(-2, 7)
	l0, h0 := analytics.Wilson(0, 7)
	if l9 != l7 || h9 != h7 || lm != l0 || hm != h0 {
		t.Errorf("x outside [0, n] not clamped: Wilson(9, 7) = [%v, %v], Wilson(-2, 7) = [%v, %v]", l9, h9, lm, hm)
	}
	for _, c := range [][4]int64{{0, 0, 1, 3}, {1, 3, 0, 0}, {0, 0, 0, 0}} {
		d, lo, hi := analytics.NewcombeDiff(c[0], c[1], c[2], c[3])
		if d != 0 || lo != -1 || hi != 1 {
			t.Errorf("NewcombeDiff(%v) = %v [%v, %v], want 0 [-1, 1]", c, d, lo, hi)
		}
	}
	// Independent python values: 0/5 vs 0/5 and 5/5 vs 5/5 give 0 ±
	// 0.434482 (the upper Wilson bound of 0/5); 3/3 vs 0/4 gives 1
	// [0.254834, 1].
	for _, c := range []struct {
		x1, n1, x2, n2 int64
		diff, lo, hi   float64
	}{
		{0, 5, 0, 5, 0, -0.434482, 0.434482},
		{5, 5, 5, 5, 0, -0.434482, 0.434482},
		{3, 3, 0, 4, 1, 0.254834, 1},
	} {
		d, lo, hi := analytics.NewcombeDiff(c.x1, c.n1, c.x2, c.n2)
		if math.Abs(d-c.diff) > 1e-4 || math.Abs(lo-c.lo) > 1e-4 || math.Abs(hi-c.hi) > 1e-4 {
			t.Errorf("NewcombeDiff(%d/%d, %d/%d) = %.6f [%.6f, %.6f], want %.6f [%.6f, %.6f]",
				c.x1, c.n1, c.x2, c.n2, d, lo, hi, c.diff, c.lo, c.hi)
		}
	}
	// Every small case: finite, ordered, inside [−1, 1], containing the
	// difference.
	for n1 := int64(0); n1 <= 6; n1++ {
		for x1 := int64(0); x1 <= n1; x1++ {
			for n2 := int64(0); n2 <= 6; n2++ {
				for x2 := int64(0); x2 <= n2; x2++ {
					d, lo, hi := analytics.NewcombeDiff(x1, n1, x2, n2)
					for _, v := range []float64{d, lo, hi} {
						if math.IsNaN(v) || math.IsInf(v, 0) {
							t.Fatalf("NewcombeDiff(%d/%d, %d/%d) = %v [%v, %v]", x1, n1, x2, n2, d, lo, hi)
						}
					}
					if lo < -1 || hi > 1 || lo > d || d > hi {
						t.Fatalf("NewcombeDiff(%d/%d, %d/%d) = %v [%v, %v]: not -1 <= lo <= diff <= hi <= 1", x1, n1, x2, n2, d, lo, hi)
					}
				}
			}
		}
	}
}
