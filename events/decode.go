package events

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // time zone names validate the same on every host
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// Bounds enforced by Decode. They protect the processor's memory and the
// state store from a single hostile or broken producer.
const (
	MaxRecordBytes    = 64 << 10          // whole record value
	MaxIDLen          = 128               // event, cart, customer, order, SKU ids
	MaxTextLen        = 512               // names, categories, sources, reasons
	MaxURLLen         = 2048              // image URLs
	MaxItems          = 200               // line items per cart
	MaxQuantity       = 10_000            // per line item
	MaxUnitPriceMinor = 100_000_000_00    // 100M major units
	MaxTotalMinor     = 10_000_000_000_00 // 10G major units
	MaxMetadata       = 32                // metadata entries per cart
	MaxDiscountCodes  = 16                // per checkout
	MaxFutureSkew     = 5 * time.Minute   // how far event time may lead the clock
)

// Reason codes name why a record was rejected. They are stable: they appear
// in the DLQ header "cartlift-error-reason" and in metric labels.
const (
	ReasonTooLarge    = "too_large"
	ReasonMalformed   = "malformed_json"
	ReasonEnvelope    = "invalid_envelope"
	ReasonData        = "invalid_data"
	ReasonFutureTime  = "time_in_future"
	ReasonKeyMismatch = "key_mismatch"
	ReasonUnknownType = "unknown_type"
	ReasonNotForInput = "not_an_input_type"
)

// ErrUnknownType is wrapped by the error Decode returns for a well-formed
// envelope whose type this version does not know. Such records are skipped,
// not dead-lettered, so that producers can roll out new types first.
var ErrUnknownType = errors.New("unknown event type")

// ValidationError says why a record is not a valid v1 event. Reason is one
// of the Reason constants; Field is the JSON path of the offending field
// when there is one.
type ValidationError struct {
	Reason string
	Field  string
	Msg    string
	err    error
}

// Error formats the reason, the field when there is one, and the message.
func (e *ValidationError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Msg)
}

// Unwrap returns ErrUnknownType for unknown types, nil otherwise.
func (e *ValidationError) Unwrap() error { return e.err }

func invalid(reason, field, format string, args ...any) *ValidationError {
	return &ValidationError{Reason: reason, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Decode parses and validates one record value. now is the reader's clock,
// used only to reject event times more than MaxFutureSkew ahead of it; pass
// the zero time to skip that check (replays of history). The returned error
// is always a *ValidationError.
func Decode(value []byte, now time.Time) (*Event, error) {
	if len(value) > MaxAssignedBytes {
		return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
	}
	if !utf8.Valid(value) {
		return nil, invalid(ReasonMalformed, "", "record is not valid UTF-8")
	}
	var env Envelope
	if err := json.Unmarshal(value, &env); err != nil {
		if len(value) > MaxRecordBytes {
			return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
		}
		return nil, invalid(ReasonMalformed, "", "%v", err)
	}
	if len(value) > MaxRecordBytes && env.Type != TypeCartAssigned {
		return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
	}
	if err := validateEnvelope(&env, now); err != nil {
		return nil, err
	}
	ev := &Event{ID: env.ID, Source: env.Source, Type: env.Type, Time: env.Time.UTC(), Subject: env.Subject}
	var v validator
	switch env.Type {
	case TypeItemAdded:
		// absent marks required numbers whose zero value is valid: a
		// field missing from the JSON (or null) keeps it.
		ev.ItemAdded = &ItemAdded{Item: Item{UnitPriceMinor: absent}}
		if err := decodeData(env.Data, ev.ItemAdded); err != nil {
			return nil, err
		}
		v.cartRef(&ev.ItemAdded.CartRef, true)
		v.itemAt("data.item", -1, &ev.ItemAdded.Item)
	case TypeItemUpdated:
		d := &ItemUpdated{Quantity: absent}
		ev.ItemUpdated = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, false)
		v.id("data.sku", d.SKU)
		v.present("data.quantity", d.Quantity)
		v.rangeInt("data.quantity", d.Quantity, 0, MaxQuantity)
		v.rangeInt("data.unit_price_minor", d.UnitPriceMinor, 0, MaxUnitPriceMinor)
	case TypeItemRemoved:
		d := &ItemRemoved{}
		ev.ItemRemoved = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, false)
		v.id("data.sku", d.SKU)
	case TypeCartUpdated:
		d := &CartUpdated{}
		ev.CartUpdated = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, true)
		v.pricesPresent("data.items", env.Data)
		v.items("data.items", d.Items)
	case TypeCartDiscarded:
		d := &CartDiscarded{}
		ev.CartDiscarded = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, false)
		v.text("data.reason", d.Reason, MaxTextLen)
	case TypeCheckoutStarted:
		d := &CheckoutStarted{}
		ev.CheckoutStarted = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, false)
	case TypeCheckoutCompleted:
		d := &CheckoutCompleted{TotalMinor: absent}
		ev.CheckoutCompleted = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, false)
		v.id("data.order_id", d.OrderID)
		v.present("data.total_minor", d.TotalMinor)
		v.rangeInt("data.total_minor", d.TotalMinor, 0, MaxTotalMinor)
		if len(d.DiscountCodes) > MaxDiscountCodes {
			v.fail("data.discount_codes", "has %d codes, the limit is %d", len(d.DiscountCodes), MaxDiscountCodes)
		}
		for i, c := range d.DiscountCodes {
			v.id(fmt.Sprintf("data.discount_codes[%d]", i), c)
		}
	case TypeCustomerLoggedIn:
		d := &CustomerLoggedIn{}
		ev.CustomerLoggedIn = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.id("data.customer_id", d.CustomerID)
		v.noAnonPrefix("data.customer_id", d.CustomerID)
		v.optID("data.anonymous_id", d.AnonymousID)
	case TypeCustomerUpdated:
		d := &CustomerUpdated{}
		ev.CustomerUpdated = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.id("data.customer_id", d.CustomerID)
		v.noAnonPrefix("data.customer_id", d.CustomerID)
		v.optText("data.email", d.Email, 254)
		v.optText("data.name", d.Name, MaxTextLen)
		v.optText("data.locale", d.Locale, 35)
		v.optText("data.segment", d.Segment, MaxIDLen)
		if d.TimeZone != nil && *d.TimeZone != "" && !KnownTimeZone(*d.TimeZone) {
			v.fail("data.time_zone", "%q is not an IANA time zone", *d.TimeZone)
		}
	case TypeCustomerErased:
		d := &CustomerErased{}
		ev.CustomerErased = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.id("data.customer_id", d.CustomerID)
		v.noAnonPrefix("data.customer_id", d.CustomerID)
	case TypeCartAssigned:
		d := &CartAssigned{}
		ev.CartAssigned = d
		if err := decodeData(env.Data, d); err != nil {
			return nil, err
		}
		v.cartRef(&d.CartRef, true)
		if d.CustomerID == "" {
			v.fail("data.customer_id", "is required")
		}
		v.id("data.from_key", d.FromKey)
		v.pricesPresent("data.items", env.Data)
		v.items("data.items", d.Items)
		if d.Version < 0 {
			v.fail("data.version", "must not be negative")
		}
		if len(d.Decisions) > 64 {
			v.fail("data.decisions", "has %d records, the limit is 64", len(d.Decisions))
		}
		for i := range d.Decisions {
			r := &d.Decisions[i]
			if r.Flow == "" || r.Step == "" || len(r.Flow) > MaxIDLen || len(r.Step) > MaxIDLen || len(r.ID) > MaxIDLen || len(r.Suppressed) > MaxIDLen || r.StepIndex < 0 {
				v.fail(fmt.Sprintf("data.decisions[%d]", i), "needs a flow and a step, within the id bounds")
			}
		}
	case TypeDecision, TypeOutcome:
		return nil, invalid(ReasonNotForInput, "type", "%q is an output type of cartlift, not an input event", env.Type)
	default:
		return nil, &ValidationError{Reason: ReasonUnknownType, Field: "type", Msg: fmt.Sprintf("%q is not a v1 event type", env.Type), err: ErrUnknownType}
	}
	if v.err != nil {
		return nil, v.err
	}
	return ev, nil
}

var zones sync.Map // valid time zone name -> struct{}; bounded by the tz database

// KnownTimeZone reports whether name is an IANA time zone name of the
// embedded time zone database. Only valid names are cached, so hostile
// input cannot grow the cache.
func KnownTimeZone(name string) bool {
	if _, hit := zones.Load(name); hit {
		return true
	}
	if len(name) > 64 || name == "Local" {
		return false
	}
	if _, err := time.LoadLocation(name); err != nil {
		return false
	}
	zones.Store(name, struct{}{})
	return true
}

func validateEnvelope(env *Envelope, now time.Time) error {
	var v validator
	if env.SpecVersion != SpecVersion {
		v.fail("specversion", "must be %q, got %q", SpecVersion, env.SpecVersion)
	}
	v.id("id", env.ID)
	v.required("source", env.Source)
	v.text("source", env.Source, MaxTextLen)
	v.required("type", env.Type)
	v.text("type", env.Type, MaxIDLen)
	v.text("subject", env.Subject, MaxTextLen)
	if env.DataContentType != "" && env.DataContentType != "application/json" {
		v.fail("datacontenttype", "must be application/json, got %q", env.DataContentType)
	}
	if env.Time.IsZero() {
		v.fail("time", "is required (RFC 3339)")
	} else if y := env.Time.UTC().Year(); y < 1 || y > 9999 {
		// Outside these years the UTC time has no RFC 3339 form, so the
		// event could not be encoded again.
		v.fail("time", "year %d (UTC) is outside 1..9999", y)
	} else if !now.IsZero() && env.Time.After(now.Add(MaxFutureSkew)) {
		return invalid(ReasonFutureTime, "time", "%s is more than %s ahead of the processor's clock", env.Time.Format(time.RFC3339), MaxFutureSkew)
	}
	if len(env.Data) == 0 || bytes.Equal(env.Data, []byte("null")) {
		v.fail("data", "is required")
	}
	if v.err != nil {
		v.err.Reason = ReasonEnvelope
		return v.err
	}
	return nil
}

// decodeData decodes a payload strictly: unknown fields are an error, so
// that a misspelt field is caught instead of silently ignored.
func decodeData(raw json.RawMessage, dst any) error {
	if len(raw) == 0 || raw[0] != '{' {
		return invalid(ReasonData, "data", "must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			// encoding/json names the embedded CartRef in the path; its
			// fields are at the top of data in JSON.
			field := strings.TrimPrefix(ute.Field, "CartRef.")
			return invalid(ReasonData, "data."+field, "must be a JSON %s", ute.Type.Kind())
		}
		return invalid(ReasonData, "data", "%v", err)
	}
	return nil
}

// validator collects the first validation failure.
type validator struct{ err *ValidationError }

func (v *validator) fail(field, format string, args ...any) {
	if v.err == nil {
		v.err = invalid(ReasonData, field, format, args...)
	}
}

func (v *validator) required(field, s string) {
	if s == "" {
		v.fail(field, "is required")
	}
}

func (v *validator) text(field, s string, max int) {
	if len(s) > max {
		v.fail(field, "is %d bytes, the limit is %d", len(s), max)
	}
}

func (v *validator) optText(field string, s *string, max int) {
	if s != nil {
		v.text(field, *s, max)
	}
}

func (v *validator) id(field, s string) {
	v.required(field, s)
	v.optID(field, s)
}

func (v *validator) optID(field, s string) {
	v.text(field, s, MaxIDLen)
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] == 0x7f {
			v.fail(field, "must not contain spaces or control characters")
			return
		}
	}
}

func (v *validator) noAnonPrefix(field, s string) {
	if len(s) >= len(AnonPrefix) && s[:len(AnonPrefix)] == AnonPrefix {
		v.fail(field, "must not start with %q, which marks guest keys", AnonPrefix)
	}
}

// absent is the value Decode presets in required integer fields whose zero
// value is valid, so that a missing (or null) field can be told from 0.
const absent = math.MinInt64

func (v *validator) present(field string, n int64) {
	if n == absent {
		v.fail(field, "is required")
	}
}

// pricesPresent checks that every item in data's "items" array has a
// unit_price_minor: a missing price must not silently become 0.
func (v *validator) pricesPresent(path string, data json.RawMessage) {
	if v.err != nil {
		return
	}
	var p struct {
		Items []struct {
			UnitPriceMinor *int64 `json:"unit_price_minor"`
		} `json:"items"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return // cannot happen: data was decoded into a superset already
	}
	for i, it := range p.Items {
		if it.UnitPriceMinor == nil {
			v.fail(fmt.Sprintf("%s[%d].unit_price_minor", path, i), "is required")
			return
		}
	}
}

func (v *validator) rangeInt(field string, n, lo, hi int64) {
	if n < lo || n > hi {
		v.fail(field, "must be between %d and %d, got %d", lo, hi, n)
	}
}

// cartRef validates the cart fields at the top of data. Field paths are
// literals so that the common, valid case allocates nothing.
func (v *validator) cartRef(r *CartRef, attrsRequired bool) {
	if r.CustomerID == "" && r.AnonymousID == "" {
		v.fail("data.customer_id", "customer_id or anonymous_id is required")
	}
	v.optID("data.customer_id", r.CustomerID)
	v.noAnonPrefix("data.customer_id", r.CustomerID)
	v.optID("data.anonymous_id", r.AnonymousID)
	v.id("data.cart_id", r.CartID)
	v.text("data.cart_type", r.CartType, MaxIDLen)
	v.text("data.site", r.Site, MaxIDLen)
	v.text("data.channel", r.Channel, MaxIDLen)
	v.text("data.legal_entity", r.LegalEntity, MaxTextLen)
	if attrsRequired || r.Currency != "" {
		if !KnownCurrency(r.Currency) {
			v.fail("data.currency", "%q is not an ISO 4217 currency code", r.Currency)
		}
	}
	if len(r.Metadata) > MaxMetadata {
		v.fail("data.metadata", "has %d entries, the limit is %d", len(r.Metadata), MaxMetadata)
	}
	for k, val := range r.Metadata {
		v.text("data.metadata", k, MaxIDLen)
		v.text("data.metadata."+k, val, MaxTextLen)
	}
}

func (v *validator) item(path string, it *Item) {
	v.id(path+".sku", it.SKU)
	v.text(path+".name", it.Name, MaxTextLen)
	v.text(path+".category", it.Category, MaxTextLen)
	v.text(path+".image_url", it.ImageURL, MaxURLLen)
	v.rangeInt(path+".quantity", it.Quantity, 1, MaxQuantity)
	v.present(path+".unit_price_minor", it.UnitPriceMinor)
	v.rangeInt(path+".unit_price_minor", it.UnitPriceMinor, 0, MaxUnitPriceMinor)
}

// itemAt validates an item and, only when it is invalid, builds its field
// path (path, or path[i] for i >= 0): the valid case allocates nothing.
func (v *validator) itemAt(path string, i int, it *Item) {
	if v.err != nil {
		return
	}
	var probe validator
	probe.item("", it)
	if probe.err == nil {
		return
	}
	if i >= 0 {
		path = fmt.Sprintf("%s[%d]", path, i)
	}
	v.item(path, it)
}

func (v *validator) items(path string, items []Item) {
	if len(items) > MaxItems {
		v.fail(path, "has %d items, the limit is %d", len(items), MaxItems)
		return
	}
	for i := range items {
		v.itemAt(path, i, &items[i])
	}
}
