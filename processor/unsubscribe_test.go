package processor_test

import (
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// TestUnsubscribeStopsLaterDecisions: the customer.updated that a one-click
// unsubscribe emits (actions.LinkHandler: consent withdrawn, source
// cartlift-actions) goes through the projection, and the consent guard
// suppresses every later email decision for that customer.
func TestUnsubscribeStopsLaterDecisions(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	flows := mustFlows(t, `
flows:
  - name: rem
    steps:
      - {name: first, after: 1m, action: email}
    expire_after: 30m
`)
	yes, no := true, false
	email := "ada@example.com"
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	optIn := mkEvent(t, "e-1", events.TypeCustomerUpdated, base, events.CustomerUpdated{CustomerID: "c-u", Email: &email, MarketingConsent: &yes})
	add1 := itemAdded(t, "e-2", "c-u", "k-1", base.Add(time.Second), "A", 1, 1000)
	// Two minutes later (the first reminder has gone out) the customer
	// unsubscribes; the event is the one the link server emits.
	unsubValue, err := events.Encode("unsub-d-1", "cartlift-actions", events.TypeCustomerUpdated, base.Add(2*time.Minute), "",
		events.CustomerUpdated{CustomerID: "c-u", MarketingConsent: &no})
	if err != nil {
		t.Fatal(err)
	}
	unsub := event{key: "c-u", value: unsubValue}
	// New activity restarts the flow: its reminder comes due, but must not go out.
	add2 := itemAdded(t, "e-3", "c-u", "k-1", base.Add(3*time.Minute), "B", 1, 500)
	prod := newProducer(t, brokers)
	produceTo(t, prod, tp.Events, optIn, add1, unsub, add2)

	r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
	waitFor(t, 20*time.Second, "the second reminder to come due and be suppressed", func() bool {
		return r.p.Stats().DecisionsSuppressed >= 1
	})
	waitDrained(t, r, 10*time.Second)
	ds := decisionsOf(t, readTopic(t, brokers, tp.Decisions))
	if len(ds) != 1 || ds[0].Customer.Key != "c-u" || !ds[0].DecidedAt.Equal(base.Add(time.Second+time.Minute)) {
		t.Fatalf("want exactly the reminder from before the unsubscribe, got %d decisions: %+v", len(ds), ds)
	}
}
