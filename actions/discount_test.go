package actions_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

func checkCode(t *testing.T, code, prefix string) {
	t.Helper()
	rest, ok := strings.CutPrefix(code, prefix)
	if !ok || len(rest) != actions.CodeLength {
		t.Fatalf("code %q: want %q + %d characters", code, prefix, actions.CodeLength)
	}
	for _, c := range rest {
		if !strings.ContainsRune(actions.CodeAlphabet, c) {
			t.Fatalf("code %q: %q is not in the alphabet", code, c)
		}
	}
}

func TestNewCodeUnique(t *testing.T) {
	seen := make(map[string]bool, 10000)
	for range 10000 {
		c, err := actions.NewCode("CL-")
		if err != nil {
			t.Fatal(err)
		}
		checkCode(t, c, "CL-")
		if seen[c] {
			t.Fatalf("duplicate code %q", c)
		}
		seen[c] = true
	}
}

func discountDecision(id string) events.Decision {
	return events.Decision{
		ID:        id,
		Action:    "email",
		Discount:  &events.Discount{Percent: 15, MaxMinor: 3000, ValidForSeconds: 3600, Prefix: "SAVE-"},
		Cart:      events.CartSnapshot{CartID: "cart-1", Currency: "EUR"},
		Customer:  events.CustomerSnapshot{Key: "cust-1"},
		DecidedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

func TestIssueDiscountIdempotentAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	store, err := actions.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := discountDecision("dec-1")
	first, created, err := store.IssueDiscount(d, time.Now())
	if err != nil || !created {
		t.Fatalf("issue: created %v, err %v", created, err)
	}
	checkCode(t, first.Code, "SAVE-")
	if !first.ExpiresAt.Equal(d.DecidedAt.Add(time.Hour)) || first.Percent != 15 || first.MaxMinor != 3000 ||
		first.CartID != "cart-1" || first.CustomerKey != "cust-1" || first.Currency != "EUR" {
		t.Errorf("issued %+v", first)
	}
	// Other decisions get other codes.
	seen := map[string]bool{first.Code: true}
	for i := range 200 {
		o, _, err := store.IssueDiscount(discountDecision("other-"+string(rune('a'+i%26))+strings.Repeat("x", i)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if seen[o.Code] {
			t.Fatalf("duplicate code %q", o.Code)
		}
		seen[o.Code] = true
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store, err = actions.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	again, created, err := store.IssueDiscount(d, time.Now())
	if err != nil || created || again.Code != first.Code {
		t.Fatalf("after reopen: code %q (first %q), created %v, err %v", again.Code, first.Code, created, err)
	}

	// Default validity 72h; an amount discount has no cap.
	d2 := discountDecision("dec-2")
	d2.Discount = &events.Discount{AmountMinor: 500, MaxMinor: 100}
	amt, _, err := store.IssueDiscount(d2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	checkCode(t, amt.Code, "")
	if !amt.ExpiresAt.Equal(d2.DecidedAt.Add(72*time.Hour)) || amt.AmountMinor != 500 || amt.MaxMinor != 0 {
		t.Errorf("amount discount %+v", amt)
	}
	o := actions.DiscountOutcome(d2, amt, time.Now())
	if o.Kind != actions.KindDiscountIssued || o.ID != "o-dec-2-discount.issued" || o.ValueMinor != 500 || o.CartID != "cart-1" {
		t.Errorf("outcome %+v", o)
	}
}

func TestDiscountCodeInEmail(t *testing.T) {
	dir := t.TempDir()
	h, store := newHandler(t, dir, mailpit.smtpPort)
	d := decision(t)
	d.Discount.Prefix = "CART-"
	d.DecidedAt = time.Now().UTC().Truncate(time.Second)
	if res := h.Handle(context.Background(), d); res.Kind != actions.KindEmailSent || res.Discount == nil {
		t.Fatalf("result %+v", res)
	}
	disc, ok, err := store.Discount(d.ID)
	if err != nil || !ok {
		t.Fatalf("no stored discount: %v", err)
	}
	checkCode(t, disc.Code, "CART-")
	store.Close()

	// After a restart the decision is a duplicate and keeps its code.
	h, store = newHandler(t, dir, mailpit.smtpPort)
	defer store.Close()
	if res := h.Handle(context.Background(), d); res.Kind != actions.KindDuplicate {
		t.Fatalf("after restart: %+v", res)
	}
	if again, _, _ := store.Discount(d.ID); again.Code != disc.Code {
		t.Errorf("code changed across restart: %q, then %q", disc.Code, again.Code)
	}

	var msgs []mpMessage
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if msgs = messagesTo(t, d.Customer.Email); len(msgs) > 0 {
			break
		}
	}
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	m := message(t, msgs[0].ID)
	// The expiry in the customer's locale (en-GB) and zone (none: UTC).
	expiry := actions.FormatTime(disc.ExpiresAt, "en-GB", "")
	if !strings.Contains(expiry, "UTC") || !strings.Contains(m.Text, "code "+disc.Code) || !strings.Contains(m.Text, expiry) {
		t.Errorf("text does not show code %s and expiry %s:\n%s", disc.Code, expiry, m.Text)
	}
	if !strings.Contains(m.HTML, ">"+disc.Code+"</code>") || !strings.Contains(m.HTML, expiry) {
		t.Errorf("HTML does not show code %s:\n%s", disc.Code, m.HTML)
	}
}
