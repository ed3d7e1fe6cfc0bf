package actions_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

func testConfig(port int) actions.EmailConfig {
	return actions.EmailConfig{
		Host:              "127.0.0.1",
		Port:              port,
		From:              "Shop <shop@example.com>",
		Timeout:           5 * time.Second,
		ResumeURLTemplate: "https://shop.example/cart/{cart_id}?d={decision_id}",
		UnsubscribeURL:    "https://shop.example/unsubscribe?c={customer_key}&d={decision_id}",
	}
}

// newHandler returns a handler sending to Mailpit with a store in dir.
func newHandler(t *testing.T, dir string, port int) (*actions.Handler, *actions.Store) {
	t.Helper()
	cfg := testConfig(port)
	sender, err := actions.NewSMTPSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := actions.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := actions.NewHandler(cfg, sender, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, store
}

// decision returns a valid decision for a unique recipient of the test.
func decision(t *testing.T) events.Decision {
	now := time.Now().UTC()
	addr := strings.ToLower(strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())) + fmt.Sprintf("-%d@example.com", now.UnixNano())
	return events.Decision{
		ID:       "dec-" + t.Name() + fmt.Sprint(now.UnixNano()),
		Flow:     "default",
		Step:     "first",
		Action:   "email",
		Discount: &events.Discount{Percent: 10, MaxMinor: 2000, ValidForSeconds: 86400},
		Cart: events.CartSnapshot{
			CartID:   "cart-42",
			Currency: "EUR",
			Items: []events.Item{
				{SKU: "sku-1", Name: "Rain jacket", Quantity: 1, UnitPriceMinor: 5999},
				{SKU: "sku-2", Name: "Wool socks", Quantity: 2, UnitPriceMinor: 850},
			},
			TotalMinor: 7699,
			ItemCount:  3,
		},
		Customer: events.CustomerSnapshot{
			Key: "cust-7", CustomerID: "cust-7", Email: addr, Name: "Ada Lovelace",
			Locale: "en-GB", MarketingConsent: true,
		},
		DecidedAt:  now,
		ValidUntil: now.Add(time.Hour),
	}
}

func TestEmailSentOnce(t *testing.T) {
	dir := t.TempDir()
	h, store := newHandler(t, dir, mailpit.smtpPort)
	d := decision(t)
	ctx := context.Background()

	if r := h.Handle(ctx, d); r.Kind != actions.KindEmailSent || r.Err != nil || r.DecisionID != d.ID {
		t.Fatalf("first handling: %+v", r)
	}
	msgs := messagesTo(t, d.Customer.Email)
	if len(msgs) != 1 {
		t.Fatalf("%d emails after one decision, want 1", len(msgs))
	}
	m := message(t, msgs[0].ID)
	if want := "Ada Lovelace, you left 3 items in your cart — 10% off, up to €20.00"; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	resume := "https://shop.example/cart/cart-42?d=" + d.ID
	for _, body := range []struct{ name, text string }{{"text", m.Text}, {"html", m.HTML}} {
		for _, want := range []string{"Ada Lovelace", "Rain jacket", "€59.99", "Wool socks", "€8.50", "€17.00", "€76.99", "10% off", resume, "https://shop.example/unsubscribe?c=cust-7"} {
			if body.name == "html" {
				want = strings.ReplaceAll(want, "&", "&amp;")
			}
			if !strings.Contains(body.text, want) {
				t.Errorf("%s body lacks %q:\n%s", body.name, want, body.text)
			}
		}
	}
	if !strings.Contains(m.Text, "2 × Wool socks at €8.50 each: €17.00") {
		t.Errorf("text body lacks the line total:\n%s", m.Text)
	}
	hd := headers(t, msgs[0].ID)
	if got := hd["List-Unsubscribe"]; len(got) != 1 || got[0] != "<https://shop.example/unsubscribe?c=cust-7&d="+d.ID+">" {
		t.Errorf("List-Unsubscribe %q", got)
	}
	if got := hd["List-Unsubscribe-Post"]; len(got) != 1 || got[0] != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post %q", got)
	}
	if got := hd["Message-Id"]; len(got) != 1 || got[0] != "<"+actions.MessageID(d.ID)+">" {
		t.Errorf("Message-ID %q", got)
	}

	// The same decision again: nothing sent.
	if r := h.Handle(ctx, d); r.Kind != actions.KindDuplicate || r.Previous != actions.KindEmailSent {
		t.Fatalf("second handling: %+v", r)
	}
	// A restart: the store is closed and reopened.
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	h2, store2 := newHandler(t, dir, mailpit.smtpPort)
	defer store2.Close()
	if r := h2.Handle(ctx, d); r.Kind != actions.KindDuplicate || r.Previous != actions.KindEmailSent {
		t.Fatalf("handling after restart: %+v", r)
	}
	if n := len(messagesTo(t, d.Customer.Email)); n != 1 {
		t.Fatalf("%d emails after the same decision three times, want 1", n)
	}
}

func TestNoEmail(t *testing.T) {
	cases := []struct {
		name   string
		change func(*events.Decision)
		kind   string
	}{
		{"no consent", func(d *events.Decision) { d.Customer.MarketingConsent = false }, actions.KindNoConsent},
		{"no address", func(d *events.Decision) { d.Customer.Email = "" }, actions.KindNoAddress},
		{"holdout", func(d *events.Decision) { d.Holdout = true }, actions.KindSkippedHoldout},
		{"expired", func(d *events.Decision) { d.ValidUntil = time.Now().Add(-time.Second) }, actions.KindExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, store := newHandler(t, t.TempDir(), mailpit.smtpPort)
			defer store.Close()
			d := decision(t)
			addr := d.Customer.Email
			c.change(&d)
			if r := h.Handle(context.Background(), d); r.Kind != c.kind || r.Err != nil {
				t.Fatalf("got %+v, want kind %s", r, c.kind)
			}
			// Recorded: a redelivery is a duplicate.
			if r := h.Handle(context.Background(), d); r.Kind != actions.KindDuplicate || r.Previous != c.kind {
				t.Fatalf("redelivery: %+v", r)
			}
			if n := len(messagesTo(t, addr)); n != 0 {
				t.Fatalf("%d emails, want none", n)
			}
		})
	}
}

func TestPermanentRejection(t *testing.T) {
	h, store := newHandler(t, t.TempDir(), mailpit.smtpPort)
	defer store.Close()
	d := decision(t)
	d.Customer.Email = "someone@rejected.test"
	r := h.Handle(context.Background(), d)
	if r.Kind != actions.KindEmailFailed || !actions.IsPermanent(r.Err) || r.Retryable() {
		t.Fatalf("got %+v, want a permanent email.failed", r)
	}
	t.Logf("rejection: %v", r.Err)
	// Recorded: a redelivery does not try again.
	if r := h.Handle(context.Background(), d); r.Kind != actions.KindDuplicate || r.Previous != actions.KindEmailFailed {
		t.Fatalf("redelivery: %+v", r)
	}
}

func TestTransientFailureThenDelivery(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	dir := t.TempDir()
	h, store := newHandler(t, dir, deadPort)
	d := decision(t)
	r := h.Handle(context.Background(), d)
	if r.Kind != actions.KindEmailFailed || actions.IsPermanent(r.Err) || !r.Retryable() {
		t.Fatalf("got %+v, want a transient email.failed", r)
	}
	t.Logf("down: %v", r.Err)
	store.Close()
	// Not recorded: once the server is reachable, the retry delivers.
	h2, store2 := newHandler(t, dir, mailpit.smtpPort)
	defer store2.Close()
	if r := h2.Handle(context.Background(), d); r.Kind != actions.KindEmailSent {
		t.Fatalf("retry: %+v", r)
	}
	if n := len(messagesTo(t, d.Customer.Email)); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}
