package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// TestExplain follows one customer through quiet hours, a combined
// decision and the cart cap, and checks what Explain says about each step:
// the cause (event, partition, offset) of each, including an older
// period's, the deferral, the combined step's decision, the caps' counts,
// the consent's source and the pending step.
func TestExplain(t *testing.T) {
	flows, err := ParseFlows("t", []byte(`
guards:
  quiet_hours: {from: "21:00", to: "08:00"}
  frequency_cap: {max: 5, per: 24h}
  max_messages_per_cart: 1
  combine_window: 1h
flows:
  - name: f
    steps:
      - {name: first, after: 1h, action: email}
      - {name: second, after: 2h, action: email}
    expire_after: 72h
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig(flows)
	bt := NewBacktest(cfg)
	yes, tz := true, "Europe/Berlin"
	var offset int64
	apply := func(id string, at time.Time, ev *events.Event) {
		offset++
		ev.ID, ev.Source, ev.Time = id, "shop", at
		ev.Pos = &events.Position{Topic: "cart-events", Partition: 2, Offset: offset}
		bt.Apply("c-1", ev)
	}
	add := func(id, cart string, at time.Time, price int64) {
		apply(id, at, &events.Event{Type: events.TypeItemAdded, ItemAdded: &events.ItemAdded{
			CartRef: events.CartRef{CustomerID: "c-1", CartID: cart, Currency: "EUR"},
			Item:    events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: price}}})
	}
	apply("u-1", utc("2026-11-26T18:00:00Z"), &events.Event{Type: events.TypeCustomerUpdated,
		CustomerUpdated: &events.CustomerUpdated{CustomerID: "c-1", MarketingConsent: &yes, TimeZone: &tz}})
	add("e-1", "k1", utc("2026-11-26T19:30:00Z"), 5000) // offset 2
	add("e-2", "k2", utc("2026-11-26T19:40:00Z"), 1000) // offset 3
	// Both carts' steps come due in the Berlin night and wait for 08:00
	// (07:00Z); then k1's second step goes out, covering k2's.
	add("e-3", "k1", utc("2026-11-27T09:00:00Z"), 5000) // offset 4: a new period
	bt.Finish(utc("2026-11-27T10:30:00Z"))

	st := bt.State("c-1")
	x, ok := Explain(st, "k1", cfg, "cart-events")
	if !ok {
		t.Fatal("no explanation of k1")
	}
	js, _ := json.MarshalIndent(x, "", "  ")
	e1 := &events.Cause{EventID: "e-1", Topic: "cart-events", Partition: 2, Offset: 2}
	e3 := &events.Cause{EventID: "e-3", Topic: "cart-events", Partition: 2, Offset: 4}
	if len(x.Steps) != 3 || *x.Cause != *e3 {
		t.Fatalf("k1:\n%s", js)
	}
	skipped, sent, capped := x.Steps[0], x.Steps[1], x.Steps[2]
	if skipped.Result != ResultSkipped || skipped.Guards != nil || *skipped.Cause != *e1 {
		t.Fatalf("k1's first step:\n%s", js)
	}
	consent := ConsentCheck{Result: ConsentGranted, EventID: "u-1", At: utc("2026-11-26T18:00:00Z")}
	quiet := QuietHoursCheck{From: "21:00", To: "08:00", TimeZone: "Europe/Berlin"}
	if sent.Result != ResultDecided || sent.DecisionID == "" || *sent.Cause != *e1 ||
		!sent.DueAt.Equal(utc("2026-11-26T21:30:00Z")) || !sent.DecidedAt.Equal(utc("2026-11-27T07:00:00Z")) ||
		sent.Deferred == nil || sent.Deferred.Reason != events.DeferredQuietHours || !sent.Deferred.Until.Equal(sent.DecidedAt) ||
		sent.Guards == nil || sent.Guards.Consent != consent || *sent.Guards.QuietHours != quiet ||
		*sent.Guards.CartCap != (CapCheck{Max: 1, Counted: 0, Passed: true}) ||
		*sent.Guards.FrequencyCap != (CapCheck{Max: 5, Window: "24h0m0s", Counted: 0, Passed: true}) {
		t.Fatalf("k1's second step:\n%s", js)
	}
	if capped.Result != ResultSuppressed || capped.Reason != ReasonCartCap || *capped.Cause != *e3 || capped.Deferred != nil ||
		*capped.Guards.CartCap != (CapCheck{Max: 1, Counted: 1, Passed: false}) ||
		*capped.Guards.FrequencyCap != (CapCheck{Max: 5, Window: "24h0m0s", Counted: 1, Passed: true}) ||
		capped.SuppressionID != SuppressionID(DecisionID("c-1", "k1", st.Cart("k1").CreatedAt, "f", "first", 2)) || capped.Version != 2 {
		t.Fatalf("k1's capped step:\n%s", js)
	}
	if len(x.Pending) != 1 || x.Pending[0].Step != "second" || !x.Pending[0].DueAt.Equal(utc("2026-11-27T11:00:00Z")) ||
		*x.Pending[0].Cause != *e3 {
		t.Fatalf("k1's pending step:\n%s", js)
	}

	y, _ := Explain(st, "k2", cfg, "cart-events")
	js, _ = json.MarshalIndent(y, "", "  ")
	if len(y.Steps) != 2 || y.Steps[1].Result != ResultSuppressed || y.Steps[1].Reason != ReasonCombined ||
		y.Steps[1].Into != sent.DecisionID || y.Steps[1].Cause.EventID != "e-2" || y.Steps[1].Guards == nil {
		t.Fatalf("k2:\n%s", js)
	}
	if _, ok := Explain(st, "nope", cfg, ""); ok {
		t.Fatal("an unknown cart explained")
	}

	// Without positions (a caller that gives none), nothing claims a cause.
	cfg2 := NewConfig(flows)
	eff := Apply(nil, "c-2", &events.Event{ID: "x", Source: "shop", Type: events.TypeItemAdded, Time: utc("2026-11-26T12:00:00Z"),
		ItemAdded: &events.ItemAdded{CartRef: events.CartRef{CustomerID: "c-2", CartID: "k", Currency: "EUR"},
			Item: events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 1}}}, cfg2)
	z, _ := Explain(eff.State, "k", cfg2, "cart-events")
	if z.Cause != nil || z.Pending[0].Cause != nil {
		t.Fatalf("a cause without a position: %+v", z)
	}
}
