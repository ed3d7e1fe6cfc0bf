package analytics_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
)

// TestDecodeFollowsTheContract encodes a decision and outcomes as the
// processor and the actions role do and checks every column the sink
// derives from them, so a renamed field of the contract fails here.
func TestDecodeFollowsTheContract(t *testing.T) {
	at := time.Date(2026, 11, 3, 9, 30, 15, 0, time.UTC)
	d := events.Decision{
		ID: "dec-1", Flow: "reminder", Step: "second", StepIndex: 1, Action: "email", Template: "reminder-discount",
		Discount: &events.Discount{Percent: 10, MaxMinor: 1500}, Variant: "b", Holdout: true,
		Cart: events.CartSnapshot{CartID: "cart-9", CartType: "wishlist", Site: "de", Channel: "app", Currency: "EUR",
			LegalEntity: "acme-de", Items: []events.Item{{SKU: "a", Quantity: 1, UnitPriceMinor: 9900}},
			TotalMinor: 9900, ItemCount: 1, Version: 7, CreatedAt: at.Add(-2 * time.Hour), ModifiedAt: at.Add(-time.Hour)},
		Customer:  events.CustomerSnapshot{Key: "cust-1", Email: "secret@example.com", Name: "Secret", Locale: "de-DE", MarketingConsent: true},
		DecidedAt: at, ValidUntil: at.Add(24 * time.Hour),
	}
	dv, _ := events.Encode(d.ID, events.Source, events.TypeDecision, at, d.Cart.CartID, d)
	o := events.Outcome{ID: "out-1", Kind: events.OutcomeRecovered, CustomerKey: "cust-1", CartID: "cart-9",
		CartType: "wishlist", Site: "de", Channel: "app", Currency: "EUR", ValueMinor: 9900, OrderID: "ord-1",
		DecisionID: "dec-1", Flow: "reminder", Step: "second", Holdout: false, Decisions: 2, At: at.Add(time.Hour), SinceDecided: 3600}
	ov, _ := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, o.CartID, o)
	a := o
	a.ID, a.Kind, a.ValueMinor = "act-1", "email.sent", 0
	av, _ := events.Encode(a.ID, events.Source, events.TypeOutcome, a.At, a.CartID, a)

	s := events.Suppression{ID: "s-1", DecisionID: "d-x", Reason: events.SuppressedCombined, Stage: events.StageProcessor,
		Into: "dec-1", Flow: "reminder", Step: "second", StepIndex: 1, Action: "email", Holdout: true, CustomerKey: "cust-1",
		CartID: "cart-8", CartType: "wishlist", Site: "de", Channel: "app", Currency: "EUR", ValueMinor: 500,
		Due: at.Add(-time.Minute), At: at}
	sv, _ := events.Encode(s.ID, events.Source, events.TypeSuppressed, s.At, s.CartID, s)
	q := events.Deferral{ID: "q-1", DecisionID: "d-y", Reason: events.DeferredQuietHours, Flow: "reminder", Step: "first",
		Action: "webhook", CustomerKey: "cust-2", CartID: "cart-7", Currency: "USD", ValueMinor: 700,
		Due: at, At: at, Until: at.Add(8 * time.Hour)}
	qv, _ := events.Encode(q.ID, events.Source, events.TypeDeferred, q.At, q.CartID, q)

	tables, errs := analytics.DecodeForTest(dv, ov, av, sv, qv)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	check := func(table string, want map[string]any) {
		t.Helper()
		got := tables[table]
		for col, w := range want {
			if !reflect.DeepEqual(got[col], w) {
				t.Errorf("%s.%s = %#v, want %#v", table, col, got[col], w)
			}
		}
		if len(got) != len(want)+1 { // + inserted_at
			t.Errorf("%s has %d columns, the test checks %d: check the new ones", table, len(got), len(want))
		}
	}
	check("decisions", map[string]any{
		"id": []string{"dec-1"}, "decided_at": []time.Time{at}, "valid_until": []time.Time{at.Add(24 * time.Hour)},
		"flow": []string{"reminder"}, "step": []string{"second"}, "step_index": []uint16{1}, "action": []string{"email"},
		"template": []string{"reminder-discount"}, "holdout": []uint8{1},
		"discount_percent": []int64{10}, "discount_amount_minor": []int64{0}, "discount_max_minor": []int64{1500},
		"customer_key": []string{"cust-1"}, "cart_id": []string{"cart-9"}, "cart_type": []string{"wishlist"},
		"site": []string{"de"}, "channel": []string{"app"}, "currency": []string{"EUR"}, "legal_entity": []string{"acme-de"},
		"cart_value_minor": []int64{9900}, "item_count": []int64{1}, "cart_version": []int64{7},
		"cart_created_at": []time.Time{at.Add(-2 * time.Hour)}, "cart_modified_at": []time.Time{at.Add(-time.Hour)},
		"marketing_consent": []uint8{1}, "locale": []string{"de-DE"}, "variant": []string{"b"},
	})
	check("outcomes", map[string]any{
		"id": []string{"out-1"}, "kind": []string{"recovered"}, "at": []time.Time{at.Add(time.Hour)},
		"customer_key": []string{"cust-1"}, "cart_id": []string{"cart-9"}, "cart_type": []string{"wishlist"},
		"site": []string{"de"}, "channel": []string{"app"}, "currency": []string{"EUR"}, "value_minor": []int64{9900},
		"order_id": []string{"ord-1"}, "decision_id": []string{"dec-1"}, "flow": []string{"reminder"},
		"step": []string{"second"}, "holdout": []uint8{0}, "decisions": []uint16{2}, "since_decision_seconds": []int64{3600},
	})
	check("action_results", map[string]any{
		"id": []string{"act-1"}, "kind": []string{"email.sent"}, "at": []time.Time{at.Add(time.Hour)},
		"decision_id": []string{"dec-1"}, "cart_id": []string{"cart-9"},
		"flow": []string{"reminder"}, "step": []string{"second"}, "holdout": []uint8{0}, "currency": []string{"EUR"},
		"value_minor": []int64{0},
	})
	epoch := time.Unix(0, 0).UTC()
	check("suppressions", map[string]any{
		"id": []string{"s-1", "q-1"}, "kind": []string{"suppressed", "deferred"},
		"reason": []string{"combined", "quiet_hours"}, "stage": []string{"processor", ""},
		"decision_id": []string{"d-x", "d-y"}, "into_decision_id": []string{"dec-1", ""},
		"flow": []string{"reminder", "reminder"}, "step": []string{"second", "first"}, "step_index": []uint16{1, 0},
		"action": []string{"email", "webhook"}, "holdout": []uint8{1, 0}, "customer_key": []string{"cust-1", "cust-2"},
		"cart_id": []string{"cart-8", "cart-7"}, "cart_type": []string{"wishlist", ""}, "site": []string{"de", ""},
		"channel": []string{"app", ""}, "currency": []string{"EUR", "USD"}, "value_minor": []int64{500, 700},
		"due_at": []time.Time{at.Add(-time.Minute), at}, "at": []time.Time{at, at},
		"until": []time.Time{epoch, at.Add(8 * time.Hour)},
	})
}

func TestDecodeRejectsWithAReason(t *testing.T) {
	for _, c := range []struct {
		value  string
		reason string
	}{
		{`not json`, analytics.ReasonUndecodable},
		{`{"type":"cart.item_added","data":{}}`, analytics.ReasonUnknownType},
		{`{"type":"cart.abandonment.decided","data":{"flow":"x"}}`, analytics.ReasonInvalid},
		{`{"type":"cart.abandonment.decided","data":{"decision_id":5}}`, analytics.ReasonUndecodable},
		{`{"type":"cart.outcome","data":{"kind":"recovered"}}`, analytics.ReasonInvalid},
		{`{"type":"cart.outcome","data":{"outcome_id":"o"}}`, analytics.ReasonInvalid},
		{`{"type":"cart.outcome","data":{"outcome_id":"o","kind":"lost","at":"yesterday"}}`, analytics.ReasonUndecodable},
		{`{"type":"cart.outcome","data":{"outcome_id":"o","kind":"erased"}}`, analytics.ReasonInvalid},
	} {
		tables, errs := analytics.DecodeForTest([]byte(c.value))
		var re *analytics.RecordError
		if !errors.As(errs[0], &re) || re.Reason != c.reason {
			t.Errorf("%s: error %v, want reason %s", c.value, errs[0], c.reason)
		}
		for name, cols := range tables {
			if ids := cols["id"].([]string); len(ids) != 0 {
				t.Errorf("%s: a row in %s from a rejected record", c.value, name)
			}
		}
	}
}

func TestDecodeClampsTimesToDateTime(t *testing.T) {
	o := events.Outcome{ID: "o", Kind: events.OutcomeLost, At: time.Time{}}
	v, _ := events.Encode(o.ID, events.Source, events.TypeOutcome, time.Now(), "c", o)
	tables, errs := analytics.DecodeForTest(v)
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	if got := tables["outcomes"]["at"].([]time.Time)[0]; !got.Equal(time.Unix(0, 0)) {
		t.Fatalf("a zero time became %v, want the epoch", got)
	}
	o.At = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) // past DateTime's 2106
	v, _ = events.Encode(o.ID, events.Source, events.TypeOutcome, time.Now(), "c", o)
	tables, errs = analytics.DecodeForTest(v)
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	if got := tables["outcomes"]["at"].([]time.Time)[0]; !got.Equal(time.Unix(1<<32-1, 0)) {
		t.Fatalf("a time past DateTime's range became %v, want its largest value", got)
	}
}
