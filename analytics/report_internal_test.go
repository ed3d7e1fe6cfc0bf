package analytics

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMoney(t *testing.T) {
	for _, c := range []struct {
		minor    int64
		currency string
		want     string
	}{
		{123456, "EUR", "1,234.56 EUR"},
		{5, "EUR", "0.05 EUR"},
		{-5, "USD", "-0.05 USD"},
		{-123456789, "USD", "-1,234,567.89 USD"},
		{1500, "JPY", "1,500 JPY"},
		{999, "JPY", "999 JPY"},
		{1234567, "KWD", "1,234.567 KWD"},
		{100, "XXX", "1.00 XXX"}, // unknown: two digits
		{math.MinInt64, "EUR", "-92,233,720,368,547,758.08 EUR"},
	} {
		if got := money(c.minor, c.currency); got != c.want {
			t.Errorf("money(%d, %s) = %q, want %q", c.minor, c.currency, got, c.want)
		}
	}
}

func TestGroup(t *testing.T) {
	for in, want := range map[string]string{
		"0": "0", "999": "999", "1000": "1,000", "-1000": "-1,000", "+1234.5": "+1,234.5",
		"123456": "123,456", "1234567.891": "1,234,567.891", "-12.3": "-12.3",
	} {
		if got := group(in); got != want {
			t.Errorf("group(%q) = %q, want %q", in, got, want)
		}
	}
	if got := signed(-1234.56); got != "-1,234.6" {
		t.Errorf("signed(-1234.56) = %q", got)
	}
	if got := percent(12.345); got != "1,234.5%" {
		t.Errorf("percent(12.345) = %q", got)
	}
}

// The revenue axis: round steps of whole currency units, at most five,
// the top at or above the peak.
func TestMoneyTicks(t *testing.T) {
	for _, c := range []struct {
		peak     int64
		currency string
		top      int64
		steps    int
	}{
		{100000, "EUR", 100000, 5},     // 1,000 EUR: steps of 200
		{1500, "JPY", 1500, 3},         // steps of 500 yen
		{1, "EUR", 100, 1},             // one cent: one step of 1 EUR
		{15216746, "EUR", 20000000, 4}, // 152,167.46 EUR: steps of 50,000
		{123456789, "KWD", 125000000, 5},
	} {
		top, ticks := moneyTicks(c.peak, c.currency)
		if top != c.top || len(ticks) != c.steps+1 || ticks[0] != 0 || ticks[len(ticks)-1] != top {
			t.Errorf("moneyTicks(%d, %s) = %d %v, want top %d in %d steps", c.peak, c.currency, top, ticks, c.top, c.steps)
		}
		if top < c.peak {
			t.Errorf("moneyTicks(%d, %s): top %d below the peak", c.peak, c.currency, top)
		}
	}
	if got := tickAmount(20000000, "EUR"); got != "200,000" {
		t.Errorf("tickAmount = %q", got)
	}
}

func TestDuration(t *testing.T) {
	for sec, want := range map[int64]string{
		0: "0s", 45: "45s", 60: "1m", 750: "12m30s", 1800: "30m", 3600: "1h", 5000: "1h23m",
		11520: "3h12m", 86399: "23h59m", 86400: "1d", 273600: "3d4h", 604800: "7d",
	} {
		if got := duration(sec); got != want {
			t.Errorf("duration(%d) = %q, want %q", sec, got, want)
		}
	}
}

// A flow whose carts are all in the holdout group (n1 = 0) and one whose
// holdout never converts (p2 = 0): finite numbers, no relative lift, and
// the JSON encodes.
func TestLiftEdgesEncode(t *testing.T) {
	allControl := Lift{Flow: "all-control", ControlCarts: 4, ControlConverted: 1}
	allControl.compute()
	if allControl.AbsoluteLift != 0 || allControl.Low != -1 || allControl.High != 1 || allControl.RelativeLift != nil || allControl.IncrementalCarts != 0 {
		t.Errorf("n1 = 0: %+v", allControl)
	}
	neverConverts := Lift{Flow: "never", TreatedCarts: 10, TreatedRecovered: 3, ControlCarts: 5}
	neverConverts.compute()
	if neverConverts.RelativeLift != nil || math.Abs(neverConverts.AbsoluteLift-0.3) > 1e-12 || math.Abs(neverConverts.IncrementalCarts-3) > 1e-9 {
		t.Errorf("p2 = 0: %+v", neverConverts)
	}
	r := &Report{Since: time.Unix(0, 0).UTC(), Until: time.Unix(86400, 0).UTC(), Funnel: Funnel{AbandonedCarts: 19, TreatedCarts: 10},
		Lift: []Lift{allControl, neverConverts}, TimeToRecovery: TimeToRecoveryBuckets()}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "relative_lift") {
		t.Errorf("undefined relative lift in %s", b)
	}
	var tab, page strings.Builder
	if err := r.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "+0.0 pp [-100.0, 100.0]") || !strings.Contains(tab.String(), "+30.0 pp") {
		t.Errorf("table:\n%s", tab.String())
	}
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.String(), "NaN") || strings.Count(page.String(), "<circle") != 2 {
		t.Errorf("lift chart of the edge cases:\n%s", page.String())
	}
}

func TestCeilSecond(t *testing.T) {
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	if got := ceilSecond(base); !got.Equal(base) {
		t.Errorf("whole second moved: %v", got)
	}
	if got := ceilSecond(base.Add(time.Nanosecond)); !got.Equal(base.Add(time.Second)) {
		t.Errorf("ceil %v", got)
	}
	if got := ceilSecond(base.In(time.FixedZone("X", 3600))); got.Location() != time.UTC {
		t.Errorf("not UTC: %v", got.Location())
	}
}
