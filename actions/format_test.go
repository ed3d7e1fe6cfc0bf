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
	const nb, nnb = "\u00a0", "\u202f" // no-break space, narrow no-break space
	for _, c := range []struct {
		minor       int64
		cur, locale string
		want        string
	}{
		{130699, "EUR", "en-US", "€1,306.99"},
		{130699, "USD", "en-US", "$1,306.99"},
		{130699, "EUR", "de-DE", "1.306,99" + nb + "€"},
		{130699, "EUR", "de_DE", "1.306,99" + nb + "€"},
		{130699, "EUR", "de", "1.306,99" + nb + "€"},
		{30699, "EUR", "es-US", "€306.99"}, // not "306,99 EUR"
		{30699, "USD", "es-US", "$306.99"},
		{130699, "EUR", "fr-FR", "1" + nnb + "306,99" + nb + "€"},
		{130699, "USD", "fr-FR", "1" + nnb + "306,99" + nb + "$US"},
		{130699, "EUR", "es-ES", "1306,99" + nb + "€"}, // CLDR: no grouping of four digits in Spanish
		{1306990, "EUR", "es-ES", "13.069,90" + nb + "€"},
		{130699, "CHF", "de-CH", "CHF" + nb + "1'306.99"},
		{130699, "EUR", "de-AT", "€" + nb + "1.306,99"}, // Austria: the symbol first
		{130699, "USD", "en-GB", "US$1,306.99"},
		{-250, "EUR", "de-DE", "-2,50" + nb + "€"},
		{1500, "JPY", "de-DE", "1.500" + nb + "¥"},
		{1500, "JPY", "en-US", "¥1,500"},
		{1234, "KWD", "en-US", "KWD" + nb + "1.234"},
		{5999, "EUR", "", "€59.99"},
		{5999, "EUR", "xx-YY", "€59.99"},
		{199, "QQQ", "de-DE", "QQQ 1.99"}, // not a currency: FormatMoney
	} {
		if got := actions.FormatMoneyLocale(c.minor, c.cur, c.locale); got != c.want {
			t.Errorf("FormatMoneyLocale(%d, %s, %q) = %q, want %q", c.minor, c.cur, c.locale, got, c.want)
		}
	}
}
