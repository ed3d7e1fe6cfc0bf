package shopper

import (
	"strconv"
	"strings"
)

// product is one entry of the fixed catalogue. Prices are in euro cents;
// siteInfo converts them to the site's currency once, in New.
type product struct {
	sku      string
	name     string
	category string
	image    string
	eurMinor int64
	// the product's Item JSON before the quantity and after the price
	head, tail []byte
	skuField   []byte // `,"sku":"<sku>"`
}

// category describes one shelf of the catalogue: a SKU prefix, the words
// product names are made of, and a price range in whole euros.
type category struct {
	name       string
	prefix     string
	adjectives []string
	nouns      []string
	minEUR     int64
	maxEUR     int64
}

// categories hold 12 x 17 = 204 products. The catalogue does not depend on
// the seed: the same SKU has the same name and price in every run, so
// analytics over several runs stay comparable.
var categories = []category{
	{"footwear", "FTW", []string{"Trail", "Road", "Leather", "Canvas"}, []string{"Running Shoe", "Sneaker", "Hiking Boot", "Sandal", "Loafer"}, 39, 189},
	{"apparel", "APP", []string{"Merino", "Organic Cotton", "Linen", "Recycled"}, []string{"T-Shirt", "Hoodie", "Chino", "Rain Jacket", "Sweater"}, 19, 149},
	{"outdoor", "OUT", []string{"Ultralight", "Alpine", "Family", "Expedition"}, []string{"Tent", "Sleeping Bag", "Backpack 30L", "Headlamp", "Trekking Poles"}, 24, 449},
	{"electronics", "ELC", []string{"Wireless", "Noise-Cancelling", "Compact", "Pro"}, []string{"Headphones", "Speaker", "Charger 65W", "Smartwatch", "E-Reader"}, 29, 399},
	{"home", "HOM", []string{"Nordic", "Velvet", "Oak", "Ceramic"}, []string{"Cushion", "Table Lamp", "Throw Blanket", "Vase", "Wall Mirror"}, 15, 229},
	{"kitchen", "KIT", []string{"Cast Iron", "Stainless", "Bamboo", "Enamel"}, []string{"Skillet 28cm", "Knife Set", "Cutting Board", "Dutch Oven", "Espresso Maker"}, 12, 259},
	{"beauty", "BTY", []string{"Hydrating", "Vitamin C", "Fragrance-Free", "Night"}, []string{"Face Cream", "Serum", "Cleanser", "Lip Balm", "Hair Oil"}, 6, 69},
	{"toys", "TOY", []string{"Wooden", "Magnetic", "Plush", "Remote-Control"}, []string{"Building Set", "Puzzle 1000", "Train Set", "Bear", "Race Car"}, 9, 119},
	{"books", "BOK", []string{"Illustrated", "Paperback", "Hardcover", "Collector's"}, []string{"Cookbook", "Travel Guide", "Novel", "Atlas", "Field Guide"}, 8, 59},
	{"sports", "SPT", []string{"Carbon", "Indoor", "Training", "Competition"}, []string{"Yoga Mat", "Tennis Racket", "Dumbbell Set", "Bike Helmet", "Jump Rope"}, 14, 299},
	{"garden", "GRD", []string{"Cordless", "Raised", "Solar", "Heavy-Duty"}, []string{"Hedge Trimmer", "Planter", "Garden Light", "Hose 25m", "Pruning Shears"}, 11, 249},
	{"office", "OFF", []string{"Ergonomic", "Standing", "Recycled", "Premium"}, []string{"Office Chair", "Desk", "Paper A4 x500", "Monitor Arm", "Notebook Pack"}, 7, 499},
}

const productsPerCategory = 17

// catalogue builds the fixed product list, most popular first within the
// interleaving of categories (see pickProduct).
func catalogue() []product {
	out := make([]product, 0, len(categories)*productsPerCategory)
	for n := 0; n < productsPerCategory; n++ {
		for ci, c := range categories {
			a := c.adjectives[n%len(c.adjectives)]
			noun := c.nouns[(n/len(c.adjectives)+n%len(c.adjectives))%len(c.nouns)]
			sku := "SKU-" + c.prefix + "-" + pad3(n+1)
			h := mix(uint64(ci)<<32 | uint64(n))
			span := c.maxEUR - c.minEUR
			whole := c.minEUR + int64(h%uint64(span+1))
			var cents int64
			switch (h >> 20) % 4 {
			case 0, 1:
				cents = 99
			case 2:
				cents = 95
			default:
				cents = 0
			}
			if whole > 100 && cents == 95 {
				cents = 0
			}
			out = append(out, product{
				sku:      sku,
				name:     a + " " + noun,
				category: c.name,
				image:    "https://img.cartlift.example/p/" + strings.ToLower(sku) + ".jpg",
				eurMinor: whole*100 + cents,
			})
		}
	}
	for i := range out {
		out[i].head, out[i].tail = itemJSON(&out[i])
		out[i].skuField = appendString([]byte(`,"sku":`), out[i].sku)
	}
	return out
}

func pad3(n int) string {
	s := strconv.Itoa(n)
	for len(s) < 3 {
		s = "0" + s
	}
	return s
}

// siteInfo is what a site implies: its currency, the catalogue's prices
// in that currency, the CloudEvents source, and the locales and time
// zones of its customers.
type siteInfo struct {
	name     string
	source   string
	srcJSON  []byte // sourceJSON(source)
	currency string
	prices   []int64
	zones    []localeZone
	forms    []string // legal forms of B2B buyers' companies
}

type localeZone struct{ locale, zone string }

// currencyInfo converts euro prices: rate is the price of one euro in the
// currency, in 1/10000 units; digits is the number of minor-unit digits.
type currencyInfo struct {
	code   string
	rate   int64
	digits int
}

var (
	euZones = []localeZone{
		{"de-DE", "Europe/Berlin"}, {"de-AT", "Europe/Vienna"}, {"fr-FR", "Europe/Paris"},
		{"nl-NL", "Europe/Amsterdam"}, {"it-IT", "Europe/Rome"}, {"es-ES", "Europe/Madrid"},
		{"en-IE", "Europe/Dublin"}, {"pl-PL", "Europe/Warsaw"},
	}
	usZones = []localeZone{
		{"en-US", "America/New_York"}, {"en-US", "America/Chicago"}, {"en-US", "America/Denver"},
		{"en-US", "America/Los_Angeles"}, {"es-US", "America/Los_Angeles"}, {"en-US", "America/Phoenix"},
	}
	ukZones = []localeZone{{"en-GB", "Europe/London"}}
	chZones = []localeZone{{"de-CH", "Europe/Zurich"}, {"fr-CH", "Europe/Zurich"}}
	jpZones = []localeZone{{"ja-JP", "Asia/Tokyo"}}
	auZones = []localeZone{{"en-AU", "Australia/Sydney"}, {"en-AU", "Australia/Perth"}}
	caZones = []localeZone{{"en-CA", "America/Toronto"}, {"fr-CA", "America/Toronto"}, {"en-CA", "America/Vancouver"}}
)

// knownSites maps the site names the simulation knows to their currency
// and customers. Any other site name sells in EUR to European customers.
var knownSites = map[string]struct {
	cur   currencyInfo
	zones []localeZone
	forms []string
}{
	"eu": {currencyInfo{"EUR", 10000, 2}, euZones, []string{"GmbH", "B.V.", "SAS", "S.r.l.", "S.L."}},
	"de": {currencyInfo{"EUR", 10000, 2}, euZones[:2], []string{"GmbH", "AG"}},
	"us": {currencyInfo{"USD", 10800, 2}, usZones, []string{"Inc.", "LLC", "Corp."}},
	"uk": {currencyInfo{"GBP", 8500, 2}, ukZones, []string{"Ltd", "PLC"}},
	"ch": {currencyInfo{"CHF", 9500, 2}, chZones, []string{"AG", "GmbH", "SA"}},
	"jp": {currencyInfo{"JPY", 1620000, 0}, jpZones, []string{"K.K."}},
	"au": {currencyInfo{"AUD", 16500, 2}, auZones, []string{"Pty Ltd"}},
	"ca": {currencyInfo{"CAD", 14800, 2}, caZones, []string{"Inc.", "Ltd."}},
}

func newSite(name string, cat []product) *siteInfo {
	k, ok := knownSites[name]
	if !ok {
		k = knownSites["eu"]
	}
	s := &siteInfo{name: name, source: "shop-" + name, currency: k.cur.code, zones: k.zones, forms: k.forms}
	s.srcJSON = sourceJSON(s.source)
	s.prices = make([]int64, len(cat))
	for i, p := range cat {
		s.prices[i] = convertPrice(p.eurMinor, k.cur)
	}
	return s
}

// convertPrice converts a euro price and rounds it the way shops do: to
// .99 in two-digit currencies, to a multiple of 10 in zero-digit ones.
func convertPrice(eurMinor int64, c currencyInfo) int64 {
	if c.code == "EUR" {
		return eurMinor
	}
	// eurMinor is in 1/100 EUR; the result is in 10^-digits of the currency.
	scaled := eurMinor * c.rate / 10000 // 1/100 of the currency
	switch c.digits {
	case 0:
		major := (scaled + 50) / 100
		if major < 10 {
			return 10
		}
		return (major + 5) / 10 * 10
	case 3:
		return scaled * 10
	default:
		major := scaled / 100
		if major < 1 {
			return 99
		}
		return major*100 + 99
	}
}
