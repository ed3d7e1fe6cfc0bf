package processor_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// suppressionFlows: consent and a frequency cap of one message per day
// for the b2c channel, and for the "night" channel quiet hours that cover
// the moment the test runs (UTC), so that its step is deferred.
func suppressionFlows(now time.Time) string {
	hm := func(t time.Time) string { return t.UTC().Format("15:04") }
	return fmt.Sprintf(`
guards:
  frequency_cap: {max: 1, per: 24h}
flows:
  - name: rem
    match: {channels: [b2c]}
    steps:
      - {name: first, after: 1m, action: email}
    expire_after: 30m
  - name: night
    match: {channels: [night]}
    guards:
      quiet_hours: {from: %q, to: %q}
    steps:
      - {name: first, after: 1m, action: email}
    expire_after: 48h
`, hm(now.Add(-time.Hour)), hm(now.Add(2*time.Hour)))
}

// typedRecord is a record of the suppressions topic, decoded.
type typedRecord struct {
	Type string
	Key  string
	Sup  events.Suppression
	Def  events.Deferral
}

func suppressionRecords(t testing.TB, recs []record) []typedRecord {
	t.Helper()
	var out []typedRecord
	for _, r := range recs {
		var env events.Envelope
		if err := json.Unmarshal(r.Value, &env); err != nil {
			t.Fatal(err)
		}
		tr := typedRecord{Type: env.Type, Key: r.Key}
		var id string
		switch env.Type {
		case events.TypeSuppressed:
			if err := json.Unmarshal(env.Data, &tr.Sup); err != nil {
				t.Fatal(err)
			}
			id = tr.Sup.ID
		case events.TypeDeferred:
			if err := json.Unmarshal(env.Data, &tr.Def); err != nil {
				t.Fatal(err)
			}
			id = tr.Def.ID
		default:
			t.Fatalf("type %q on the suppressions topic", env.Type)
		}
		if env.ID != id || r.Headers["ce_id"] != id || r.Headers["ce_type"] != env.Type {
			t.Fatalf("envelope id %q, header %q, data id %q", env.ID, r.Headers["ce_id"], id)
		}
		out = append(out, tr)
	}
	return out
}

// Every step that comes due and is not sent leaves a record on the
// suppressions topic, with its reason, through the outbox: no consent, the
// frequency cap, a quiet-hours deferral. The decisions topic carries the
// one decision only. A processor rebuilt from the input (new group, new
// store) derives the same records, the same ids.
func TestSuppressionsOnTheirTopic(t *testing.T) {
	brokers := newCluster(t)
	now := time.Now().UTC()
	flows := mustFlows(t, suppressionFlows(now))
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	base := now.Add(-10 * time.Minute).Truncate(time.Second)
	yes, no := true, false
	cart := func(id, customer, cart, channel string, at time.Time) event {
		return mkEvent(t, id, events.TypeItemAdded, at, events.ItemAdded{
			CartRef: events.CartRef{CustomerID: customer, CartID: cart, Channel: channel, Currency: "EUR"},
			Item:    events.Item{SKU: "A", Quantity: 2, UnitPriceMinor: 1500}})
	}
	profile := func(id, customer string, consent *bool) event {
		return mkEvent(t, id, events.TypeCustomerUpdated, base.Add(-time.Minute), events.CustomerUpdated{
			CustomerID: customer, Email: ptr(customer + "@example.com"), MarketingConsent: consent})
	}
	evs := []event{
		profile("p-a", "c-a", &no), cart("e-a", "c-a", "k-a", "b2c", base),
		profile("p-b", "c-b", &yes), cart("e-b1", "c-b", "k-b1", "b2c", base), cart("e-b2", "c-b", "k-b2", "b2c", base.Add(2*time.Minute)),
		profile("p-c", "c-c", &yes), cart("e-c", "c-c", "k-c", "night", base),
	}
	produceTo(t, prod, tp.Events, evs...)
	dir, group := t.TempDir(), uniqueName(t, "g")
	a := startOn(t, brokers, dir, flows, tp, group)
	waitCaughtUp(t, a, int64(len(evs)), 20*time.Second)
	recs := suppressionRecords(t, consumeUntil(t, brokers, tp.Suppressions, 20*time.Second, atLeast(3)))
	decs := decisionsOf(t, consumeUntil(t, brokers, tp.Decisions, 10*time.Second, atLeast(1)))
	waitDrained(t, a, 10*time.Second)

	byKey := map[string]typedRecord{}
	for _, r := range recs {
		byKey[r.Key] = r
	}
	if r := byKey["c-a"]; r.Type != events.TypeSuppressed || r.Sup.Reason != events.SuppressedNoConsent ||
		r.Sup.Stage != events.StageProcessor || r.Sup.CartID != "k-a" || r.Sup.Flow != "rem" || r.Sup.ValueMinor != 3000 {
		t.Errorf("c-a: %+v, want a no_consent suppression of k-a", r)
	}
	if r := byKey["c-b"]; r.Type != events.TypeSuppressed || r.Sup.Reason != events.SuppressedFrequencyCap || r.Sup.CartID != "k-b2" {
		t.Errorf("c-b: %+v, want a frequency_cap suppression of k-b2", r)
	}
	if r := byKey["c-c"]; r.Type != events.TypeDeferred || r.Def.Reason != events.DeferredQuietHours ||
		!r.Def.Until.After(now) || r.Def.Flow != "night" {
		t.Errorf("c-c: %+v, want a quiet-hours deferral past now", r)
	}
	if len(decs) != 1 || decs[0].Customer.Key != "c-b" || decs[0].Cart.CartID != "k-b1" {
		t.Errorf("decisions %+v, want c-b's k-b1 only", decs)
	}
	for _, r := range recs {
		if r.Type == events.TypeSuppressed && slices.ContainsFunc(decs, func(d events.Decision) bool { return d.ID == r.Sup.DecisionID }) {
			t.Errorf("suppressed step %s was decided too", r.Sup.DecisionID)
		}
	}
	ids := func(rs []typedRecord) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Sup.ID+r.Def.ID)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	want := ids(recs)
	a.stop(t)

	// A restart of the same instance produces nothing again.
	a2 := startOn(t, brokers, dir, flows, tp, group)
	waitCaughtUp(t, a2, 0, 20*time.Second)
	time.Sleep(300 * time.Millisecond) // some timer rounds
	waitDrained(t, a2, 10*time.Second)
	a2.stop(t)

	// A rebuild from the input derives the same ids.
	tpB := processor.Topics{Events: tp.Events, Decisions: uniqueName(t, "decisions-b"), Outcomes: uniqueName(t, "outcomes-b"),
		DLQ: uniqueName(t, "dlq-b"), Suppressions: uniqueName(t, "suppressions-b")}
	createTopics(t, brokers, testPartitions, tpB.Decisions, tpB.Outcomes, tpB.DLQ, tpB.Suppressions)
	b := startOn(t, brokers, t.TempDir(), flows, tpB, uniqueName(t, "g-b"))
	waitCaughtUp(t, b, int64(len(evs)), 20*time.Second)
	got := ids(suppressionRecords(t, consumeUntil(t, brokers, tpB.Suppressions, 20*time.Second, atLeast(len(want)))))
	if !slices.Equal(got, want) {
		t.Errorf("rebuilt: ids %v, want %v", got, want)
	}
	if n := len(readTopic(t, brokers, tp.Suppressions)); n != len(recs) {
		t.Errorf("after the restart the topic has %d records, want %d (nothing produced twice)", n, len(recs))
	}
}
