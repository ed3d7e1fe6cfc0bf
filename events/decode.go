package events

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	_ "time/tzdata" // time zone names validate the same on every host
	"unicode/utf8"
	"unsafe"
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
//
// It reads the record in one pass (see scan.go); the strings of the event
// it returns do not alias value, which the caller may reuse.
func Decode(value []byte, now time.Time) (*Event, error) {
	if len(value) > MaxAssignedBytes {
		return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
	}
	p := scanner{buf: value}
	var env Envelope
	p.envelope(&env)
	if p.err != nil {
		// The record is valid UTF-8 if it is read to its end; else it
		// must be checked, as that error comes before the others.
		if !utf8.Valid(value) {
			return nil, invalid(ReasonMalformed, "", "record is not valid UTF-8")
		}
		if len(value) > MaxRecordBytes {
			return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
		}
		return nil, invalid(ReasonMalformed, "", "%v", p.err)
	}
	if err := checkEnvelope(&env, len(value), now); err != nil {
		return nil, err
	}
	ev := p.inline
	if ev == nil || p.inlineType != env.Type {
		// data came before the type (or the type changed after it): read
		// data again, now that the type is known.
		ev = newEvent(env.Type)
		p.resetData()
		p.pos, p.depth = p.dataStart, 1
		p.payload(ev)
	}
	if err := p.dataError(); err != nil {
		return nil, err
	}
	ev.ID, ev.Source, ev.Subject = env.ID, env.Source, env.Subject
	ev.Time = env.Time.UTC()
	p.strBytes -= len(env.SpecVersion) + len(env.DataContentType) + len(env.Type) // not kept
	p.finish(ev)
	ev.Type = inputType(env.Type)
	if err := validateData(ev, p.prices); err != nil {
		return nil, err
	}
	return ev, nil
}

// checkEnvelope applies the rules of the envelope, in the order Decode
// reports them: the size of a record not of type cart.assigned, the
// envelope's attributes, and the type.
func checkEnvelope(env *Envelope, size int, now time.Time) error {
	if size > MaxRecordBytes && env.Type != TypeCartAssigned {
		return invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", size, MaxRecordBytes)
	}
	if err := validateEnvelope(env, now); err != nil {
		return err
	}
	switch {
	case inputType(env.Type) != "":
		return nil
	case env.Type == TypeDecision, env.Type == TypeOutcome, env.Type == TypeSuppressed, env.Type == TypeDeferred:
		return invalid(ReasonNotForInput, "type", "%q is an output type of cartlift, not an input event", env.Type)
	}
	return &ValidationError{Reason: ReasonUnknownType, Field: "type", Msg: fmt.Sprintf("%q is not a v1 event type", env.Type), err: ErrUnknownType}
}

// inputType returns the constant of the input type typ, "" for another.
func inputType(typ string) string {
	switch typ {
	case TypeItemAdded:
		return TypeItemAdded
	case TypeItemUpdated:
		return TypeItemUpdated
	case TypeItemRemoved:
		return TypeItemRemoved
	case TypeCartUpdated:
		return TypeCartUpdated
	case TypeCartDiscarded:
		return TypeCartDiscarded
	case TypeCheckoutStarted:
		return TypeCheckoutStarted
	case TypeCheckoutCompleted:
		return TypeCheckoutCompleted
	case TypeCustomerLoggedIn:
		return TypeCustomerLoggedIn
	case TypeCustomerUpdated:
		return TypeCustomerUpdated
	case TypeCustomerErased:
		return TypeCustomerErased
	case TypeCartAssigned:
		return TypeCartAssigned
	}
	return ""
}

// customerFields holds what the pointer fields of a CustomerUpdated point
// to, allocated with the event.
type customerFields struct {
	strs    [5]string
	consent bool
}

// newEvent returns an event of input type typ with its payload allocated
// (in one allocation with the event), nil for another type. absent marks
// the required numbers whose zero value is valid: a field missing from
// the JSON (or null) keeps it.
func newEvent(typ string) *Event {
	switch typ {
	case TypeItemAdded:
		c := &struct {
			e Event
			d ItemAdded
		}{}
		c.d.Item.UnitPriceMinor = absent
		c.e.ItemAdded = &c.d
		return &c.e
	case TypeItemUpdated:
		c := &struct {
			e Event
			d ItemUpdated
		}{}
		c.d.Quantity = absent
		c.e.ItemUpdated = &c.d
		return &c.e
	case TypeItemRemoved:
		c := &struct {
			e Event
			d ItemRemoved
		}{}
		c.e.ItemRemoved = &c.d
		return &c.e
	case TypeCartUpdated:
		c := &struct {
			e Event
			d CartUpdated
		}{}
		c.e.CartUpdated = &c.d
		return &c.e
	case TypeCartDiscarded:
		c := &struct {
			e Event
			d CartDiscarded
		}{}
		c.e.CartDiscarded = &c.d
		return &c.e
	case TypeCheckoutStarted:
		c := &struct {
			e Event
			d CheckoutStarted
		}{}
		c.e.CheckoutStarted = &c.d
		return &c.e
	case TypeCheckoutCompleted:
		c := &struct {
			e Event
			d CheckoutCompleted
		}{}
		c.d.TotalMinor = absent
		c.e.CheckoutCompleted = &c.d
		return &c.e
	case TypeCustomerLoggedIn:
		c := &struct {
			e Event
			d CustomerLoggedIn
		}{}
		c.e.CustomerLoggedIn = &c.d
		return &c.e
	case TypeCustomerUpdated:
		c := &customerEvent{}
		c.e.CustomerUpdated = &c.d
		return &c.e
	case TypeCustomerErased:
		c := &struct {
			e Event
			d CustomerErased
		}{}
		c.e.CustomerErased = &c.d
		return &c.e
	case TypeCartAssigned:
		c := &struct {
			e Event
			d CartAssigned
		}{}
		c.e.CartAssigned = &c.d
		return &c.e
	}
	return nil
}

// customerEvent is a customer.updated event with its payload and what the
// payload's pointers point to.
type customerEvent struct {
	e Event // first: &c.e is c
	d CustomerUpdated
	s customerFields
}

// customerSlots returns the storage of the pointer fields of ev, a
// customer.updated event made by newEvent.
func customerSlots(ev *Event) *customerFields {
	return &(*customerEvent)(unsafe.Pointer(ev)).s
}

// cartRefOf returns the cart reference of a cart-scoped event, nil for
// another.
func cartRefOf(e *Event) *CartRef {
	switch {
	case e.ItemAdded != nil:
		return &e.ItemAdded.CartRef
	case e.ItemUpdated != nil:
		return &e.ItemUpdated.CartRef
	case e.ItemRemoved != nil:
		return &e.ItemRemoved.CartRef
	case e.CartUpdated != nil:
		return &e.CartUpdated.CartRef
	case e.CartDiscarded != nil:
		return &e.CartDiscarded.CartRef
	case e.CheckoutStarted != nil:
		return &e.CheckoutStarted.CartRef
	case e.CheckoutCompleted != nil:
		return &e.CheckoutCompleted.CartRef
	case e.CartAssigned != nil:
		return &e.CartAssigned.CartRef
	}
	return nil
}

// validateData applies the rules of the payload of ev, a decoded event of
// an input type. prices[i] says whether element i of the payload's items
// has a unit_price_minor (cart.updated and cart.assigned).
func validateData(ev *Event, prices []bool) *ValidationError {
	var v validator
	switch {
	case ev.ItemAdded != nil:
		v.cartRef(&ev.ItemAdded.CartRef, true)
		v.itemAt("data.item", -1, &ev.ItemAdded.Item)
	case ev.ItemUpdated != nil:
		d := ev.ItemUpdated
		v.cartRef(&d.CartRef, false)
		v.id("data.sku", d.SKU)
		v.present("data.quantity", d.Quantity)
		v.rangeInt("data.quantity", d.Quantity, 0, MaxQuantity)
		v.rangeInt("data.unit_price_minor", d.UnitPriceMinor, 0, MaxUnitPriceMinor)
	case ev.ItemRemoved != nil:
		d := ev.ItemRemoved
		v.cartRef(&d.CartRef, false)
		v.id("data.sku", d.SKU)
	case ev.CartUpdated != nil:
		d := ev.CartUpdated
		v.cartRef(&d.CartRef, true)
		v.pricesPresent("data.items", prices[:min(len(d.Items), len(prices))])
		v.items("data.items", d.Items)
	case ev.CartDiscarded != nil:
		d := ev.CartDiscarded
		v.cartRef(&d.CartRef, false)
		v.text("data.reason", d.Reason, MaxTextLen)
	case ev.CheckoutStarted != nil:
		v.cartRef(&ev.CheckoutStarted.CartRef, false)
	case ev.CheckoutCompleted != nil:
		d := ev.CheckoutCompleted
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
	case ev.CustomerLoggedIn != nil:
		d := ev.CustomerLoggedIn
		v.id("data.customer_id", d.CustomerID)
		v.noAnonPrefix("data.customer_id", d.CustomerID)
		v.optID("data.anonymous_id", d.AnonymousID)
	case ev.CustomerUpdated != nil:
		d := ev.CustomerUpdated
		v.id("data.customer_id", d.CustomerID)
		v.noAnonPrefix("data.customer_id", d.CustomerID)
		v.optText("data.email", d.Email, 254)
		v.optText("data.name", d.Name, MaxTextLen)
		v.optText("data.locale", d.Locale, 35)
		v.optText("data.segment", d.Segment, MaxIDLen)
		if d.TimeZone != nil && *d.TimeZone != "" && !KnownTimeZone(*d.TimeZone) {
			v.fail("data.time_zone", "%q is not an IANA time zone", *d.TimeZone)
		}
	case ev.CustomerErased != nil:
		d := ev.CustomerErased
		v.id("data.customer_id", d.CustomerID)
		v.noAnonPrefix("data.customer_id", d.CustomerID)
	case ev.CartAssigned != nil:
		d := ev.CartAssigned
		v.cartRef(&d.CartRef, true)
		if d.CustomerID == "" {
			v.fail("data.customer_id", "is required")
		}
		v.id("data.from_key", d.FromKey)
		v.pricesPresent("data.items", prices[:min(len(d.Items), len(prices))])
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
	}
	return v.err
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

// textAt is text for the field prefix+key, a path built only when s is
// too long.
func (v *validator) textAt(prefix, key, s string, max int) {
	if len(s) > max {
		v.text(prefix+key, s, max)
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

// pricesPresent checks that every item of an items array has a
// unit_price_minor (has[i] for item i): a missing price must not silently
// become 0.
func (v *validator) pricesPresent(path string, has []bool) {
	if v.err != nil {
		return
	}
	for i, ok := range has {
		if !ok {
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
		v.textAt("data.metadata.", k, val, MaxTextLen)
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
