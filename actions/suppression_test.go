package actions_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

// A decision the role drops without acting leaves a cart.step.suppressed
// record (stage actions) on cart-suppressions, with the reason: no
// consent, no address, past valid_until, no channel for its action. A
// holdout decision leaves none (it is the control group), and a
// redelivery gives the same id again.
func TestConsumerRecordsSuppressions(t *testing.T) {
	brokers := startCluster(t)
	h, _ := newHandler(t, t.TempDir(), mailpit.smtpPort)
	startConsumer(t, brokers, h, actions.ConsumerConfig{})

	mk := func(suffix string, f func(d *events.Decision)) events.Decision {
		d := decision(t)
		d.ID += "-" + suffix
		f(&d)
		return d
	}
	holdout := mk("holdout", func(d *events.Decision) { d.Holdout = true })
	noConsent := mk("noconsent", func(d *events.Decision) { d.Customer.MarketingConsent = false })
	noAddress := mk("noaddress", func(d *events.Decision) { d.Customer.Email = " " })
	expired := mk("expired", func(d *events.Decision) { d.ValidUntil = time.Now().Add(-time.Minute) })
	webhook := mk("webhook", func(d *events.Decision) { d.Action = "webhook" }) // no webhook channel configured
	produceValues(t, brokers, encodeDecision(t, holdout), encodeDecision(t, noConsent), encodeDecision(t, noAddress),
		encodeDecision(t, expired), encodeDecision(t, webhook))

	want := map[string]string{noConsent.ID: events.SuppressedNoConsent, noAddress.ID: events.SuppressedNoAddress,
		expired.ID: events.SuppressedExpired, webhook.ID: events.SuppressedNoChannel}
	recs := readTopic(t, brokers, events.TopicSuppressions, len(want))
	if len(recs) != len(want) {
		t.Fatalf("%d suppression records, want %d", len(recs), len(want))
	}
	var ids []string
	for _, r := range recs {
		var env events.Envelope
		var s events.Suppression
		if err := json.Unmarshal(r.Value, &env); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(env.Data, &s); err != nil {
			t.Fatal(err)
		}
		if env.Type != events.TypeSuppressed || env.ID != s.ID || header(r, "ce_id") != s.ID || string(r.Key) != "cust-7" {
			t.Errorf("record type %q id %q header %q key %q, data id %q", env.Type, env.ID, header(r, "ce_id"), r.Key, s.ID)
		}
		if reason, ok := want[s.DecisionID]; !ok || s.Reason != reason || s.ID != events.SuppressionID(s.DecisionID) ||
			s.Stage != events.StageActions || s.CartID != "cart-42" || s.Currency != "EUR" || s.ValueMinor != 7699 ||
			s.Flow != "default" || s.Step != "first" || s.At.IsZero() {
			t.Errorf("suppression %+v, want reason %q", s, want[s.DecisionID])
		}
		ids = append(ids, s.ID)
	}
	if slices.Contains(ids, events.SuppressionID(holdout.ID)) {
		t.Error("a holdout decision was recorded as suppressed")
	}

	// A redelivery records the same suppression, with the same id.
	produceValues(t, brokers, encodeDecision(t, noAddress))
	recs = readTopic(t, brokers, events.TopicSuppressions, len(want)+1)
	if len(recs) != len(want)+1 || envelopeID(t, recs[len(recs)-1].Value) != events.SuppressionID(noAddress.ID) {
		t.Errorf("after a redelivery: %d records, the last %q; want %d, %q", len(recs),
			envelopeID(t, recs[len(recs)-1].Value), len(want)+1, events.SuppressionID(noAddress.ID))
	}
}

func envelopeID(t *testing.T, v []byte) string {
	t.Helper()
	var env events.Envelope
	if err := json.Unmarshal(v, &env); err != nil {
		t.Fatal(err)
	}
	return env.ID
}
