package analytics

import "math"

// Z95 is the two-sided 95% standard normal quantile, Φ⁻¹(0.975), of the
// report's confidence intervals.
const Z95 = 1.959963984540054

// Wilson returns the 95% Wilson score interval (without continuity
// correction) of the proportion x/n:
//
//	(2x + z² ± z·sqrt(z² + 4x(n−x)/n)) / (2(n + z²))
//
// Edge cases, all finite: n <= 0 gives [0, 1] (no observation says
// nothing); x is clamped to [0, n]; x == 0 gives a lower bound of exactly
// 0 and x == n an upper bound of exactly 1.
func Wilson(x, n int64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	x = min(max(x, 0), n)
	fx, fn := float64(x), float64(n)
	z2 := Z95 * Z95
	center := 2*fx + z2
	half := Z95 * math.Sqrt(z2+4*fx*(fn-fx)/fn)
	den := 2 * (fn + z2)
	lo, hi = (center-half)/den, (center+half)/den
	if x == 0 {
		lo = 0
	}
	if x == n {
		hi = 1
	}
	return clamp01(lo), clamp01(hi)
}

// NewcombeDiff returns the difference of two independent proportions,
// x1/n1 − x2/n2, and its 95% confidence interval by Newcombe's hybrid
// score method (method 10 of Newcombe 1998, "Interval estimation for the
// difference between independent proportions: comparison of eleven
// methods", Statistics in Medicine 17:873–890). With (l1, u1) and (l2, u2)
// the Wilson intervals of p1 and p2:
//
//	lo = (p1 − p2) − sqrt((p1 − l1)² + (u2 − p2)²)
//	hi = (p1 − p2) + sqrt((u1 − p1)² + (p2 − l2)²)
//
// The interval always lies within [−1, 1]. Newcombe's example: 56/70 vs
// 48/80 gives 0.2000, [0.0524, 0.3339].
//
// Edge cases, all finite (no NaN reaches the JSON): when n1 or n2 is 0 one
// proportion is undefined, and the result is diff 0 with the whole range
// [−1, 1] (nothing is known about the difference); x is clamped to
// [0, n]; x == 0 or x == n on either side is an ordinary case (the Wilson
// bound is exactly 0 or 1).
func NewcombeDiff(x1, n1, x2, n2 int64) (diff, lo, hi float64) {
	if n1 <= 0 || n2 <= 0 {
		return 0, -1, 1
	}
	x1, x2 = min(max(x1, 0), n1), min(max(x2, 0), n2)
	p1, p2 := float64(x1)/float64(n1), float64(x2)/float64(n2)
	l1, u1 := Wilson(x1, n1)
	l2, u2 := Wilson(x2, n2)
	diff = p1 - p2
	lo = diff - math.Sqrt((p1-l1)*(p1-l1)+(u2-p2)*(u2-p2))
	hi = diff + math.Sqrt((u1-p1)*(u1-p1)+(p2-l2)*(p2-l2))
	return diff, max(lo, -1), min(hi, 1)
}

// ratio returns a/b, and 0 when b is 0: a rate over no carts is reported
// as 0, never NaN.
func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func clamp01(v float64) float64 {
	return min(max(v, 0), 1)
}
