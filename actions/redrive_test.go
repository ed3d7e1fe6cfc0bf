package actions_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// deadLetterDirectly writes d to the DLQ in its format, as if the consumer
// had dead-lettered it for reason from cart-decisions at offset.
func deadLetterDirectly(t *testing.T, brokers []string, d events.Decision, reason string, offset int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	src := &kgo.Record{Topic: events.TopicDecisions, Key: []byte(d.Customer.Key), Value: encodeDecision(t, d), Offset: offset}
	if err := cl.ProduceSync(context.Background(),
		actions.NewDeadLetter(actions.TopicActionsDLQ, src, reason, errors.New("written by the test"))).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestRedrive: what the DLQ holds is sent again once the cause is fixed,
// once per decision: a permanent refusal (the SMTP server refused the
// domain, then accepts it), a decision dead-lettered after its retries
// ran out; a decision already sent, one expired and an undecodable record
// are not sent. A dry run changes nothing; a second redrive sends nothing;
// a decision refused again counts as failed again.
func TestRedrive(t *testing.T) {
	mp, err := actions.StartMailpit(t.TempDir(), "--smtp-allowed-recipients", `@example\.com>?$`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Stop)
	brokers := startCluster(t)
	h, store := newHandler(t, t.TempDir(), mp.SMTPPort)
	_, stop := runConsumer(t, brokers, h, actions.ConsumerConfig{BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})

	refused, exhausted, sent, expired, again := decision(t), decision(t), decision(t), decision(t), decision(t)
	refused.ID += "-refused"
	refused.Customer.Email = "refused@example.org" // refused until Mailpit is reconfigured
	exhausted.ID += "-exhausted"
	sent.ID += "-sent"
	expired.ID += "-expired"
	expired.ValidUntil = time.Now().Add(-time.Minute)
	again.ID += "-again"
	again.Customer.Email = "again@rejected.test" // refused for good

	produceValues(t, brokers, encodeDecision(t, refused), []byte("not a cloudevent"), encodeDecision(t, sent))
	if dlq := readTopic(t, brokers, actions.TopicActionsDLQ, 2); len(dlq) != 2 ||
		actions.ParseDeadLetter(dlq[0]).Reason != actions.ReasonPermanentFailure || actions.ParseDeadLetter(dlq[1]).Reason != actions.ReasonUndecodable {
		t.Fatalf("DLQ after the consumer: %d records, want the refusal and the undecodable record", len(dlq))
	}
	waitFor(t, "the sent decision's email", 10*time.Second, func() bool {
		ids, err := mp.MessageIDs()
		return err == nil && ids[actions.MessageID(sent.ID)] == 1
	})
	stop()
	deadLetterDirectly(t, brokers, exhausted, actions.ReasonRetriesExhausted, 7)
	deadLetterDirectly(t, brokers, sent, actions.ReasonRetriesExhausted, 8)
	deadLetterDirectly(t, brokers, expired, actions.ReasonRetriesExhausted, 9)

	// The fix: the server accepts example.org too.
	mp.Stop()
	if err := mp.Start("--smtp-allowed-recipients", `@example\.(com|org)>?$`); err != nil {
		t.Fatal(err)
	}
	emails := func() map[string]int {
		t.Helper()
		ids, err := mp.MessageIDs()
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	cfg := actions.RedriveConfig{Brokers: brokers, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Hold: 2 * time.Second}
	redrive := func(cfg actions.RedriveConfig) (actions.RedriveSummary, []actions.RedriveItem) {
		t.Helper()
		var items []actions.RedriveItem
		cfg.Progress = func(it actions.RedriveItem) { items = append(items, it) }
		sum, err := actions.Redrive(context.Background(), cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		return sum, items
	}

	dry := cfg
	dry.DryRun = true
	sum, items := redrive(dry)
	if want := (actions.RedriveSummary{Read: 5, WouldRedrive: 2, AlreadyDone: 1, Expired: 1, Skipped: 1}); sum != want {
		t.Fatalf("dry run: %+v, want %+v (items %+v)", sum, want, items)
	}
	if n := len(emails()); n != 1 {
		t.Fatalf("%d emails after the dry run, want 1", n)
	}
	if rec, _, _ := store.Get(refused.ID); rec.Kind != actions.KindEmailFailed {
		t.Fatalf("the dry run changed the record of the refusal to %+v", rec)
	}

	sum, items = redrive(cfg)
	if want := (actions.RedriveSummary{Read: 5, Redriven: 2, AlreadyDone: 1, Expired: 1, Skipped: 1}); sum != want {
		t.Fatalf("redrive: %+v, want %+v (items %+v)", sum, want, items)
	}
	status := map[string]string{}
	for _, it := range items {
		status[it.DecisionID] = it.Status
	}
	if status[refused.ID] != actions.RedriveSent || status[exhausted.ID] != actions.RedriveSent || status[sent.ID] != actions.RedriveAlreadyDone ||
		status[expired.ID] != actions.RedriveExpired || status[""] != actions.RedriveSkipped {
		t.Errorf("statuses %v", status)
	}
	ids := emails()
	for _, d := range []events.Decision{refused, exhausted, sent} {
		if ids[actions.MessageID(d.ID)] != 1 {
			t.Errorf("%s: %d emails, want 1", d.ID, ids[actions.MessageID(d.ID)])
		}
	}
	if ids[actions.MessageID(expired.ID)] != 0 {
		t.Error("the expired decision was sent")
	}
	if rec, _, _ := store.Get(expired.ID); rec.Kind != actions.KindExpired {
		t.Errorf("the expired decision is recorded %+v", rec)
	}
	var sentOutcomes []string
	for _, r := range readTopic(t, brokers, events.TopicOutcomes, 7) {
		if o := outcomeOf(t, r); o.Kind == actions.KindEmailSent {
			sentOutcomes = append(sentOutcomes, o.DecisionID)
		}
	}
	if len(sentOutcomes) != 3 || sentOutcomes[1] != refused.ID || sentOutcomes[2] != exhausted.ID {
		t.Errorf("email.sent outcomes %v, want the consumer's and the two redriven", sentOutcomes)
	}

	// Again: nothing to send.
	sum, _ = redrive(cfg)
	if want := (actions.RedriveSummary{Read: 5, AlreadyDone: 3, Expired: 1, Skipped: 1}); sum != want {
		t.Fatalf("second redrive: %+v, want %+v", sum, want)
	}
	if n := len(emails()); n != 3 {
		t.Fatalf("%d emails after the second redrive, want 3", n)
	}

	// A refusal that is not fixed, redriven alone (-since).
	since := time.Now()
	time.Sleep(5 * time.Millisecond)
	deadLetterDirectly(t, brokers, again, actions.ReasonPermanentFailure, 10)
	sinceCfg := cfg
	sinceCfg.Since = since
	sum, items = redrive(sinceCfg)
	if want := (actions.RedriveSummary{Read: 1, FailedAgain: 1}); sum != want || items[0].DecisionID != again.ID || !actions.IsPermanent(items[0].Err) {
		t.Fatalf("redrive since %v: %+v (items %+v), want %+v", since, sum, items, want)
	}
	// From an offset: the last two records only (offsets 4 and 5).
	offCfg := cfg
	offCfg.FromOffset = 4
	if sum, _ = redrive(offCfg); sum.Read != 2 || sum.Expired != 1 || sum.FailedAgain != 1 {
		t.Fatalf("redrive from offset 4: %+v, want the expired and the refused decision", sum)
	}
}
