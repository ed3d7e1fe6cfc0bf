package projections

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Focused tests of fold rules, one per rule; the golden scripts show the
// same behaviour end to end.

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

const testFlows = `
guards:
  requires_consent: false # the customers of these tests have no profile
flows:
  - name: b2c
    match: {channels: [b2c]}
    steps:
      - {name: reminder, after: 1h, action: email, template: reminder}
      - {name: second-reminder, after: 24h, action: email, template: reminder-2}
    expire_after: 7d
    attribution_window: 2d
`

func testConfig(t testing.TB, yaml string) *Config {
	t.Helper()
	flows, err := ParseFlows("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return NewConfig(flows)
}

// eventSeq numbers mustEvent's events: each is a distinct input event.
var eventSeq atomic.Int64

func mustEvent(t testing.TB, typ string, at time.Time, data any) *events.Event {
	t.Helper()
	ev, err := encodeEvent(fmt.Sprintf("e-%d", eventSeq.Add(1)), typ, at, data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func addItem1(cust, cart, sku string) events.ItemAdded {
	return events.ItemAdded{
		CartRef: events.CartRef{CustomerID: cust, CartID: cart, CartType: "shopping", Channel: "b2c", Currency: "EUR"},
		Item:    events.Item{SKU: sku, Quantity: 1, UnitPriceMinor: 2500},
	}
}

func checkout1(cust, cart, order string) events.CheckoutCompleted {
	return events.CheckoutCompleted{CartRef: events.CartRef{CustomerID: cust, CartID: cart}, OrderID: order, TotalMinor: 2500}
}

// run is a sim that fails the test on any invariant violation.
type run struct {
	t *testing.T
	*sim
	decisions []events.Decision
	outcomes  []events.Outcome
}

func newRun(t *testing.T, cfg *Config) *run {
	r := &run{t: t, sim: newSim(cfg)}
	r.observe = func(st *step) {
		r.decisions = append(r.decisions, st.Eff.Decisions...)
		r.outcomes = append(r.outcomes, st.Eff.Outcomes...)
	}
	return r
}

func (r *run) event(key, typ string, at time.Time, data any) {
	r.t.Helper()
	if err := r.sim.apply(key, mustEvent(r.t, typ, at, data)); err != nil {
		r.t.Fatal(err)
	}
	if err := r.checkAll(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) advance(at time.Time) {
	r.t.Helper()
	if err := r.sim.advance(at); err != nil {
		r.t.Fatal(err)
	}
	if err := r.checkAll(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) lastOutcome() events.Outcome {
	r.t.Helper()
	if len(r.outcomes) == 0 {
		r.t.Fatal("no outcome")
	}
	return r.outcomes[len(r.outcomes)-1]
}

// A cart id that comes back after its cart was dropped (retention over,
// empty cart expired, customer erased) starts again at version 1; its
// decisions and outcomes must still get new ids, or consumers that
// de-duplicate on them drop the new ones.
func TestIDsDifferAcrossCartLives(t *testing.T) {
	cfg := testConfig(t, testFlows)
	for _, tc := range []struct {
		name string
		drop func(r *run, at time.Time) time.Time
	}{
		{"retention over", func(r *run, at time.Time) time.Time {
			r.event("c-1", events.TypeCheckoutCompleted, at, checkout1("c-1", "k1", "o-1"))
			at = at.Add(cfg.ClosedRetention)
			r.advance(at)
			return at
		}},
		{"empty cart expired", func(r *run, at time.Time) time.Time {
			r.event("c-1", events.TypeItemRemoved, at, events.ItemRemoved{CartRef: events.CartRef{CustomerID: "c-1", CartID: "k1"}, SKU: "A"})
			at = at.Add(7 * 24 * time.Hour)
			r.advance(at)
			return at
		}},
		{"customer erased", func(r *run, at time.Time) time.Time {
			r.event("c-1", events.TypeCustomerErased, at, events.CustomerErased{CustomerID: "c-1"})
			return at
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(t, cfg)
			r.event("c-1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
			r.advance(t0.Add(time.Hour))
			at := tc.drop(r, t0.Add(2*time.Hour))
			if st := r.states["c-1"]; st != nil && st.Cart("k1") != nil {
				t.Fatalf("cart k1 not dropped: %+v", st.Cart("k1"))
			}
			at = at.Add(24 * time.Hour)
			r.event("c-1", events.TypeItemAdded, at, addItem1("c-1", "k1", "A"))
			r.advance(at.Add(time.Hour))
			r.event("c-1", events.TypeCheckoutCompleted, at.Add(2*time.Hour), checkout1("c-1", "k1", "o-2"))
			if len(r.decisions) != 2 {
				t.Fatalf("%d decisions, want 2", len(r.decisions))
			}
			d0, d1 := r.decisions[0], r.decisions[1]
			if d0.Cart.Version != d1.Cart.Version || d0.Step != d1.Step {
				t.Fatalf("the test wants the same step and version twice: %s v%d, %s v%d", d0.Step, d0.Cart.Version, d1.Step, d1.Cart.Version)
			}
			if d0.ID == d1.ID {
				t.Errorf("the reminder of the new cart k1 has the id of the old one's: %s", d0.ID)
			}
			ids := map[string]bool{}
			for _, o := range r.outcomes {
				if ids[o.ID] {
					t.Errorf("outcome id %s (%s) used twice", o.ID, o.Kind)
				}
				ids[o.ID] = true
			}
		})
	}
}

// An activity stamped before a cart's checkout that arrives after it is a
// late event of the bought cart: it must not reopen the cart, which would
// then be reminded about although it was bought.
func TestStaleEventDoesNotReopenClosedCart(t *testing.T) {
	cfg := testConfig(t, testFlows)
	for _, closeType := range []string{events.TypeCheckoutCompleted, events.TypeCartDiscarded} {
		t.Run(closeType, func(t *testing.T) {
			r := newRun(t, cfg)
			r.event("c-1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
			var data any = checkout1("c-1", "k1", "o-1")
			if closeType == events.TypeCartDiscarded {
				data = events.CartDiscarded{CartRef: events.CartRef{CustomerID: "c-1", CartID: "k1"}}
			}
			r.event("c-1", closeType, t0.Add(30*time.Minute), data)
			r.event("c-1", events.TypeItemAdded, t0.Add(20*time.Minute), addItem1("c-1", "k1", "B"))
			c := r.states["c-1"].Cart("k1")
			if c.IsOpen() {
				t.Errorf("a late add from before the close reopened the cart: %+v", c)
			}
			r.advance(t0.Add(3 * time.Hour))
			if len(r.decisions) > 0 {
				t.Errorf("reminded about a closed cart: %+v", r.decisions[0])
			}
			// A genuine comeback, after the close, does reopen it.
			r.event("c-1", events.TypeItemAdded, t0.Add(4*time.Hour), addItem1("c-1", "k1", "C"))
			if c := r.states["c-1"].Cart("k1"); !c.IsOpen() || len(c.Items) != 1 || c.Items[0].SKU != "C" {
				t.Errorf("an add after the close did not start a new life: %+v", c)
			}
		})
	}
}

// A reopened cart starts a new life: a decision of the old life, already
// credited with the old life's checkout, must not claim the new one.
func TestReopenedCartNotCreditedByOldLife(t *testing.T) {
	r := newRun(t, testConfig(t, testFlows))
	r.event("c-1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
	r.advance(t0.Add(time.Hour))
	r.event("c-1", events.TypeCheckoutCompleted, t0.Add(2*time.Hour), checkout1("c-1", "k1", "o-1"))
	if o := r.lastOutcome(); o.Kind != events.OutcomeRecovered {
		t.Fatalf("first checkout: %s, want recovered", o.Kind)
	}
	r.event("c-1", events.TypeItemAdded, t0.Add(3*time.Hour), addItem1("c-1", "k1", "B"))
	r.event("c-1", events.TypeCheckoutCompleted, t0.Add(3*time.Hour+10*time.Minute), checkout1("c-1", "k1", "o-2"))
	if o := r.lastOutcome(); o.Kind != events.OutcomeConverted || o.DecisionID != "" || o.Decisions != 0 {
		t.Errorf("second checkout: %s attributed to %q, %d decisions; want converted, none, 0", o.Kind, o.DecisionID, o.Decisions)
	}
}

// A late event older than the cart's newest activity changes the cart but
// not its inactivity period: steps already sent for that period must not
// be sent again.
func TestLateEventDoesNotRepeatSteps(t *testing.T) {
	r := newRun(t, testConfig(t, testFlows))
	r.event("c-1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
	r.advance(t0.Add(2 * time.Hour))
	r.event("c-1", events.TypeItemUpdated, t0.Add(-10*time.Minute),
		events.ItemUpdated{CartRef: events.CartRef{CustomerID: "c-1", CartID: "k1"}, SKU: "A", Quantity: 2})
	r.advance(t0.Add(2*time.Hour + 5*time.Minute))
	if len(r.decisions) != 1 {
		t.Fatalf("%d decisions, want the reminder once: %+v", len(r.decisions), r.decisions)
	}
	r.advance(t0.Add(24 * time.Hour))
	if len(r.decisions) != 2 || r.decisions[1].Step != "second-reminder" || r.decisions[1].Cart.ItemCount != 2 {
		t.Fatalf("want the second reminder with the updated cart, got %+v", r.decisions)
	}
}

// Apply and Fire own the state they are given, but must not touch anything
// else: the event, the config, or other customers' states.
func TestApplyIsPure(t *testing.T) {
	cfg := testConfig(t, testFlows)
	cfgBefore, _ := json.Marshal(cfg)
	ev := mustEvent(t, events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
	evBefore, _ := json.Marshal(ev)
	a := Apply(nil, "c-1", ev, cfg)
	b := Apply(nil, "c-1", ev, cfg)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("the same input gave different effects:\n%s\n%s", ja, jb)
	}
	fa := Fire(a.State, "c-1", "k1", t0.Add(time.Hour), cfg)
	fb := Fire(b.State, "c-1", "k1", t0.Add(time.Hour), cfg)
	ja, _ = json.Marshal(fa)
	jb, _ = json.Marshal(fb)
	if string(ja) != string(jb) {
		t.Errorf("the same timer gave different effects:\n%s\n%s", ja, jb)
	}
	if len(fa.Decisions) != 1 {
		t.Errorf("%d decisions, want 1", len(fa.Decisions))
	}
	cfgAfter, _ := json.Marshal(cfg)
	evAfter, _ := json.Marshal(ev)
	if string(cfgBefore) != string(cfgAfter) || string(evBefore) != string(evAfter) {
		t.Error("Apply or Fire modified the config or the event")
	}
}

// The fold is pure: projections (and events, which it imports) must not
// depend on Kafka, Pebble, ClickHouse or the network.
func TestNoIOImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"github.com/twmb/franz-go", "github.com/cockroachdb/pebble", "github.com/ClickHouse/", "net", "net/", "os/exec", "database/sql"} {
			if dep == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(dep, bad)) {
				t.Errorf("projections depends on %s", dep)
			}
		}
	}
}

func TestCartsPerCustomerBounded(t *testing.T) {
	cfg := NewConfig(nil)
	var st *CustomerState
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i := range MaxCartsPerCustomer + 20 {
		ev := &events.Event{ID: fmt.Sprint(i), Type: events.TypeItemAdded, Time: at, ItemAdded: &events.ItemAdded{
			CartRef: events.CartRef{CustomerID: "bot", CartID: fmt.Sprintf("k%04d", i), Currency: "EUR"},
			Item:    events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 100}}}
		st = Apply(st, "bot", ev, cfg).State
	}
	if len(st.Carts) != MaxCartsPerCustomer {
		t.Fatalf("customer holds %d carts, want the bound %d", len(st.Carts), MaxCartsPerCustomer)
	}
}
