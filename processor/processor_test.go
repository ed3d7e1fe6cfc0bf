package processor_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

func TestDecisionsExactlyOnce(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	prod := newProducer(t, brokers)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	// c-1 abandons; c-2 checks out 30s after adding (before the 1m step).
	produce(t, prod,
		itemAdded(t, "e1", "c-1", "k1", base, "A", 2, 1500),
		itemAdded(t, "e2", "c-2", "k2", base, "B", 1, 999),
		checkout(t, "e3", "c-2", "k2", base.Add(30*time.Second), 999),
	)
	startProcessor(t, brokers, t.TempDir(), flows)
	// c-1's two steps come due while the cart is long idle: with the wall
	// clock hours past both, only the latest step is sent.
	recs := consumeUntil(t, brokers, events.TopicDecisions, 20*time.Second, atLeast(1))
	time.Sleep(500 * time.Millisecond)
	recs = consumeUntil(t, brokers, events.TopicDecisions, 5*time.Second, atLeast(len(recs)))
	ds := decisionsOf(t, recs)
	if len(ds) != 1 {
		t.Fatalf("got %d decisions, want 1: %+v", len(ds), ds)
	}
	d := ds[0]
	if d.Customer.Key != "c-1" || d.Step != "second" || d.Cart.TotalMinor != 3000 || recs[0].Key != "c-1" {
		t.Fatalf("unexpected decision %+v", d)
	}
	outs := consumeUntil(t, brokers, events.TopicOutcomes, 20*time.Second, atLeast(1))
	if len(outs) != 1 || outs[0].Key != "c-2" {
		t.Fatalf("want one outcome for c-2, got %d", len(outs))
	}
	var env events.Envelope
	var o events.Outcome
	if err := json.Unmarshal(outs[0].Value, &env); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(env.Data, &o); err != nil {
		t.Fatal(err)
	}
	if o.Kind != events.OutcomeConverted || o.ValueMinor != 999 || o.CartID != "k2" {
		t.Fatalf("outcome %+v, want converted 999 for k2", o)
	}
}
