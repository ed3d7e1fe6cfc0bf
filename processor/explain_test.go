package processor_test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// explainFlows: consent needed for email (the default), one message per
// hour, two steps.
const explainFlows = `
guards:
  frequency_cap: {max: 1, per: 1h}
flows:
  - name: rem
    steps:
      - {name: first, after: 2s, action: email}
      - {name: second, after: 4s, action: email}
    expire_after: 24h
`

// TestAPIExplain: events in through Kafka, a decision and suppressions out,
// and the explanation read back over HTTP names the input record that made
// each step due (event id, topic, partition, offset), the consent's source
// event, the frequency cap's count, and the ids of what was published;
// the decision and the suppression on their topics carry the same cause.
func TestAPIExplain(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	n := startAPINode(t, brokers, t.TempDir(), tp, uniqueName(t, "group"), apiOpts{flows: explainFlows})
	prod := newProducer(t, brokers)
	// Now: the steps come due while the processor runs, each at its own
	// time (steps due together after downtime collapse into the latest).
	base := time.Now().UTC().Truncate(time.Millisecond)
	evs := []event{
		mkEvent(t, "u1", events.TypeCustomerUpdated, base, events.CustomerUpdated{CustomerID: "c-1",
			Email: ptr("ada@example.com"), MarketingConsent: ptr(true)}),
		addItem(t, "e1", events.CartRef{CustomerID: "c-1", CartID: "k1"}, base.Add(time.Millisecond), "A", 1, 1500),
		addItem(t, "e2", events.CartRef{CustomerID: "c-2", CartID: "k2"}, base.Add(2*time.Millisecond), "B", 1, 900),
	}
	recs := produceTo(t, prod, tp.Events, evs...)
	waitCaughtUp(t, n.run, int64(len(evs)), 30*time.Second)
	decs := decisionsOf(t, consumeUntil(t, brokers, tp.Decisions, 30*time.Second, atLeast(1)))
	sups := consumeUntil(t, brokers, tp.Suppressions, 30*time.Second, atLeast(3))

	e1 := &events.Cause{EventID: "e1", Topic: tp.Events, Partition: recs[1].Partition, Offset: recs[1].Offset}
	if d := decs[0]; d.Step != "first" || d.Cart.CartID != "k1" || d.Cause == nil || *d.Cause != *e1 {
		t.Fatalf("decision %s/%s of %s, cause %+v; want the cause %+v", d.Flow, d.Step, d.Cart.CartID, d.Cause, e1)
	}
	for _, r := range sups {
		var env events.Envelope
		var sp events.Suppression
		if err := json.Unmarshal(r.Value, &env); err != nil || json.Unmarshal(env.Data, &sp) != nil {
			t.Fatalf("suppression %s", r.Value)
		}
		want := e1
		if sp.CartID == "k2" {
			want = &events.Cause{EventID: "e2", Topic: tp.Events, Partition: recs[2].Partition, Offset: recs[2].Offset}
		}
		if sp.Cause == nil || *sp.Cause != *want {
			t.Fatalf("suppression of %s/%s: cause %+v, want %+v", sp.CartID, sp.Step, sp.Cause, want)
		}
	}

	get := func(key, cart string) reply {
		return call(t, "GET", n.url+"/v1/customers/"+url.PathEscape(key)+"/carts/"+url.PathEscape(cart)+"/explain", "", nil)
	}
	var x processor.ExplainResponse
	var rep reply
	// The second step's suppression may commit a moment after the first
	// decision was consumed.
	waitFor(t, 10*time.Second, "both steps of k1 in the explanation", func() bool {
		rep = get("c-1", "k1")
		x = processor.ExplainResponse{}
		rep.decode(t, &x)
		return rep.code == 200 && len(x.Steps) == 2
	})
	if x.CustomerKey != "c-1" || x.CartID != "k1" || x.Cause == nil || *x.Cause != *e1 || !x.Freshness.CaughtUp {
		t.Fatalf("explanation %s", rep.body)
	}
	first, second := x.Steps[0], x.Steps[1]
	u1 := projections.ConsentCheck{Result: projections.ConsentGranted, EventID: "u1", At: base}
	if first.Result != projections.ResultDecided || first.DecisionID != decs[0].ID || first.Cause == nil || *first.Cause != *e1 ||
		!first.DueAt.Equal(base.Add(time.Millisecond+2*time.Second)) || first.Guards == nil || first.Guards.Consent != u1 ||
		first.Guards.FrequencyCap == nil || *first.Guards.FrequencyCap != (projections.CapCheck{Max: 1, Window: "1h0m0s", Counted: 0, Passed: true}) {
		t.Fatalf("first step explained as %+v in %s", first, rep.body)
	}
	if second.Result != projections.ResultSuppressed || second.Reason != projections.ReasonFrequencyCap ||
		second.SuppressionID == "" || second.Cause == nil || *second.Cause != *e1 || second.Guards == nil ||
		*second.Guards.FrequencyCap != (projections.CapCheck{Max: 1, Window: "1h0m0s", Counted: 1, Passed: false}) {
		t.Fatalf("second step explained as %+v in %s", second, rep.body)
	}
	if len(x.Pending) != 0 {
		t.Fatalf("pending %+v, want none", x.Pending)
	}

	// No consent: suppressed, and the explanation says so.
	rep = get("c-2", "k2")
	x = processor.ExplainResponse{}
	rep.decode(t, &x)
	if rep.code != 200 || len(x.Steps) != 2 || x.Steps[0].Reason != projections.ReasonNoConsent ||
		x.Steps[0].Guards.Consent.Result != projections.ConsentDenied || x.Steps[0].Guards.Consent.EventID != "" {
		t.Fatalf("c-2's explanation: %d %s", rep.code, rep.body)
	}

	// Unknown customer or cart: 404 with a JSON error.
	for _, kc := range [][2]string{{"c-1", "nope"}, {"c-404", "k1"}} {
		rep := get(kc[0], kc[1])
		var e struct{ Error string }
		rep.decode(t, &e)
		if rep.code != 404 || e.Error == "" {
			t.Fatalf("%v: %d %s", kc, rep.code, rep.body)
		}
	}
}
