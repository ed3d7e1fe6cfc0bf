package actions

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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
	// date formats an RFC 3339 time for a locale in a time zone:
	// {{date $.Lang .ValidUntil $.TimeZone}} gives "31. Dezember 2025,
	// 19:30 CET" for de-DE in Europe/Berlin (see FormatDate).
	"date": FormatDate,
	// outlookOpen and outlookClose wrap the layout in a fixed-width table
	// for Outlook on Windows, which ignores max-width (a conditional
	// comment, which html/template would otherwise strip).
	"outlookOpen": func(width int) htmltemplate.HTML {
		return htmltemplate.HTML(fmt.Sprintf(`<!--[if mso]><table role="presentation" width="%d" align="center" cellpadding="0" cellspacing="0" border="0"><tr><td><![endif]-->`, width))
	},
	"outlookClose": func() htmltemplate.HTML {
		return `<!--[if mso]></td></tr></table><![endif]-->`
	},
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
	key, _ := t.lookup(name, locale)
	return key
}

// lookup is Lookup, also returning the language the template is written
// in: lang for a <name>.<lang> key, English for a key without a language.
func (t *Templates) lookup(name, locale string) (key, lang string) {
	if name == "" {
		name = DefaultTemplate
	}
	lang = Language(locale)
	for _, n := range []string{name, DefaultTemplate} {
		if lang != "" {
			if k := n + "." + lang; t.subject[k] != nil {
				return k, lang
			}
		}
		if t.subject[n] != nil {
			return n, "en"
		}
	}
	return DefaultTemplate, "en"
}

// EmailItem is one cart line as the templates see it. LineTotal is
// Quantity × the unit price; the lines' totals add up to
// EmailData.Subtotal.
type EmailItem struct {
	Name      string
	SKU       string
	Quantity  int64
	UnitPrice string
	LineTotal string
	// ImageURL is the item's image: its own image_url, else the catalog's
	// (Branding.ImageURL); empty when it has neither, and the layout then
	// shows a placeholder.
	ImageURL string
}

// EmailDiscount is the offer of a decision as the templates see it.
type EmailDiscount struct {
	Label      string // "10% off" (capped: "10% off, up to €20.00") or "€5.00 off", amounts for the customer's locale
	Percent    int64  // the percentage (0 for a fixed amount)
	Amount     string // the fixed amount, "€5.00" (empty for a percentage)
	Max        string // the cap of a percentage, "€20.00" (empty when uncapped)
	Code       string // the issued code (empty when none was issued)
	ValidUntil string // RFC 3339 date-time (UTC), empty without expiry; templates show it with {{date $.Lang .ValidUntil $.TimeZone}}
}

// EmailShop is the shop as the layout shows it (see Branding).
type EmailShop struct {
	Name      string // heads the email; may be empty
	Color     string // the brand colour, "#rrggbb"
	TextColor string // "#ffffff" or "#000000", whichever contrasts more with Color
}

// EmailData is what the templates render. Amounts are formatted for the
// customer's locale (FormatMoneyLocale).
type EmailData struct {
	Subject string // set before the bodies are rendered
	Name    string
	// Lang picks the template's language (Lookup): the customer's locale
	// with '-' ("de-DE"; "en" when the customer has none). While the
	// bodies and the subject are rendered it is the language of the
	// template with the customer's region ("en-US" for an es-US customer
	// who gets the English template), for the html lang attribute and
	// for dates (words in the template's language, the region's order).
	Lang string
	// Locale is the customer's locale, normalized ("es-US"; empty when
	// none): what the amounts were formatted for.
	Locale string
	// TimeZone is the customer's IANA time zone, "UTC" when the customer
	// has none or an unknown one: dates are shown in it.
	TimeZone  string
	Shop      EmailShop
	Items     []EmailItem
	ItemCount int64
	// Subtotal is the sum of the line totals, set only when it differs
	// from Total (a cart whose total is not the sum of its lines).
	Subtotal       string
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
// none or an unknown one) with the given links and the default branding.
func (t *Templates) Render(d events.Decision, resumeURL, unsubscribeURL string) (Rendered, error) {
	return t.RenderData(d.Template, NewEmailData(d, resumeURL, unsubscribeURL))
}

// RenderData renders the template name (DefaultTemplate when empty or
// unknown) in the language of data.Lang (see Lookup) with data.
func (t *Templates) RenderData(name string, data EmailData) (Rendered, error) {
	name, lang := t.lookup(name, data.Lang)
	if r := Region(data.Locale); r != "" {
		lang += "-" + r
	}
	data.Lang = lang
	if data.TimeZone == "" {
		data.TimeZone = "UTC"
	}
	var out Rendered
	var b bytes.Buffer
	if err := t.subject[name].Execute(&b, data); err != nil {
		return out, err
	}
	// One line, ASCII white space collapsed (the no-break spaces of
	// amounts stay).
	out.Subject = strings.Join(strings.FieldsFunc(b.String(), func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
	}), " ")
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

// NewEmailData builds the template data of a decision with the default
// branding (Branding{}.EmailData).
func NewEmailData(d events.Decision, resumeURL, unsubscribeURL string) EmailData {
	return Branding{}.EmailData(d, resumeURL, unsubscribeURL)
}

// EmailData builds the template data of a decision for the shop b: the
// shop's name and colours, the items with their images (see Branding),
// the amounts formatted for the customer's locale (FormatMoneyLocale) and
// the customer's time zone.
func (b Branding) EmailData(d events.Decision, resumeURL, unsubscribeURL string) EmailData {
	cur := d.Cart.Currency
	locale := NormalizeLocale(d.Customer.Locale)
	money := func(minor int64) string { return FormatMoneyLocale(minor, cur, locale) }
	color, err := ParseColor(b.Color)
	if err != nil {
		color = DefaultBrandColor
	}
	data := EmailData{
		Name:           d.Customer.Name,
		Lang:           "en",
		Locale:         locale,
		TimeZone:       LoadZone(d.Customer.TimeZone).String(),
		Shop:           EmailShop{Name: b.ShopName, Color: color, TextColor: textOn(color)},
		Total:          money(d.Cart.TotalMinor),
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
			SKU:       it.SKU,
			Quantity:  it.Quantity,
			UnitPrice: money(it.UnitPriceMinor),
			LineTotal: money(it.UnitPriceMinor * it.Quantity),
			ImageURL:  b.imageURL(it),
		})
		count += it.Quantity
		total += it.UnitPriceMinor * it.Quantity
	}
	if data.ItemCount == 0 {
		data.ItemCount = count
	}
	switch {
	case d.Cart.TotalMinor == 0 && total != 0:
		data.Total = money(total)
	case len(d.Cart.Items) > 0 && total != d.Cart.TotalMinor:
		data.Subtotal = money(total)
	}
	if disc := d.Discount; disc != nil && (disc.Percent != 0 || disc.AmountMinor != 0) {
		ed := &EmailDiscount{}
		if disc.Percent != 0 {
			ed.Percent = disc.Percent
			ed.Label = fmt.Sprintf("%d%% off", disc.Percent)
			if disc.MaxMinor > 0 {
				ed.Max = money(disc.MaxMinor)
				ed.Label += ", up to " + ed.Max
			}
		} else {
			ed.Amount = money(disc.AmountMinor)
			ed.Label = ed.Amount + " off"
		}
		if disc.ValidForSeconds > 0 && !d.DecidedAt.IsZero() {
			ed.ValidUntil = d.DecidedAt.Add(time.Duration(disc.ValidForSeconds) * time.Second).UTC().Format(time.RFC3339)
		}
		data.Discount = ed
	}
	return data
}

// imageURL is the image of an item: its own absolute http(s) image_url;
// a relative one resolved against the catalog's URL; else the catalog's
// URL for its SKU; else empty (the placeholder).
func (b Branding) imageURL(it events.Item) string {
	catalog := b.ImageURL
	if catalog != "" && CheckImageURL(catalog) != nil {
		catalog = ""
	}
	if own := strings.TrimSpace(it.ImageURL); own != "" {
		u, err := url.Parse(own)
		switch {
		case err != nil:
		case u.IsAbs():
			if (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
				return u.String()
			}
		case catalog != "" && u.Host == "" && u.Scheme == "":
			if base, err := url.Parse(strings.ReplaceAll(catalog, "{sku}", url.PathEscape(it.SKU))); err == nil {
				return base.ResolveReference(u).String()
			}
		}
	}
	if catalog != "" && it.SKU != "" {
		return strings.ReplaceAll(catalog, "{sku}", url.PathEscape(it.SKU))
	}
	return ""
}

// textOn returns white or black, whichever contrasts more with the colour
// "#rrggbb" (WCAG relative luminance).
func textOn(color string) string {
	var rgb [3]float64
	for i := range rgb {
		v, err := strconv.ParseUint(color[1+2*i:3+2*i], 16, 8)
		if err != nil {
			return "#ffffff"
		}
		c := float64(v) / 255
		if c <= 0.03928 {
			c /= 12.92
		} else {
			c = math.Pow((c+0.055)/1.055, 2.4)
		}
		rgb[i] = c
	}
	l := 0.2126*rgb[0] + 0.7152*rgb[1] + 0.0722*rgb[2]
	// Contrast with white: 1.05/(l+0.05); with black: (l+0.05)/0.05.
	if 1.05/(l+0.05) >= (l+0.05)/0.05 {
		return "#ffffff"
	}
	return "#000000"
}

// FormatMoney formats an amount in minor units as the ISO 4217 code, a
// space and the amount with a '.' before the minor digits and no grouping:
// FormatMoney(5999, "EUR") is "EUR 59.99", FormatMoney(1500, "JPY") is
// "JPY 1500", FormatMoney(1234, "KWD") is "KWD 1.234". The number of minor
// digits comes from events.CurrencyDigits; an unknown code gets 2.
func FormatMoney(minor int64, currency string) string {
	return currency + " " + events.FormatMinor(minor, currency)
}
