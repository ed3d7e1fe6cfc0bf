package projections

import (
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// The repeat window is bounded by count (MaxSeenEvents) and by event time
// (SeenWindow): inside it a repeat changes nothing; outside it the event is
// applied again, as documented.
func TestRepeatWindow(t *testing.T) {
	cfg := testConfig(t, `
guards:
  requires_consent: false
flows:
  - name: f
    steps:
      - {name: a, after: 1h, action: email}
`)
	t0 := utc("2026-11-20T10:00:00Z")
	add := func(id string, at time.Time, sku string) *events.Event {
		ev, err := encodeEvent(id, events.TypeItemAdded, at, addItem1("c-1", "k1", sku))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var st *CustomerState
	apply := func(ev *events.Event) Effects {
		eff := Apply(st, "c-1", ev, cfg)
		st = eff.State
		return eff
	}
	qty := func(sku string) int64 {
		for _, it := range st.Cart("k1").Items {
			if it.SKU == sku {
				return it.Quantity
			}
		}
		return 0
	}

	first := add("e-first", t0, "A")
	apply(first)
	if eff := apply(add("e-first", t0, "A")); !eff.Duplicate || qty("A") != 1 || len(eff.Timers) != 0 {
		t.Fatalf("a repeat: duplicate %v, quantity %d, timers %v", eff.Duplicate, qty("A"), eff.Timers)
	}
	// The same id from another source is another event.
	other, err := events.Encode("e-first", "pos", events.TypeItemAdded, t0, "", addItem1("c-1", "k1", "A"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(other, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if eff := apply(ev); eff.Duplicate || qty("A") != 2 {
		t.Fatalf("another source: duplicate %v, quantity %d", eff.Duplicate, qty("A"))
	}

	// By count: the window holds e-first and the POS event; MaxSeenEvents-1
	// newer events push e-first out.
	for i := range MaxSeenEvents - 2 {
		apply(add(fmt.Sprintf("e-b%d", i), t0.Add(time.Second), "B"))
	}
	if eff := apply(add("e-first", t0, "A")); !eff.Duplicate || len(st.Seen) != MaxSeenEvents {
		t.Fatalf("at the count bound: duplicate %v, window %d", eff.Duplicate, len(st.Seen))
	}
	apply(add("e-push", t0.Add(time.Second), "B"))
	if eff := apply(add("e-first", t0, "A")); eff.Duplicate || qty("A") != 3 {
		t.Fatalf("past the count bound: duplicate %v, quantity %d", eff.Duplicate, qty("A"))
	}

	// By time: an event more than SeenWindow older than the newest leaves.
	apply(add("e-old", t0.Add(2*time.Second), "C"))
	apply(add("e-new", t0.Add(2*time.Second+SeenWindow), "C"))
	if eff := apply(add("e-old", t0.Add(2*time.Second), "C")); !eff.Duplicate {
		t.Fatal("exactly SeenWindow older: not a duplicate")
	}
	apply(add("e-newer", t0.Add(3*time.Second+SeenWindow), "C"))
	if eff := apply(add("e-old", t0.Add(2*time.Second), "C")); eff.Duplicate || qty("C") != 4 {
		t.Fatalf("older than the window: duplicate %v, quantity of C %d", eff.Duplicate, qty("C"))
	}
	for _, e := range st.Seen {
		if e.At.Before(t0.Add(3 * time.Second)) {
			t.Fatalf("window holds %v, older than %v before the newest", e.At, SeenWindow)
		}
	}
}

func TestEventHashIsFNV1a(t *testing.T) {
	h := fnv.New64a()
	h.Write([]byte("shop\x00e-1"))
	if got := EventHash("shop", "e-1"); got != h.Sum64() {
		t.Fatalf("EventHash %x, FNV-1a %x", got, h.Sum64())
	}
	if EventHash("a", "bc") == EventHash("ab", "c") {
		t.Fatal("the separator does not separate")
	}
}
