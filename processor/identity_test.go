package processor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// TestGuestCartFollowsLogin: a guest's cart, on one partition, moves to the
// customer who logs in, on another, through the real Kafka protocol; a
// repeated login moves nothing twice; erasing the customer afterwards
// leaves nothing visible and no timers.
func TestGuestCartFollowsLogin(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	customer := keyIn("c", 1, testPartitions)
	guestID := "g"
	for i := 0; partitionOf(events.AnonPrefix+guestID, testPartitions) == 1; i++ {
		guestID = "g" + string(rune('a'+i))
	}
	guestKey := events.AnonPrefix + guestID
	if partitionOf(guestKey, testPartitions) == partitionOf(customer, testPartitions) {
		t.Fatal("test keys share a partition")
	}
	prod := newProducer(t, brokers)
	base := time.Now().Add(-90 * time.Second).UTC().Truncate(time.Second)
	add := mkEvent(t, "e-1", events.TypeItemAdded, base, events.ItemAdded{
		CartRef: events.CartRef{AnonymousID: guestID, CartID: "k-guest", Channel: "b2c", Currency: "EUR"},
		Item:    events.Item{SKU: "A", Quantity: 3, UnitPriceMinor: 1999}})
	login := mkEvent(t, "e-2", events.TypeCustomerLoggedIn, base.Add(30*time.Second),
		events.CustomerLoggedIn{CustomerID: customer, AnonymousID: guestID})
	produceTo(t, prod, tp.Events, add, login)
	r := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, uniqueName(t, "g"))

	var moved *projections.Cart
	waitFor(t, 20*time.Second, "the guest's cart under the customer", func() bool {
		st, _, owned, err := r.p.Lookup(customer)
		if err != nil || !owned || st == nil {
			return false
		}
		moved = st.Cart("k-guest")
		return moved != nil
	})
	if !moved.IsOpen() || moved.TotalMinor != 3*1999 || moved.AssignedFrom != guestKey {
		t.Fatalf("moved cart: %+v", moved)
	}
	gst, _, _, err := r.p.Lookup(guestKey)
	if err != nil || gst == nil || gst.Cart("k-guest").Status != projections.StatusMerged {
		t.Fatalf("guest's copy: %+v, %v", gst, err)
	}
	if got := r.p.Stats().OpenCarts; got != 1 {
		t.Fatalf("open carts %d, want 1 (the guest's copy is closed)", got)
	}

	// A login again (a new session of the same guest; a repeat of the same
	// event id would be dropped as a duplicate): nothing moves twice.
	before := r.p.Stats().EventsConsumed
	produceTo(t, prod, tp.Events, mkEvent(t, "e-2b", events.TypeCustomerLoggedIn, base.Add(31*time.Second),
		events.CustomerLoggedIn{CustomerID: customer, AnonymousID: guestID}))
	waitFor(t, 10*time.Second, "the repeated login and its hand-over consumed", func() bool {
		return r.p.Stats().EventsConsumed >= before+2
	})
	st, _, _, _ := r.p.Lookup(customer)
	if n := len(st.Carts); n != 1 || st.Cart("k-guest").Version != moved.Version {
		t.Fatalf("after a repeated login the customer has %d carts, version %d (was %d)", n, st.Cart("k-guest").Version, moved.Version)
	}

	// Erasure: nothing visible, no timers of the customer left.
	timers := r.p.Stats().PendingTimers
	produceTo(t, prod, tp.Events, mkEvent(t, "e-3", events.TypeCustomerErased, base.Add(60*time.Second),
		events.CustomerErased{CustomerID: customer}))
	waitFor(t, 10*time.Second, "the erasure", func() bool {
		st, _, _, err := r.p.Lookup(customer)
		return err == nil && st == nil
	})
	if got := r.p.Stats().PendingTimers; got != timers-1 {
		t.Fatalf("pending timers %d after erasure, want %d", got, timers-1)
	}
}

// Many shops keep the cart id across a login: the shop sends
// customer.logged_in naming the guest, then, in the same second,
// cart.item_added under the customer for the same cart id. Both sides are
// one cart: the lines merge (quantities of a SKU on both sides add up),
// and the new activity starts a new period of the flow, so step 1 fires
// again for the merged cart although the guest's copy had had its step 1.
func TestLoginKeepingTheCartIDMergesTheLines(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	customer := keyIn("c-keep", 0, testPartitions)
	guestID := "g-keep"
	prod := newProducer(t, brokers)
	t0 := time.Now().UTC().Truncate(time.Second)
	clock := newFakeClock(t0)
	r := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, uniqueName(t, "g"), clock.opt())
	waitCaughtUp(t, r, 0, 20*time.Second)

	guestAdd := mkEvent(t, "e-guest", events.TypeItemAdded, t0, events.ItemAdded{
		CartRef: events.CartRef{AnonymousID: guestID, CartID: "k-kept", Channel: "b2c", Currency: "EUR"},
		Item:    events.Item{SKU: "SKU-G", Quantity: 2, UnitPriceMinor: 2500}})
	produceTo(t, prod, tp.Events, guestAdd)
	waitCaughtUp(t, r, 1, 20*time.Second)
	clock.set(t0.Add(90 * time.Second)) // the guest's step 1 (after 1m) fires
	waitClock(t, r, t0.Add(90*time.Second))

	at := t0.Add(90 * time.Second)
	produceTo(t, prod, tp.Events,
		mkEvent(t, "e-login", events.TypeCustomerLoggedIn, at, events.CustomerLoggedIn{CustomerID: customer, AnonymousID: guestID}),
		itemAdded(t, "e-cust", customer, "k-kept", at, "SKU-C", 1, 1000))
	var merged *projections.Cart
	waitFor(t, 10*time.Second, "the merged cart", func() bool {
		st, _, _, err := r.p.Lookup(customer)
		if err != nil || st == nil || st.Cart("k-kept") == nil {
			return false
		}
		merged = st.Cart("k-kept")
		return merged.TotalMinor == 6000
	})
	if !merged.IsOpen() || len(merged.Items) != 2 {
		t.Fatalf("merged cart: %+v", merged)
	}

	clock.set(at.Add(90 * time.Second)) // the new period's step 1
	waitClock(t, r, at.Add(90*time.Second))
	clock.set(at.Add(6 * time.Minute)) // and its step 2
	waitClock(t, r, at.Add(6*time.Minute))
	waitDrained(t, r, 10*time.Second)
	steps := map[string][]int64{}
	for _, d := range decisionsOf(t, readTopic(t, brokers, tp.Decisions)) {
		steps[d.Customer.Key+"/"+d.Step] = append(steps[d.Customer.Key+"/"+d.Step], d.Cart.TotalMinor)
	}
	want := map[string][]int64{
		events.AnonPrefix + guestID + "/first": {5000},
		customer + "/first":                    {6000},
		customer + "/second":                   {6000},
	}
	if fmt.Sprint(steps) != fmt.Sprint(want) {
		t.Fatalf("decisions (customer/step: totals) %v, want %v", steps, want)
	}
}

// A shop that re-sends an event on a timeout sends the same CloudEvents
// source and id again: the repeat is dropped (and counted), live and after
// a restart from the store; the same id from another source is another
// event.
func TestRepeatedEventsAreDropped(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	customer := keyIn("c-dup", 2, testPartitions)
	prod := newProducer(t, brokers)
	dir := t.TempDir()
	group := uniqueName(t, "g")
	at := time.Now().Add(-10 * time.Second).UTC().Truncate(time.Second)
	add := itemAdded(t, "e-add", customer, "k-dup", at, "A", 2, 1000)
	otherSource, err := events.Encode("e-add", "pos", events.TypeItemAdded, at.Add(time.Second), "",
		events.ItemAdded{CartRef: events.CartRef{CustomerID: customer, CartID: "k-dup", Currency: "EUR"},
			Item: events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	produceTo(t, prod, tp.Events, add, add, event{key: customer, value: otherSource}, add)
	r := startOn(t, brokers, dir, mustFlows(t, testFlows), tp, group)
	st := waitCaughtUp(t, r, 4, 20*time.Second)
	if st.EventsDuplicate != 2 {
		t.Fatalf("%d duplicates counted, want 2", st.EventsDuplicate)
	}
	quantity := func() int64 {
		s, _, _, err := r.p.Lookup(customer)
		if err != nil || s == nil || s.Cart("k-dup") == nil {
			t.Fatalf("lookup: %+v, %v", s, err)
		}
		return s.Cart("k-dup").ItemCount
	}
	if q := quantity(); q != 3 {
		t.Fatalf("quantity %d, want 3 (2 from the shop, 1 from the POS; the repeats dropped)", q)
	}

	r.stop(t)
	produceTo(t, prod, tp.Events, add)
	r = startOn(t, brokers, dir, mustFlows(t, testFlows), tp, group)
	st = waitCaughtUp(t, r, 1, 20*time.Second)
	if q := quantity(); q != 3 || st.EventsDuplicate != 1 {
		t.Fatalf("after a restart: quantity %d, %d duplicates; want 3 and 1", q, st.EventsDuplicate)
	}
}
