package projections

import (
	"encoding/json"
	"testing"

	"github.com/cartlift/cartlift/events"
)

// A guest's cart moved to the customer on login keeps the guest's cause
// (the guest's partition and offset), for the cart and for its records.
func TestExplainFollowsLogin(t *testing.T) {
	flows, err := ParseFlows("t", []byte(`
guards:
  requires_consent: false
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
	bt.Apply("anon:g-1", &events.Event{ID: "e-1", Source: "shop", Type: events.TypeItemAdded, Time: utc("2026-11-26T10:00:00Z"),
		Pos: &events.Position{Topic: "cart-events", Partition: 1, Offset: 5},
		ItemAdded: &events.ItemAdded{CartRef: events.CartRef{AnonymousID: "g-1", CartID: "k", Currency: "EUR"},
			Item: events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 1}}})
	bt.Apply("c-1", &events.Event{ID: "l-1", Source: "shop", Type: events.TypeCustomerLoggedIn, Time: utc("2026-11-26T11:30:00Z"),
		Pos:              &events.Position{Topic: "cart-events", Partition: 0, Offset: 7},
		CustomerLoggedIn: &events.CustomerLoggedIn{CustomerID: "c-1", AnonymousID: "g-1"}})
	bt.Finish(utc("2026-11-26T12:30:00Z"))
	x, ok := Explain(bt.State("c-1"), "k", cfg, "cart-events")
	if !ok {
		t.Fatal("the cart did not move")
	}
	js, _ := json.Marshal(x)
	guest := events.Cause{EventID: "e-1", Topic: "cart-events", Partition: 1, Offset: 5}
	if x.Cause == nil || *x.Cause != guest || len(x.Steps) != 2 || *x.Steps[0].Cause != guest || *x.Steps[1].Cause != guest ||
		x.Steps[0].Result != ResultDecided || x.Steps[1].Result != ResultDecided {
		t.Fatalf("moved cart explained as %s", js)
	}
}
