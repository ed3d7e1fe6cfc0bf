package analytics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cartlift/cartlift/analytics"
)

// The known dataset. The period is [2024-03-01, 2024-03-03) UTC: two days.
// Flows "abandoned" (steps reminder = 0 and discount = 1, with a holdout
// group) and "browse" (step nudge = 0, no holdout). A cart is
// customer/cart: c1/k1 … c14/k14.
//
//	id   decided (UTC)     flow       step      T/H discount     cart    type     channel cur
//	D1   03-01 10:00       abandoned  reminder  T                c1/k1   standard web     EUR
//	D2   03-02 10:00       abandoned  discount  T   10% max 500  c1/k1   standard web     EUR
//	D3   03-01 11:00       abandoned  reminder  T                c2/k2   standard app     EUR
//	D4   03-01 12:00       abandoned  reminder  T                c3/k3   b2b      web     EUR
//	D5   03-02 12:00       abandoned  discount  T   1500 off     c3/k3   b2b      web     EUR
//	D6   03-01 09:00       abandoned  reminder  T                c4/k4   standard web     USD
//	D7   03-02 09:00       abandoned  discount  T   20%          c4/k4   standard web     USD
//	D8   03-02 15:00       abandoned  reminder  T                c5/k5   b2b      app     USD
//	D9   03-01 14:00       abandoned  reminder  T                c6/k6   standard web     EUR
//	D10  03-01 08:00       abandoned  reminder  H                c7/k7   standard web     EUR
//	D11  03-01 13:00       abandoned  reminder  H                c8/k8   standard web     EUR
//	D12  03-02 13:00       abandoned  discount  H   10% max 500  c8/k8   standard web     EUR
//	D13  03-02 16:00       abandoned  reminder  H                c9/k9   b2b      app     USD
//	D14  03-01 20:00       browse     nudge     T                c10/k10 standard web     EUR
//	D15  03-01 21:00       browse     nudge     T                c1/k1   standard web     EUR
//	D18  03-02 08:00       browse     nudge     T                c14/k14 standard app     USD
//	D16  02-29 23:59:59    abandoned  reminder  T                c12/k12 standard web     EUR  before the period
//	D17  03-03 00:00:00    abandoned  reminder  T                c13/k13 standard web     USD  at Until: excluded
//
// Sent (email.sent or webhook.delivered): D1 D2 D3(webhook) D5 D6 D7 D8 D14
// D18 D16; D4 and D9 email.failed. Clicked: D1 (twice), D3, D7.
// discount.issued on D2 and unsubscribed on D1 count for nothing.
//
// Outcomes:
//
//	O1  recovered         D2   at 03-02 12:00  since 7200    10000 EUR
//	O2  recovered         D3   at 03-01 11:30  since 1800     4800 EUR
//	O3  recovered         D5   at 03-05 12:00  since 259200  20000 EUR (after the period)
//	O4  recovered         D7   at 03-02 17:00  since 28800    8000 USD
//	O5  converted_holdout D10  at 03-01 09:23  since 5000     6000 EUR
//	O6  recovered         D14  at 03-01 21:00  since 3600     2500 EUR
//	O7  recovered         D16  at 03-01 01:00  since 3601     9999 EUR (decision before the period)
//	O8  recovered         D17  at 03-03 02:00  since 7200     1234 USD (both after)
//	O9  lost              c5/k5 at 03-03
//	O10 converted         c6/k6 at 03-02, no decision        7000 EUR
//	O11 recovered         D18  at 03-09 08:00  since 604800   1500 USD
//
// Suppressions (kind suppressed unless noted; at = the decision time the
// step had or would have had):
//
//	S1  03-01 10:30  abandoned reminder  processor no_consent     c20/k20
//	S2  03-01 15:00  abandoned reminder  processor frequency_cap  c21/k21
//	S7  03-01 12:00  abandoned reminder  processor combined       c3/k30 (into D4)
//	S3  03-02 11:00  abandoned discount  processor cart_cap       c2/k2
//	S4  03-01 21:00  browse    nudge     actions   expired        c1/k1 (D15, not sent)
//	S5  03-01 22:00  browse    nudge     processor no_consent     c22/k22
//	Q1  03-01 23:00  browse    nudge     deferred  quiet_hours    c23/k23 (stored twice)
//	S6  02-29 23:00  abandoned reminder  processor no_consent     c24/k24 before the period

var (
	periodStart = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	periodEnd   = time.Date(2024, 3, 3, 0, 0, 0, 0, time.UTC)
)

func ts(month time.Month, day, hour, minute, second int) time.Time {
	return time.Date(2024, month, day, hour, minute, second, 0, time.UTC)
}

type decisionRow struct {
	id                   string
	decidedAt            time.Time
	flow, step           string
	stepIndex            uint16
	holdout              uint8
	percent, amount, max int64
	customer, cart       string
	cartType, channel    string
	currency             string
}

type resultRow struct {
	id, kind   string
	at         time.Time
	decisionID string
}

type outcomeRow struct {
	id, kind       string
	at             time.Time
	customer, cart string
	currency       string
	value          int64
	decisionID     string
	flow, step     string
	holdout        uint8
	sinceSeconds   int64
}

type suppressionRow struct {
	id, kind, stage, reason string
	at                      time.Time
	flow, step              string
	stepIndex               uint16
	customer, cart          string
	decisionID, into        string
}

type reportDataset struct {
	decisions    []decisionRow
	results      []resultRow
	outcomes     []outcomeRow
	suppressions []suppressionRow
}

func knownDataset() reportDataset {
	const T, H = 0, 1
	d := func(id string, t time.Time, flow, step string, idx uint16, holdout uint8, pct, amt, maxm int64, cust, cart, typ, ch, cur string) decisionRow {
		return decisionRow{id, t, flow, step, idx, holdout, pct, amt, maxm, cust, cart, typ, ch, cur}
	}
	return reportDataset{
		decisions: []decisionRow{
			d("D1", ts(3, 1, 10, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c1", "k1", "standard", "web", "EUR"),
			d("D2", ts(3, 2, 10, 0, 0), "abandoned", "discount", 1, T, 10, 0, 500, "c1", "k1", "standard", "web", "EUR"),
			d("D3", ts(3, 1, 11, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c2", "k2", "standard", "app", "EUR"),
			d("D4", ts(3, 1, 12, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c3", "k3", "b2b", "web", "EUR"),
			d("D5", ts(3, 2, 12, 0, 0), "abandoned", "discount", 1, T, 0, 1500, 0, "c3", "k3", "b2b", "web", "EUR"),
			d("D6", ts(3, 1, 9, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c4", "k4", "standard", "web", "USD"),
			d("D7", ts(3, 2, 9, 0, 0), "abandoned", "discount", 1, T, 20, 0, 0, "c4", "k4", "standard", "web", "USD"),
			d("D8", ts(3, 2, 15, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c5", "k5", "b2b", "app", "USD"),
			d("D9", ts(3, 1, 14, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c6", "k6", "standard", "web", "EUR"),
			d("D10", ts(3, 1, 8, 0, 0), "abandoned", "reminder", 0, H, 0, 0, 0, "c7", "k7", "standard", "web", "EUR"),
			d("D11", ts(3, 1, 13, 0, 0), "abandoned", "reminder", 0, H, 0, 0, 0, "c8", "k8", "standard", "web", "EUR"),
			d("D12", ts(3, 2, 13, 0, 0), "abandoned", "discount", 1, H, 10, 0, 500, "c8", "k8", "standard", "web", "EUR"),
			d("D13", ts(3, 2, 16, 0, 0), "abandoned", "reminder", 0, H, 0, 0, 0, "c9", "k9", "b2b", "app", "USD"),
			d("D14", ts(3, 1, 20, 0, 0), "browse", "nudge", 0, T, 0, 0, 0, "c10", "k10", "standard", "web", "EUR"),
			d("D15", ts(3, 1, 21, 0, 0), "browse", "nudge", 0, T, 0, 0, 0, "c1", "k1", "standard", "web", "EUR"),
			d("D18", ts(3, 2, 8, 0, 0), "browse", "nudge", 0, T, 0, 0, 0, "c14", "k14", "standard", "app", "USD"),
			d("D16", ts(2, 29, 23, 59, 59), "abandoned", "reminder", 0, T, 0, 0, 0, "c12", "k12", "standard", "web", "EUR"),
			d("D17", ts(3, 3, 0, 0, 0), "abandoned", "reminder", 0, T, 0, 0, 0, "c13", "k13", "standard", "web", "USD"),
		},
		results: []resultRow{
			{"A1", "email.sent", ts(3, 1, 10, 0, 5), "D1"},
			{"A2", "link.clicked", ts(3, 1, 10, 30, 0), "D1"},
			{"A17", "link.clicked", ts(3, 1, 10, 45, 0), "D1"},
			{"A18", "unsubscribed", ts(3, 1, 11, 0, 0), "D1"},
			{"A3", "email.sent", ts(3, 2, 10, 0, 5), "D2"},
			{"A4", "discount.issued", ts(3, 2, 10, 0, 1), "D2"},
			{"A5", "webhook.delivered", ts(3, 1, 11, 0, 5), "D3"},
			{"A6", "link.clicked", ts(3, 1, 11, 10, 0), "D3"},
			{"A7", "email.failed", ts(3, 1, 12, 0, 5), "D4"},
			{"A8", "email.sent", ts(3, 2, 12, 0, 5), "D5"},
			{"A9", "email.sent", ts(3, 1, 9, 0, 5), "D6"},
			{"A10", "email.sent", ts(3, 2, 9, 0, 5), "D7"},
			{"A11", "link.clicked", ts(3, 2, 9, 30, 0), "D7"},
			{"A12", "email.sent", ts(3, 2, 15, 0, 5), "D8"},
			{"A13", "email.failed", ts(3, 1, 14, 0, 5), "D9"},
			{"A14", "email.sent", ts(3, 1, 20, 0, 5), "D14"},
			{"A15", "email.sent", ts(3, 1, 0, 0, 4), "D16"},
			{"A19", "email.sent", ts(3, 2, 8, 0, 5), "D18"},
		},
		outcomes: []outcomeRow{
			{"O1", "recovered", ts(3, 2, 12, 0, 0), "c1", "k1", "EUR", 10000, "D2", "abandoned", "discount", 0, 7200},
			{"O2", "recovered", ts(3, 1, 11, 30, 0), "c2", "k2", "EUR", 4800, "D3", "abandoned", "reminder", 0, 1800},
			{"O3", "recovered", ts(3, 5, 12, 0, 0), "c3", "k3", "EUR", 20000, "D5", "abandoned", "discount", 0, 259200},
			{"O4", "recovered", ts(3, 2, 17, 0, 0), "c4", "k4", "USD", 8000, "D7", "abandoned", "discount", 0, 28800},
			{"O5", "converted_holdout", ts(3, 1, 9, 23, 20), "c7", "k7", "EUR", 6000, "D10", "abandoned", "reminder", 1, 5000},
			{"O6", "recovered", ts(3, 1, 21, 0, 0), "c10", "k10", "EUR", 2500, "D14", "browse", "nudge", 0, 3600},
			{"O7", "recovered", ts(3, 1, 1, 0, 0), "c12", "k12", "EUR", 9999, "D16", "abandoned", "reminder", 0, 3601},
			{"O8", "recovered", ts(3, 3, 2, 0, 0), "c13", "k13", "USD", 1234, "D17", "abandoned", "reminder", 0, 7200},
			{"O9", "lost", ts(3, 3, 0, 0, 0), "c5", "k5", "USD", 3000, "", "", "", 0, 0},
			{"O10", "converted", ts(3, 2, 0, 0, 0), "c6", "k6", "EUR", 7000, "", "", "", 0, 0},
			{"O11", "recovered", ts(3, 9, 8, 0, 0), "c14", "k14", "USD", 1500, "D18", "browse", "nudge", 0, 604800},
		},
		suppressions: []suppressionRow{
			{"S1", "suppressed", "processor", "no_consent", ts(3, 1, 10, 30, 0), "abandoned", "reminder", 0, "c20", "k20", "d-s1", ""},
			{"S2", "suppressed", "processor", "frequency_cap", ts(3, 1, 15, 0, 0), "abandoned", "reminder", 0, "c21", "k21", "d-s2", ""},
			{"S7", "suppressed", "processor", "combined", ts(3, 1, 12, 0, 0), "abandoned", "reminder", 0, "c3", "k30", "d-s7", "D4"},
			{"S3", "suppressed", "processor", "cart_cap", ts(3, 2, 11, 0, 0), "abandoned", "discount", 1, "c2", "k2", "d-s3", ""},
			{"S4", "suppressed", "actions", "expired", ts(3, 1, 21, 0, 0), "browse", "nudge", 0, "c1", "k1", "D15", ""},
			{"S5", "suppressed", "processor", "no_consent", ts(3, 1, 22, 0, 0), "browse", "nudge", 0, "c22", "k22", "d-s5", ""},
			{"Q1", "deferred", "", "quiet_hours", ts(3, 1, 23, 0, 0), "browse", "nudge", 0, "c23", "k23", "d-q1", ""},
			{"Q1", "deferred", "", "quiet_hours", ts(3, 1, 23, 0, 0), "browse", "nudge", 0, "c23", "k23", "d-q1", ""},
			{"S6", "suppressed", "processor", "no_consent", ts(2, 29, 23, 0, 0), "abandoned", "reminder", 0, "c24", "k24", "d-s6", ""},
		},
	}
}

// insert writes ds in one batch per table, every row with insertedAt: one
// new part per table.
func (ds reportDataset) insert(t *testing.T, conn driver.Conn, insertedAt time.Time) {
	t.Helper()
	ctx := context.Background()
	send := func(table, columns string, n int, row func(i int) []any) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+columns+")")
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		defer b.Close()
		for i := range n {
			if err := b.Append(row(i)...); err != nil {
				t.Fatalf("%s row %d: %v", table, i, err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
	}
	send("decisions", "id, decided_at, valid_until, flow, step, step_index, action, holdout, discount_percent, discount_amount_minor, discount_max_minor, customer_key, cart_id, cart_type, channel, currency, inserted_at",
		len(ds.decisions), func(i int) []any {
			d := ds.decisions[i]
			return []any{d.id, d.decidedAt, d.decidedAt.Add(time.Hour), d.flow, d.step, d.stepIndex, "email", d.holdout,
				d.percent, d.amount, d.max, d.customer, d.cart, d.cartType, d.channel, d.currency, insertedAt}
		})
	decisionOf := map[string]decisionRow{}
	for _, d := range ds.decisions {
		decisionOf[d.id] = d
	}
	send("action_results", "id, kind, at, decision_id, cart_id, flow, step, holdout, currency, inserted_at",
		len(ds.results), func(i int) []any {
			r := ds.results[i]
			d := decisionOf[r.decisionID]
			return []any{r.id, r.kind, r.at, r.decisionID, d.cart, d.flow, d.step, d.holdout, d.currency, insertedAt}
		})
	send("suppressions", "id, kind, reason, stage, decision_id, into_decision_id, flow, step, step_index, action, customer_key, cart_id, currency, value_minor, due_at, at, until, inserted_at",
		len(ds.suppressions), func(i int) []any {
			s := ds.suppressions[i]
			until := time.Unix(0, 0).UTC()
			if s.kind == "deferred" {
				until = s.at.Add(8 * time.Hour)
			}
			return []any{s.id, s.kind, s.reason, s.stage, s.decisionID, s.into, s.flow, s.step, s.stepIndex, "email",
				s.customer, s.cart, "EUR", int64(2500), s.at, s.at, until, insertedAt}
		})
	send("outcomes", "id, kind, at, customer_key, cart_id, currency, value_minor, decision_id, flow, step, holdout, since_decision_seconds, inserted_at",
		len(ds.outcomes), func(i int) []any {
			o := ds.outcomes[i]
			return []any{o.id, o.kind, o.at, o.customer, o.cart, o.currency, o.value, o.decisionID, o.flow, o.step, o.holdout, o.sinceSeconds, insertedAt}
		})
}

func i64(v int64) *int64 { return &v }

func buildReport(t *testing.T, conn driver.Conn, opt analytics.ReportOptions) *analytics.Report {
	t.Helper()
	r, err := analytics.BuildReport(context.Background(), conn, opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReportKnownDataset(t *testing.T) {
	conn, _ := migrated(t)
	knownDataset().insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	checkKnownReport(t, buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd}))
}

// checkKnownReport asserts every number of the known dataset's report,
// each computed by hand from the table above. The cohort is D1–D15 and
// D18 (D16 is before Since, D17 at Until).
func checkKnownReport(t *testing.T, r *analytics.Report) {
	t.Helper()
	if !r.Since.Equal(periodStart) || !r.Until.Equal(periodEnd) || r.Flow != "" {
		t.Errorf("period %v–%v flow %q", r.Since, r.Until, r.Flow)
	}

	// Totals, EUR: decisions D1 D2 D3 D4 D5 D9 D14 D15 (treated), D10 D11
	// D12 (control).
	//   carts k1 k2 k3 k6 k7 k8 k10 = 7 (k1 in both flows counts once);
	//   treated k1 k2 k3 k6 k10 = 5; control k7 k8 = 2;
	//   sent D1 D2 D3 D5 D14 = 5; clicked D1 D3 = 2 (D1's two clicks: one);
	//   recovered D2 D3 D5 D14 = 4, rate 4/5 = 0.8;
	//   revenue 10000 + 4800 + 20000 + 2500 = 37300;
	//   discount D2: min(10000·10/100 = 1000, max 500) = 500, D5: min(1500,
	//   20000) = 1500, D3 and D14 none: 2000;
	//   times sorted [1800 3600 7200 259200], n = 4: median index
	//   floor(0.5·4) = 2 → 7200 (not the interpolated 5400), p90 index
	//   floor(0.9·4) = 3 → 259200;
	//   control converted D10 = 1, rate 1/2 = 0.5.
	// Totals, USD: decisions D6 D7 D8 D18 (treated), D13 (control).
	//   carts k4 k5 k9 k14 = 4; treated 3; control 1; sent 4; clicked D7 = 1;
	//   recovered D7 D18 = 2, rate 2/3; revenue 8000 + 1500 = 9500;
	//   discount D7: 8000·20/100 = 1600 (no max); times [28800 604800]:
	//   median index 1 → 604800, p90 index 1 → 604800; control 0/1 = 0.
	wantTotals := []analytics.TotalRow{
		{Currency: "EUR", Metrics: analytics.Metrics{
			AbandonedCarts: 7, TreatedCarts: 5, ControlCarts: 2, Decisions: 8, HoldoutDecisions: 3,
			Sent: 5, Clicked: 2, Recovered: 4, RecoveryRate: 0.8, RecoveredRevenueMinor: 37300, DiscountCostMinor: 2000,
			MedianSeconds: i64(7200), P90Seconds: i64(259200), ControlConverted: 1, ControlRate: 0.5,
		}},
		{Currency: "USD", Metrics: analytics.Metrics{
			AbandonedCarts: 4, TreatedCarts: 3, ControlCarts: 1, Decisions: 4, HoldoutDecisions: 1,
			Sent: 4, Clicked: 1, Recovered: 2, RecoveryRate: 2.0 / 3, RecoveredRevenueMinor: 9500, DiscountCostMinor: 1600,
			MedianSeconds: i64(604800), P90Seconds: i64(604800), ControlConverted: 0, ControlRate: 0,
		}},
	}
	if !reflect.DeepEqual(r.Totals, wantTotals) {
		t.Errorf("totals\n got %s\nwant %s", toJSON(r.Totals), toJSON(wantTotals))
	}

	// Steps, ordered by flow, step index, step, currency.
	//   abandoned/reminder/EUR: D1 D3 D4 D9 treated, D10 D11 control. Carts
	//     k1 k2 k3 k6 k7 k8 = 6, treated 4, control 2; sent D1 D3 = 2;
	//     clicked D1 D3 = 2; recovered D3 (k1's recovery is D2's) = 1, rate
	//     1/4; revenue 4800; no discount; times [1800]; control 1/2.
	//   abandoned/reminder/USD: D6 D8 treated, D13 control. Carts 3, treated
	//     2, control 1; sent 2; nothing clicked or recovered: no quantiles.
	//   abandoned/discount/EUR: D2 D5 treated, D12 control. Carts k1 k3 k8 =
	//     3; sent 2; recovered 2, rate 2/2; revenue 30000; discount 500 +
	//     1500 = 2000; times [7200 259200]: median index floor(1) = 1 →
	//     259200, p90 index floor(1.8) = 1 → 259200; control 0/1.
	//   abandoned/discount/USD: D7. 1 cart; sent, clicked, recovered 8000,
	//     discount 1600, 28800.
	//   browse/nudge/EUR: D14 D15. Carts k10 k1 = 2, treated 2; sent D14 = 1;
	//     recovered D14 = 1, rate 1/2; revenue 2500; times [3600].
	//   browse/nudge/USD: D18. 1 cart; sent; recovered 1500 after 604800.
	wantSteps := []analytics.StepRow{
		{Flow: "abandoned", Step: "reminder", StepIndex: 0, Currency: "EUR", Metrics: analytics.Metrics{
			AbandonedCarts: 6, TreatedCarts: 4, ControlCarts: 2, Decisions: 4, HoldoutDecisions: 2,
			Sent: 2, Clicked: 2, Recovered: 1, RecoveryRate: 0.25, RecoveredRevenueMinor: 4800,
			MedianSeconds: i64(1800), P90Seconds: i64(1800), ControlConverted: 1, ControlRate: 0.5,
		}},
		{Flow: "abandoned", Step: "reminder", StepIndex: 0, Currency: "USD", Metrics: analytics.Metrics{
			AbandonedCarts: 3, TreatedCarts: 2, ControlCarts: 1, Decisions: 2, HoldoutDecisions: 1, Sent: 2,
		}},
		{Flow: "abandoned", Step: "discount", StepIndex: 1, Currency: "EUR", Metrics: analytics.Metrics{
			AbandonedCarts: 3, TreatedCarts: 2, ControlCarts: 1, Decisions: 2, HoldoutDecisions: 1,
			Sent: 2, Recovered: 2, RecoveryRate: 1, RecoveredRevenueMinor: 30000, DiscountCostMinor: 2000,
			MedianSeconds: i64(259200), P90Seconds: i64(259200),
		}},
		{Flow: "abandoned", Step: "discount", StepIndex: 1, Currency: "USD", Metrics: analytics.Metrics{
			AbandonedCarts: 1, TreatedCarts: 1, Decisions: 1, Sent: 1, Clicked: 1, Recovered: 1, RecoveryRate: 1,
			RecoveredRevenueMinor: 8000, DiscountCostMinor: 1600, MedianSeconds: i64(28800), P90Seconds: i64(28800),
		}},
		{Flow: "browse", Step: "nudge", StepIndex: 0, Currency: "EUR", Metrics: analytics.Metrics{
			AbandonedCarts: 2, TreatedCarts: 2, Decisions: 2, Sent: 1, Recovered: 1, RecoveryRate: 0.5,
			RecoveredRevenueMinor: 2500, MedianSeconds: i64(3600), P90Seconds: i64(3600),
		}},
		{Flow: "browse", Step: "nudge", StepIndex: 0, Currency: "USD", Metrics: analytics.Metrics{
			AbandonedCarts: 1, TreatedCarts: 1, Decisions: 1, Sent: 1, Recovered: 1, RecoveryRate: 1,
			RecoveredRevenueMinor: 1500, MedianSeconds: i64(604800), P90Seconds: i64(604800),
		}},
	}
	if !reflect.DeepEqual(r.Steps, wantSteps) {
		t.Errorf("steps\n got %s\nwant %s", toJSON(r.Steps), toJSON(wantSteps))
	}

	// Detail: 10 groups (day, flow, step, type, channel, currency):
	//   03-01 abandoned reminder standard web EUR: D1 D9 D10 D11
	//   03-01 abandoned reminder standard app EUR: D3
	//   03-01 abandoned reminder b2b web EUR: D4
	//   03-01 abandoned reminder standard web USD: D6
	//   03-01 browse nudge standard web EUR: D14 D15
	//   03-02 abandoned reminder b2b app USD: D8 D13
	//   03-02 abandoned discount standard web EUR: D2 D12
	//   03-02 abandoned discount b2b web EUR: D5
	//   03-02 abandoned discount standard web USD: D7
	//   03-02 browse nudge standard app USD: D18
	if len(r.Detail) != 10 {
		t.Fatalf("%d detail rows, want 10: %s", len(r.Detail), toJSON(r.Detail))
	}
	var keys []string
	for _, d := range r.Detail {
		keys = append(keys, strings.Join([]string{d.Day, d.Flow, d.Step, d.CartType, d.Channel, d.Currency}, " "))
	}
	wantKeys := []string{
		"2024-03-01 abandoned reminder b2b web EUR",
		"2024-03-01 abandoned reminder standard app EUR",
		"2024-03-01 abandoned reminder standard web EUR",
		"2024-03-01 abandoned reminder standard web USD",
		"2024-03-01 browse nudge standard web EUR",
		"2024-03-02 abandoned reminder b2b app USD",
		"2024-03-02 abandoned discount b2b web EUR",
		"2024-03-02 abandoned discount standard web EUR",
		"2024-03-02 abandoned discount standard web USD",
		"2024-03-02 browse nudge standard app USD",
	}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("detail keys\n got %q\nwant %q", keys, wantKeys)
	}
	// 03-01 abandoned reminder standard web EUR: D1 D9 treated (k1 k6), D10
	// D11 control (k7 k8): 4 carts; sent D1; clicked D1; nothing recovered;
	// D10 converted: control 1/2.
	wantDetail := analytics.Metrics{
		AbandonedCarts: 4, TreatedCarts: 2, ControlCarts: 2, Decisions: 2, HoldoutDecisions: 2,
		Sent: 1, Clicked: 1, ControlConverted: 1, ControlRate: 0.5,
	}
	if got := r.Detail[2].Metrics; !reflect.DeepEqual(got, wantDetail) {
		t.Errorf("detail %s\n got %s\nwant %s", keys[2], toJSON(got), toJSON(wantDetail))
	}
	// 03-02 abandoned discount standard web EUR: D2 treated (k1), D12 control
	// (k8): sent, recovered 10000 after 7200, discount 500; control 0/1.
	wantDetail = analytics.Metrics{
		AbandonedCarts: 2, TreatedCarts: 1, ControlCarts: 1, Decisions: 1, HoldoutDecisions: 1,
		Sent: 1, Recovered: 1, RecoveryRate: 1, RecoveredRevenueMinor: 10000, DiscountCostMinor: 500,
		MedianSeconds: i64(7200), P90Seconds: i64(7200),
	}
	if got := r.Detail[7].Metrics; !reflect.DeepEqual(got, wantDetail) {
		t.Errorf("detail %s\n got %s\nwant %s", keys[7], toJSON(got), toJSON(wantDetail))
	}

	// Funnel: carts k1–k10 and k14 = 11; treated k1 k2 k3 k4 k5 k6 k10 k14 =
	// 8; sent: all treated but k6 (D9 failed; k3 through D5) = 7; clicked
	// k1 k2 k4 = 3; recovered k1 k2 k3 k4 k10 k14 = 6.
	wantFunnel := analytics.Funnel{AbandonedCarts: 11, TreatedCarts: 8, SentCarts: 7, ClickedCarts: 3, RecoveredCarts: 6}
	if r.Funnel != wantFunnel {
		t.Errorf("funnel %+v, want %+v", r.Funnel, wantFunnel)
	}

	// The funnel per step, each step due once (Q1 and D-ids stored once or
	// twice alike); S6 is before the period.
	//   abandoned/reminder: treated D1 D3 D4 D6 D8 D9 = 6, holdout D10 D11
	//     D13 = 3; sent D1 D3 D6 D8 = 4 (D4, D9 failed); clicked D1 D3;
	//     recovered D3; suppressed S1 S2 S7 by the processor: due 3+3+6.
	//   abandoned/discount: treated D2 D5 D7, holdout D12; sent 3; clicked
	//     D7; recovered D2 D5 D7; S3: due 1+1+3.
	//   browse/nudge: treated D14 D15 D18; sent D14 D18; recovered both; S5
	//     by the processor, S4 (D15) by the actions role: suppressed 2, due
	//     1+0+3; deferred Q1.
	wantFunnelSteps := []analytics.StepFunnel{
		{Flow: "abandoned", Step: "reminder", StepIndex: 0, Due: 12, Suppressed: 3, SuppressedByProcessor: 3,
			SuppressedBy: map[string]int64{"no_consent": 1, "frequency_cap": 1, "combined": 1},
			Holdout:      3, Decided: 6, Sent: 4, Clicked: 2, Recovered: 1},
		{Flow: "abandoned", Step: "discount", StepIndex: 1, Due: 5, Suppressed: 1, SuppressedByProcessor: 1,
			SuppressedBy: map[string]int64{"cart_cap": 1}, Holdout: 1, Decided: 3, Sent: 3, Clicked: 1, Recovered: 3},
		{Flow: "browse", Step: "nudge", StepIndex: 0, Due: 4, Suppressed: 2, SuppressedByProcessor: 1,
			SuppressedBy: map[string]int64{"no_consent": 1, "expired": 1}, Deferred: 1, Decided: 3, Sent: 2, Recovered: 2},
	}
	if !reflect.DeepEqual(r.StepFunnel, wantFunnelSteps) {
		t.Errorf("step funnel\n got %s\nwant %s", toJSON(r.StepFunnel), toJSON(wantFunnelSteps))
	}
	wantNotSent := []analytics.NotSentRow{
		{Flow: "abandoned", Step: "reminder", Stage: "processor", Reason: "combined", Steps: 1, Carts: 1},
		{Flow: "abandoned", Step: "reminder", Stage: "processor", Reason: "frequency_cap", Steps: 1, Carts: 1},
		{Flow: "abandoned", Step: "reminder", Stage: "processor", Reason: "no_consent", Steps: 1, Carts: 1},
		{Flow: "abandoned", Step: "discount", StepIndex: 1, Stage: "processor", Reason: "cart_cap", Steps: 1, Carts: 1},
		{Flow: "browse", Step: "nudge", Stage: "actions", Reason: "expired", Steps: 1, Carts: 1},
		{Flow: "browse", Step: "nudge", Stage: "processor", Reason: "no_consent", Steps: 1, Carts: 1},
	}
	if !reflect.DeepEqual(r.NotSent, wantNotSent) {
		t.Errorf("not sent\n got %s\nwant %s", toJSON(r.NotSent), toJSON(wantNotSent))
	}

	// Lift: only "abandoned" has control carts. Treated carts k1–k6: n1 = 6,
	// recovered k1 k2 k3 k4: x1 = 4, p1 = 2/3. Control k7 k8 k9: n2 = 3,
	// converted k7: x2 = 1, p2 = 1/3. Lift 1/3; relative (2/3)/(1/3) − 1 =
	// 1; incremental (1/3)·6 = 2 carts. Newcombe's interval, computed with
	// an independent python implementation of method 10: Wilson 4/6 =
	// [0.299993, 0.903229], 1/3 = [0.061492, 0.792340]; lo = 1/3 −
	// sqrt((2/3 − 0.299993)² + (0.792340 − 1/3)²) = −0.254150, hi = 1/3 +
	// sqrt((0.903229 − 2/3)² + (1/3 − 0.061492)²) = 0.693693.
	if len(r.Lift) != 1 {
		t.Fatalf("lift %s, want one row (abandoned)", toJSON(r.Lift))
	}
	l := r.Lift[0]
	if l.Flow != "abandoned" || l.TreatedCarts != 6 || l.TreatedRecovered != 4 || l.ControlCarts != 3 || l.ControlConverted != 1 {
		t.Errorf("lift counts %s", toJSON(l))
	}
	nearly(t, "treated rate", l.TreatedRate, 2.0/3)
	nearly(t, "control rate", l.ControlRate, 1.0/3)
	nearly(t, "lift", l.AbsoluteLift, 1.0/3)
	nearly(t, "lift low", l.Low, -0.254150)
	nearly(t, "lift high", l.High, 0.693693)
	nearly(t, "incremental", l.IncrementalCarts, 2)
	if l.RelativeLift == nil {
		t.Error("relative lift absent")
	} else {
		nearly(t, "relative lift", *l.RelativeLift, 1)
	}

	// Daily revenue: recovered outcomes with at in the period, whatever
	// their decision: 03-01 EUR O2 4800 + O6 2500 + O7 9999 (its decision
	// D16 is before the period) = 17299 from 3; 03-02 EUR O1 10000; 03-02 USD
	// O4 8000. O3, O8 and O11 are after Until; O5 is converted_holdout.
	wantDaily := []analytics.DailyRevenue{
		{Day: "2024-03-01", Currency: "EUR", Recovered: 3, RecoveredRevenueMinor: 17299},
		{Day: "2024-03-02", Currency: "EUR", Recovered: 1, RecoveredRevenueMinor: 10000},
		{Day: "2024-03-02", Currency: "USD", Recovered: 1, RecoveredRevenueMinor: 8000},
	}
	if !reflect.DeepEqual(r.DailyRevenue, wantDaily) {
		t.Errorf("daily revenue\n got %s\nwant %s", toJSON(r.DailyRevenue), toJSON(wantDaily))
	}

	// Time to recovery of the cohort's recovered decisions: D3 1800 (<1h);
	// D14 3600 and D2 7200 (1–6h: 3600 is not <1h); D7 28800 (6–24h);
	// none in 1–3d; D5 259200 (3–7d: exactly 3d); D18 604800 (≥7d:
	// exactly 7d).
	wantCounts := []int64{1, 2, 1, 0, 1, 1}
	if got := bucketCounts(r.TimeToRecovery); !reflect.DeepEqual(got, wantCounts) {
		t.Errorf("time to recovery %v, want %v", got, wantCounts)
	}
}

func bucketCounts(bs []analytics.Bucket) []int64 {
	var c []int64
	for _, b := range bs {
		c = append(c, b.Count)
	}
	return c
}

// A replay inserts the same ids again, in another part: before and after
// the merge the report is the same as with one copy.
func TestReportCountsDuplicatesOnce(t *testing.T) {
	conn, cfg := migrated(t)
	ctx := context.Background()
	tables := []string{"decisions", "action_results", "outcomes"}
	for _, table := range tables {
		if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+cfg.Database+"."+table); err != nil {
			t.Fatal(err)
		}
	}
	ds := knownDataset()
	ds.insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	ds.insert(t, conn, time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC))
	want := map[string]int{"decisions": len(ds.decisions), "action_results": len(ds.results), "outcomes": len(ds.outcomes)}
	for _, table := range tables {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if int(n) != 2*want[table] {
			t.Fatalf("%s holds %d rows, want every row twice (%d)", table, n, 2*want[table])
		}
	}
	before := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	checkKnownReport(t, before)

	for _, table := range tables {
		if err := conn.Exec(ctx, "SYSTEM START MERGES "+cfg.Database+"."+table); err != nil {
			t.Fatal(err)
		}
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+table+" FINAL"); err != nil {
			t.Fatal(err)
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if int(n) != want[table] {
			t.Fatalf("%s holds %d rows after OPTIMIZE FINAL, want %d", table, n, want[table])
		}
	}
	after := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	after.GeneratedAt = before.GeneratedAt
	if !reflect.DeepEqual(before, after) {
		t.Errorf("report changed by the merge\nbefore %s\n after %s", toJSON(before), toJSON(after))
	}
}

func TestReportFlowFilter(t *testing.T) {
	conn, _ := migrated(t)
	knownDataset().insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))

	r := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd, Flow: "browse"})
	// browse: D14 D15 (EUR, carts k10 k1), D18 (USD, k14). Recovered D14
	// 2500 after 3600, D18 1500 after 604800. No control carts: no lift.
	if r.Flow != "browse" {
		t.Errorf("flow %q", r.Flow)
	}
	var steps []string
	for _, s := range r.Steps {
		steps = append(steps, s.Flow+"/"+s.Step+"/"+s.Currency)
	}
	if want := []string{"browse/nudge/EUR", "browse/nudge/USD"}; !reflect.DeepEqual(steps, want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
	wantFunnel := analytics.Funnel{AbandonedCarts: 3, TreatedCarts: 3, SentCarts: 2, ClickedCarts: 0, RecoveredCarts: 2}
	if r.Funnel != wantFunnel {
		t.Errorf("funnel %+v, want %+v", r.Funnel, wantFunnel)
	}
	if len(r.Totals) != 2 || r.Totals[0].RecoveredRevenueMinor != 2500 || r.Totals[0].AbandonedCarts != 2 || r.Totals[1].RecoveredRevenueMinor != 1500 {
		t.Errorf("totals %s", toJSON(r.Totals))
	}
	if len(r.Lift) != 0 {
		t.Errorf("lift %s, want none (browse has no holdout)", toJSON(r.Lift))
	}
	// Daily revenue filters on the outcome's flow: only O6 (03-01 EUR 2500).
	wantDaily := []analytics.DailyRevenue{{Day: "2024-03-01", Currency: "EUR", Recovered: 1, RecoveredRevenueMinor: 2500}}
	if !reflect.DeepEqual(r.DailyRevenue, wantDaily) {
		t.Errorf("daily revenue %s, want %s", toJSON(r.DailyRevenue), toJSON(wantDaily))
	}
	if got, want := bucketCounts(r.TimeToRecovery), []int64{0, 1, 0, 0, 0, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("time to recovery %v, want %v", got, want)
	}

	// The filter is a bound parameter: SQL in it matches no flow.
	r = buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd, Flow: "x' OR '1'='1"})
	if len(r.Steps) != 0 || r.Funnel != (analytics.Funnel{}) || len(r.DailyRevenue) != 0 {
		t.Errorf("injected flow matched rows: %s", toJSON(r))
	}
}

func TestReportEmpty(t *testing.T) {
	conn, _ := migrated(t)
	r := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	if len(r.Totals)+len(r.Steps)+len(r.Detail)+len(r.Lift)+len(r.DailyRevenue) != 0 || r.Funnel != (analytics.Funnel{}) {
		t.Errorf("empty database gave %s", toJSON(r))
	}
	if len(r.TimeToRecovery) != 6 || !reflect.DeepEqual(bucketCounts(r.TimeToRecovery), []int64{0, 0, 0, 0, 0, 0}) {
		t.Errorf("time to recovery %s, want six empty buckets", toJSON(r.TimeToRecovery))
	}
	// Empty lists are [] in the JSON, not null.
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"steps": []`) {
		t.Errorf("empty steps not [] in %s", buf.String())
	}
}

// A cart is (customer_key, cart_id): two customers' carts with the same
// cart id are two carts.
func TestReportCartIsCustomerAndCartID(t *testing.T) {
	conn, _ := migrated(t)
	ds := reportDataset{
		decisions: []decisionRow{
			{id: "E1", decidedAt: ts(3, 1, 10, 0, 0), flow: "f", step: "s", customer: "alice", cart: "cart-1", cartType: "standard", channel: "web", currency: "EUR"},
			{id: "E2", decidedAt: ts(3, 1, 11, 0, 0), flow: "f", step: "s", customer: "bob", cart: "cart-1", cartType: "standard", channel: "web", currency: "EUR"},
		},
		outcomes: []outcomeRow{
			{id: "P1", kind: "recovered", at: ts(3, 1, 12, 0, 0), customer: "alice", cart: "cart-1", currency: "EUR", value: 100, decisionID: "E1", flow: "f", step: "s", sinceSeconds: 7200},
		},
	}
	ds.insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	r := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	// Two treated carts, one recovered: 1/2.
	if r.Funnel.TreatedCarts != 2 || r.Funnel.RecoveredCarts != 1 || len(r.Totals) != 1 || r.Totals[0].TreatedCarts != 2 || r.Totals[0].RecoveryRate != 0.5 {
		t.Errorf("funnel %+v totals %s", r.Funnel, toJSON(r.Totals))
	}
}

func TestReportOptionsValidated(t *testing.T) {
	for _, opt := range []analytics.ReportOptions{
		{},
		{Since: periodStart},
		{Since: periodEnd, Until: periodStart},
		{Since: periodStart, Until: periodStart},
		// Rounded up to whole seconds, these are the same second.
		{Since: periodStart.Add(100 * time.Millisecond), Until: periodStart.Add(900 * time.Millisecond)},
	} {
		// A nil connection: validation comes before any query.
		if _, err := analytics.BuildReport(context.Background(), nil, opt); err == nil {
			t.Errorf("BuildReport(%v – %v) accepted", opt.Since, opt.Until)
		}
	}
}

// The period's bounds are rounded up to whole seconds in UTC: 23:59:58.5
// in another zone selects D16 (23:59:59).
func TestReportPeriodRounding(t *testing.T) {
	conn, _ := migrated(t)
	knownDataset().insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	zone := time.FixedZone("UTC+2", 2*3600)
	s := time.Date(2024, 3, 1, 1, 59, 58, 500_000_000, zone) // 02-29 23:59:58.5 UTC
	r := buildReport(t, conn, analytics.ReportOptions{Since: s, Until: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)})
	if !r.Since.Equal(time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC)) || r.Since.Location() != time.UTC {
		t.Errorf("periodStart %v", r.Since)
	}
	if r.Funnel.AbandonedCarts != 1 || len(r.Steps) != 1 || r.Steps[0].Sent != 1 {
		t.Errorf("D16 alone expected: %s", toJSON(r))
	}
}

// quantileExact picks, of n values sorted ascending, the one at 0-based
// index floor(level·n): no interpolation, the upper middle value for an
// even count. The report's medians rely on it; this pins the server's rule.
func TestQuantileExactRule(t *testing.T) {
	conn, _ := migrated(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 10; n++ {
		// Values 10, 20, … 10n, in a shuffled order.
		vals := make([]int64, n)
		for i := range vals {
			vals[i] = int64(10 * (i + 1))
		}
		rng.Shuffle(n, func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
		var arr []string
		for _, v := range vals {
			arr = append(arr, jsNum(v))
		}
		var median, p90 int64
		err := conn.QueryRow(ctx, "SELECT toInt64(quantileExact(0.5)(x)), toInt64(quantileExact(0.9)(x)) FROM (SELECT arrayJoin(["+strings.Join(arr, ",")+"]) AS x)").Scan(&median, &p90)
		if err != nil {
			t.Fatal(err)
		}
		sorted := append([]int64(nil), vals...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		if want := sorted[int(math.Floor(0.5*float64(n)))]; median != want {
			t.Errorf("n=%d median %d, want %d", n, median, want)
		}
		if want := sorted[int(math.Floor(0.9*float64(n)))]; p90 != want {
			t.Errorf("n=%d p90 %d, want %d", n, p90, want)
		}
	}
}

func jsNum(v int64) string { b, _ := json.Marshal(v); return string(b) }

func nearly(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.IsNaN(got) || math.Abs(got-want) > 1e-4 {
		t.Errorf("%s = %.6f, want %.6f", what, got, want)
	}
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// shortRecoveries are recoveries within seconds (the demo's), and with
// long set one within 25 minutes: treated decisions recovered after 0, 1,
// 4, 9, 12 and 29 s (and 1500 s), and a holdout decision converted after
// 40 s, which is no recovery and chooses nothing.
func shortRecoveries(long bool) reportDataset {
	var ds reportDataset
	add := func(id string, holdout uint8, since int64) {
		at := ts(3, 1, 10, 0, 0)
		ds.decisions = append(ds.decisions, decisionRow{id: id, decidedAt: at, flow: "f", step: "s", holdout: holdout,
			customer: "c-" + id, cart: "k-" + id, cartType: "standard", channel: "web", currency: "EUR"})
		kind := "recovered"
		if holdout == 1 {
			kind = "converted_holdout"
		}
		ds.outcomes = append(ds.outcomes, outcomeRow{id: "O" + id, kind: kind, at: at.Add(time.Duration(since) * time.Second),
			customer: "c-" + id, cart: "k-" + id, currency: "EUR", value: 100, decisionID: id, flow: "f", step: "s", holdout: holdout, sinceSeconds: since})
	}
	for i, s := range []int64{0, 1, 4, 9, 12, 29} {
		add(fmt.Sprintf("T%d", i), 0, s)
	}
	add("H", 1, 40)
	if long {
		add("L", 0, 1500)
	}
	return ds
}

// Recoveries within the hour get a scale of seconds or minutes (see
// TimeToRecoveryBucketsFor) instead of all landing in "<1h".
func TestReportTimeToRecoveryWithinTheHour(t *testing.T) {
	for _, c := range []struct {
		long   bool
		labels []string
		counts []int64
	}{
		{false, []string{"<1s", "1–2s", "2–5s", "5–10s", "10–30s", "≥30s"}, []int64{1, 1, 1, 1, 2, 0}},
		{true, []string{"<1m", "1–2m", "2–5m", "5–15m", "15–30m", "≥30m"}, []int64{6, 0, 0, 0, 1, 0}},
	} {
		conn, _ := migrated(t)
		shortRecoveries(c.long).insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
		r := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
		var labels []string
		for _, b := range r.TimeToRecovery {
			labels = append(labels, b.Label)
		}
		if !reflect.DeepEqual(labels, c.labels) || !reflect.DeepEqual(bucketCounts(r.TimeToRecovery), c.counts) {
			t.Errorf("long %v: time to recovery %s, want %v %v", c.long, toJSON(r.TimeToRecovery), c.labels, c.counts)
		}
	}
}
