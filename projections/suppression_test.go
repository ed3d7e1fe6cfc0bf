package projections

import (
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Suppressions and deferrals are records for the suppressions topic:
// complete, with deterministic ids that consumers can de-duplicate on. A
// step deferred twice (a profile change reschedules it inside the window)
// is reported twice with one id; the suppression that follows names the
// decision id the deferral announced.
func TestSuppressionAndDeferralRecords(t *testing.T) {
	cfg := testConfig(t, `
guards:
  quiet_hours: {from: "22:00", to: "07:00"}
flows:
  - name: b2c
    match: {channels: [b2c]}
    steps:
      - {name: reminder, after: 1h, action: email, template: reminder}
    expire_after: 7d
`)
	r := newRun(t, cfg)
	var sup []Suppression
	var def []Deferral
	r.observe = func(st *step) {
		sup = append(sup, st.Eff.Suppressed...)
		def = append(def, st.Eff.Deferred...)
		r.decisions = append(r.decisions, st.Eff.Decisions...)
	}
	start := time.Date(2026, 11, 26, 21, 30, 0, 0, time.UTC)
	no := false
	r.event("c-1", events.TypeCustomerUpdated, start.Add(-time.Minute), events.CustomerUpdated{CustomerID: "c-1", MarketingConsent: &no})
	r.event("c-1", events.TypeItemAdded, start, addItem1("c-1", "cart-1", "SKU-1"))
	r.advance(start.Add(70 * time.Minute)) // due 22:30: deferred to 07:00
	name := "Jana"
	r.event("c-1", events.TypeCustomerUpdated, start.Add(90*time.Minute), events.CustomerUpdated{CustomerID: "c-1", Name: &name})
	r.advance(start.Add(100 * time.Minute)) // deferred again
	r.advance(time.Date(2026, 11, 27, 7, 30, 0, 0, time.UTC))

	if len(def) != 2 {
		t.Fatalf("%d deferrals, want 2: %+v", len(def), def)
	}
	due := start.Add(time.Hour)
	until := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	d := def[0]
	if d.ID != def[1].ID || !strings.HasPrefix(d.ID, "q-") {
		t.Errorf("deferral ids %q and %q, want one q- id", d.ID, def[1].ID)
	}
	if d.Reason != events.DeferredQuietHours || d.CustomerKey != "c-1" || d.CartID != "cart-1" || d.Flow != "b2c" ||
		d.Step != "reminder" || d.Action != "email" || d.Currency != "EUR" || d.ValueMinor != 2500 || d.Channel != "b2c" ||
		!d.Due.Equal(due) || !d.Until.Equal(until) || d.At.Before(due) {
		t.Errorf("deferral %+v", d)
	}
	if len(sup) != 1 || len(r.decisions) != 0 {
		t.Fatalf("%d suppressions, %d decisions; want 1, 0", len(sup), len(r.decisions))
	}
	s := sup[0]
	if s.ID != SuppressionID(s.DecisionID) || s.ID != "s-"+strings.TrimPrefix(s.DecisionID, "d-") || s.DecisionID != d.DecisionID {
		t.Errorf("suppression id %q decision %q, deferral's decision %q", s.ID, s.DecisionID, d.DecisionID)
	}
	if s.Reason != ReasonNoConsent || s.Stage != events.StageProcessor || s.CustomerKey != "c-1" || s.CartID != "cart-1" ||
		s.Action != "email" || s.Currency != "EUR" || s.ValueMinor != 2500 || !s.Due.Equal(due) || !s.At.Equal(until) {
		t.Errorf("suppression %+v", s)
	}
}
