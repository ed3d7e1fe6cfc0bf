package actions_test

import (
	"flag"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

var update = flag.Bool("update", false, "rewrite the golden emails in testdata/golden")

// shop is the branding of these tests.
var shop = actions.Branding{ShopName: "Nordwind Outdoor", Color: "#0b6e4f", ImageURL: "https://cdn.nordwind.example/p/{sku}.jpg"}

// cartDecision has lines of quantity 1, 2 and 3, one with its own image.
func cartDecision(locale, zone, currency string) events.Decision {
	d := localeDecision(locale, "reminder")
	d.Customer.TimeZone = zone
	d.Cart.Currency = currency
	d.Cart.Items = []events.Item{
		{SKU: "JKT-1", Name: "Rain jacket", Quantity: 1, UnitPriceMinor: 18900, ImageURL: "https://img.nordwind.example/jacket.jpg"},
		{SKU: "SCK-2", Name: "Wool socks", Quantity: 2, UnitPriceMinor: 2450},
		{SKU: "BTL-3", Name: "Steel bottle", Quantity: 3, UnitPriceMinor: 1299},
	}
	d.Cart.TotalMinor, d.Cart.ItemCount = 18900+2*2450+3*1299, 6
	return d
}

func renderShop(t *testing.T, b actions.Branding, d events.Decision) actions.Rendered {
	t.Helper()
	r, err := defaults(t).RenderData(d.Template, b.EmailData(d, "https://shop.example/r?d=1&c=2", "https://shop.example/u"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Every line shows quantity × unit price and its line total, and the line
// totals add up to the total shown.
func TestEmailLineTotalsAddUp(t *testing.T) {
	for _, locale := range []string{"en-US", "de-DE", "es-US", "fr-FR"} {
		d := cartDecision(locale, "", "EUR")
		data := shop.EmailData(d, "r", "u")
		var sum int64
		for i, it := range d.Cart.Items {
			line := it.Quantity * it.UnitPriceMinor
			sum += line
			got := data.Items[i]
			if got.LineTotal != actions.FormatMoneyLocale(line, "EUR", locale) || got.UnitPrice != actions.FormatMoneyLocale(it.UnitPriceMinor, "EUR", locale) {
				t.Errorf("%s line %d: unit %q, total %q", locale, i, got.UnitPrice, got.LineTotal)
			}
		}
		if sum != d.Cart.TotalMinor || data.Total != actions.FormatMoneyLocale(sum, "EUR", locale) || data.Subtotal != "" {
			t.Errorf("%s: total %q (subtotal %q), lines add up to %d", locale, data.Total, data.Subtotal, sum)
		}
		r := renderShop(t, shop, d)
		socks := data.Items[1]
		if !strings.Contains(r.HTML, "2 × "+socks.UnitPrice+"</div>") || !strings.Contains(r.HTML, ">"+socks.LineTotal+"</td>") || !strings.Contains(r.HTML, ">"+data.Total+"</td>") {
			t.Errorf("%s: HTML lacks 2 × %s, %s or %s", locale, socks.UnitPrice, socks.LineTotal, data.Total)
		}
		want, total := "2 × Wool socks at "+socks.UnitPrice+" each: "+socks.LineTotal, "Total: "+data.Total
		if locale == "de-DE" {
			want, total = "2 × Wool socks zu je "+socks.UnitPrice+": "+socks.LineTotal, "Gesamtsumme: "+data.Total
		}
		if !strings.Contains(r.Text, want) || !strings.Contains(r.Text, total) {
			t.Errorf("%s: text lacks %q or the total:\n%s", locale, want, r.Text)
		}
	}
	// A cart whose total is not the sum of its lines shows both.
	d := cartDecision("en-US", "", "USD")
	d.Cart.TotalMinor -= 500
	data := shop.EmailData(d, "r", "u")
	if data.Subtotal != "$276.97" || data.Total != "$271.97" {
		t.Errorf("subtotal %q, total %q", data.Subtotal, data.Total)
	}
	if r := renderShop(t, shop, d); !strings.Contains(r.Text, "Items: $276.97\nTotal: $271.97") {
		t.Errorf("text:\n%s", r.Text)
	}
}

// English emails for es-US use the US conventions of CLDR, not a
// decimal comma; each locale gets its own.
func TestEmailMoneyByLocale(t *testing.T) {
	for _, c := range []struct{ locale, total, not string }{
		{"en-US", "€276.97", "EUR"},
		{"es-US", "€276.97", "276,97"},
		{"de-DE", "276,97\u00a0€", "€276"},
		{"fr-FR", "276,97\u00a0€", "€276"},
	} {
		r := renderShop(t, shop, cartDecision(c.locale, "", "EUR"))
		for _, body := range []string{r.Text, r.HTML} {
			if !strings.Contains(body, c.total) || strings.Contains(body, c.not) {
				t.Errorf("%s: want %q and no %q in:\n%s", c.locale, c.total, c.not, body)
			}
		}
	}
}

// The offer's expiry is shown in the customer's time zone, in the words
// of the template's language and the order of the customer's region.
func TestEmailExpiryInCustomerZone(t *testing.T) {
	// Decided 2025-12-31 17:30 UTC, valid for an hour: 18:30 UTC.
	for _, c := range []struct{ locale, zone, want string }{
		{"en-US", "America/New_York", "valid until December 31, 2025, 1:30 pm EST"},
		{"en-GB", "Europe/London", "valid until 31 December 2025, 18:30 GMT"},
		{"de-DE", "Europe/Berlin", "gültig bis 31. Dezember 2025, 19:30 CET"},
		{"de-AT", "Asia/Kolkata", "gültig bis 1. Jänner 2026, 00:00 IST"},
		{"es-US", "America/Los_Angeles", "valid until December 31, 2025, 10:30 am PST"}, // the English template, US order
		{"en-US", "Asia/Dubai", "valid until December 31, 2025, 10:30 pm UTC+04:00"},
		{"en-US", "Mars/Olympus", "valid until December 31, 2025, 6:30 pm UTC"}, // unknown zone: UTC, said so
	} {
		r := renderShop(t, shop, cartDecision(c.locale, c.zone, "EUR"))
		if !strings.Contains(r.Text, c.want) {
			t.Errorf("%s %s: text lacks %q:\n%s", c.locale, c.zone, c.want, r.Text)
		}
		if want := strings.ReplaceAll(strings.ReplaceAll(c.want, "valid until", "Valid until"), "gültig", "Gültig"); !strings.Contains(html.UnescapeString(r.HTML), want) {
			t.Errorf("%s %s: HTML lacks %q", c.locale, c.zone, c.want)
		}
		if strings.Contains(r.Text, "2025-12-31T") {
			t.Errorf("%s: a raw timestamp in:\n%s", c.locale, r.Text)
		}
	}
	// Midnight on a 12-hour clock is 12, not 0.
	at := time.Date(2026, 1, 1, 5, 15, 0, 0, time.UTC)
	if got := actions.FormatTime(at, "en-US", "America/New_York"); got != "January 1, 2026, 12:15 am EST" {
		t.Errorf("FormatTime = %q", got)
	}
	if got := actions.FormatDate("de-DE", "2026-07-01T10:00:00Z", "Europe/Berlin"); got != "1. Juli 2026, 12:00 CEST" {
		t.Errorf("FormatDate = %q", got)
	}
	if got := actions.FormatDate("de-DE", "not a time"); got != "not a time" {
		t.Errorf("FormatDate of junk = %q", got)
	}
}

var imgSrc = regexp.MustCompile(`<img src="([^"]*)"`)

// Images: the item's own, else the catalog's for its SKU; without either
// a placeholder, never a broken <img>.
func TestEmailImagesAndPlaceholder(t *testing.T) {
	d := cartDecision("en-US", "", "EUR")
	d.Cart.Items[1].SKU = "SCK 2/blue"
	d.Cart.Items[2].ImageURL = "/thumbs/btl-3.png" // relative: against the catalog
	r := renderShop(t, shop, d)
	got := imgSrc.FindAllStringSubmatch(r.HTML, -1)
	want := []string{"https://img.nordwind.example/jacket.jpg", "https://cdn.nordwind.example/p/SCK%202%2Fblue.jpg", "https://cdn.nordwind.example/thumbs/btl-3.png"}
	if len(got) != len(want) {
		t.Fatalf("images %q, want %q", got, want)
	}
	for i := range want {
		if got[i][1] != want[i] {
			t.Errorf("image %d: %q, want %q", i, got[i][1], want[i])
		}
	}
	if strings.Contains(r.HTML, "No image") {
		t.Error("a placeholder although every item has an image")
	}

	// No catalog URL: the items without an image of their own get the
	// placeholder; a script URL is no image.
	d = cartDecision("en-US", "", "EUR")
	d.Cart.Items[2].ImageURL = "javascript:alert(1)"
	for _, lang := range []struct{ locale, placeholder string }{{"en-US", "No image"}, {"de-DE", "Kein Bild"}} {
		d.Customer.Locale = lang.locale
		r = renderShop(t, actions.Branding{ShopName: "Nordwind"}, d)
		if n := len(imgSrc.FindAllString(r.HTML, -1)); n != 1 {
			t.Errorf("%s: %d images, want 1 (the jacket's)", lang.locale, n)
		}
		if n := strings.Count(r.HTML, ">"+lang.placeholder+"<"); n != 2 {
			t.Errorf("%s: %d placeholders, want 2:\n%s", lang.locale, n, r.HTML)
		}
		if strings.Contains(r.HTML, "javascript") {
			t.Errorf("%s: the script URL reached the HTML", lang.locale)
		}
	}
}

// What customers and shops provide is escaped in the HTML and kept as
// it is in the text.
func TestEmailEscapesUserStrings(t *testing.T) {
	d := cartDecision("en-US", "", "EUR")
	d.Customer.Name = `Bob <script>alert("x")</script>`
	d.Cart.Items[0].Name = `Hat <b>"50%" off</b> & more`
	b := shop
	b.ShopName = `Tom & Jerry's <Shop>`
	r := renderShop(t, b, d)
	for _, raw := range []string{"<script>", "<b>", "<Shop>", `"50%"`} {
		if strings.Contains(r.HTML, raw) {
			t.Errorf("HTML contains unescaped %q", raw)
		}
	}
	for _, esc := range []string{"Bob &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "Hat &lt;b&gt;&#34;50%&#34; off&lt;/b&gt; &amp; more", "Tom &amp; Jerry&#39;s &lt;Shop&gt;",
		`href="https://shop.example/r?d=1&amp;c=2"`} {
		if !strings.Contains(r.HTML, esc) {
			t.Errorf("HTML lacks %q", esc)
		}
	}
	for _, raw := range []string{d.Customer.Name, d.Cart.Items[0].Name, b.ShopName} {
		if !strings.Contains(r.Text, raw) {
			t.Errorf("text lacks %q", raw)
		}
	}
}

// The brand colour heads the email and fills the button, with text that
// can be read on it.
func TestEmailBranding(t *testing.T) {
	for _, c := range []struct{ color, bg, fg string }{
		{"#0b6e4f", "#0b6e4f", "#ffffff"},
		{"#FC0", "#ffcc00", "#000000"},
		{"", actions.DefaultBrandColor, "#ffffff"},
	} {
		r := renderShop(t, actions.Branding{ShopName: "Nordwind Outdoor", Color: c.color}, cartDecision("en-US", "", "EUR"))
		if n := strings.Count(r.HTML, "background-color:"+c.bg+";"); n != 2 {
			t.Errorf("%q: %d uses of %s, want 2 (header and button)", c.color, n, c.bg)
		}
		if !strings.Contains(r.HTML, "color:"+c.fg+"; padding:20px 24px") || !strings.Contains(r.HTML, ">Nordwind Outdoor</td>") {
			t.Errorf("%q: header not %s on %s with the shop's name", c.color, c.fg, c.bg)
		}
	}
	// The shop's name defaults to the sender's.
	for from, want := range map[string]string{"Nordwind Outdoor <shop@nordwind.example>": "Nordwind Outdoor", "shop@nordwind.example": "nordwind.example"} {
		if got := (actions.EmailConfig{From: from}).WithDefaults().Branding.ShopName; got != want {
			t.Errorf("From %q: shop name %q, want %q", from, got, want)
		}
	}
}

func TestBrandingValidate(t *testing.T) {
	base := actions.EmailConfig{From: "a@example.com", ResumeURLTemplate: "https://x/{cart_id}", UnsubscribeURL: "https://x/u"}
	for _, b := range []actions.Branding{
		{Color: "green"}, {Color: "#12345"}, {Color: "#ggg"}, {Color: "0b6e4f"},
		{ImageURL: "https://cdn.example/p/x.jpg"}, {ImageURL: "ftp://cdn.example/{sku}"}, {ImageURL: "/p/{sku}.jpg"},
		{ShopName: "Shop\r\nBcc: x"}, {ShopName: strings.Repeat("x", 101)},
	} {
		c := base
		c.Branding = b
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%+v validated", b)
		}
	}
	c := base
	c.Branding = shop
	if err := c.WithDefaults().Validate(); err != nil {
		t.Error(err)
	}
	if got, err := actions.ParseColor("#AbC"); err != nil || got != "#aabbcc" {
		t.Errorf("ParseColor = %q, %v", got, err)
	}
}

// The whole emails, as golden files: `go test ./actions -run Golden
// -update` rewrites them after a deliberate change (then look at
// `make email-screenshots`).
func TestEmailGolden(t *testing.T) {
	for _, c := range []struct{ name, locale, zone, currency string }{
		{"reminder.en-US", "en-US", "America/New_York", "USD"},
		{"reminder.de-DE", "de-DE", "Europe/Berlin", "EUR"},
	} {
		d := cartDecision(c.locale, c.zone, c.currency)
		d.Cart.Items[1].SKU = "" // no image of its own, no SKU: the placeholder
		r := renderShop(t, shop, d)
		for ext, got := range map[string]string{"subject": r.Subject + "\n", "txt": r.Text, "html": r.HTML} {
			path := filepath.Join("testdata", "golden", c.name+"."+ext)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from the golden file (-update rewrites it):\n%s", path, got)
			}
		}
	}
}
