package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

var idT0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func identityConfig(t *testing.T) *Config {
	t.Helper()
	flows, err := ParseFlows("t", []byte(`
guards:
  requires_consent: false # guests have no profile, hence no consent
flows:
  - name: f
    steps:
      - {name: first, after: 1h, action: email}
      - {name: second, after: 24h, action: email}
    expire_after: 7d
`))
	if err != nil {
		t.Fatal(err)
	}
	return NewConfig(flows)
}

func guestAdd(cart string, at time.Time) *events.Event {
	return &events.Event{ID: "e-" + cart, Type: events.TypeItemAdded, Time: at, ItemAdded: &events.ItemAdded{
		CartRef: events.CartRef{AnonymousID: "g1", CartID: cart, Channel: "b2c", Currency: "EUR"},
		Item:    events.Item{SKU: "A", Quantity: 2, UnitPriceMinor: 1500}}}
}

func login(at time.Time) *events.Event {
	return &events.Event{ID: "login-1", Type: events.TypeCustomerLoggedIn, Time: at,
		CustomerLoggedIn: &events.CustomerLoggedIn{CustomerID: "c-1", AnonymousID: "g1"}}
}

// TestLoginMovesGuestCartsOnce follows a login through both sides: the
// customer's side hands the login to the guest's key, the guest's side
// closes its open carts as merged and emits each as cart.assigned with its
// history, and the customer's side adopts them so that the flow goes on
// where it was. Repeating any message changes nothing.
func TestLoginMovesGuestCartsOnce(t *testing.T) {
	cfg := identityConfig(t)
	guest := "anon:g1"

	// The guest abandons a cart; the first reminder goes out.
	g := Apply(nil, guest, guestAdd("k1", idT0), cfg).State
	eff := Fire(g, guest, "k1", idT0.Add(time.Hour), cfg)
	if len(eff.Decisions) != 1 || eff.Decisions[0].Step != "first" {
		t.Fatalf("guest reminder: %+v", eff.Decisions)
	}
	g = eff.State

	// Customer side: the login is handed to the guest's key.
	ceff := Apply(nil, "c-1", login(idT0.Add(2*time.Hour)), cfg)
	if len(ceff.Emits) != 1 || ceff.Emits[0].Key != guest || ceff.Emits[0].Type != events.TypeCustomerLoggedIn {
		t.Fatalf("customer side emits %+v, want the login handed to %s", ceff.Emits, guest)
	}

	// Guest side: the cart moves.
	geff := Apply(g, guest, login(idT0.Add(2*time.Hour)), cfg)
	if len(geff.Emits) != 1 || geff.Emits[0].Key != "c-1" || geff.Emits[0].Type != events.TypeCartAssigned {
		t.Fatalf("guest side emits %+v, want one cart.assigned for c-1", geff.Emits)
	}
	if c := geff.State.Cart("k1"); c.Status != StatusMerged {
		t.Fatalf("guest cart status %s, want merged", c.Status)
	}
	if len(geff.Outcomes) != 1 || geff.Outcomes[0].Kind != events.OutcomeMerged || geff.OpenCartsDelta != -1 {
		t.Fatalf("guest side outcomes %+v delta %d", geff.Outcomes, geff.OpenCartsDelta)
	}
	// A repeated login (a re-delivered hand-over) moves nothing.
	if again := Apply(geff.State, guest, login(idT0.Add(2*time.Hour)), cfg); len(again.Emits)+len(again.Outcomes) != 0 {
		t.Fatalf("repeated login emitted %+v %+v", again.Emits, again.Outcomes)
	}

	// Customer side adopts the cart through the real contract: encode and
	// decode the emitted cart.assigned.
	em := geff.Emits[0]
	raw, err := events.Encode(em.ID, events.Source, em.Type, em.Time, "", em.Data)
	if err != nil {
		t.Fatal(err)
	}
	assigned, err := events.Decode(raw, time.Time{})
	if err != nil {
		t.Fatalf("emitted cart.assigned does not decode: %v", err)
	}
	aeff := Apply(ceff.State, "c-1", assigned, cfg)
	c := aeff.State.Cart("k1")
	if c == nil || !c.IsOpen() || c.TotalMinor != 3000 || aeff.OpenCartsDelta != 1 {
		t.Fatalf("customer cart after assignment: %+v", c)
	}
	if c.Version != g.Cart("k1").Version || len(c.Decisions) != 1 || c.AssignedFrom != guest {
		t.Fatalf("cart did not keep its version and history: %+v", c)
	}
	// The flow goes on: the next wake is the second step, not the first.
	if want := idT0.Add(24 * time.Hour); !c.WakeAt.Equal(want) {
		t.Fatalf("next wake %s, want the second step at %s", c.WakeAt, want)
	}
	eff = Fire(aeff.State, "c-1", "k1", idT0.Add(24*time.Hour), cfg)
	if len(eff.Decisions) != 1 || eff.Decisions[0].Step != "second" || eff.Decisions[0].Customer.Key != "c-1" {
		t.Fatalf("after the move: %+v", eff.Decisions)
	}
	// A repeated assignment changes nothing.
	before, _ := json.Marshal(eff.State)
	again := Apply(eff.State, "c-1", assigned, cfg)
	after, _ := json.Marshal(again.State)
	if string(before) != string(after) || len(again.Timers) != 0 {
		t.Fatalf("repeated cart.assigned changed the state:\n%s\n%s", before, after)
	}
}

func TestErasureLeavesATombstone(t *testing.T) {
	cfg := identityConfig(t)
	add := func(at time.Time) *events.Event {
		return &events.Event{ID: "e-" + at.Format(time.RFC3339), Type: events.TypeItemAdded, Time: at, ItemAdded: &events.ItemAdded{
			CartRef: events.CartRef{CustomerID: "c-9", CartID: "k", Currency: "EUR"},
			Item:    events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 100}}}
	}
	st := Apply(nil, "c-9", add(idT0), cfg).State
	eff := Apply(st, "c-9", &events.Event{ID: "x", Type: events.TypeCustomerErased, Time: idT0.Add(time.Minute),
		CustomerErased: &events.CustomerErased{CustomerID: "c-9"}}, cfg)
	if !eff.Erased || eff.State == nil || !eff.State.Erased() || len(eff.Timers) != 1 || !eff.Timers[0].New.IsZero() {
		t.Fatalf("erasure effects: %+v", eff)
	}
	// A late event from before the erasure brings nothing back.
	late := Apply(eff.State, "c-9", add(idT0.Add(30*time.Second)), cfg)
	if !late.State.Erased() || len(late.Timers) != 0 {
		t.Fatalf("late event revived the customer: %+v", late.State)
	}
	// A new event after it starts afresh.
	fresh := Apply(late.State, "c-9", add(idT0.Add(2*time.Minute)), cfg)
	if fresh.State.Erased() || fresh.State.OpenCarts() != 1 {
		t.Fatalf("new activity after erasure: %+v", fresh.State)
	}
}
