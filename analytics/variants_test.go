package analytics_test

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cartlift/cartlift/analytics"
)

// insertVariantDataset inserts decisions naming variants, and outcomes of
// some of them, as the sink would (every copy inserted at insertedAt):
//
//	ab/reminder a: V1 V2 V3 V4 treated (carts k1–k4), V1 recovered; H1
//	               holdout (k5), converted.
//	ab/reminder b: V5 V8 (both cart k6, V8 the later, recovered), V6 (k7,
//	               recovered), V7 (k8): 4 decisions, 3 carts, 2 recovered.
//	ab/second:     V9 without a variant: not in any test.
//	ab/reminder a: V10, before the period: not counted.
//	other/x x1:    X1 recovered; x2: X2 not.
func insertVariantDataset(t *testing.T, conn driver.Conn, insertedAt time.Time) {
	t.Helper()
	ctx := context.Background()
	type dec struct {
		id, flow, step string
		idx            uint16
		variant        string
		holdout        uint8
		customer, cart string
		at             time.Time
	}
	day := ts(3, 1, 12, 0, 0)
	ds := []dec{
		{"V1", "ab", "reminder", 0, "a", 0, "v1", "k1", day},
		{"V2", "ab", "reminder", 0, "a", 0, "v2", "k2", day},
		{"V3", "ab", "reminder", 0, "a", 0, "v3", "k3", day},
		{"V4", "ab", "reminder", 0, "a", 0, "v4", "k4", day},
		{"H1", "ab", "reminder", 0, "a", 1, "v5", "k5", day},
		{"V5", "ab", "reminder", 0, "b", 0, "v6", "k6", day},
		{"V8", "ab", "reminder", 0, "b", 0, "v6", "k6", day.Add(2 * time.Hour)},
		{"V6", "ab", "reminder", 0, "b", 0, "v7", "k7", day},
		{"V7", "ab", "reminder", 0, "b", 0, "v8", "k8", day},
		{"V9", "ab", "second", 1, "", 0, "v1", "k1", day.Add(24 * time.Hour)},
		{"V10", "ab", "reminder", 0, "a", 0, "v9", "k9", ts(2, 20, 0, 0, 0)},
		{"X1", "other", "x", 0, "x1", 0, "w1", "m1", day},
		{"X2", "other", "x", 0, "x2", 0, "w2", "m2", day},
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO decisions (id, decided_at, valid_until, flow, step, step_index, action, variant, holdout, customer_key, cart_id, currency, inserted_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := b.Append(d.id, d.at, d.at.Add(time.Hour), d.flow, d.step, d.idx, "email", d.variant, d.holdout, d.customer, d.cart, "EUR", insertedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	type out struct {
		id, kind, decision string
		holdout            uint8
	}
	os := []out{{"OV1", "recovered", "V1", 0}, {"OH1", "converted_holdout", "H1", 1}, {"OV8", "recovered", "V8", 0},
		{"OV6", "recovered", "V6", 0}, {"OX1", "recovered", "X1", 0}, {"OV10", "recovered", "V10", 0}}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO outcomes (id, kind, at, customer_key, cart_id, currency, value_minor, decision_id, holdout, inserted_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range os {
		if err := b.Append(o.id, o.kind, day.Add(5*time.Hour), "", "", "EUR", int64(1000), o.decision, o.holdout, insertedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// wantVariantTests are the tests of insertVariantDataset over the period
// [periodStart, periodEnd).
func wantVariantTests() []analytics.VariantTest {
	bd, bl, bh := analytics.NewcombeDiff(2, 3, 1, 4)
	xd, xl, xh := analytics.NewcombeDiff(0, 1, 1, 1)
	return []analytics.VariantTest{
		{Flow: "ab", Step: "reminder", StepIndex: 0, Variants: []analytics.VariantRow{
			{Variant: "a", Decisions: 4, HoldoutDecisions: 1, TreatedCarts: 4, Recovered: 1, Rate: 0.25,
				ControlCarts: 1, ControlConverted: 1, ControlRate: 1},
			{Variant: "b", Decisions: 4, TreatedCarts: 3, Recovered: 2, Rate: 2.0 / 3, Diff: bd, Low: bl, High: bh},
		}},
		{Flow: "other", Step: "x", StepIndex: 0, Variants: []analytics.VariantRow{
			{Variant: "x1", Decisions: 1, TreatedCarts: 1, Recovered: 1, Rate: 1},
			{Variant: "x2", Decisions: 1, TreatedCarts: 1, Rate: 0, Diff: xd, Low: xl, High: xh},
		}},
	}
}

// The report's variant tests count each decision and outcome id once (the
// dataset is inserted twice, as a replay would), leave out decisions
// without a variant and outside the period, and follow the flow filter;
// the table and the HTML show them.
func TestReportVariants(t *testing.T) {
	ctx := context.Background()
	conn, err := analytics.Open(ctx, chConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := analytics.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	r := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	if r.VariantTests == nil || len(r.VariantTests) != 0 {
		t.Fatalf("empty database: variant tests %#v, want []", r.VariantTests)
	}
	insertVariantDataset(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	insertVariantDataset(t, conn, time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC))
	r = buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	if want := wantVariantTests(); !reflect.DeepEqual(r.VariantTests, want) {
		t.Fatalf("variant tests\n got  %+v\n want %+v", r.VariantTests, want)
	}
	r = buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd, Flow: "other"})
	if want := wantVariantTests()[1:]; !reflect.DeepEqual(r.VariantTests, want) {
		t.Fatalf("flow other: variant tests %+v, want %+v", r.VariantTests, want)
	}

	r = buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Variants (A/B tests", "VARIANT", "baseline", "no winner yet", "2/3", "1/1 (100.0%)"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	page := renderHTML(t, r)
	for _, tb := range htmlTables(t, page) {
		if tb.id != "table-variants" {
			continue
		}
		if len(tb.rows) != 4 || len(tb.head) != 9 {
			t.Errorf("variants table: %d rows of %q", len(tb.rows), tb.head)
		}
		return
	}
	t.Errorf("the HTML has no variants table")
}

// The winner: the variant with the highest rate, when the interval of its
// difference from every other variant lies above 0.
func TestVariantWinner(t *testing.T) {
	row := func(name string, x, n int64) analytics.VariantRow {
		return analytics.VariantRow{Variant: name, Recovered: x, TreatedCarts: n}
	}
	for _, c := range []struct {
		name string
		rows []analytics.VariantRow
		want string
	}{
		{"b clearly better", []analytics.VariantRow{row("a", 300, 1000), row("b", 400, 1000)}, "b"},
		{"a clearly better", []analytics.VariantRow{row("a", 400, 1000), row("b", 300, 1000)}, "a"},
		{"too close", []analytics.VariantRow{row("a", 300, 1000), row("b", 320, 1000)}, ""},
		{"too few", []analytics.VariantRow{row("a", 1, 4), row("b", 3, 4)}, ""},
		{"better than one, not the other", []analytics.VariantRow{row("a", 300, 1000), row("b", 400, 1000), row("c", 390, 1000)}, ""},
		{"better than both", []analytics.VariantRow{row("a", 300, 1000), row("b", 450, 1000), row("c", 350, 1000)}, "b"},
		{"a variant without carts", []analytics.VariantRow{row("a", 300, 1000), row("b", 600, 1000), row("c", 0, 0)}, ""},
		{"nothing recovered", []analytics.VariantRow{row("a", 0, 1000), row("b", 0, 1000)}, ""},
	} {
		tt := analytics.VariantTest{Variants: c.rows}
		analytics.ComputeVariantTestForTest(&tt)
		if tt.Winner != c.want {
			t.Errorf("%s: winner %q, want %q (%+v)", c.name, tt.Winner, c.want, tt.Variants)
		}
		if v := tt.Variants[1]; math.Abs(v.Diff-(float64(v.Recovered)/math.Max(float64(v.TreatedCarts), 1)-tt.Variants[0].Rate)) > 1e-12 || v.Low > v.Diff || v.High < v.Diff {
			t.Errorf("%s: second variant %+v against %+v", c.name, v, tt.Variants[0])
		}
		if v := tt.Variants[0]; v.Diff != 0 || v.Low != 0 || v.High != 0 {
			t.Errorf("%s: the baseline has a difference: %+v", c.name, v)
		}
	}
}
