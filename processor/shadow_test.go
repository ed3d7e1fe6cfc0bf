package processor_test

import (
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

const shadowTestFlows = `
guards:
  requires_consent: false
flows:
  - name: live
    match: {channels: [b2c]}
    steps:
      - {name: first, after: 2m, action: email}
    expire_after: 30m
  - name: early
    shadow: true
    shadow_of: live
    match: {channels: [b2c]}
    steps:
      - {name: first, after: 1m, action: email, discount: {percent: 10, valid_for: 1h}}
    expire_after: 30m
    attribution_window: 5m
`

// A shadow flow's decisions go to the shadow decisions topic, marked, and
// never to the decisions topic, through the outbox; every cart has its
// live decision as well (the caps are the fold's tests).
func TestShadowDecisionsOnTheirTopic(t *testing.T) {
	brokers := newCluster(t)
	now := time.Now().UTC()
	flows := mustFlows(t, shadowTestFlows)
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	base := now.Add(-10 * time.Minute).Truncate(time.Second)
	var evs []event
	for _, c := range []string{"c-1", "c-2", "c-3"} {
		evs = append(evs, mkEvent(t, "e-"+c, events.TypeItemAdded, base, events.ItemAdded{
			CartRef: events.CartRef{CustomerID: c, CartID: "k-" + c, Channel: "b2c", Currency: "EUR"},
			Item:    events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 1500}}))
	}
	produceTo(t, prod, tp.Events, evs...)
	a := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
	waitCaughtUp(t, a, int64(len(evs)), 20*time.Second)
	live := decisionsOf(t, consumeUntil(t, brokers, tp.Decisions, 20*time.Second, atLeast(3)))
	shadow := decisionsOf(t, consumeUntil(t, brokers, tp.ShadowDecisions, 20*time.Second, atLeast(3)))
	waitDrained(t, a, 10*time.Second)
	if len(shadow) != 3 || len(live) != 3 {
		t.Fatalf("%d shadow and %d live decisions, want 3 and 3", len(shadow), len(live))
	}
	for _, d := range shadow {
		if !d.Shadow || d.Flow != "early" || d.ShadowOf != "live" || d.Discount == nil || !d.AttributeUntil.Equal(d.DecidedAt.Add(5*time.Minute)) {
			t.Errorf("shadow decision %+v", d)
		}
	}
	for _, d := range live {
		if d.Shadow || d.Flow != "live" {
			t.Errorf("on the decisions topic: %+v", d)
		}
	}
	if recs := readTopic(t, brokers, tp.Suppressions); len(recs) != 0 {
		t.Errorf("%d suppressions, want none", len(recs))
	}
}
