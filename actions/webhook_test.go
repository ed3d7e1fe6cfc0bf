package actions_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

const testSecret = "whsec-test"

// receiver is a shop endpoint that verifies the signature of every request.
type receiver struct {
	mu         sync.Mutex
	deliveries []string // Cartlift-Delivery of the verified requests
	bodies     [][]byte
	rejected   int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := actions.VerifySignature(testSecret, r.Header.Get(actions.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		rc.rejected++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	rc.deliveries = append(rc.deliveries, r.Header.Get(actions.HeaderDelivery))
	rc.bodies = append(rc.bodies, body)
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) count() (int, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.deliveries), rc.rejected
}

func newWebhook(t *testing.T, cfg actions.WebhookConfig) (*actions.WebhookHandler, *actions.Store) {
	t.Helper()
	store, err := actions.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg.Secret = testSecret
	w, err := actions.NewWebhookHandler(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	return w, store
}

func webhookDecision(t *testing.T) events.Decision {
	d := decision(t)
	d.Action = "webhook"
	d.Discount = nil
	return d
}

func TestWebhookDeliveredOnceAndVerified(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	w, _ := newWebhook(t, actions.WebhookConfig{Endpoints: []string{srv.URL}})
	d := webhookDecision(t)

	if res := w.Handle(context.Background(), d); res.Kind != actions.KindWebhookDelivered || res.Err != nil {
		t.Fatalf("first: %+v", res)
	}
	if res := w.Handle(context.Background(), d); res.Kind != actions.KindDuplicate || res.Previous != actions.KindWebhookDelivered {
		t.Fatalf("second: %+v", res)
	}
	n, rejected := rc.count()
	if n != 1 || rejected != 0 {
		t.Fatalf("%d deliveries, %d rejected; want 1, 0", n, rejected)
	}
	if rc.deliveries[0] != d.ID {
		t.Errorf("Cartlift-Delivery %q, want %q", rc.deliveries[0], d.ID)
	}
	var got events.Decision
	if err := json.Unmarshal(rc.bodies[0], &got); err != nil || got.ID != d.ID || got.Cart.CartID != d.Cart.CartID {
		t.Errorf("body %s: %v", rc.bodies[0], err)
	}

	// Holdout: recorded, nothing sent.
	h := webhookDecision(t)
	h.ID += "-holdout"
	h.Holdout = true
	if res := w.Handle(context.Background(), h); res.Kind != actions.KindSkippedHoldout {
		t.Errorf("holdout: %+v", res)
	}
	if n, _ := rc.count(); n != 1 {
		t.Errorf("%d deliveries after the holdout, want 1", n)
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"decision_id":"d-1"}`)
	now := time.Now()
	sig := actions.Sign(testSecret, body, now)
	if err := actions.VerifySignature(testSecret, sig, body, now, 5*time.Minute); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	for name, tc := range map[string]struct {
		secret, header string
		body           []byte
	}{
		"tampered body": {testSecret, sig, []byte(`{"decision_id":"d-2"}`)},
		"wrong secret":  {"other", sig, body},
		"old timestamp": {testSecret, actions.Sign(testSecret, body, now.Add(-6*time.Minute)), body},
		"future":        {testSecret, actions.Sign(testSecret, body, now.Add(6*time.Minute)), body},
		"no v1":         {testSecret, "t=1", body},
		"garbage":       {testSecret, "nonsense", body},
	} {
		if err := actions.VerifySignature(tc.secret, tc.header, tc.body, now, 5*time.Minute); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWebhookFailureClasses(t *testing.T) {
	for _, tc := range []struct {
		status    int
		permanent bool
	}{
		{http.StatusInternalServerError, false},
		{http.StatusBadGateway, false},
		{http.StatusRequestTimeout, false},
		{http.StatusTooManyRequests, false},
		{http.StatusBadRequest, true},
		{http.StatusGone, true},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no", tc.status)
		}))
		w, store := newWebhook(t, actions.WebhookConfig{Endpoints: []string{srv.URL}})
		d := webhookDecision(t)
		res := w.Handle(context.Background(), d)
		srv.Close()
		if res.Kind != actions.KindWebhookFailed || actions.IsPermanent(res.Err) != tc.permanent || res.Retryable() == tc.permanent {
			t.Errorf("%d: %+v (permanent %v)", tc.status, res, actions.IsPermanent(res.Err))
		}
		// Only a permanent failure is recorded.
		if _, ok, _ := store.Get(d.ID); ok != tc.permanent {
			t.Errorf("%d: recorded %v", tc.status, ok)
		}
	}
	// A network error (nothing listens) is transient.
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	w, _ := newWebhook(t, actions.WebhookConfig{Endpoints: []string{"http://127.0.0.1:" + strconv.Itoa(port)}, Timeout: time.Second})
	if res := w.Handle(context.Background(), webhookDecision(t)); !res.Retryable() {
		t.Errorf("network error: %+v", res)
	}
}

func TestConsumerWebhookAndDiscountAnnouncement(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	brokers := startCluster(t)
	h, store := newHandler(t, t.TempDir(), mailpit.smtpPort)
	w, err := actions.NewWebhookHandler(actions.WebhookConfig{
		Endpoints: []string{srv.URL + "/decisions"}, DiscountURL: srv.URL + "/discounts", Secret: testSecret,
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	startConsumer(t, brokers, h, actions.ConsumerConfig{Webhook: w})

	wd := webhookDecision(t)
	wd.ID += "-webhook"
	ed := decision(t) // an email decision with a discount
	ed.ID += "-email"
	produceValues(t, brokers, encodeDecision(t, wd), encodeDecision(t, wd), encodeDecision(t, ed))

	outs := readTopic(t, brokers, events.TopicOutcomes, 3)
	var kinds []string
	for _, r := range outs {
		kinds = append(kinds, outcomeOf(t, r).Kind)
	}
	want := []string{actions.KindWebhookDelivered, actions.KindEmailSent, actions.KindDiscountIssued}
	if len(kinds) != len(want) || kinds[0] != want[0] || kinds[1] != want[1] || kinds[2] != want[2] {
		t.Fatalf("outcome kinds %v, want %v", kinds, want)
	}
	n, rejected := rc.count()
	if n != 2 || rejected != 0 {
		t.Fatalf("%d deliveries (%d rejected), want 2: the decision once, the discount once", n, rejected)
	}
	var disc actions.IssuedDiscount
	if err := json.Unmarshal(rc.bodies[1], &disc); err != nil || disc.DecisionID != ed.ID || disc.Code == "" || rc.deliveries[1] != ed.ID {
		t.Errorf("discount announcement %s (delivery %q): %v", rc.bodies[1], rc.deliveries[1], err)
	}
	if header(outs[2], actions.HeaderDiscountCode) != disc.Code {
		t.Errorf("outcome code %q, webhook code %q", header(outs[2], actions.HeaderDiscountCode), disc.Code)
	}
}
