package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cartlift/cartlift/events"
)

// now is the reader's clock in the future-time cases: the examples are
// from 2026-11-26.
var now = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// items returns n minimal valid line items.
func items(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"sku": fmt.Sprintf("S%d", i), "quantity": 1, "unit_price_minor": 100}
	}
	return out
}

func metadata(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// padded returns doc padded with trailing spaces (valid JSON) to size bytes.
func padded(t *testing.T, doc []byte, size int) []byte {
	t.Helper()
	if len(doc) > size {
		t.Fatalf("document is %d bytes already", len(doc))
	}
	return append(doc, bytes.Repeat([]byte(" "), size-len(doc))...)
}

type decodeCase struct {
	name   string
	value  []byte
	now    time.Time
	reason string // "" means accepted
	field  string
}

func decodeCases(t *testing.T) []decodeCase {
	added := exampleDoc(t, events.TypeItemAdded)
	updated := exampleDoc(t, events.TypeItemUpdated)
	removed := exampleDoc(t, events.TypeItemRemoved) // a guest's
	snapshot := exampleDoc(t, events.TypeCartUpdated)
	completed := exampleDoc(t, events.TypeCheckoutCompleted)
	started := exampleDoc(t, events.TypeCheckoutStarted)
	profile := exampleDoc(t, events.TypeCustomerUpdated)
	login := exampleDoc(t, events.TypeCustomerLoggedIn)
	assigned := exampleDoc(t, events.TypeCartAssigned)
	m := func(doc map[string]any, p string, v any) []byte { return marshal(t, with(doc, p, v)) }
	long := func(n int) string { return strings.Repeat("x", n) }
	const (
		ok       = ""
		tooLarge = events.ReasonTooLarge
		badJSON  = events.ReasonMalformed
		envelope = events.ReasonEnvelope
		data     = events.ReasonData
		future   = events.ReasonFutureTime
		unknown  = events.ReasonUnknownType
		output   = events.ReasonNotForInput
	)
	return []decodeCase{
		// too_large
		{"record of exactly MaxRecordBytes", padded(t, marshal(t, added), events.MaxRecordBytes), time.Time{}, ok, ""},
		{"record one byte over MaxRecordBytes", padded(t, marshal(t, added), events.MaxRecordBytes+1), time.Time{}, tooLarge, ""},
		{"1 MiB of garbage", bytes.Repeat([]byte("{"), 1<<20), time.Time{}, tooLarge, ""},

		// malformed_json
		{"empty record", []byte{}, time.Time{}, badJSON, ""},
		{"not JSON", []byte("cart.item_added c-1001"), time.Time{}, badJSON, ""},
		{"truncated", marshal(t, added)[:40], time.Time{}, badJSON, ""},
		{"trailing garbage", append(marshal(t, added), " {}"...), time.Time{}, badJSON, ""},
		{"array", []byte(`[1,2]`), time.Time{}, badJSON, ""},
		{"not UTF-8", bytes.Replace(marshal(t, profile), []byte("Nov"), []byte("N\xffv"), 1), time.Time{}, badJSON, ""},
		{"not UTF-8 outside strings", append([]byte{0xfe}, marshal(t, added)...), time.Time{}, badJSON, ""},
		{"time not RFC 3339", m(added, "time", "2026-11-26 10:00:00"), time.Time{}, badJSON, ""},
		{"time without zone", m(added, "time", "2026-11-26T10:00:00"), time.Time{}, badJSON, ""},
		{"id is a number", m(added, "id", 42), time.Time{}, badJSON, ""},

		// invalid_envelope
		{"specversion 0.3", m(added, "specversion", "0.3"), time.Time{}, envelope, "specversion"},
		{"no specversion", m(added, "specversion", nil), time.Time{}, envelope, "specversion"},
		{"no id", m(added, "id", nil), time.Time{}, envelope, "id"},
		{"id with a space", m(added, "id", "e 1"), time.Time{}, envelope, "id"},
		{"id with a NUL", m(added, "id", "e\x001"), time.Time{}, envelope, "id"},
		{"id of 129 bytes", m(added, "id", long(129)), time.Time{}, envelope, "id"},
		{"no source", m(added, "source", nil), time.Time{}, envelope, "source"},
		{"source of 513 bytes", m(added, "source", long(513)), time.Time{}, envelope, "source"},
		{"no type", m(added, "type", nil), time.Time{}, envelope, "type"},
		{"type of 129 bytes", m(added, "type", long(129)), time.Time{}, envelope, "type"},
		{"subject of 513 bytes", m(added, "subject", long(513)), time.Time{}, envelope, "subject"},
		{"no time", m(added, "time", nil), time.Time{}, envelope, "time"},
		{"zero time", m(added, "time", "0001-01-01T00:00:00Z"), time.Time{}, envelope, "time"},
		{"time in year 0 UTC", m(added, "time", "0001-01-01T00:30:00+01:00"), time.Time{}, envelope, "time"},
		{"time in year 10000 UTC", m(added, "time", "9999-12-31T23:59:59-01:00"), time.Time{}, envelope, "time"},
		{"datacontenttype text/plain", m(added, "datacontenttype", "text/plain"), time.Time{}, envelope, "datacontenttype"},
		{"no data", m(added, "data", nil), time.Time{}, envelope, "data"},
		{"data null", m(added, "data", jsonNull), time.Time{}, envelope, "data"},
		{"unknown type without data", m(with(added, "type", "cart.renamed"), "data", nil), time.Time{}, envelope, "data"},

		// time_in_future
		{"time 5 minutes ahead", m(added, "time", "2026-11-26T10:05:00Z"), now, ok, ""},
		{"time 5 minutes 1 ns ahead", m(added, "time", "2026-11-26T10:05:00.000000001Z"), now, future, "time"},
		{"time a day ahead in another zone", m(added, "time", "2026-11-27T12:00:00+02:00"), now, future, "time"},
		{"time a day ahead, no clock (replay)", m(added, "time", "2026-11-27T10:00:00Z"), time.Time{}, ok, ""},

		// unknown_type and not_an_input_type
		{"unknown type", m(added, "type", "cart.item_renamed"), time.Time{}, unknown, "type"},
		{"unknown type, any data", m(with(added, "type", "wishlist.shared"), "data", "opaque"), time.Time{}, unknown, "type"},
		{"decision as input", m(added, "type", events.TypeDecision), time.Time{}, output, "type"},
		{"outcome as input", m(added, "type", events.TypeOutcome), time.Time{}, output, "type"},

		// invalid_data: shape
		{"data is an array", m(added, "data", []any{}), time.Time{}, data, "data"},
		{"data is a string", m(added, "data", "x"), time.Time{}, data, "data"},
		{"unknown field in data", m(added, "data.colour", "red"), time.Time{}, data, "data"},
		{"unknown field in item", m(added, "data.item.colour", "red"), time.Time{}, data, "data"},
		{"unknown field in an item of items", m(snapshot, "data.items[1].colour", "red"), time.Time{}, data, "data"},
		{"quantity is a string", m(added, "data.item.quantity", "1"), time.Time{}, data, "data.item.quantity"},
		{"quantity is a fraction", m(updated, "data.quantity", json.Number("1.5")), time.Time{}, data, "data.quantity"},
		{"quantity written as 1.0", m(updated, "data.quantity", json.Number("1.0")), time.Time{}, data, "data.quantity"},
		{"quantity overflows int64", m(updated, "data.quantity", json.Number("99999999999999999999")), time.Time{}, data, "data.quantity"},
		{"cart_id is a number", m(added, "data.cart_id", 42), time.Time{}, data, "data.cart_id"},
		{"sku is a number", m(added, "data.item.sku", 42), time.Time{}, data, "data.item.sku"},
		{"items is an object", m(snapshot, "data.items", map[string]any{}), time.Time{}, data, "data.items"},
		{"metadata value is a number", m(added, "data.metadata.k", 1), time.Time{}, data, "data.metadata.k"},

		// invalid_data: the cart's owner
		{"neither customer nor anonymous id", m(added, "data.customer_id", nil), time.Time{}, data, "data.customer_id"},
		{"both ids empty", m(with(removed, "data.anonymous_id", ""), "data.customer_id", ""), time.Time{}, data, "data.customer_id"},
		{"guest", m(removed, "data.customer_id", nil), time.Time{}, ok, ""},
		{"customer_id starting with anon:", m(added, "data.customer_id", "anon:a-1"), time.Time{}, data, "data.customer_id"},
		{"customer_id anon: without a guest id", m(added, "data.customer_id", "anon:"), time.Time{}, data, "data.customer_id"},
		{"customer_id containing anon:", m(added, "data.customer_id", "c-anon:1"), time.Time{}, ok, ""},
		{"logged_in customer_id starting with anon:", m(login, "data.customer_id", "anon:a-1"), time.Time{}, data, "data.customer_id"},
		{"customer_id with a tab", m(added, "data.customer_id", "c-\t1"), time.Time{}, data, "data.customer_id"},
		{"anonymous_id with a newline", m(removed, "data.anonymous_id", "a-1\n"), time.Time{}, data, "data.anonymous_id"},
		{"anonymous_id with DEL", m(removed, "data.anonymous_id", "a-\x7f"), time.Time{}, data, "data.anonymous_id"},
		{"customer_id of 128 bytes", m(added, "data.customer_id", long(128)), time.Time{}, ok, ""},
		{"customer_id of 129 bytes", m(added, "data.customer_id", long(129)), time.Time{}, data, "data.customer_id"},
		{"cart.assigned without customer_id", m(assigned, "data.customer_id", nil), time.Time{}, data, "data.customer_id"},
		{"cart.assigned to a guest", m(with(assigned, "data.customer_id", nil), "data.anonymous_id", "a-1"), time.Time{}, data, "data.customer_id"},

		// invalid_data: ids
		{"no cart_id", m(added, "data.cart_id", nil), time.Time{}, data, "data.cart_id"},
		{"cart_id with a space", m(added, "data.cart_id", "cart 42"), time.Time{}, data, "data.cart_id"},
		{"cart_id with a NUL", m(added, "data.cart_id", "cart\x0042"), time.Time{}, data, "data.cart_id"},
		{"cart_id with an escape", m(added, "data.cart_id", "cart\x1b42"), time.Time{}, data, "data.cart_id"},
		{"cart_id non-ASCII", m(added, "data.cart_id", "warenkorb-ä"), time.Time{}, ok, ""},
		{"sku with a control character", m(added, "data.item.sku", "SKU\x01"), time.Time{}, data, "data.item.sku"},
		{"no sku", m(removed, "data.sku", ""), time.Time{}, data, "data.sku"},
		{"discount code with a space", m(completed, "data.discount_codes", []any{"OK", "BACK 1"}), time.Time{}, data, "data.discount_codes[1]"},
		{"no order_id", m(completed, "data.order_id", nil), time.Time{}, data, "data.order_id"},
		{"no from_key", m(assigned, "data.from_key", nil), time.Time{}, data, "data.from_key"},

		// invalid_data: quantities and money
		{"item_added quantity 0", m(added, "data.item.quantity", 0), time.Time{}, data, "data.item.quantity"},
		{"item_added quantity 1", m(added, "data.item.quantity", 1), time.Time{}, ok, ""},
		{"item_added quantity 10000", m(added, "data.item.quantity", events.MaxQuantity), time.Time{}, ok, ""},
		{"item_added quantity 10001", m(added, "data.item.quantity", events.MaxQuantity+1), time.Time{}, data, "data.item.quantity"},
		{"item_added quantity -1", m(added, "data.item.quantity", -1), time.Time{}, data, "data.item.quantity"},
		{"item_added without quantity", m(added, "data.item.quantity", nil), time.Time{}, data, "data.item.quantity"},
		{"item_updated quantity 0 (remove)", m(updated, "data.quantity", 0), time.Time{}, ok, ""},
		{"item_updated quantity 10000", m(updated, "data.quantity", events.MaxQuantity), time.Time{}, ok, ""},
		{"item_updated quantity 10001", m(updated, "data.quantity", events.MaxQuantity+1), time.Time{}, data, "data.quantity"},
		{"item_updated quantity -1", m(updated, "data.quantity", -1), time.Time{}, data, "data.quantity"},
		{"item_updated without quantity", m(updated, "data.quantity", nil), time.Time{}, data, "data.quantity"},
		{"item_updated quantity null", m(updated, "data.quantity", jsonNull), time.Time{}, data, "data.quantity"},
		{"item_updated new price", m(updated, "data.unit_price_minor", 4999), time.Time{}, ok, ""},
		{"item_updated negative price", m(updated, "data.unit_price_minor", -1), time.Time{}, data, "data.unit_price_minor"},
		{"free item", m(added, "data.item.unit_price_minor", 0), time.Time{}, ok, ""},
		{"item without a price", m(added, "data.item.unit_price_minor", nil), time.Time{}, data, "data.item.unit_price_minor"},
		{"item with price null", m(added, "data.item.unit_price_minor", jsonNull), time.Time{}, data, "data.item.unit_price_minor"},
		{"second item without a price", m(snapshot, "data.items[1].unit_price_minor", nil), time.Time{}, data, "data.items[1].unit_price_minor"},
		{"assigned item without a price", m(assigned, "data.items[0].unit_price_minor", nil), time.Time{}, data, "data.items[0].unit_price_minor"},
		{"price at MaxUnitPriceMinor", m(added, "data.item.unit_price_minor", events.MaxUnitPriceMinor), time.Time{}, ok, ""},
		{"price over MaxUnitPriceMinor", m(added, "data.item.unit_price_minor", events.MaxUnitPriceMinor+1), time.Time{}, data, "data.item.unit_price_minor"},
		{"negative price", m(added, "data.item.unit_price_minor", -1), time.Time{}, data, "data.item.unit_price_minor"},
		{"checkout total 0", m(completed, "data.total_minor", 0), time.Time{}, ok, ""},
		{"checkout without total", m(completed, "data.total_minor", nil), time.Time{}, data, "data.total_minor"},
		{"checkout total at MaxTotalMinor", m(completed, "data.total_minor", events.MaxTotalMinor), time.Time{}, ok, ""},
		{"checkout total over MaxTotalMinor", m(completed, "data.total_minor", events.MaxTotalMinor+1), time.Time{}, data, "data.total_minor"},
		{"16 discount codes", m(completed, "data.discount_codes", strSlice(16)), time.Time{}, ok, ""},
		{"17 discount codes", m(completed, "data.discount_codes", strSlice(17)), time.Time{}, data, "data.discount_codes"},

		// invalid_data: currency
		{"unknown currency", m(added, "data.currency", "XYZ"), time.Time{}, data, "data.currency"},
		{"lower-case currency", m(added, "data.currency", "eur"), time.Time{}, data, "data.currency"},
		{"no currency where required", m(added, "data.currency", nil), time.Time{}, data, "data.currency"},
		{"no currency where optional", m(started, "data.currency", nil), time.Time{}, ok, ""},
		{"unknown currency where optional", m(started, "data.currency", "EURO"), time.Time{}, data, "data.currency"},
		{"JPY", m(added, "data.currency", "JPY"), time.Time{}, ok, ""},

		// invalid_data: sizes
		{"200 items", m(snapshot, "data.items", items(events.MaxItems)), time.Time{}, ok, ""},
		{"201 items", m(snapshot, "data.items", items(events.MaxItems+1)), time.Time{}, data, "data.items"},
		{"201 items assigned", m(assigned, "data.items", items(events.MaxItems+1)), time.Time{}, data, "data.items"},
		{"no items (empty cart)", m(snapshot, "data.items", []any{}), time.Time{}, ok, ""},
		{"32 metadata entries", m(added, "data.metadata", metadata(events.MaxMetadata)), time.Time{}, ok, ""},
		{"33 metadata entries", m(added, "data.metadata", metadata(events.MaxMetadata+1)), time.Time{}, data, "data.metadata"},
		{"metadata key of 129 bytes", m(added, "data.metadata", map[string]any{long(129): "v"}), time.Time{}, data, "data.metadata"},
		{"metadata value of 513 bytes", m(added, "data.metadata", map[string]any{"k": long(513)}), time.Time{}, data, "data.metadata.k"},
		{"name of 512 bytes", m(added, "data.item.name", long(512)), time.Time{}, ok, ""},
		{"name of 513 bytes", m(added, "data.item.name", long(513)), time.Time{}, data, "data.item.name"},
		{"name of 512 bytes in 256 two-byte characters", m(added, "data.item.name", strings.Repeat("ä", 256)), time.Time{}, ok, ""},
		{"name of 514 bytes in 257 two-byte characters", m(added, "data.item.name", strings.Repeat("ä", 257)), time.Time{}, data, "data.item.name"},
		{"image_url of 2049 bytes", m(added, "data.item.image_url", long(2049)), time.Time{}, data, "data.item.image_url"},
		{"site of 129 bytes", m(added, "data.site", long(129)), time.Time{}, data, "data.site"},
		{"reason of 513 bytes", m(exampleDoc(t, events.TypeCartDiscarded), "data.reason", long(513)), time.Time{}, data, "data.reason"},

		// invalid_data: profile
		{"bad time zone", m(profile, "data.time_zone", "Mars/Olympus_Mons"), time.Time{}, data, "data.time_zone"},
		{"time zone Local", m(profile, "data.time_zone", "Local"), time.Time{}, data, "data.time_zone"},
		{"time zone path", m(profile, "data.time_zone", "../../etc/passwd"), time.Time{}, data, "data.time_zone"},
		{"time zone UTC", m(profile, "data.time_zone", "UTC"), time.Time{}, ok, ""},
		{"time zone cleared", m(profile, "data.time_zone", ""), time.Time{}, ok, ""},
		{"time zone America/Argentina/Buenos_Aires", m(profile, "data.time_zone", "America/Argentina/Buenos_Aires"), time.Time{}, ok, ""},
		{"email of 255 bytes", m(profile, "data.email", long(255)), time.Time{}, data, "data.email"},
		{"locale of 36 bytes", m(profile, "data.locale", long(36)), time.Time{}, data, "data.locale"},
		{"consent is a string", m(profile, "data.marketing_consent", "yes"), time.Time{}, data, "data.marketing_consent"},
		{"customer.updated without customer_id", m(profile, "data.customer_id", nil), time.Time{}, data, "data.customer_id"},
	}
}

func strSlice(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = fmt.Sprintf("CODE-%d", i)
	}
	return out
}

func TestDecodeCases(t *testing.T) {
	reasons := map[string]bool{}
	for _, c := range decodeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ev, err := events.Decode(c.value, c.now)
			if c.reason == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if _, _, n := payload(ev); n != 1 {
					t.Fatalf("%d payloads set", n)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %s at %q", c.reason, c.field)
			}
			if ev != nil {
				t.Errorf("returned an event with the error %v", err)
			}
			var ve *events.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v is not a *ValidationError", err, err)
			}
			reasons[ve.Reason] = true
			if ve.Reason != c.reason || ve.Field != c.field {
				t.Errorf("got %s at %q (%v), want %s at %q", ve.Reason, ve.Field, err, c.reason, c.field)
			}
			if got, want := errors.Is(err, events.ErrUnknownType), c.reason == events.ReasonUnknownType; got != want {
				t.Errorf("errors.Is(err, ErrUnknownType) = %v", got)
			}
			if ve.Msg == "" || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("poor message %q", err)
			}
		})
	}
	for _, r := range []string{
		events.ReasonTooLarge, events.ReasonMalformed, events.ReasonEnvelope, events.ReasonData,
		events.ReasonFutureTime, events.ReasonUnknownType, events.ReasonNotForInput,
	} {
		if !reasons[r] {
			t.Errorf("no case produced reason %s", r)
		}
	}
}

// An unknown data field is named in the message, wherever it is.
func TestDecodeNamesUnknownField(t *testing.T) {
	doc := exampleDoc(t, events.TypeCartUpdated)
	_, err := events.Decode(marshal(t, with(doc, "data.items[0].colour", "red")), time.Time{})
	if err == nil || !strings.Contains(err.Error(), `"colour"`) {
		t.Errorf("error %v does not name the field", err)
	}
}

// Encoding a decoded event's payload again and decoding it gives the same
// event, and what Encode writes is valid by the published schema.
func TestEncodeRoundTrip(t *testing.T) {
	set := loadSchemas(t)
	for _, typ := range events.InputTypes {
		t.Run(typ, func(t *testing.T) {
			ev, err := events.Decode(example(t, typ), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, set, ev)
		})
	}
	// Payloads built in Go, sparse ones included (nil items, zero times,
	// nil profile fields).
	at := time.Date(2026, 11, 26, 11, 0, 0, 123456789, time.FixedZone("CET", 3600))
	email, consent := "", false
	i := 0
	for _, p := range []any{
		&events.CartUpdated{CartRef: events.CartRef{AnonymousID: "g-1", CartID: "cart-1", Currency: "EUR"}},
		&events.CartAssigned{CartRef: events.CartRef{CustomerID: "c-1", CartID: "cart-1", Currency: "CHF"}, FromKey: "anon:g-1"},
		&events.CartAssigned{CartRef: events.CartRef{CustomerID: "c-1", CartID: "cart-1", Currency: "CHF",
			Metadata: map[string]string{"a": "b"}}, FromKey: "anon:g-1", Items: []events.Item{{SKU: "S", Quantity: 1}},
			CreatedAt: at, ModifiedAt: at.Add(time.Minute)},
		&events.ItemUpdated{CartRef: events.CartRef{CustomerID: "c-1", CartID: "cart-1"}, SKU: "S", Quantity: 0},
		&events.CheckoutCompleted{CartRef: events.CartRef{CustomerID: "c-1", CartID: "cart-1"}, OrderID: "o-1"},
		&events.CustomerUpdated{CustomerID: "c-1"},
		&events.CustomerUpdated{CustomerID: "c-1", Email: &email, MarketingConsent: &consent},
		&events.ItemAdded{CartRef: events.CartRef{CustomerID: "c-1", CartID: "cart-1", Currency: "KWD"},
			Item: events.Item{SKU: "S", Quantity: 1, Name: "<b>&</b> \u2028"}},
	} {
		i++
		typ := ""
		for name, ty := range payloadTypes {
			if reflect.TypeOf(p).Elem() == ty {
				typ = name
			}
		}
		t.Run(fmt.Sprintf("go-%d-%s", i, typ), func(t *testing.T) {
			b, err := events.Encode("e-1", "test", typ, at, "", p)
			if err != nil {
				t.Fatal(err)
			}
			if err := set.validate(typ, b); err != nil {
				t.Errorf("Encode output is invalid by the schema: %v\n%s", err, b)
			}
			ev, err := events.Decode(b, time.Time{})
			if err != nil {
				t.Fatalf("Decode(Encode(...)): %v\n%s", err, b)
			}
			if _, got, _ := payload(ev); !reflect.DeepEqual(normalized(got), normalized(p)) {
				t.Errorf("payload changed:\n got %+v\nwant %+v", got, p)
			}
			if !ev.Time.Equal(at) || ev.Time.Location() != time.UTC {
				t.Errorf("Time = %v, want %v in UTC", ev.Time, at)
			}
			roundTrip(t, set, ev)
		})
	}
}

// normalized returns a payload with its times in UTC.
func normalized(p any) any {
	if a, ok := p.(*events.CartAssigned); ok {
		c := *a
		c.CreatedAt, c.ModifiedAt = c.CreatedAt.UTC(), c.ModifiedAt.UTC()
		return &c
	}
	return p
}

// roundTrip encodes ev again, checks the result against the schema, decodes
// it, and compares.
func roundTrip(t *testing.T, set *schemaSet, ev *events.Event) {
	t.Helper()
	b, err := reencode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := set.validate(ev.Type, b); err != nil {
		t.Errorf("re-encoded event is invalid by the schema: %v\n%s", err, b)
	}
	again, err := events.Decode(b, time.Time{})
	if err != nil {
		t.Fatalf("re-encoded event does not decode: %v\n%s", err, b)
	}
	normalize(ev)
	normalize(again)
	if !reflect.DeepEqual(ev, again) {
		t.Errorf("round trip changed the event:\n got %+v\nwant %+v", again, ev)
	}
}

// The schema agrees with Decode on every case of TestDecodeCases it can
// judge: all but those that need the record's bytes or the clock, and the
// known gaps (see TestKnownSchemaGaps).
func TestDecodeCasesAgreeWithSchema(t *testing.T) {
	ss := loadSchemas(t)
	gaps := map[string]bool{
		"zero time":               true,
		"time in year 0 UTC":      true,
		"time in year 10000 UTC":  true,
		"quantity written as 1.0": true,
		"bad time zone":           true,
		"name of 514 bytes in 257 two-byte characters": true,
	}
	judged := 0
	for _, c := range decodeCases(t) {
		switch {
		case c.reason == events.ReasonTooLarge, c.reason == events.ReasonFutureTime, !c.now.IsZero(),
			c.reason == events.ReasonUnknownType, c.reason == events.ReasonNotForInput,
			!utf8.Valid(c.value):
			continue
		}
		doc, err := parseDoc(c.value)
		if err != nil {
			continue // not JSON: no schema can judge it
		}
		if _, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.value)); err != nil {
			continue // trailing data
		}
		typ, _ := asMap(doc)["type"].(string)
		if _, ok := ss.compiled[schemaFile(typ)]; !ok {
			typ = "envelope"
		}
		judged++
		schemaErr := ss.validate(typ, c.value)
		if agree := (schemaErr == nil) == (c.reason == ""); agree == gaps[c.name] {
			t.Errorf("%s: Decode says %q, schema %s says %v; a known gap: %v", c.name, c.reason, typ, schemaErr, gaps[c.name])
		}
		delete(gaps, c.name)
	}
	for name := range gaps {
		t.Errorf("gap %q is not among the cases", name)
	}
	if judged < 100 {
		t.Errorf("only %d cases judged", judged)
	}
	t.Logf("%d cases judged by both", judged)
}
