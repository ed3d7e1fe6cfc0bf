package analytics

import (
	"reflect"
	"testing"
)

func TestTimeToRecoveryScales(t *testing.T) {
	labels := func(bs []Bucket) []string {
		var l []string
		for _, b := range bs {
			l = append(l, b.Label)
		}
		return l
	}
	for _, c := range []struct {
		longest int64
		want    []string
	}{
		{0, []string{"<1s", "1–2s", "2–5s", "5–10s", "10–30s", "≥30s"}},
		{29, []string{"<1s", "1–2s", "2–5s", "5–10s", "10–30s", "≥30s"}},
		{30, []string{"<2s", "2–5s", "5–10s", "10–30s", "30s–1m", "≥1m"}},
		{1500, []string{"<1m", "1–2m", "2–5m", "5–15m", "15–30m", "≥30m"}},
		{3599, []string{"<2m", "2–5m", "5–15m", "15–30m", "30m–1h", "≥1h"}},
		{3600, []string{"<1h", "1–6h", "6–24h", "1–3d", "3–7d", "≥7d"}},
		{90 * 86400, []string{"<1h", "1–6h", "6–24h", "1–3d", "3–7d", "≥7d"}},
	} {
		if got := labels(TimeToRecoveryBucketsFor(c.longest)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("longest %d: %v, want %v", c.longest, got, c.want)
		}
	}
	// Every scale covers [0, ∞) without a gap, and its bounds are edges.
	for i := 0; i <= hoursScale; i++ {
		bs := ttrScale(i)
		if len(bs) != 6 || bs[0].MinSeconds != 0 || bs[5].MaxSeconds != 0 {
			t.Fatalf("scale %d: %+v", i, bs)
		}
		for j := 1; j < 6; j++ {
			if bs[j].MinSeconds != bs[j-1].MaxSeconds {
				t.Errorf("scale %d: gap between %+v and %+v", i, bs[j-1], bs[j])
			}
		}
	}
	// The counts of the edges' buckets add up into the scale's.
	counts := make([]int64, len(ttrEdges)+1)
	counts[0], counts[3], counts[4], counts[5] = 1, 2, 3, 4 // <1s, 5–10s, 10–30s, 30s–1m
	got := ttrFill(45, counts)
	if want := []int64{1, 0, 2, 3, 4, 0}; !reflect.DeepEqual(bucketCounts(got), want) {
		t.Errorf("counts %v, want %v (%v)", bucketCounts(got), want, labels(got))
	}
	if got := ttrFill(0, make([]int64, len(ttrEdges)+1)); !reflect.DeepEqual(got, TimeToRecoveryBuckets()) {
		t.Errorf("no recovery: %+v, want the hours-and-days scale", got)
	}
}

func bucketCounts(bs []Bucket) []int64 {
	var c []int64
	for _, b := range bs {
		c = append(c, b.Count)
	}
	return c
}
