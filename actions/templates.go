package actions

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"os"
	"path/filepath"
	"sort"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/cartlift/cartlift/events"
)

//go:embed templates/*.tmpl
var defaultTemplates embed.FS

// DefaultTemplate is the template used when a decision names none, or names
// one that does not exist.
const DefaultTemplate = "reminder"

// Templates holds, per template key, a subject (text/template), a
// plain-text body (text/template) and an HTML body (html/template). A key
// is a template name ("reminder") or a name and a language ("reminder.de").
// The embedded defaults are templates/<name>.{subject,txt,html}.tmpl
// (English) and templates/<name>.<lang>.{subject,txt,html}.tmpl.
type Templates struct {
	subject map[string]*texttemplate.Template
	text    map[string]*texttemplate.Template
	html    map[string]*htmltemplate.Template
}

// templateFuncs are available in every template.
var templateFuncs = map[string]any{
	// date formats an RFC 3339 time for a language: "de" gives
	// "02.01.2006, 15:04 UTC"; other languages (and unparsable input) get
	// the input unchanged.
	"date": FormatDate,
}

// FormatDate formats the RFC 3339 time s for the language lang (a Locale
// such as "de-DE" or a language such as "de"): German gets
// "31.12.2025, 18:30 UTC" (in UTC); every other language, an empty s or an
// unparsable s gets s unchanged.
func FormatDate(lang, s string) string {
	if s == "" {
		return s
	}
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	switch Language(lang) {
	case "de":
		return tm.UTC().Format("02.01.2006, 15:04 UTC")
	}
	return s
}

// Language returns the language part of a locale, lower-cased: the part
// before the first '-' or '_' ("de-DE" and "de_DE" give "de", "EN" gives
// "en"); empty for an empty locale.
func Language(locale string) string {
	if i := strings.IndexAny(locale, "-_"); i >= 0 {
		locale = locale[:i]
	}
	return strings.ToLower(strings.TrimSpace(locale))
}

// DefaultTemplates parses the embedded templates; it is LoadTemplates("").
func DefaultTemplates() (*Templates, error) {
	return LoadTemplates("")
}

// LoadTemplates parses the embedded templates overlaid with the *.tmpl
// files of dir (other files and subdirectories are ignored): a file in dir
// with the name of an embedded one replaces it, other names add templates
// or languages (<name>.<lang>.{subject,txt,html}.tmpl). Every template key
// needs all three of subject, txt and html, and "reminder" must exist. An
// empty dir gives the embedded set. Errors name the offending file.
func LoadTemplates(dir string) (*Templates, error) {
	type source struct {
		path string // for errors: "templates/x.tmpl" (embedded) or the file in dir
		src  []byte
	}
	files := map[string]source{}
	entries, err := defaultTemplates.ReadDir("templates")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		src, err := defaultTemplates.ReadFile("templates/" + e.Name())
		if err != nil {
			return nil, err
		}
		files[e.Name()] = source{path: "templates/" + e.Name() + " (embedded)", src: src}
	}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("template directory: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".tmpl") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			src, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("template %s: %w", path, err)
			}
			files[e.Name()] = source{path: path, src: src}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)

	t := &Templates{
		subject: map[string]*texttemplate.Template{},
		text:    map[string]*texttemplate.Template{},
		html:    map[string]*htmltemplate.Template{},
	}
	keys := map[string]string{} // key -> a file path, for completeness errors
	for _, file := range names {
		f := files[file]
		base := strings.TrimSuffix(file, ".tmpl")
		dot := strings.LastIndexByte(base, '.')
		if dot <= 0 {
			return nil, fmt.Errorf("template %s: want <name>[.<lang>].{subject,txt,html}.tmpl", f.path)
		}
		key, kind := base[:dot], base[dot+1:]
		switch kind {
		case "subject":
			t.subject[key], err = texttemplate.New(file).Funcs(templateFuncs).Option("missingkey=error").Parse(strings.TrimSpace(string(f.src)))
		case "txt":
			t.text[key], err = texttemplate.New(file).Funcs(templateFuncs).Option("missingkey=error").Parse(string(f.src))
		case "html":
			t.html[key], err = htmltemplate.New(file).Funcs(templateFuncs).Option("missingkey=error").Parse(string(f.src))
		default:
			err = fmt.Errorf("unknown kind %q, want subject, txt or html", kind)
		}
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", f.path, err)
		}
		if _, ok := keys[key]; !ok {
			keys[key] = f.path
		}
	}
	for key, path := range keys {
		if t.subject[key] == nil || t.text[key] == nil || t.html[key] == nil {
			return nil, fmt.Errorf("template %s (from %s): subject, txt and html are all required", key, path)
		}
	}
	if t.subject[DefaultTemplate] == nil {
		return nil, fmt.Errorf("template %s missing", DefaultTemplate)
	}
	return t, nil
}

// Lookup returns the key of the template rendered for the template name
// and the locale (e.g. "de-DE", "fr_FR", "en"): the first that exists of
// <name>.<lang>, <name>, reminder.<lang> and reminder, where lang is
// Language(locale). An empty name is DefaultTemplate.
func (t *Templates) Lookup(name, locale string) string {
	if name == "" {
		name = DefaultTemplate
	}
	lang := Language(locale)
	for _, n := range []string{name, DefaultTemplate} {
		if lang != "" {
			if k := n + "." + lang; t.subject[k] != nil {
				return k
			}
		}
		if t.subject[n] != nil {
			return n
		}
	}
	return DefaultTemplate
}

// EmailItem is one cart line as the templates see it.
type EmailItem struct {
	Name      string
	Quantity  int64
	UnitPrice string
	LineTotal string
	ImageURL  string
}

// EmailDiscount is the offer of a decision as the templates see it.
type EmailDiscount struct {
	Label      string // "10% off" (capped: "10% off, up to EUR 20.00") or "EUR 5.00 off"
	Percent    int64  // the percentage (0 for a fixed amount)
	Amount     string // the fixed amount, "EUR 5.00" (empty for a percentage)
	Max        string // the cap of a percentage, "EUR 20.00" (empty when uncapped)
	Code       string // the issued code (empty when none was issued)
	ValidUntil string // RFC 3339 date-time (UTC), empty without expiry
}

// EmailData is what the templates render.
type EmailData struct {
	Subject        string // set before the bodies are rendered
	Name           string
	Lang           string
	Items          []EmailItem
	ItemCount      int64
	Total          string
	Discount       *EmailDiscount
	ResumeURL      string
	UnsubscribeURL string
}

// Rendered is the output of Templates.Render.
type Rendered struct {
	Subject string
	Text    string
	HTML    string
}

// Render renders the decision's template (DefaultTemplate when it names
// none or an unknown one) with the given links.
func (t *Templates) Render(d events.Decision, resumeURL, unsubscribeURL string) (Rendered, error) {
	return t.RenderData(d.Template, NewEmailData(d, resumeURL, unsubscribeURL))
}

// RenderData renders the template name (DefaultTemplate when empty or
// unknown) in the language of data.Lang (see Lookup) with data.
func (t *Templates) RenderData(name string, data EmailData) (Rendered, error) {
	name = t.Lookup(name, data.Lang)
	var out Rendered
	var b bytes.Buffer
	if err := t.subject[name].Execute(&b, data); err != nil {
		return out, err
	}
	out.Subject = strings.Join(strings.Fields(b.String()), " ")
	data.Subject = out.Subject
	b.Reset()
	if err := t.text[name].Execute(&b, data); err != nil {
		return out, err
	}
	out.Text = b.String()
	b.Reset()
	if err := t.html[name].Execute(&b, data); err != nil {
		return out, err
	}
	out.HTML = b.String()
	return out, nil
}

// NewEmailData builds the template data of a decision. Amounts are
// formatted for the customer's locale (FormatMoneyLocale).
func NewEmailData(d events.Decision, resumeURL, unsubscribeURL string) EmailData {
	cur := d.Cart.Currency
	lang := Language(d.Customer.Locale)
	FormatMoney := func(minor int64, currency string) string { return FormatMoneyLocale(minor, currency, lang) }
	data := EmailData{
		Name:           d.Customer.Name,
		Lang:           "en",
		Total:          FormatMoney(d.Cart.TotalMinor, cur),
		ItemCount:      d.Cart.ItemCount,
		ResumeURL:      resumeURL,
		UnsubscribeURL: unsubscribeURL,
	}
	if l := d.Customer.Locale; l != "" {
		data.Lang = strings.ReplaceAll(l, "_", "-")
	}
	var count, total int64
	for _, it := range d.Cart.Items {
		name := it.Name
		if name == "" {
			name = it.SKU
		}
		data.Items = append(data.Items, EmailItem{
			Name:      name,
			Quantity:  it.Quantity,
			UnitPrice: FormatMoney(it.UnitPriceMinor, cur),
			LineTotal: FormatMoney(it.UnitPriceMinor*it.Quantity, cur),
			ImageURL:  it.ImageURL,
		})
		count += it.Quantity
		total += it.UnitPriceMinor * it.Quantity
	}
	if data.ItemCount == 0 {
		data.ItemCount = count
	}
	if d.Cart.TotalMinor == 0 && total != 0 {
		data.Total = FormatMoney(total, cur)
	}
	if disc := d.Discount; disc != nil && (disc.Percent != 0 || disc.AmountMinor != 0) {
		ed := &EmailDiscount{}
		if disc.Percent != 0 {
			ed.Percent = disc.Percent
			ed.Label = fmt.Sprintf("%d%% off", disc.Percent)
			if disc.MaxMinor > 0 {
				ed.Max = FormatMoney(disc.MaxMinor, cur)
				ed.Label += ", up to " + ed.Max
			}
		} else {
			ed.Amount = FormatMoney(disc.AmountMinor, cur)
			ed.Label = ed.Amount + " off"
		}
		if disc.ValidForSeconds > 0 && !d.DecidedAt.IsZero() {
			ed.ValidUntil = d.DecidedAt.Add(time.Duration(disc.ValidForSeconds) * time.Second).UTC().Format(time.RFC3339)
		}
		data.Discount = ed
	}
	return data
}

// decimalComma lists the languages that write 1.234,56: their amounts read
// "1.234,56 EUR"; every other language gets FormatMoney's "EUR 1234.56".
var decimalComma = map[string]bool{"de": true, "fr": true, "es": true, "it": true, "nl": true, "pt": true,
	"da": true, "sv": true, "nb": true, "fi": true, "pl": true, "cs": true, "tr": true}

// FormatMoneyLocale formats an amount in minor units for a language (as
// returned by Language): in a decimal-comma language the amount comes
// first, with '.' between thousands and ',' before the minor digits
// (FormatMoneyLocale(123456, "EUR", "de") is "1.234,56 EUR"); otherwise it
// is FormatMoney.
func FormatMoneyLocale(minor int64, currency, lang string) string {
	if !decimalComma[lang] {
		return FormatMoney(minor, currency)
	}
	s := strings.TrimPrefix(FormatMoney(minor, currency), currency+" ")
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte('.')
		}
		b.WriteRune(c)
	}
	out := sign + b.String()
	if hasFrac {
		out += "," + frac
	}
	return out + " " + currency
}

// FormatMoney formats an amount in minor units as the ISO 4217 code, a
// space and the amount with a '.' before the minor digits and no grouping:
// FormatMoney(5999, "EUR") is "EUR 59.99", FormatMoney(1500, "JPY") is
// "JPY 1500", FormatMoney(1234, "KWD") is "KWD 1.234". The number of minor
// digits comes from events.CurrencyDigits; an unknown code gets 2.
func FormatMoney(minor int64, currency string) string {
	return currency + " " + events.FormatMinor(minor, currency)
}
