package analytics_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
)

// suppressionRecord is a suppression of customer c<i>'s cart k<i> (step
// "first" of flow "reminder") at base + i s.
func suppressionRecord(t testing.TB, i int, reason, stage string) *kgo.Record {
	t.Helper()
	at := base.Add(time.Duration(i) * time.Second)
	s := events.Suppression{ID: fmt.Sprintf("s-%06d", i), DecisionID: fmt.Sprintf("d-%06d", i), Reason: reason, Stage: stage,
		Flow: "reminder", Step: "first", Action: "email", CustomerKey: fmt.Sprintf("c%d", i), CartID: fmt.Sprintf("k%d", i),
		Currency: "EUR", ValueMinor: 2500, Due: at, At: at}
	v, err := events.Encode(s.ID, events.Source, events.TypeSuppressed, s.At, s.CartID, s)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: events.TopicSuppressions, Key: []byte(s.CustomerKey), Value: v}
}

// deferralRecord is a quiet-hours deferral of c<i>'s cart k<i>.
func deferralRecord(t testing.TB, i int) *kgo.Record {
	t.Helper()
	at := base.Add(time.Duration(i) * time.Second)
	d := events.Deferral{ID: fmt.Sprintf("q-%06d", i), DecisionID: fmt.Sprintf("d-%06d", i), Reason: events.DeferredQuietHours,
		Flow: "reminder", Step: "first", Action: "email", CustomerKey: fmt.Sprintf("c%d", i), CartID: fmt.Sprintf("k%d", i),
		Currency: "EUR", ValueMinor: 2500, Due: at, At: at, Until: at.Add(8 * time.Hour)}
	v, err := events.Encode(d.ID, events.Source, events.TypeDeferred, d.At, d.CartID, d)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: events.TopicSuppressions, Key: []byte(d.CustomerKey), Value: v}
}

// The sink stores suppressions and deferrals from cart-suppressions, one
// row per id however often a record arrives (a step deferred twice, a
// redelivery), with every column; an erasure deletes the customer's.
func TestSinkStoresSuppressions(t *testing.T) {
	conn, _ := migrated(t)
	b := newBroker(t)
	cfg := analytics.SinkConfig{Brokers: b.addrs, BatchRows: 100, BatchInterval: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, done := startSink(t, ctx, cfg, conn)
	recs := []*kgo.Record{
		suppressionRecord(t, 1, events.SuppressedNoConsent, events.StageProcessor),
		suppressionRecord(t, 2, events.SuppressedFrequencyCap, events.StageProcessor),
		suppressionRecord(t, 3, events.SuppressedNoAddress, events.StageActions),
		deferralRecord(t, 4), deferralRecord(t, 4), // deferred twice: one id
		suppressionRecord(t, 1, events.SuppressedNoConsent, events.StageProcessor), // redelivered
	}
	b.produce(t, recs...)
	waitFor(t, "the suppressions stored", 30*time.Second, func() bool {
		return s.Stats().Records == int64(len(recs)) && s.Stats().Pending == 0
	})
	if st := s.Stats(); st.Suppressions != int64(len(recs)) || st.DeadLettered != 0 {
		t.Fatalf("stats %+v, want %d suppression rows and no dead letter", st, len(recs))
	}
	rows, err := conn.Query(context.Background(), `SELECT kind, reason, stage, count() FROM (
		SELECT id, any(kind) AS kind, any(reason) AS reason, any(stage) AS stage FROM suppressions GROUP BY id)
		GROUP BY kind, reason, stage ORDER BY kind, reason, stage`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var kind, reason, stage string
		var n uint64
		if err := rows.Scan(&kind, &reason, &stage, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%s/%s=%d", kind, reason, stage, n))
	}
	rows.Close()
	want := fmt.Sprint([]string{"deferred/quiet_hours/=1", "suppressed/frequency_cap/processor=1",
		"suppressed/no_address/actions=1", "suppressed/no_consent/processor=1"})
	if fmt.Sprint(got) != want {
		t.Errorf("distinct rows %v, want %v", got, want)
	}
	var until time.Time
	var key, cart, decision string
	var value int64
	if err := conn.QueryRow(context.Background(), "SELECT until, customer_key, cart_id, decision_id, value_minor FROM suppressions WHERE id = 'q-000004' LIMIT 1").
		Scan(&until, &key, &cart, &decision, &value); err != nil {
		t.Fatal(err)
	}
	if !until.Equal(base.Add(4*time.Second+8*time.Hour)) || key != "c4" || cart != "k4" || decision != "d-000004" || value != 2500 {
		t.Errorf("deferral row: until %v key %q cart %q decision %q value %d", until, key, cart, decision, value)
	}

	// An erasure of c2 deletes c2's suppressions.
	o := events.Outcome{ID: "erased-c2", Kind: events.OutcomeErased, CustomerKey: "c2", At: base.Add(time.Hour)}
	v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, "", o)
	if err != nil {
		t.Fatal(err)
	}
	b.produce(t, &kgo.Record{Topic: events.TopicOutcomes, Key: []byte("c2"), Value: v})
	waitFor(t, "the erasure applied", 30*time.Second, func() bool { return s.Stats().Erasures == 1 })
	waitFor(t, "c2's suppressions gone", 30*time.Second, func() bool {
		var n uint64
		if err := conn.QueryRow(context.Background(), "SELECT count() FROM suppressions WHERE customer_key = 'c2'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	cancel()
	<-done
}
