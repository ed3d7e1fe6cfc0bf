package projections

import (
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

const btFlows = `
flows:
  - name: remind
    match:
      cart_types: [shopping]
    steps:
      - name: reminder
        after: 1h
        action: email
        template: reminder
      - name: second-reminder
        after: 24h
        action: email
        template: reminder-2
    expire_after: 7d
    attribution_window: 7d
`

// btEvent encodes and decodes an event like a producer's record, and
// returns it with its record key.
func btEvent(t *testing.T, at, typ, data string) (string, *events.Event) {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, at)
	if err != nil {
		t.Fatal(err)
	}
	id := "e-" + strings.NewReplacer(":", "", "-", "").Replace(at) + "-" + typ + "-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, data)
	if len(id) > 120 {
		id = id[:120]
	}
	raw, err := events.Encode(id, "test", typ, ts, "", rawJSON(data))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(raw, time.Time{})
	if err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return ev.Key(), ev
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func btConfig(t *testing.T, src string) *Config {
	t.Helper()
	flows, err := ParseFlows("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return NewConfig(flows)
}

func btStep(t *testing.T, r Report, flow, step string) StepReport {
	t.Helper()
	for _, f := range r.Flows {
		if f.Name != flow {
			continue
		}
		for _, s := range f.Steps {
			if s.Step == step {
				return s
			}
		}
	}
	t.Fatalf("no step %s/%s in the report", flow, step)
	return StepReport{}
}

func TestBacktestCounts(t *testing.T) {
	b := NewBacktest(btConfig(t, btFlows))
	history := [][3]string{
		// c-1 abandons, gets the first reminder at 11:00 and checks out at 11:30: reached and recovered.
		{"2026-11-26T09:00:00Z", "customer.updated", `{"customer_id":"c-1","email":"c1@example.com","marketing_consent":true}`},
		{"2026-11-26T10:00:00Z", "cart.item_added", `{"customer_id":"c-1","cart_id":"k1","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"A","quantity":1,"unit_price_minor":2500}}`},
		// c-2 checks out before the step: not reached.
		{"2026-11-26T09:00:00Z", "customer.updated", `{"customer_id":"c-2","email":"c2@example.com","marketing_consent":true}`},
		{"2026-11-26T10:00:00Z", "cart.item_added", `{"customer_id":"c-2","cart_id":"k2","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"A","quantity":1,"unit_price_minor":3000}}`},
		// c-3 has no consent: suppressed.
		{"2026-11-26T10:00:00Z", "cart.item_added", `{"customer_id":"c-3","cart_id":"k3","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"A","quantity":1,"unit_price_minor":2500}}`},
		// A guest logs in as c-4 before the step: the cart moves over
		// in-process and c-4 gets the reminder, then checks out.
		{"2026-11-26T09:00:00Z", "customer.updated", `{"customer_id":"c-4","email":"c4@example.com","marketing_consent":true}`},
		{"2026-11-26T10:00:00Z", "cart.item_added", `{"anonymous_id":"g-1","cart_id":"k4","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"B","quantity":2,"unit_price_minor":2000}}`},
		{"2026-11-26T10:30:00Z", "customer.logged_in", `{"customer_id":"c-4","anonymous_id":"g-1"}`},
		{"2026-11-26T10:45:00Z", "checkout.completed", `{"customer_id":"c-2","cart_id":"k2","order_id":"o-2","total_minor":3000}`},
		{"2026-11-26T11:30:00Z", "checkout.completed", `{"customer_id":"c-1","cart_id":"k1","order_id":"o-1","total_minor":2500}`},
		{"2026-11-26T11:40:00Z", "checkout.completed", `{"customer_id":"c-4","cart_id":"k4","order_id":"o-4","total_minor":4000}`},
	}
	for _, h := range history {
		key, ev := btEvent(t, h[0], h[1], h[2])
		b.Apply(key, ev)
	}
	b.Finish(time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC))
	r := b.Report()

	first := btStep(t, r, "remind", "reminder")
	if first.Reached != 2 || first.Holdout != 0 {
		t.Errorf("reminder: reached %d holdout %d, want 2 and 0", first.Reached, first.Holdout)
	}
	if first.Recovered != 2 || first.RecoveredValue["EUR"] != 6500 {
		t.Errorf("reminder: recovered %d worth %v, want 2 worth EUR 6500", first.Recovered, first.RecoveredValue)
	}
	if n := first.Suppressed[ReasonNoConsent]; n != 1 || first.SuppressedTotal() != 1 {
		t.Errorf("reminder: suppressed %v, want no_consent 1", first.Suppressed)
	}
	second := btStep(t, r, "remind", "second-reminder")
	if second.Reached != 0 || second.SuppressedTotal() != 0 || second.Recovered != 0 {
		t.Errorf("second-reminder: %+v, want nothing (not due yet)", second)
	}
	if r.Events != int64(len(history)) || r.Fed != 2 {
		t.Errorf("events %d fed back %d, want %d and 2 (login handed over, cart assigned)", r.Events, r.Fed, len(history))
	}
	if r.Outcomes[events.OutcomeConverted] != 1 || r.Outcomes[events.OutcomeRecovered] != 2 || r.Outcomes[events.OutcomeMerged] != 1 {
		t.Errorf("outcomes %v, want converted 1, recovered 2, merged 1", r.Outcomes)
	}
	if r.OpenCarts != 1 {
		t.Errorf("open carts %d, want 1 (c-3's)", r.OpenCarts)
	}
}

func TestBacktestCheckoutBeforeStep(t *testing.T) {
	b := NewBacktest(btConfig(t, btFlows))
	for _, h := range [][3]string{
		{"2026-11-26T09:00:00Z", "customer.updated", `{"customer_id":"c-1","marketing_consent":true}`},
		{"2026-11-26T10:00:00Z", "cart.item_added", `{"customer_id":"c-1","cart_id":"k1","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"A","quantity":1,"unit_price_minor":2500}}`},
		// exactly at the due time: the event counts first
		{"2026-11-26T11:00:00Z", "checkout.completed", `{"customer_id":"c-1","cart_id":"k1","order_id":"o-1","total_minor":2500}`},
	} {
		key, ev := btEvent(t, h[0], h[1], h[2])
		b.Apply(key, ev)
	}
	b.Finish(time.Date(2026, 12, 30, 0, 0, 0, 0, time.UTC))
	r := b.Report()
	for _, s := range r.Flows[0].Steps {
		if s.Reached != 0 || s.SuppressedTotal() != 0 || s.Recovered != 0 || s.Deferred != 0 {
			t.Errorf("%s: %+v, want nothing", s.Step, s)
		}
	}
	if r.Outcomes[events.OutcomeConverted] != 1 {
		t.Errorf("outcomes %v, want one conversion", r.Outcomes)
	}
	if r.PendingTimers != 0 || r.OpenCarts != 0 {
		t.Errorf("pending timers %d, open carts %d after the retention: want 0 and 0", r.PendingTimers, r.OpenCarts)
	}
}

func TestBacktestQuietHoursAndHoldout(t *testing.T) {
	src := `
guards:
  quiet_hours: {from: "21:00", to: "08:00"}
flows:
  - name: night
    match:
      cart_types: [shopping]
    steps:
      - name: reminder
        after: 1h
        action: email
        template: reminder
    holdout_percent: 100
`
	b := NewBacktest(btConfig(t, src))
	for _, h := range [][3]string{
		{"2026-11-26T09:00:00Z", "customer.updated", `{"customer_id":"c-1","marketing_consent":true}`},
		{"2026-11-26T20:30:00Z", "cart.item_added", `{"customer_id":"c-1","cart_id":"k1","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"A","quantity":1,"unit_price_minor":2500}}`},
		// other traffic moves the event-time clock through the night
		{"2026-11-26T22:00:00Z", "customer.updated", `{"customer_id":"c-2","marketing_consent":true}`},
		{"2026-11-27T09:00:00Z", "checkout.completed", `{"customer_id":"c-1","cart_id":"k1","order_id":"o-1","total_minor":2500}`},
	} {
		key, ev := btEvent(t, h[0], h[1], h[2])
		b.Apply(key, ev)
	}
	b.Finish(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s := btStep(t, b.Report(), "night", "reminder")
	if s.Deferred != 1 || s.Holdout != 1 || s.Reached != 0 {
		t.Errorf("deferred %d holdout %d reached %d, want 1, 1, 0", s.Deferred, s.Holdout, s.Reached)
	}
	if s.ConvertedHoldout != 1 || s.HoldoutValue["EUR"] != 2500 || s.Recovered != 0 {
		t.Errorf("converted_holdout %d worth %v, recovered %d; want 1 worth EUR 2500, 0", s.ConvertedHoldout, s.HoldoutValue, s.Recovered)
	}
}
