package actions_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

func localeDecision(locale, template string) events.Decision {
	now := time.Date(2025, 12, 31, 17, 30, 0, 0, time.UTC)
	return events.Decision{
		ID:       "dec-1",
		Template: template,
		Cart: events.CartSnapshot{
			CartID:   "cart-1",
			Currency: "EUR",
			Items: []events.Item{
				{SKU: "sku-1", Name: "Rain jacket", Quantity: 1, UnitPriceMinor: 5999},
				{SKU: "sku-2", Name: "Wool socks", Quantity: 2, UnitPriceMinor: 850},
			},
			TotalMinor: 7699,
			ItemCount:  3,
		},
		Customer:  events.CustomerSnapshot{Key: "c-1", Name: "Ada", Locale: locale, MarketingConsent: true},
		Discount:  &events.Discount{Percent: 10, MaxMinor: 2000, ValidForSeconds: 3600},
		DecidedAt: now,
	}
}

func render(t *testing.T, tm *actions.Templates, d events.Decision) actions.Rendered {
	t.Helper()
	r, err := tm.Render(d, "https://shop.example/r", "https://shop.example/u")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func defaults(t *testing.T) *actions.Templates {
	t.Helper()
	tm, err := actions.DefaultTemplates()
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

const englishSubject = "Ada, you left 3 items in your cart — 10% off, up to €20.00"

// nb is the no-break space CLDR puts between an amount and a symbol after it.
const nb = "\u00a0"

func TestTemplatesGerman(t *testing.T) {
	tm := defaults(t)
	for _, locale := range []string{"de-DE", "de_AT", "DE", "de"} {
		r := render(t, tm, localeDecision(locale, "reminder"))
		// German words, the amounts by CLDR for the locale: Austria puts
		// the symbol first.
		max, total := "20,00"+nb+"€", "76,99"+nb+"€"
		if locale == "de_AT" {
			max, total = "€"+nb+"20,00", "€"+nb+"76,99"
		}
		if want := "Ada, Ihr Warenkorb wartet: 3 Artikel — 10 % Rabatt, höchstens " + max; r.Subject != want {
			t.Errorf("%s: subject %q, want %q", locale, r.Subject, want)
		}
		for _, body := range []string{r.Text, r.HTML} {
			// No time zone in the decision: UTC, said so.
			for _, want := range []string{"Hallo Ada", "Warenkorb", total, "ültig bis 31. Dezember 2025, 18:30 UTC", "Abmelden"} {
				if !strings.Contains(body, want) {
					t.Errorf("%s: body lacks %q:\n%s", locale, want, body)
				}
			}
			if strings.Contains(body, "Hello") || strings.Contains(body, "% off") {
				t.Errorf("%s: English in German body:\n%s", locale, body)
			}
		}
	}
	// A fixed amount.
	d := localeDecision("de-DE", "")
	d.Discount = &events.Discount{AmountMinor: 500}
	if r := render(t, tm, d); !strings.HasSuffix(r.Subject, "— 5,00"+nb+"€ Rabatt") {
		t.Errorf("subject %q", r.Subject)
	}
}

func TestTemplatesUnknownLocaleIsEnglish(t *testing.T) {
	tm := defaults(t)
	for _, locale := range []string{"fr_FR", "en", "", "xx-YY"} {
		r := render(t, tm, localeDecision(locale, "reminder"))
		// English words; the amounts follow the customer's locale (French
		// writes 20,00 €).
		want := englishSubject
		if locale == "fr_FR" {
			want = strings.Replace(englishSubject, "€20.00", "20,00"+nb+"€", 1)
		}
		if r.Subject != want {
			t.Errorf("%q: subject %q, want %q", locale, r.Subject, want)
		}
		if !strings.Contains(r.Text, "Hello Ada") || !strings.Contains(r.Text, "valid until December 31, 2025, 6:30 pm UTC") {
			t.Errorf("%q: text:\n%s", locale, r.Text)
		}
	}
}

func TestTemplatesUnknownNameFallsBack(t *testing.T) {
	tm := defaults(t)
	if r := render(t, tm, localeDecision("en-GB", "no-such-template")); r.Subject != englishSubject {
		t.Errorf("subject %q", r.Subject)
	}
	if r := render(t, tm, localeDecision("de-DE", "no-such-template")); !strings.HasPrefix(r.Subject, "Ada, Ihr Warenkorb") {
		t.Errorf("German subject %q", r.Subject)
	}
	if got := tm.Lookup("no-such-template", "de-DE"); got != "reminder.de" {
		t.Errorf("Lookup = %q", got)
	}
}

func write(t *testing.T, dir, name, src string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadTemplatesOverride(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "reminder.subject.tmpl", "Your cart misses you, {{.Name}}\n")
	write(t, dir, "README", "not a template")
	// A new template with a French variant.
	for _, kind := range []string{"subject", "txt", "html"} {
		write(t, dir, "winback."+kind+".tmpl", "winback "+kind)
		write(t, dir, "winback.fr."+kind+".tmpl", "retour "+kind)
	}
	tm, err := actions.LoadTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := render(t, tm, localeDecision("en", "reminder"))
	if r.Subject != "Your cart misses you, Ada" {
		t.Errorf("subject %q", r.Subject)
	}
	if !strings.Contains(r.Text, "Hello Ada") {
		t.Errorf("embedded text body not kept:\n%s", r.Text)
	}
	// The German variant is still embedded.
	if r := render(t, tm, localeDecision("de-DE", "reminder")); !strings.HasPrefix(r.Subject, "Ada, Ihr Warenkorb") {
		t.Errorf("German subject %q", r.Subject)
	}
	if r := render(t, tm, localeDecision("fr_FR", "winback")); r.Subject != "retour subject" || r.HTML != "retour html" {
		t.Errorf("French winback %+v", r)
	}
	if r := render(t, tm, localeDecision("de-DE", "winback")); r.Subject != "winback subject" {
		t.Errorf("German winback %+v", r)
	}
}

func TestLoadTemplatesErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "reminder.de.txt.tmpl", "Hallo {{.Name")
	_, err := actions.LoadTemplates(dir)
	if err == nil || !strings.Contains(err.Error(), "reminder.de.txt.tmpl") {
		t.Fatalf("err = %v, want it to name reminder.de.txt.tmpl", err)
	}

	dir = t.TempDir()
	write(t, dir, "promo.it.subject.tmpl", "Ciao")
	if _, err := actions.LoadTemplates(dir); err == nil || !strings.Contains(err.Error(), "promo.it") {
		t.Fatalf("incomplete set: err = %v", err)
	}

	if _, err := actions.LoadTemplates(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing directory: no error")
	}
}
