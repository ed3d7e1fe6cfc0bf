package actions_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func startCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0),
		kfake.SeedTopics(1, events.TopicDecisions, events.TopicOutcomes, actions.TopicActionsDLQ, events.TopicSuppressions))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// startConsumer runs a consumer until the test ends.
func startConsumer(t *testing.T, brokers []string, h *actions.Handler, cfg actions.ConsumerConfig) *actions.Consumer {
	t.Helper()
	c, stop := runConsumer(t, brokers, h, cfg)
	t.Cleanup(stop)
	return c
}

// runConsumer runs a consumer until stop is called; stop waits for Run
// to return.
func runConsumer(t *testing.T, brokers []string, h *actions.Handler, cfg actions.ConsumerConfig) (*actions.Consumer, func()) {
	t.Helper()
	cfg.Brokers = brokers
	c, err := actions.NewConsumer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Run(ctx); err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	return c, sync.OnceFunc(func() { cancel(); wg.Wait() })
}

func produceValues(t *testing.T, brokers []string, values ...[]byte) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, v := range values {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: events.TopicDecisions, Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func encodeDecision(t *testing.T, d events.Decision) []byte {
	t.Helper()
	v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readTopic waits until topic holds at least n records (or the timeout)
// and returns all of them, waiting a little longer for unexpected extras.
func readTopic(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(20 * time.Second)
	settle := time.Time{}
	for {
		if len(out) >= n && settle.IsZero() {
			settle = time.Now().Add(300 * time.Millisecond)
		}
		if !settle.IsZero() && time.Now().After(settle) || time.Now().After(deadline) {
			return out
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func outcomeOf(t *testing.T, r *kgo.Record) events.Outcome {
	t.Helper()
	var env events.Envelope
	if err := json.Unmarshal(r.Value, &env); err != nil {
		t.Fatal(err)
	}
	if env.Type != events.TypeOutcome {
		t.Fatalf("outcome type %q", env.Type)
	}
	var o events.Outcome
	if err := json.Unmarshal(env.Data, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestConsumerEmailsOutcomesAndDLQ(t *testing.T) {
	brokers := startCluster(t)
	h, _ := newHandler(t, t.TempDir(), mailpit.smtpPort)
	startConsumer(t, brokers, h, actions.ConsumerConfig{EmailsPerSecond: 100})

	holdout := decision(t)
	holdout.ID += "-holdout"
	holdout.Holdout = true
	noConsent := decision(t)
	noConsent.ID += "-noconsent"
	noConsent.Customer.MarketingConsent = false
	sent := decision(t)
	sent.ID += "-sent"
	sent.Discount.Prefix = "CL-"
	// One partition: when the last record's outcome is there, all were handled.
	produceValues(t, brokers, encodeDecision(t, holdout), encodeDecision(t, noConsent),
		[]byte("not a cloudevent"), encodeDecision(t, sent))

	// email.sent, then discount.issued (the decision has a discount).
	outs := readTopic(t, brokers, events.TopicOutcomes, 2)
	if len(outs) != 2 {
		t.Fatalf("%d outcomes, want 2", len(outs))
	}
	if o := outcomeOf(t, outs[1]); o.Kind != actions.KindDiscountIssued || o.ID != actions.OutcomeID(sent.ID, actions.KindDiscountIssued) ||
		o.DecisionID != sent.ID || o.CartID != sent.Cart.CartID || o.ValueMinor != 2000 {
		t.Errorf("discount outcome %+v", o)
	}
	code := header(outs[1], actions.HeaderDiscountCode)
	if !strings.HasPrefix(code, "CL-") || len(code) != len("CL-")+actions.CodeLength || header(outs[1], actions.HeaderDiscountExpires) == "" {
		t.Errorf("discount code header %q, expires %q", code, header(outs[1], actions.HeaderDiscountExpires))
	}
	o := outcomeOf(t, outs[0])
	if o.Kind != actions.KindEmailSent || o.DecisionID != sent.ID || o.ID != actions.OutcomeID(sent.ID, actions.KindEmailSent) ||
		o.CartID != sent.Cart.CartID || o.Currency != "EUR" || o.CustomerKey != sent.Customer.Key || o.Flow != sent.Flow || o.Step != sent.Step {
		t.Errorf("outcome %+v", o)
	}
	dlq := readTopic(t, brokers, actions.TopicActionsDLQ, 1)
	if len(dlq) != 1 {
		t.Fatalf("%d DLQ records, want 1", len(dlq))
	}
	if string(dlq[0].Value) != "not a cloudevent" || header(dlq[0], events.HeaderErrorReason) != actions.ReasonUndecodable ||
		header(dlq[0], events.HeaderError) == "" || header(dlq[0], events.HeaderSourceTopic) != events.TopicDecisions ||
		header(dlq[0], events.HeaderSourceOffset) != "2" {
		t.Errorf("DLQ record %q headers %v", dlq[0].Value, dlq[0].Headers)
	}
	if n := len(messagesTo(t, sent.Customer.Email)); n != 1 {
		t.Errorf("%d emails to the sent decision's customer, want 1", n)
	}
	for _, d := range []events.Decision{holdout, noConsent} {
		if n := len(messagesTo(t, d.Customer.Email)); n != 0 {
			t.Errorf("%d emails for %s, want 0", n, d.ID)
		}
	}

	// The same decision again, then a marker: still one email, one outcome.
	produceValues(t, brokers, encodeDecision(t, sent), []byte("marker"))
	dlq = readTopic(t, brokers, actions.TopicActionsDLQ, 2)
	if len(dlq) != 2 {
		t.Fatalf("%d DLQ records, want 2", len(dlq))
	}
	if outs := readTopic(t, brokers, events.TopicOutcomes, 2); len(outs) != 2 {
		t.Errorf("%d outcomes after the redelivery, want 2", len(outs))
	}
	if n := len(messagesTo(t, sent.Customer.Email)); n != 1 {
		t.Errorf("%d emails after the redelivery, want 1", n)
	}
}

// TestConsumerPermanentRejectionToDLQ: an SMTP server that rejects the
// recipient for good (5xx) sends the decision to the DLQ at once, without
// retries, with an email.failed outcome; the rejection is recorded, so a
// redelivery does not try again.
func TestConsumerPermanentRejectionToDLQ(t *testing.T) {
	brokers := startCluster(t)
	h, store := newHandler(t, t.TempDir(), mailpit.smtpPort)
	// A backoff that would show: one retry would take a minute.
	c := startConsumer(t, brokers, h, actions.ConsumerConfig{BackoffBase: time.Minute, BackoffMax: time.Minute})
	began := time.Now()

	d := decision(t)
	d.ID = "d-permanent-rejection"
	d.Customer.Email = "someone@rejected.test" // Mailpit answers 550 for this domain
	produceValues(t, brokers, encodeDecision(t, d))
	dlq := readTopic(t, brokers, actions.TopicActionsDLQ, 1)
	if len(dlq) != 1 {
		t.Fatalf("%d DLQ records, want 1", len(dlq))
	}
	if got := header(dlq[0], events.HeaderErrorReason); got != actions.ReasonPermanentFailure {
		t.Errorf("reason %q, want %q", got, actions.ReasonPermanentFailure)
	}
	if dd, err := actions.DecodeDecision(dlq[0].Value); err != nil || dd.ID != d.ID {
		t.Errorf("DLQ value: %v %v", dd.ID, err)
	}
	outs := readTopic(t, brokers, events.TopicOutcomes, 1)
	if len(outs) != 1 || outcomeOf(t, outs[0]).Kind != actions.KindEmailFailed {
		t.Errorf("outcomes %d, want one email.failed", len(outs))
	}
	if _, ok, err := store.Get(d.ID); !ok || err != nil {
		t.Errorf("the permanent rejection is not recorded (%v, %v)", ok, err)
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("to the DLQ after %v: not at once", took)
	}
	if st := c.Stats(); st.TransientFailures[actions.ChannelEmail] != 0 || st.DeadLettered[actions.ReasonPermanentFailure] != 1 ||
		st.Results[actions.KindEmailFailed] != 1 {
		t.Errorf("stats %+v, want one permanent failure and no transient one", st)
	}
}
