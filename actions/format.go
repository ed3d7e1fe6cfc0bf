package actions

import (
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the customer's zone, also where the host has no zoneinfo

	"github.com/bojanz/currency"
	"github.com/go-playground/locales"
	"github.com/go-playground/locales/cs"
	"github.com/go-playground/locales/da"
	"github.com/go-playground/locales/de"
	"github.com/go-playground/locales/de_AT"
	"github.com/go-playground/locales/de_CH"
	"github.com/go-playground/locales/de_DE"
	"github.com/go-playground/locales/en"
	"github.com/go-playground/locales/en_150"
	"github.com/go-playground/locales/en_AT"
	"github.com/go-playground/locales/en_AU"
	"github.com/go-playground/locales/en_BE"
	"github.com/go-playground/locales/en_CA"
	"github.com/go-playground/locales/en_CH"
	"github.com/go-playground/locales/en_DE"
	"github.com/go-playground/locales/en_DK"
	"github.com/go-playground/locales/en_FI"
	"github.com/go-playground/locales/en_GB"
	"github.com/go-playground/locales/en_IE"
	"github.com/go-playground/locales/en_IN"
	"github.com/go-playground/locales/en_NL"
	"github.com/go-playground/locales/en_NZ"
	"github.com/go-playground/locales/en_SE"
	"github.com/go-playground/locales/en_US"
	"github.com/go-playground/locales/en_ZA"
	"github.com/go-playground/locales/es"
	"github.com/go-playground/locales/es_419"
	"github.com/go-playground/locales/es_ES"
	"github.com/go-playground/locales/es_MX"
	"github.com/go-playground/locales/es_US"
	"github.com/go-playground/locales/fi"
	"github.com/go-playground/locales/fr"
	"github.com/go-playground/locales/fr_BE"
	"github.com/go-playground/locales/fr_CA"
	"github.com/go-playground/locales/fr_CH"
	"github.com/go-playground/locales/fr_FR"
	"github.com/go-playground/locales/it"
	"github.com/go-playground/locales/it_CH"
	"github.com/go-playground/locales/it_IT"
	"github.com/go-playground/locales/nb"
	"github.com/go-playground/locales/nl"
	"github.com/go-playground/locales/nl_BE"
	"github.com/go-playground/locales/nl_NL"
	"github.com/go-playground/locales/pl"
	"github.com/go-playground/locales/pt"
	"github.com/go-playground/locales/pt_BR"
	"github.com/go-playground/locales/pt_PT"
	"github.com/go-playground/locales/sv"
	"golang.org/x/text/language"

	"github.com/cartlift/cartlift/events"
)

// Money and dates in emails follow the Unicode CLDR: amounts through
// github.com/bojanz/currency (symbol, its position, grouping and decimal
// separator per locale, e.g. "€1,306.99" for en-US and es-US, "1.306,99 €"
// for de-DE, "1 306,99 €" for fr-FR), dates and times through the CLDR
// data compiled into github.com/go-playground/locales.

// NormalizeLocale returns locale as a BCP 47 tag in its canonical case
// ("de_at" and "DE-AT" give "de-AT", "en" stays "en"); empty when locale
// is empty or not a well-formed tag.
func NormalizeLocale(locale string) string {
	locale = strings.ReplaceAll(strings.TrimSpace(locale), "_", "-")
	if locale == "" {
		return ""
	}
	tag, err := language.Parse(locale)
	if err != nil {
		return ""
	}
	return tag.String()
}

// Region returns the region of a locale, upper-cased ("es-US" gives "US",
// "de_at" gives "AT"); empty when the locale names none.
func Region(locale string) string {
	tag, err := language.Parse(strings.ReplaceAll(strings.TrimSpace(locale), "_", "-"))
	if err != nil {
		return ""
	}
	if r, conf := tag.Region(); conf == language.Exact {
		return r.String()
	}
	return ""
}

// formatters caches a currency.Formatter per locale (a Formatter is safe
// for concurrent use once built).
var formatters sync.Map // locale string -> *currency.Formatter

func moneyFormatter(locale string) *currency.Formatter {
	if f, ok := formatters.Load(locale); ok {
		return f.(*currency.Formatter)
	}
	f := currency.NewFormatter(currency.NewLocale(locale))
	formatters.Store(locale, f)
	return f
}

// FormatMoneyLocale formats an amount in minor units (as many minor digits
// as events.CurrencyDigits says) for a locale ("de-DE", "de_DE", "es-US",
// or a bare language such as "de") by the CLDR rules: the currency's
// symbol and where it goes, the grouping and the decimal separator.
// FormatMoneyLocale(130699, "EUR", "de-DE") is "1.306,99 €" (with a
// no-break space before the symbol), for "en-US" and "es-US" it is
// "€1,306.99", for "fr-FR" "1 306,99 €" (narrow no-break space, no-break
// space). An empty or unknown locale is formatted as English; a currency
// code CLDR does not know gets FormatMoney.
func FormatMoneyLocale(minor int64, currencyCode, locale string) string {
	amount, err := currency.NewAmount(events.FormatMinor(minor, currencyCode), currencyCode)
	if err != nil {
		return FormatMoney(minor, currencyCode)
	}
	return moneyFormatter(strings.ReplaceAll(locale, "_", "-")).Format(amount)
}

// translators are the CLDR date and time formats compiled in, by
// go-playground's locale name (language, '_', region). A locale missing
// here falls back to its language (every language listed has an entry
// of its own), then to English.
var translators = map[string]func() locales.Translator{
	"cs": cs.New, "da": da.New, "fi": fi.New, "nb": nb.New, "pl": pl.New, "sv": sv.New,
	"de": de.New, "de_AT": de_AT.New, "de_CH": de_CH.New, "de_DE": de_DE.New,
	"en": en.New, "en_150": en_150.New, "en_AT": en_AT.New, "en_AU": en_AU.New, "en_BE": en_BE.New,
	"en_CA": en_CA.New, "en_CH": en_CH.New, "en_DE": en_DE.New, "en_DK": en_DK.New, "en_FI": en_FI.New,
	"en_GB": en_GB.New, "en_IE": en_IE.New, "en_IN": en_IN.New, "en_NL": en_NL.New, "en_NZ": en_NZ.New,
	"en_SE": en_SE.New, "en_US": en_US.New, "en_ZA": en_ZA.New,
	"es": es.New, "es_419": es_419.New, "es_ES": es_ES.New, "es_MX": es_MX.New, "es_US": es_US.New,
	"fr": fr.New, "fr_BE": fr_BE.New, "fr_CA": fr_CA.New, "fr_CH": fr_CH.New, "fr_FR": fr_FR.New,
	"it": it.New, "it_CH": it_CH.New, "it_IT": it_IT.New,
	"nl": nl.New, "nl_BE": nl_BE.New, "nl_NL": nl_NL.New,
	"pt": pt.New, "pt_BR": pt_BR.New, "pt_PT": pt_PT.New,
}

var translatorCache sync.Map // name -> locales.Translator

// translator returns the CLDR translator for a locale: language_REGION,
// else the language, else English.
func translator(locale string) locales.Translator {
	lang, region := Language(locale), Region(locale)
	for _, name := range []string{lang + "_" + region, lang, "en"} {
		if t, ok := translatorCache.Load(name); ok {
			return t.(locales.Translator)
		}
		if newT, ok := translators[name]; ok {
			t := newT()
			translatorCache.Store(name, t)
			return t
		}
	}
	panic("unreachable: English is compiled in")
}

// LoadZone returns the time zone of an IANA name (e.g. "Europe/Berlin"),
// or UTC when name is empty or unknown.
func LoadZone(name string) *time.Location {
	if name == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.UTC
	}
	return loc
}

// FormatTime formats t in the time zone zone (an IANA name; UTC when empty
// or unknown) for locale by the CLDR long date and short time formats,
// joined by ", ", then the zone's abbreviation: "December 31, 2025,
// 1:30 pm EST" (en-US, America/New_York), "31 December 2025, 18:30 GMT"
// (en-GB, Europe/London), "31. Dezember 2025, 19:30 CET" (de-DE,
// Europe/Berlin). A zone without an abbreviation shows its offset
// ("UTC+03:00").
func FormatTime(t time.Time, locale, zone string) string {
	t = t.In(LoadZone(zone))
	tr := translator(locale)
	abbr := t.Format("MST")
	if strings.HasPrefix(abbr, "+") || strings.HasPrefix(abbr, "-") {
		abbr = "UTC" + t.Format("-07:00")
	}
	return tr.FmtDateLong(t) + ", " + tr.FmtTimeShort(t) + " " + abbr
}

// FormatDate formats the RFC 3339 time s with FormatTime for locale (a
// locale such as "de-DE" or a language such as "de") in the time zone
// given as the optional third argument (an IANA name; UTC without one).
// Templates call it as {{date $.Lang .ValidUntil $.TimeZone}}. An empty or
// unparsable s is returned unchanged.
func FormatDate(locale, s string, zone ...string) string {
	if s == "" {
		return s
	}
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	z := ""
	if len(zone) > 0 {
		z = zone[0]
	}
	return FormatTime(tm, locale, z)
}
