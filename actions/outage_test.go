package actions_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testOutage is how long the outage tests keep the SMTP server down:
// CARTLIFT_TEST_OUTAGE (e.g. 10m, the outage the role must survive), by
// default a few seconds, which with a short backoff exercises the same
// path.
func testOutage(t *testing.T, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CARTLIFT_TEST_OUTAGE")); err == nil && d > 0 {
		t.Logf("outage of %v (CARTLIFT_TEST_OUTAGE)", d)
		return d
	}
	return def
}

// TestConsumerHoldsThroughSMTPOutage stops the SMTP server (a Mailpit of
// its own) in the middle of a stream of email decisions, restarts the
// consumer during the outage, and starts the server again: every decision
// still valid gets exactly one email, in order, and none goes to the DLQ;
// the decision held when its valid_until passes is recorded expired and
// not sent, and so is one that expired while it waited behind the held
// one.
func TestConsumerHoldsThroughSMTPOutage(t *testing.T) {
	outage := testOutage(t, 3*time.Second)
	mp, err := actions.StartMailpit(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Stop)
	brokers := startCluster(t)
	h, store := newHandler(t, t.TempDir(), mp.SMTPPort)
	cfg := actions.ConsumerConfig{BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	c, stop := runConsumer(t, brokers, h, cfg)
	t.Cleanup(func() { stop() })

	mk := func(n int) []events.Decision {
		var ds []events.Decision
		for i := range n {
			d := decision(t)
			d.ID += "-" + strconv.Itoa(i)
			d.ValidUntil = time.Now().Add(10*time.Minute + outage)
			ds = append(ds, d)
		}
		return ds
	}
	before, during1, during2 := mk(4), mk(6), mk(4)
	shortLived := func(suffix string) events.Decision {
		d := decision(t)
		d.ID += suffix
		d.ValidUntil = time.Now().Add(outage / 3)
		return d
	}
	heldExpiry, queuedExpiry := shortLived("-held-expiry"), shortLived("-queued-expiry")

	produce := func(ds ...events.Decision) {
		t.Helper()
		for _, d := range ds {
			produceValues(t, brokers, encodeDecision(t, d))
		}
	}
	valid := append(append(append([]events.Decision(nil), before...), during1...), during2...)
	countFor := func(ds []events.Decision) (got int) {
		ids, err := mp.MessageIDs()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			got += min(ids[actions.MessageID(d.ID)], 1)
		}
		return got
	}

	produce(before...)
	waitFor(t, "the emails before the outage", 20*time.Second, func() bool { return countFor(before) == len(before) })

	mp.Stop()
	outageBegan := time.Now()
	// One partition: the first decision of the outage is held, everything
	// after it waits, the second short-lived one expires waiting.
	produce(heldExpiry)
	produce(during1...)
	produce(queuedExpiry)
	produce(during2...)

	waitFor(t, "the consumer to hold the first decision of the outage", 20*time.Second, func() bool {
		st := c.Stats()
		return st.Held && st.HeldDecision == heldExpiry.ID && st.TransientFailures[actions.ChannelEmail] >= 3
	})
	waitFor(t, "the held decision to expire", 20*time.Second, func() bool {
		st := c.Stats()
		return st.ExpiredWhileHeld == 1 && st.Held && st.HeldDecision == during1[0].ID
	})
	// A restart during the outage: the held record was not committed, the
	// new consumer holds it again.
	stop()
	c, stop = runConsumer(t, brokers, h, cfg)
	waitFor(t, "the restarted consumer to hold the next decision", 20*time.Second, func() bool {
		st := c.Stats()
		return st.Held && st.HeldDecision == during1[0].ID
	})
	time.Sleep(time.Until(outageBegan.Add(outage)))
	if err := mp.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every valid decision's email", 30*time.Second, func() bool { return countFor(valid) == len(valid) })
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show

	ids, err := mp.MessageIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range valid {
		if n := ids[actions.MessageID(d.ID)]; n != 1 {
			t.Errorf("%s: %d emails, want 1", d.ID, n)
		}
	}
	for _, d := range []events.Decision{heldExpiry, queuedExpiry} {
		if n := ids[actions.MessageID(d.ID)]; n != 0 {
			t.Errorf("%s (expired): %d emails, want 0", d.ID, n)
		}
		rec, ok, err := store.Get(d.ID)
		if err != nil || !ok || rec.Kind != actions.KindExpired {
			t.Errorf("%s: recorded %+v (%v, %v), want expired", d.ID, rec, ok, err)
		}
	}
	if rec, _, _ := store.Get(heldExpiry.ID); !strings.Contains(rec.Error, "valid_until passed while held") {
		t.Errorf("the expiry of the held decision says %q", rec.Error)
	}
	if dlq := readTopic(t, brokers, actions.TopicActionsDLQ, 0); len(dlq) != 0 {
		t.Errorf("%d records in the DLQ, want none", len(dlq))
	}
	// The email.sent outcomes are in the order of the decisions.
	var sent []string
	for _, r := range readTopic(t, brokers, events.TopicOutcomes, 2*len(valid)) {
		if o := outcomeOf(t, r); o.Kind == actions.KindEmailSent {
			sent = append(sent, o.DecisionID)
		}
	}
	if len(sent) != len(valid) {
		t.Fatalf("%d email.sent outcomes, want %d", len(sent), len(valid))
	}
	for i, d := range valid {
		if sent[i] != d.ID {
			t.Fatalf("email.sent outcome %d is of %s, want %s: the order of the partition was not kept", i, sent[i], d.ID)
		}
	}
	st := c.Stats()
	if st.Held || st.TransientFailures[actions.ChannelEmail] == 0 || st.Results[actions.KindExpired] != 1 ||
		st.Results[actions.KindEmailSent] != int64(len(during1)+len(during2)) || len(st.DeadLettered) != 0 {
		t.Errorf("stats of the restarted consumer %+v", st)
	}
}

// TestConsumerDecisionWithoutValidUntilHeldAtMostMaxHold: a decision
// without valid_until is held MaxHold, then dead-lettered as
// retries_exhausted with an email.failed outcome and nothing recorded (a
// redrive may send it).
func TestConsumerDecisionWithoutValidUntilHeldAtMostMaxHold(t *testing.T) {
	port, err := freePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	brokers := startCluster(t)
	h, store := newHandler(t, t.TempDir(), port)
	c := startConsumer(t, brokers, h, actions.ConsumerConfig{BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		MaxHold: 500 * time.Millisecond})

	d := decision(t)
	d.ValidUntil = time.Time{}
	produceValues(t, brokers, encodeDecision(t, d))
	dlq := readTopic(t, brokers, actions.TopicActionsDLQ, 1)
	if len(dlq) != 1 {
		t.Fatalf("%d DLQ records, want 1", len(dlq))
	}
	dl := actions.ParseDeadLetter(dlq[0])
	if dl.Reason != actions.ReasonRetriesExhausted || dl.SourceTopic != events.TopicDecisions || dl.SourceOffset != 0 || dl.Error == "" {
		t.Errorf("DLQ record %+v", dl)
	}
	if dd, err := dl.Decision(); err != nil || dd.ID != d.ID {
		t.Errorf("DLQ value: %v %v", dd.ID, err)
	}
	outs := readTopic(t, brokers, events.TopicOutcomes, 1)
	if len(outs) != 1 || outcomeOf(t, outs[0]).Kind != actions.KindEmailFailed {
		t.Errorf("outcomes %d, want one email.failed", len(outs))
	}
	if _, ok, err := store.Get(d.ID); ok || err != nil {
		t.Errorf("store has the transiently failed decision (%v, %v)", ok, err)
	}
	if st := c.Stats(); st.TransientFailures[actions.ChannelEmail] < 3 || st.DeadLettered[actions.ReasonRetriesExhausted] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// scriptedEndpoint answers each delivery (Cartlift-Delivery) with the
// next status of its script, 204 once the script is over.
type scriptedEndpoint struct {
	mu       sync.Mutex
	scripts  map[string][]int
	requests map[string]int
	ok       map[string]int
}

func (e *scriptedEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := r.Header.Get(actions.HeaderDelivery)
	e.requests[id]++
	if s := e.scripts[id]; len(s) > 0 {
		e.scripts[id] = s[1:]
		http.Error(w, "scripted", s[0])
		return
	}
	e.ok[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (e *scriptedEndpoint) counts(id string) (requests, ok int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests[id], e.ok[id]
}

// TestConsumerWebhookHoldsTransientDeadLettersPermanent: 429, 408 and 503
// hold the decision until the endpoint answers 2xx (delivered once, no
// DLQ); a 400 or a 410 sends the decision to the DLQ at once.
func TestConsumerWebhookHoldsTransientDeadLettersPermanent(t *testing.T) {
	held, bad, gone := webhookDecision(t), webhookDecision(t), webhookDecision(t)
	held.ID += "-held"
	bad.ID += "-bad"
	gone.ID += "-gone"
	ep := &scriptedEndpoint{requests: map[string]int{}, ok: map[string]int{}, scripts: map[string][]int{
		held.ID: {http.StatusTooManyRequests, http.StatusRequestTimeout, http.StatusServiceUnavailable, http.StatusServiceUnavailable},
		bad.ID:  {http.StatusBadRequest, http.StatusBadRequest},
		gone.ID: {http.StatusGone},
	}}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	brokers := startCluster(t)
	h, store := newHandler(t, t.TempDir(), mailpit.smtpPort)
	w, err := actions.NewWebhookHandler(actions.WebhookConfig{Endpoints: []string{srv.URL}, Secret: testSecret}, store)
	if err != nil {
		t.Fatal(err)
	}
	c := startConsumer(t, brokers, h, actions.ConsumerConfig{Webhook: w, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	produceValues(t, brokers, encodeDecision(t, held), encodeDecision(t, bad), encodeDecision(t, gone))

	outs := readTopic(t, brokers, events.TopicOutcomes, 3)
	var kinds []string
	for _, r := range outs {
		o := outcomeOf(t, r)
		kinds = append(kinds, o.DecisionID[len(o.DecisionID)-4:]+":"+o.Kind)
	}
	if want := "held:webhook.delivered -bad:webhook.failed gone:webhook.failed"; strings.Join(kinds, " ") != want {
		t.Fatalf("outcomes %v, want %s", kinds, want)
	}
	if req, ok := ep.counts(held.ID); req != 5 || ok != 1 {
		t.Errorf("held: %d requests, %d delivered; want 5 and 1", req, ok)
	}
	for _, d := range []events.Decision{bad, gone} {
		if req, _ := ep.counts(d.ID); req != 1 {
			t.Errorf("%s: %d requests, want 1 (no retry)", d.ID, req)
		}
	}
	dlq := readTopic(t, brokers, actions.TopicActionsDLQ, 2)
	if len(dlq) != 2 {
		t.Fatalf("%d DLQ records, want 2", len(dlq))
	}
	for i, d := range []events.Decision{bad, gone} {
		dl := actions.ParseDeadLetter(dlq[i])
		if dd, err := dl.Decision(); err != nil || dd.ID != d.ID || dl.Reason != actions.ReasonPermanentFailure {
			t.Errorf("DLQ record %d: %s %s %v, want %s permanent_failure", i, dd.ID, dl.Reason, err, d.ID)
		}
	}
	if st := c.Stats(); st.TransientFailures[actions.ChannelWebhook] != 4 || st.DeadLettered[actions.ReasonPermanentFailure] != 2 {
		t.Errorf("stats %+v, want 4 transient webhook failures and 2 permanent", st)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsumerAbandonsHeldRecordOfRevokedPartition: a consumer holding a
// record during an outage gives it up when the group takes its partition
// away, so that the new owner alone sends it. With the eager round-robin
// balancer, members ordered by instance id, the member joining second
// ("a-…") takes the only partition from the first ("z-…"). Each has a
// store of its own, so a record both sent would be two emails.
func TestConsumerAbandonsHeldRecordOfRevokedPartition(t *testing.T) {
	mp, err := actions.StartMailpit(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Stop)
	mp.Stop() // down from the start
	brokers := startCluster(t)
	cfg := func(instance string) actions.ConsumerConfig {
		return actions.ConsumerConfig{Group: "revoke-test", InstanceID: instance, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
			ClientOpts: []kgo.Opt{kgo.Balancers(kgo.RoundRobinBalancer())}}
	}
	hz, storeZ := newHandler(t, t.TempDir(), mp.SMTPPort)
	ha, _ := newHandler(t, t.TempDir(), mp.SMTPPort)
	first := startConsumer(t, brokers, hz, cfg("z-first"))

	var ds []events.Decision
	for i := range 3 {
		d := decision(t)
		d.ID += "-" + strconv.Itoa(i)
		ds = append(ds, d)
		produceValues(t, brokers, encodeDecision(t, d))
	}
	waitFor(t, "the first member to hold the first decision", 20*time.Second, func() bool {
		st := first.Stats()
		return st.Held && st.HeldDecision == ds[0].ID
	})
	second := startConsumer(t, brokers, ha, cfg("a-second"))
	waitFor(t, "the second member to hold it and the first to give it up", 30*time.Second, func() bool {
		st := second.Stats()
		return st.Held && st.HeldDecision == ds[0].ID && !first.Stats().Held
	})
	if err := mp.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the three emails", 20*time.Second, func() bool {
		ids, err := mp.MessageIDs()
		return err == nil && len(ids) == 3
	})
	time.Sleep(500 * time.Millisecond) // room for a duplicate to show
	ids, err := mp.MessageIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if n := ids[actions.MessageID(d.ID)]; n != 1 {
			t.Errorf("%s: %d emails, want 1", d.ID, n)
		}
		if _, ok, _ := storeZ.Get(d.ID); ok {
			t.Errorf("%s: recorded by the member that lost the partition", d.ID)
		}
	}
	if st := first.Stats(); st.Results[actions.KindEmailSent] != 0 {
		t.Errorf("the first member sent %d emails after losing its partition", st.Results[actions.KindEmailSent])
	}
}
