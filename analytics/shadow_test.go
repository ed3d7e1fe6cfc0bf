package analytics_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cartlift/cartlift/analytics"
)

// shadowDataset is a random set of live decisions, shadow decisions and
// checkouts over 60 carts, with the comparison counted from it in Go.
type shadowDataset struct {
	live, shadow []shadowDec
	checkouts    []shadowCheckout
}

type shadowDec struct {
	id, flow, of, customer, cart, currency string
	holdout                                uint8
	at, until                              time.Time
	percent, max                           int64
}

type shadowCheckout struct {
	id, kind, customer, cart, currency, decision string
	at                                           time.Time
	value                                        int64
}

func newShadowDataset(seed uint64) shadowDataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	var ds shadowDataset
	base := ts(3, 1, 12, 0, 0)
	for i := range 60 {
		cust, cart, cur := fmt.Sprintf("c%d", i), fmt.Sprintf("k%d", i), []string{"EUR", "USD"}[i%2]
		at := base.Add(time.Duration(rng.IntN(48)) * time.Hour)
		if rng.IntN(10) == 0 {
			at = ts(2, 20, 0, 0, 0) // before the period
		}
		var live *shadowDec
		if rng.IntN(10) < 7 {
			d := shadowDec{id: "L" + cart, flow: "live", customer: cust, cart: cart, currency: cur, holdout: uint8(rng.IntN(5) / 4), at: at}
			if rng.IntN(2) == 0 {
				d.percent, d.max = 10, 300
			}
			ds.live = append(ds.live, d)
			live = &ds.live[len(ds.live)-1]
		}
		for j := range rng.IntN(3) {
			sat := at.Add(time.Duration(j*40-20) * time.Minute)
			ds.shadow = append(ds.shadow, shadowDec{id: fmt.Sprintf("S%s-%d", cart, j), flow: "sh", of: "live", customer: cust, cart: cart,
				currency: cur, at: sat, until: sat.Add(time.Hour), percent: int64(5 * (j + 1)), max: 400})
		}
		if rng.IntN(2) == 0 {
			o := shadowCheckout{id: "O" + cart, kind: "converted", customer: cust, cart: cart, currency: cur,
				at: at.Add(time.Duration(rng.IntN(150)-30) * time.Minute), value: int64(1000 + rng.IntN(9000))}
			if live != nil && !o.at.Before(live.at) && o.at.Sub(live.at) <= time.Hour {
				o.kind, o.decision = "recovered", live.id
				if live.holdout == 1 {
					o.kind = "converted_holdout"
				}
			}
			ds.checkouts = append(ds.checkouts, o)
		}
	}
	return ds
}

func (ds shadowDataset) insert(t *testing.T, conn driver.Conn, insertedAt time.Time) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO decisions (id, decided_at, valid_until, flow, step, action, holdout, discount_percent, discount_max_minor, customer_key, cart_id, currency, inserted_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.live {
		if err := b.Append(d.id, d.at, d.at.Add(time.Hour), d.flow, "s", "email", d.holdout, d.percent, d.max, d.customer, d.cart, d.currency, insertedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO shadow_decisions (id, decided_at, valid_until, flow, step, action, discount_percent, discount_max_minor, customer_key, cart_id, currency, shadow_of, attribute_until, inserted_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.shadow {
		if err := b.Append(d.id, d.at, d.at.Add(time.Hour), d.flow, "s", "email", d.percent, d.max, d.customer, d.cart, d.currency, d.of, d.until, insertedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO outcomes (id, kind, at, customer_key, cart_id, currency, value_minor, order_id, decision_id, inserted_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ds.checkouts {
		if err := b.Append(o.id, o.kind, o.at, o.customer, o.cart, o.currency, o.value, "order-"+o.cart, o.decision, insertedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

func cost(value, percent, max int64) int64 {
	if percent == 0 {
		return 0
	}
	return min(value*percent/100, max)
}

// want counts the comparison of [since, until) from the dataset itself.
func (ds shadowDataset) want(since, until time.Time) []analytics.ShadowComparison {
	in := func(t time.Time) bool { return !t.Before(since) && t.Before(until) }
	checkout := map[string]shadowCheckout{}
	for _, o := range ds.checkouts {
		checkout[o.cart] = o
	}
	byCur := map[string]*analytics.ShadowComparison{}
	row := func(cur string) *analytics.ShadowComparison {
		if byCur[cur] == nil {
			byCur[cur] = &analytics.ShadowComparison{ShadowFlow: "sh", LiveFlow: "live", Currency: cur}
		}
		return byCur[cur]
	}
	liveCart := map[string]bool{}
	for _, d := range ds.live {
		if d.holdout == 1 || !in(d.at) {
			continue
		}
		liveCart[d.cart] = true
	}
	shadowCarts := map[string]bool{}
	for _, d := range ds.shadow {
		if in(d.at) {
			shadowCarts[d.cart] = true
		}
	}
	for _, d := range ds.live {
		if d.holdout == 1 || !in(d.at) {
			continue
		}
		r := row(d.currency)
		r.LiveCarts++
		if o, ok := checkout[d.cart]; ok && o.kind == "recovered" && o.decision == d.id {
			r.LiveRecovered++
			r.LiveRevenueMinor += o.value
			r.LiveDiscountCostMinor += cost(o.value, d.percent, d.max)
		}
	}
	credited := map[string]*shadowDec{}
	for i := range ds.shadow {
		d := &ds.shadow[i]
		if !in(d.at) {
			continue
		}
		o, ok := checkout[d.cart]
		if ok && !o.at.Before(d.at) && !o.at.After(d.until) {
			if c := credited[d.cart]; c == nil || d.at.After(c.at) {
				credited[d.cart] = d
			}
		}
	}
	for cart := range shadowCarts {
		var cur string
		for _, d := range ds.shadow {
			if d.cart == cart {
				cur = d.currency
			}
		}
		r := row(cur)
		r.ShadowCarts++
		if liveCart[cart] {
			r.BothCarts++
		}
		if d := credited[cart]; d != nil {
			o := checkout[cart]
			r.ShadowRecovered++
			r.ShadowRevenueMinor += o.value
			r.ShadowDiscountCostMinor += cost(o.value, d.percent, d.max)
		}
	}
	var out []analytics.ShadowComparison
	for _, cur := range []string{"EUR", "USD"} {
		if r := byCur[cur]; r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// The comparison of a shadow flow with its live flow equals the count of
// the raw rows (each id once: the dataset is inserted twice), and shows
// in the table and the HTML only with --compare-shadow.
func TestReportCompareShadow(t *testing.T) {
	ctx := context.Background()
	conn, err := analytics.Open(ctx, chConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := analytics.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	opt := analytics.ReportOptions{Since: periodStart, Until: periodEnd, CompareShadow: true}
	if r := buildReport(t, conn, opt); r.ShadowComparisons == nil || len(r.ShadowComparisons) != 0 {
		t.Fatalf("empty database: %#v", r.ShadowComparisons)
	}
	ds := newShadowDataset(5)
	ds.insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	ds.insert(t, conn, time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC))
	r := buildReport(t, conn, opt)
	want := ds.want(periodStart, periodEnd)
	if !reflect.DeepEqual(r.ShadowComparisons, want) {
		t.Fatalf("comparisons\n got  %+v\n want %+v", r.ShadowComparisons, want)
	}
	var sum analytics.ShadowComparison
	for _, w := range want {
		sum.ShadowRecovered += w.ShadowRecovered
		sum.BothCarts += w.BothCarts
		sum.LiveRecovered += w.LiveRecovered
		sum.LiveDiscountCostMinor += w.LiveDiscountCostMinor
		sum.ShadowDiscountCostMinor += w.ShadowDiscountCostMinor
	}
	if sum.ShadowRecovered == 0 || sum.BothCarts == 0 || sum.LiveRecovered == 0 || sum.LiveDiscountCostMinor == 0 || sum.ShadowDiscountCostMinor == 0 {
		t.Fatalf("the dataset does not exercise every column: %+v", want)
	}
	t.Logf("%+v", want)
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "Shadow flows") || !strings.Contains(table.String(), "SHADOW RECOVERED") {
		t.Errorf("the table lacks the shadow flows:\n%s", table.String())
	}
	found := false
	for _, tb := range htmlTables(t, renderHTML(t, r)) {
		if tb.id == "table-shadow" {
			found = true
			if len(tb.rows) != len(want) || len(tb.head) != 12 {
				t.Errorf("shadow table: %d rows of %q", len(tb.rows), tb.head)
			}
		}
	}
	if !found {
		t.Error("the HTML has no shadow table")
	}
	opt.CompareShadow = false
	if r := buildReport(t, conn, opt); r.ShadowComparisons != nil {
		t.Errorf("without CompareShadow: %+v", r.ShadowComparisons)
	}
}
