// Package emporix translates Emporix webhook deliveries into cartlift's v1
// events, and verifies their Svix signatures. It is pure: no I/O, no clock
// (the caller passes the time), safe for concurrent use.
//
// The payload shapes follow Emporix's published webhook documentation
// (https://developer.emporix.io/api-references/api-guides-and-references/webhooks,
// "Events - Cart", "Events - Customer", "Events - Order"; source in
// github.com/emporix/api-references, webhooks/events-*.md) and the cart
// model of the Cart Service's OpenAPI reference (checkout/cart/api-reference/api.yml).
// Where those documents are silent, the README's "Emporix" section says
// what this package assumes.
package emporix

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Source is the CloudEvents source of the events the adapter emits.
const Source = "emporix"

// Emporix event types the adapter translates.
const (
	TypeCartCreated     = "cart.created"
	TypeCartUpdated     = "cart.updated"
	TypeCartMerged      = "cart.merged"
	TypeCartClosed      = "cart.closed"
	TypeItemAdded       = "cart.item-added"
	TypeItemUpdated     = "cart.item-updated"
	TypeItemDeleted     = "cart.item-deleted"
	TypeCustomerCreated = "customer.created"
	TypeCustomerUpdated = "customer.updated"
	TypeCustomerDeleted = "customer.deleted"
	TypeCustomerLogin   = "customer.logged.in"
	TypeOrderCreated    = "order.created"
)

// Types lists the translated types, in a stable order.
var Types = []string{TypeCartCreated, TypeCartUpdated, TypeCartMerged, TypeCartClosed,
	TypeItemAdded, TypeItemUpdated, TypeItemDeleted, TypeCustomerCreated, TypeCustomerUpdated,
	TypeCustomerDeleted, TypeCustomerLogin, TypeOrderCreated}

// IgnoredTypes are documented Emporix types of the cart, customer and
// order services that carry nothing a recovery needs: they are accepted
// and translate to nothing.
var IgnoredTypes = []string{"customer.password-reset", "customer.refresh-token", "customer.opt-in",
	"customer.email-change", "customer.email-change-request", "order.updated", "order.deleted",
	"order.cancelled", "order.status-changed"}

// Reasons of an *Error.
const (
	// ReasonMalformed: the body is not JSON, or names no event type.
	ReasonMalformed = "malformed"
	// ReasonUnknownType: the type is not one of Types or IgnoredTypes.
	ReasonUnknownType = "unknown_type"
	// ReasonInvalid: the payload lacks what a cartlift event needs, or
	// what it gives is out of cartlift's bounds.
	ReasonInvalid = "invalid"
)

// Error says why a delivery cannot be translated.
type Error struct {
	Reason string
	Msg    string
}

// Error returns the reason and the message.
func (e *Error) Error() string { return e.Reason + ": " + e.Msg }

func fail(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Delivery is one verified webhook delivery.
type Delivery struct {
	// ID is the svix-id: the same for every retry of one message.
	ID string
	// Time is the svix-timestamp; the event time of payloads without one.
	Time time.Time
	// Type is the Emporix event type.
	Type string
	// Payload is the event's JSON object.
	Payload json.RawMessage
}

// ParseBody reads a webhook body: {"type": T, "data": {...}} (also
// "eventType" for "type" and "payload" for "data"). When the body has no
// type, typeHint (the endpoint URL's ?type=) names it and the whole body
// is the payload.
func ParseBody(body []byte, typeHint string) (typ string, payload json.RawMessage, err error) {
	var w struct {
		Type      string          `json:"type"`
		EventType string          `json:"eventType"`
		Data      json.RawMessage `json:"data"`
		Payload   json.RawMessage `json:"payload"`
	}
	if !json.Valid(body) {
		return "", nil, fail(ReasonMalformed, "the body is not JSON")
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return "", nil, fail(ReasonMalformed, "the body is not a JSON object")
	}
	typ = cmpOr(w.Type, w.EventType)
	payload = w.Data
	if len(payload) == 0 {
		payload = w.Payload
	}
	if typ == "" || len(payload) == 0 {
		if typeHint == "" {
			return "", nil, fail(ReasonMalformed, `the body names no event type: {"type": ..., "data": {...}} or ?type= on the endpoint URL`)
		}
		typ, payload = typeHint, body
	}
	if p := bytes.TrimSpace(payload); len(p) == 0 || p[0] != '{' {
		return "", nil, fail(ReasonMalformed, "the event's data is not a JSON object")
	}
	return typ, payload, nil
}

// Owner is what the adapter keeps about an Emporix cart between
// deliveries: who owns it and the attributes and lines of its last
// snapshot. Item events, which name only the cart, are resolved with it.
type Owner struct {
	CartID      string            `json:"cart_id"`
	CustomerID  string            `json:"customer_id,omitempty"`
	AnonymousID string            `json:"anonymous_id,omitempty"`
	Type        string            `json:"type,omitempty"`
	Site        string            `json:"site,omitempty"`
	Channel     string            `json:"channel,omitempty"`
	Currency    string            `json:"currency,omitempty"`
	LegalEntity string            `json:"legal_entity,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Lines       []Line            `json:"lines,omitempty"`
	// Version is Emporix's metadata.version of the snapshot.
	Version    int64     `json:"version,omitempty"`
	ModifiedAt time.Time `json:"modified_at,omitzero"`
	// Closed is set by cart.closed.
	Closed bool `json:"closed,omitempty"`
}

// Key is the owner's customer key.
func (o *Owner) Key() string { return events.CustomerKey(o.CustomerID, o.AnonymousID) }

// Shopping reports whether the cart is a shopping cart (not a wishlist).
func (o *Owner) Shopping() bool { return o.Type == "" || strings.EqualFold(o.Type, "shopping") }

func (o *Owner) ref() events.CartRef {
	return events.CartRef{CustomerID: o.CustomerID, AnonymousID: o.AnonymousID, CartID: o.CartID,
		CartType: o.Type, Site: o.Site, Channel: o.Channel, Currency: o.Currency, LegalEntity: o.LegalEntity,
		Metadata: o.Metadata}
}

// line finds the snapshot line an item event names: by cart item id, then
// product id, then price id (Emporix's documentation does not say which
// id itemId is).
func (o *Owner) line(itemID, priceID string) (Line, bool) {
	for _, match := range []func(Line) bool{
		func(l Line) bool { return l.ItemID == itemID },
		func(l Line) bool { return l.ProductID == itemID },
		func(l Line) bool { return priceID != "" && l.PriceID == priceID },
	} {
		if i := slices.IndexFunc(o.Lines, match); i >= 0 {
			return o.Lines[i], true
		}
	}
	return Line{}, false
}

// Line is one line of a cart's last snapshot.
type Line struct {
	ItemID         string `json:"item_id,omitempty"`
	ProductID      string `json:"product_id,omitempty"`
	PriceID        string `json:"price_id,omitempty"`
	SKU            string `json:"sku"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
}

// View is the adapter's knowledge of Emporix carts, from earlier
// snapshots.
type View interface {
	// Owner returns the owner record of a cart.
	Owner(cartID string) (Owner, bool)
	// LatestShoppingCart returns the most recently modified shopping cart
	// of a customer (open, or closed moments ago).
	LatestShoppingCart(customerID string) (Owner, bool)
}

// Out is one cartlift event to produce: Value keyed by Key on the input
// topic.
type Out struct {
	Key   string
	ID    string
	Type  string
	Value []byte
}

// Result is what a delivery translates to.
type Result struct {
	// Events to produce on cart-events, in order.
	Events []Out
	// Owner, when set, is the cart's owner record from now on.
	Owner *Owner
	// Wait names a cart whose owner is unknown: the delivery must wait
	// until a snapshot of it arrives. Events is empty then.
	Wait string
	// Ignored says why a delivery translates to nothing.
	Ignored string
}

// Translate turns one delivery into cartlift events. Event ids derive
// from the delivery id ("emporix-<svix-id>", with "-<n>" for the n-th
// event of a delivery after the first), so a redelivery produces the same
// events, which the processor drops as repeats. Every event it returns
// passes events.Decode.
func Translate(d Delivery, v View) (Result, error) {
	t := &translation{d: d, v: v}
	if err := t.run(); err != nil {
		return Result{}, err
	}
	return t.res, nil
}

type translation struct {
	d   Delivery
	v   View
	res Result
}

func (t *translation) run() *Error {
	switch t.d.Type {
	case TypeCartCreated, TypeCartMerged:
		return t.cartHeader()
	case TypeCartUpdated:
		return t.cartSnapshot()
	case TypeCartClosed:
		return t.cartClosed()
	case TypeItemAdded, TypeItemUpdated, TypeItemDeleted:
		return t.item()
	case TypeCustomerCreated, TypeCustomerUpdated:
		return t.customer()
	case TypeCustomerDeleted:
		return t.customerDeleted()
	case TypeCustomerLogin:
		return t.login()
	case TypeOrderCreated:
		return t.order()
	}
	if slices.Contains(IgnoredTypes, t.d.Type) {
		t.res.Ignored = t.d.Type + " carries nothing cartlift uses"
		return nil
	}
	return fail(ReasonUnknownType, "%q is not an Emporix event type the adapter knows (%s)", t.d.Type, strings.Join(Types, ", "))
}

func (t *translation) decode(v any) *Error {
	if err := json.Unmarshal(t.d.Payload, v); err != nil {
		return fail(ReasonMalformed, "%s: %v", t.d.Type, err)
	}
	return nil
}

// emit encodes and validates one event.
func (t *translation) emit(typ string, at time.Time, data any) *Error {
	id := "emporix-" + t.d.ID
	if n := len(t.res.Events); n > 0 {
		id = fmt.Sprintf("%s-%d", id, n)
	}
	value, err := events.Encode(id, Source, typ, at, "", data)
	if err != nil {
		return fail(ReasonInvalid, "encoding %s: %v", typ, err)
	}
	ev, err := events.Decode(value, time.Time{})
	if err != nil {
		return fail(ReasonInvalid, "%s translates to an invalid %s: %v", t.d.Type, typ, err)
	}
	t.res.Events = append(t.res.Events, Out{Key: ev.Key(), ID: id, Type: typ, Value: value})
	return nil
}

// metadata is Emporix's metadata object of carts, customers and orders.
type metadata struct {
	CreatedAt  string      `json:"createdAt"`
	ModifiedAt string      `json:"modifiedAt"`
	Version    json.Number `json:"version"`
}

// time is the payload's modification time, else the delivery's.
func (m *metadata) time(d time.Time) time.Time {
	for _, s := range []string{m.ModifiedAt, m.CreatedAt} {
		if at, err := time.Parse(time.RFC3339Nano, s); err == nil && at.Year() >= 1 && at.Year() <= 9999 {
			return at.UTC()
		}
	}
	return d.UTC()
}

func (m *metadata) version() int64 {
	n, _, _ := minorUnits(m.Version, 0)
	return n
}

// cartHeader is the short cart of cart.created and cart.merged.
type cartHeader struct {
	ID         string   `json:"id"`
	CustomerID string   `json:"customerId"`
	Currency   string   `json:"currency"`
	SiteCode   string   `json:"siteCode"`
	Metadata   metadata `json:"metadata"`
}

// cartHeader registers the owner of a new (or merged-into) cart. It emits
// nothing: an Emporix cart opens in cartlift with its first snapshot, as
// an empty cart is never abandoned. A guest's cart.created carries no
// session id, so it registers nothing.
func (t *translation) cartHeader() *Error {
	var c cartHeader
	if err := t.decode(&c); err != nil {
		return err
	}
	if c.ID == "" {
		return fail(ReasonInvalid, "%s: id is required", t.d.Type)
	}
	t.res.Ignored = t.d.Type + " registers the cart's owner; the cart opens in cartlift with its first cart.updated"
	if c.CustomerID == "" {
		t.res.Ignored = t.d.Type + " of a guest cart names no session: the owner comes with the first cart.updated"
		return nil
	}
	o := Owner{CartID: c.ID, CustomerID: c.CustomerID, Currency: c.Currency, Site: c.SiteCode,
		Version: c.Metadata.version(), ModifiedAt: c.Metadata.time(t.d.Time)}
	if old, ok := t.v.Owner(c.ID); ok {
		if old.Key() == o.Key() && old.Version >= o.Version && len(old.Lines) > 0 {
			return nil // the snapshot we know is as new, and fuller
		}
		// Keep what the last snapshot knew that the header does not say
		// (after a merge too: the cart id, and so its lines, stay).
		o.Type, o.Channel, o.LegalEntity, o.Metadata, o.Lines = old.Type, old.Channel, old.LegalEntity, old.Metadata, old.Lines
		o.Currency, o.Site = cmpOr(o.Currency, old.Currency), cmpOr(o.Site, old.Site)
		o.Version = max(o.Version, old.Version)
	}
	t.res.Owner = &o
	return nil
}

// cart is the full cart of cart.updated (Emporix's cart model).
type cart struct {
	ID            string `json:"id"`
	CustomerID    string `json:"customerId"`
	SessionID     string `json:"sessionId"`
	LegalEntityID string `json:"legalEntityId"`
	Status        string `json:"status"`
	OrderID       string `json:"orderId"`
	Currency      string `json:"currency"`
	Type          string `json:"type"`
	SiteCode      string `json:"siteCode"`
	Channel       struct {
		Name   string `json:"name"`
		Source string `json:"source"`
	} `json:"channel"`
	Items           []cartItem                 `json:"items"`
	Mixins          map[string]json.RawMessage `json:"mixins"`
	Metadata        metadata                   `json:"metadata"`
	CalculatedPrice *struct {
		FinalPrice *price `json:"finalPrice"`
	} `json:"calculatedPrice"`
	TotalPrice *struct {
		Amount json.Number `json:"amount"`
	} `json:"totalPrice"`
}

type price struct {
	NetValue   json.Number `json:"netValue"`
	GrossValue json.Number `json:"grossValue"`
}

type cartItem struct {
	ID       string      `json:"id"`
	Quantity json.Number `json:"quantity"`
	Product  struct {
		ID     string `json:"id"`
		SKU    string `json:"sku"`
		Code   string `json:"code"`
		Name   string `json:"name"`
		Images []struct {
			URL string `json:"url"`
		} `json:"images"`
	} `json:"product"`
	Price struct {
		PriceID         string      `json:"priceId"`
		EffectiveAmount json.Number `json:"effectiveAmount"`
		OriginalAmount  json.Number `json:"originalAmount"`
	} `json:"price"`
	UnitPrice price `json:"unitPrice"`
}

// owner is the customer key of a snapshot: the customer, else the guest's
// session, else (a guest cart without a session) the cart itself.
func (c *cart) owner() (customerID, anonymousID string) {
	switch {
	case c.CustomerID != "":
		return c.CustomerID, ""
	case c.SessionID != "":
		return "", c.SessionID
	}
	return "", "cart-" + c.ID
}

func (t *translation) cartSnapshot() *Error {
	var c cart
	if err := t.decode(&c); err != nil {
		return err
	}
	if c.ID == "" {
		return fail(ReasonInvalid, "cart.updated: id is required")
	}
	digits, ok := events.CurrencyDigits(c.Currency)
	if !ok {
		return fail(ReasonInvalid, "cart.updated: currency %q is not an ISO 4217 code", c.Currency)
	}
	cust, anon := c.owner()
	o := Owner{CartID: c.ID, CustomerID: cust, AnonymousID: anon, Type: c.Type, Site: c.SiteCode,
		Channel: c.Channel.Name, Currency: c.Currency, LegalEntity: c.LegalEntityID,
		Metadata: flattenMixins(c.Mixins), Version: c.Metadata.version(), ModifiedAt: c.Metadata.time(t.d.Time)}
	at := o.ModifiedAt
	var items []events.Item
	for i, it := range c.Items {
		li, item, err := cartLine(i, &it, digits)
		if err != nil {
			return err
		}
		o.Lines = append(o.Lines, li)
		// Emporix keeps a product on separate lines (keepAsSeparateLineItem);
		// cartlift has one line per SKU: the quantities add up.
		if j := slices.IndexFunc(items, func(x events.Item) bool { return x.SKU == item.SKU }); j >= 0 {
			items[j].Quantity = min(items[j].Quantity+item.Quantity, events.MaxQuantity)
			continue
		}
		items = append(items, item)
	}
	if old, ok := t.v.Owner(c.ID); ok && old.Key() == o.Key() && old.Version > o.Version && o.Version > 0 {
		// An older snapshot delivered late: it must not undo a newer one.
		t.res.Ignored = fmt.Sprintf("cart.updated of version %d is older than the known version %d", o.Version, old.Version)
		return nil
	}
	t.res.Owner = &o
	ref := o.ref()
	switch {
	case c.OrderID != "":
		total, err := cartTotal(&c, items, digits)
		if err != nil {
			return err
		}
		o.Closed = true
		return t.emit(events.TypeCheckoutCompleted, at, events.CheckoutCompleted{CartRef: ref, OrderID: c.OrderID, TotalMinor: total})
	case strings.EqualFold(c.Status, "CLOSED"):
		o.Closed = true
		return t.emit(events.TypeCartDiscarded, at, events.CartDiscarded{CartRef: ref, Reason: "closed in Emporix"})
	}
	if items == nil {
		items = []events.Item{}
	}
	return t.emit(events.TypeCartUpdated, at, events.CartUpdated{CartRef: ref, Items: items})
}

// cartLine maps one Emporix cart item.
func cartLine(i int, it *cartItem, digits int) (Line, events.Item, *Error) {
	p := &it.Product
	sku := skuOf(cmpOr(p.ID, p.Code, p.SKU, it.ID))
	if sku == "" {
		return Line{}, events.Item{}, fail(ReasonInvalid, "cart.updated: items[%d] has no product sku, code or id", i)
	}
	unit, ok, err := firstAmount(digits, it.Price.EffectiveAmount, it.Price.OriginalAmount, it.UnitPrice.GrossValue)
	if err != nil {
		return Line{}, events.Item{}, fail(ReasonInvalid, "cart.updated: items[%d] price: %v", i, err)
	}
	if !ok {
		unit = 0 // no price at all: the line counts 0
	}
	qty, _, err := minorUnits(it.Quantity, 0)
	if err != nil {
		return Line{}, events.Item{}, fail(ReasonInvalid, "cart.updated: items[%d].quantity: %v", i, err)
	}
	qty = max(qty, 1)
	item := events.Item{SKU: sku, Name: p.Name, Quantity: min(qty, events.MaxQuantity), UnitPriceMinor: unit}
	if len(p.Images) > 0 && len(p.Images[0].URL) <= events.MaxURLLen {
		item.ImageURL = p.Images[0].URL
	}
	if len(item.Name) > events.MaxTextLen {
		item.Name = item.Name[:events.MaxTextLen]
	}
	return Line{ItemID: it.ID, ProductID: p.ID, PriceID: it.Price.PriceID, SKU: sku, UnitPriceMinor: unit}, item, nil
}

// cartTotal is what the cart costs: its calculated final gross price,
// else its total price, else the sum of its lines.
func cartTotal(c *cart, items []events.Item, digits int) (int64, *Error) {
	var nums []json.Number
	if c.CalculatedPrice != nil && c.CalculatedPrice.FinalPrice != nil {
		nums = append(nums, c.CalculatedPrice.FinalPrice.GrossValue)
	}
	if c.TotalPrice != nil {
		nums = append(nums, c.TotalPrice.Amount)
	}
	total, ok, err := firstAmount(digits, nums...)
	if err != nil {
		return 0, fail(ReasonInvalid, "cart.updated: total: %v", err)
	}
	if !ok {
		for _, it := range items {
			total += it.Quantity * it.UnitPriceMinor
		}
	}
	return max(total, 0), nil
}

// firstAmount converts the first non-empty amount.
func firstAmount(digits int, nums ...json.Number) (int64, bool, error) {
	for _, n := range nums {
		v, ok, err := minorUnits(n, digits)
		if err != nil || ok {
			return v, ok, err
		}
	}
	return 0, false, nil
}

func (t *translation) cartClosed() *Error {
	var c cartHeader
	if err := t.decode(&c); err != nil {
		return err
	}
	if c.ID == "" {
		return fail(ReasonInvalid, "cart.closed: id is required")
	}
	o, known := t.v.Owner(c.ID)
	if !known {
		if c.CustomerID == "" {
			t.res.Wait = c.ID
			return nil
		}
		o = Owner{CartID: c.ID, CustomerID: c.CustomerID, Currency: c.Currency, Site: c.SiteCode}
	}
	o.Closed = true
	o.ModifiedAt = c.Metadata.time(t.d.Time)
	t.res.Owner = &o
	return t.emit(events.TypeCartDiscarded, o.ModifiedAt, events.CartDiscarded{CartRef: o.ref(), Reason: "closed in Emporix"})
}

// itemEvent is the payload of cart.item-added, -updated and -deleted.
type itemEvent struct {
	Tenant   string      `json:"tenant"`
	CartID   string      `json:"cartId"`
	ItemID   string      `json:"itemId"`
	Quantity json.Number `json:"quantity"`
	PriceID  string      `json:"priceId"`
}

func (t *translation) item() *Error {
	var e itemEvent
	if err := t.decode(&e); err != nil {
		return err
	}
	if e.CartID == "" || e.ItemID == "" {
		return fail(ReasonInvalid, "%s: cartId and itemId are required", t.d.Type)
	}
	o, ok := t.v.Owner(e.CartID)
	if !ok {
		t.res.Wait = e.CartID
		return nil
	}
	if len(o.Lines) > 0 && t.d.Time.Before(o.ModifiedAt.Truncate(time.Second)) {
		// The cart's last snapshot is newer and already has this change
		// (a late delivery, or one that waited for the snapshot). The
		// delivery's time has whole seconds only: within the snapshot's
		// second, the item event counts as newer.
		t.res.Ignored = fmt.Sprintf("%s from %s is older than the cart's snapshot of %s", t.d.Type,
			t.d.Time.UTC().Format(time.RFC3339), o.ModifiedAt.Format(time.RFC3339Nano))
		return nil
	}
	line, found := o.line(e.ItemID, e.PriceID)
	sku, unit := skuOf(e.ItemID), int64(0)
	if found {
		sku, unit = line.SKU, line.UnitPriceMinor
	}
	ref := o.ref()
	ref.Metadata = nil // attributes come with snapshots
	at := t.d.Time.UTC()
	if t.d.Type == TypeItemDeleted {
		return t.emit(events.TypeItemRemoved, at, events.ItemRemoved{CartRef: ref, SKU: sku})
	}
	qty, present, err := minorUnits(e.Quantity, 0)
	if err != nil || !present || qty < 0 {
		return fail(ReasonInvalid, "%s: quantity %q is not a non-negative number", t.d.Type, e.Quantity)
	}
	return t.emit(events.TypeItemUpdated, at, events.ItemUpdated{CartRef: ref, SKU: sku,
		Quantity: min(qty, events.MaxQuantity), UnitPriceMinor: unit})
}

// customer is Emporix's customer of customer.created and customer.updated.
type customer struct {
	ID                string   `json:"id"`
	CustomerNumber    string   `json:"customerNumber"`
	FirstName         string   `json:"firstName"`
	MiddleName        string   `json:"middleName"`
	LastName          string   `json:"lastName"`
	ContactEmail      string   `json:"contactEmail"`
	PreferredLanguage string   `json:"preferredLanguage"`
	Metadata          metadata `json:"metadata"`
}

func (t *translation) customer() *Error {
	var c customer
	if err := t.decode(&c); err != nil {
		return err
	}
	id := cmpOr(c.ID, c.CustomerNumber)
	if id == "" {
		return fail(ReasonInvalid, "%s: id or customerNumber is required", t.d.Type)
	}
	d := events.CustomerUpdated{CustomerID: id}
	set := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	d.Email = set(c.ContactEmail)
	d.Name = set(strings.Join(slices.DeleteFunc([]string{c.FirstName, c.MiddleName, c.LastName}, func(s string) bool { return s == "" }), " "))
	d.Locale = set(c.PreferredLanguage)
	return t.emit(events.TypeCustomerUpdated, c.Metadata.time(t.d.Time), d)
}

func (t *translation) customerDeleted() *Error {
	var c struct {
		ID             string `json:"id"`
		CustomerNumber string `json:"customerNumber"`
	}
	if err := t.decode(&c); err != nil {
		return err
	}
	id := cmpOr(c.CustomerNumber, c.ID)
	if id == "" {
		return fail(ReasonInvalid, "customer.deleted: customerNumber is required")
	}
	return t.emit(events.TypeCustomerErased, t.d.Time.UTC(), events.CustomerErased{CustomerID: id})
}

func (t *translation) login() *Error {
	var l struct {
		SessionID  string `json:"sessionId"`
		CustomerID string `json:"customerId"`
	}
	if err := t.decode(&l); err != nil {
		return err
	}
	if l.CustomerID == "" {
		return fail(ReasonInvalid, "customer.logged.in: customerId is required")
	}
	return t.emit(events.TypeCustomerLoggedIn, t.d.Time.UTC(), events.CustomerLoggedIn{CustomerID: l.CustomerID, AnonymousID: l.SessionID})
}

// order is what the adapter reads of order.created.
type order struct {
	ID       string `json:"id"`
	Customer struct {
		ID string `json:"id"`
	} `json:"customer"`
	Currency   string      `json:"currency"`
	TotalPrice json.Number `json:"totalPrice"`
	Discounts  []struct {
		Code string `json:"code"`
	} `json:"discounts"`
	Metadata metadata `json:"metadata"`
}

// order turns an order into the checkout of the customer's shopping cart.
// Emporix's order.created names no cart; a customer has at most one open
// cart of a type, so the customer's latest shopping cart is the one.
func (t *translation) order() *Error {
	var o order
	if err := t.decode(&o); err != nil {
		return err
	}
	if o.ID == "" {
		return fail(ReasonInvalid, "order.created: id is required")
	}
	if o.Customer.ID == "" {
		t.res.Ignored = "order.created of a guest: cartlift cannot tell its cart"
		return nil
	}
	c, ok := t.v.LatestShoppingCart(o.Customer.ID)
	if !ok {
		t.res.Ignored = "order.created: no shopping cart of the customer is known"
		return nil
	}
	cur := cmpOr(o.Currency, c.Currency)
	digits, ok := events.CurrencyDigits(cur)
	if !ok {
		return fail(ReasonInvalid, "order.created: currency %q is not an ISO 4217 code", cur)
	}
	total, _, err := minorUnits(o.TotalPrice, digits)
	if err != nil {
		return fail(ReasonInvalid, "order.created: totalPrice: %v", err)
	}
	ref := c.ref()
	ref.Metadata = nil
	d := events.CheckoutCompleted{CartRef: ref, OrderID: o.ID, TotalMinor: max(total, 0)}
	for _, dc := range o.Discounts {
		if dc.Code != "" && len(d.DiscountCodes) < events.MaxDiscountCodes && !slices.Contains(d.DiscountCodes, dc.Code) {
			d.DiscountCodes = append(d.DiscountCodes, dc.Code)
		}
	}
	c.Closed = true
	t.res.Owner = &c
	return t.emit(events.TypeCheckoutCompleted, o.Metadata.time(t.d.Time), d)
}

// flattenMixins maps Emporix's mixins ({"name": {"field": value}}) to
// cartlift's flat metadata: "mixins.<name>.<field>" = the value (a string
// as it is, anything else as JSON), in key order, skipping nulls and what
// exceeds cartlift's bounds, at most events.MaxMetadata entries.
func flattenMixins(m map[string]json.RawMessage) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := map[string]string{}
	add := func(k string, raw json.RawMessage) {
		raw = bytes.TrimSpace(raw)
		if len(out) >= events.MaxMetadata || len(k) > events.MaxIDLen || len(raw) == 0 || string(raw) == "null" {
			return
		}
		val := string(raw)
		var s string
		if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
			val = s
		} else {
			var buf bytes.Buffer
			if json.Compact(&buf, raw) == nil {
				val = buf.String()
			}
		}
		if len(val) <= events.MaxTextLen {
			out[k] = val
		}
	}
	for _, name := range sortedKeys(m) {
		raw := m[name]
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
			add("mixins."+name, raw)
			continue
		}
		for _, f := range sortedKeys(fields) {
			add("mixins."+name+"."+f, fields[f])
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// skuOf makes an Emporix id a cartlift SKU: spaces and control characters
// (Emporix's own examples have SKUs like "Mobile Phone s24 gross") become
// '_', and it is cut to events.MaxIDLen bytes.
func skuOf(id string) string {
	b := []byte(id)
	for i, c := range b {
		if c < 0x21 || c == 0x7f {
			b[i] = '_'
		}
	}
	if len(b) > events.MaxIDLen {
		b = b[:events.MaxIDLen]
	}
	return string(b)
}

func cmpOr(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
