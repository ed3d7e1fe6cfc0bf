package actions

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
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

// Templates holds, per template name, a subject (text/template), a
// plain-text body (text/template) and an HTML body (html/template). The
// embedded defaults are templates/<name>.{subject,txt,html}.tmpl.
type Templates struct {
	subject map[string]*texttemplate.Template
	text    map[string]*texttemplate.Template
	html    map[string]*htmltemplate.Template
}

// DefaultTemplates parses the embedded templates.
func DefaultTemplates() (*Templates, error) {
	t := &Templates{
		subject: map[string]*texttemplate.Template{},
		text:    map[string]*texttemplate.Template{},
		html:    map[string]*htmltemplate.Template{},
	}
	entries, err := defaultTemplates.ReadDir("templates")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".tmpl")
		dot := strings.LastIndexByte(base, '.')
		if dot <= 0 {
			return nil, fmt.Errorf("template %s: want <name>.{subject,txt,html}.tmpl", e.Name())
		}
		name, kind := base[:dot], base[dot+1:]
		src, err := defaultTemplates.ReadFile("templates/" + e.Name())
		if err != nil {
			return nil, err
		}
		switch kind {
		case "subject":
			t.subject[name], err = texttemplate.New(e.Name()).Option("missingkey=error").Parse(strings.TrimSpace(string(src)))
		case "txt":
			t.text[name], err = texttemplate.New(e.Name()).Option("missingkey=error").Parse(string(src))
		case "html":
			t.html[name], err = htmltemplate.New(e.Name()).Option("missingkey=error").Parse(string(src))
		default:
			err = fmt.Errorf("unknown kind %q", kind)
		}
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", e.Name(), err)
		}
	}
	for name := range t.subject {
		if t.text[name] == nil || t.html[name] == nil {
			return nil, fmt.Errorf("template %s: subject, txt and html are all required", name)
		}
	}
	if t.subject[DefaultTemplate] == nil {
		return nil, fmt.Errorf("template %s missing", DefaultTemplate)
	}
	return t, nil
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
// unknown) with data.
func (t *Templates) RenderData(name string, data EmailData) (Rendered, error) {
	if t.subject[name] == nil {
		name = DefaultTemplate
	}
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

// NewEmailData builds the template data of a decision.
func NewEmailData(d events.Decision, resumeURL, unsubscribeURL string) EmailData {
	cur := d.Cart.Currency
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
			ed.Label = fmt.Sprintf("%d%% off", disc.Percent)
			if disc.MaxMinor > 0 {
				ed.Label += ", up to " + FormatMoney(disc.MaxMinor, cur)
			}
		} else {
			ed.Label = FormatMoney(disc.AmountMinor, cur) + " off"
		}
		if disc.ValidForSeconds > 0 && !d.DecidedAt.IsZero() {
			ed.ValidUntil = d.DecidedAt.Add(time.Duration(disc.ValidForSeconds) * time.Second).UTC().Format(time.RFC3339)
		}
		data.Discount = ed
	}
	return data
}

// FormatMoney formats an amount in minor units as the ISO 4217 code, a
// space and the amount with a '.' before the minor digits and no grouping:
// FormatMoney(5999, "EUR") is "EUR 59.99", FormatMoney(1500, "JPY") is
// "JPY 1500", FormatMoney(1234, "KWD") is "KWD 1.234". The number of minor
// digits comes from events.CurrencyDigits; an unknown code gets 2.
func FormatMoney(minor int64, currency string) string {
	digits, ok := events.CurrencyDigits(currency)
	if !ok {
		digits = 2
	}
	sign := ""
	u := uint64(minor)
	if minor < 0 {
		sign = "-"
		u = uint64(-minor) // two's complement: correct for MinInt64 too
	}
	s := fmt.Sprintf("%0*d", digits+1, u)
	if digits > 0 {
		s = s[:len(s)-digits] + "." + s[len(s)-digits:]
	}
	return currency + " " + sign + s
}
