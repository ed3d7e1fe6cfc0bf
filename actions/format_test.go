package actions_test

import (
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"testing"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

func TestFormatMoney(t *testing.T) {
	for _, c := range []struct {
		minor int64
		cur   string
		want  string
	}{
		{5999, "EUR", "EUR 59.99"},
		{5, "EUR", "EUR 0.05"},
		{0, "USD", "USD 0.00"},
		{-250, "EUR", "EUR -2.50"},
		{1500, "JPY", "JPY 1500"},
		{1234, "KWD", "KWD 1.234"},
		{123456789, "EUR", "EUR 1234567.89"},
		{199, "XXX", "XXX 1.99"},
		{math.MinInt64, "JPY", "JPY -9223372036854775808"},
	} {
		if got := actions.FormatMoney(c.minor, c.cur); got != c.want {
			t.Errorf("FormatMoney(%d, %s) = %q, want %q", c.minor, c.cur, got, c.want)
		}
	}
}

func TestDecodeDecision(t *testing.T) {
	raw, err := events.Encode("e1", events.Source, events.TypeDecision, events.Decision{}.DecidedAt, "cart-1",
		events.Decision{ID: "d1", Cart: events.CartSnapshot{CartID: "cart-1", Currency: "EUR"}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := actions.DecodeDecision(raw)
	if err != nil || d.ID != "d1" || d.Cart.CartID != "cart-1" {
		t.Fatalf("DecodeDecision: %+v, %v", d, err)
	}
	other, _ := events.Encode("e2", events.Source, "cart.outcome", d.DecidedAt, "", events.Outcome{})
	if _, err := actions.DecodeDecision(other); err == nil {
		t.Fatal("an outcome decoded as a decision")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (actions.EmailConfig{}).WithDefaults().Validate(); err == nil {
		t.Fatal("an empty config (no From, no URLs) validated")
	}
	c := actions.EmailConfig{From: "a@example.com", ResumeURLTemplate: "https://x/{cart_id}", UnsubscribeURL: "https://x/u"}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Port != actions.DefaultSMTPPort || c.TLSPolicy != actions.TLSOpportunistic || c.Timeout != actions.DefaultSMTPTimeout {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err       error
		permanent bool
		code      int
	}{
		{&textproto.Error{Code: 550, Msg: "no such user"}, true, 550},
		{fmt.Errorf("send failed: %w", &textproto.Error{Code: 451, Msg: "try later"}), false, 451},
		{&textproto.Error{Code: 421, Msg: "closing"}, false, 421},
		{errors.New("dial tcp: connection refused"), false, 0},
	} {
		de := actions.Classify(c.err)
		if de.Permanent != c.permanent || de.Code != c.code || actions.IsPermanent(de) != c.permanent {
			t.Errorf("Classify(%v) = %+v, want permanent=%v code=%d", c.err, de, c.permanent, c.code)
		}
	}
	if actions.Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
}

func TestFormatMoneyLocale(t *testing.T) {
	for _, c := range []struct {
		minor     int64
		cur, lang string
		want      string
	}{
		{5999, "EUR", "de", "59,99 EUR"},
		{123456, "EUR", "de", "1.234,56 EUR"},
		{100000000, "EUR", "fr", "1.000.000,00 EUR"},
		{-250, "EUR", "de", "-2,50 EUR"},
		{1500, "JPY", "de", "1.500 JPY"},
		{5999, "EUR", "en", "EUR 59.99"},
		{5999, "USD", "", "USD 59.99"},
	} {
		if got := actions.FormatMoneyLocale(c.minor, c.cur, c.lang); got != c.want {
			t.Errorf("FormatMoneyLocale(%d, %s, %q) = %q, want %q", c.minor, c.cur, c.lang, got, c.want)
		}
	}
}
