// Package events is cartlift's v1 event contract: the CloudEvents 1.0
// structured-JSON envelope, the typed payload of every v1 event type, the
// decoder with validation, the decision and outcome records cartlift emits,
// and the default topic names.
//
// The package does no I/O. Everything in it is safe for concurrent use.
package events

import (
	"encoding/json"
	"time"
)

// Default topic names. Every topic can be renamed by configuration.
const (
	TopicEvents    = "cart-events"
	TopicDecisions = "cart-decisions"
	TopicOutcomes  = "cart-outcomes"
	TopicDLQ       = "cart-events.dlq"
	// TopicSuppressions carries the steps that came due and were not
	// sent (cart.step.suppressed) or were deferred (cart.step.deferred).
	TopicSuppressions = "cart-suppressions"
	// TopicShadowDecisions carries the decisions of shadow flows
	// (cart.abandonment.decided with shadow: true): evaluated, never
	// actioned; only the analytics sink reads it.
	TopicShadowDecisions = "cart-decisions.shadow"
)

// SpecVersion is the only CloudEvents spec version accepted.
const SpecVersion = "1.0"

// Event types of contract v1 that producers send.
const (
	TypeItemAdded         = "cart.item_added"
	TypeItemUpdated       = "cart.item_updated"
	TypeItemRemoved       = "cart.item_removed"
	TypeCartUpdated       = "cart.updated"
	TypeCartDiscarded     = "cart.discarded"
	TypeCheckoutStarted   = "checkout.started"
	TypeCheckoutCompleted = "checkout.completed"
	TypeCustomerLoggedIn  = "customer.logged_in"
	TypeCustomerUpdated   = "customer.updated"
	TypeCustomerErased    = "customer.erased"
	// TypeCartAssigned is emitted by cartlift itself when a guest's cart
	// moves to the customer who logged in.
	TypeCartAssigned = "cart.assigned"
)

// Types cartlift emits on its output topics.
const (
	TypeDecision = "cart.abandonment.decided"
	TypeOutcome  = "cart.outcome"
	// TypeSuppressed and TypeDeferred are on the suppressions topic: a
	// step that came due and was not sent (Suppression), a step deferred
	// by quiet hours (Deferral).
	TypeSuppressed = "cart.step.suppressed"
	TypeDeferred   = "cart.step.deferred"
)

// InputTypes lists every v1 input type, in a stable order.
var InputTypes = []string{
	TypeItemAdded, TypeItemUpdated, TypeItemRemoved, TypeCartUpdated,
	TypeCartDiscarded, TypeCheckoutStarted, TypeCheckoutCompleted,
	TypeCustomerLoggedIn, TypeCustomerUpdated, TypeCustomerErased,
	TypeCartAssigned,
}

// Envelope is the CloudEvents 1.0 structured-mode JSON envelope. Data holds
// the raw payload; Decode turns it into a typed Event.
type Envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	Subject         string          `json:"subject,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// Item is a line item as producers send it. Money is in minor units of the
// cart's currency (cents for EUR); there are no floats anywhere.
type Item struct {
	SKU            string `json:"sku"`
	Name           string `json:"name,omitempty"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	Category       string `json:"category,omitempty"`
	ImageURL       string `json:"image_url,omitempty"`
}

// CartRef identifies the cart an event is about and carries the cart's
// attributes. Exactly one of CustomerID and AnonymousID identifies the owner;
// when both are set, CustomerID wins.
type CartRef struct {
	CustomerID  string            `json:"customer_id,omitempty"`
	AnonymousID string            `json:"anonymous_id,omitempty"`
	CartID      string            `json:"cart_id"`
	CartType    string            `json:"cart_type,omitempty"`
	Site        string            `json:"site,omitempty"`
	Channel     string            `json:"channel,omitempty"`
	Currency    string            `json:"currency,omitempty"`
	LegalEntity string            `json:"legal_entity,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// OwnerKey is the customer key the cart belongs to: the customer id, or
// "anon:<anonymous_id>" for a guest. It is the Kafka record key.
func (r CartRef) OwnerKey() string { return CustomerKey(r.CustomerID, r.AnonymousID) }

// CustomerKey returns the record key for a customer id or, when it is empty,
// for an anonymous id ("anon:<id>"). It returns "" when both are empty.
func CustomerKey(customerID, anonymousID string) string {
	if customerID != "" {
		return customerID
	}
	if anonymousID != "" {
		return AnonPrefix + anonymousID
	}
	return ""
}

// AnonPrefix starts every guest's customer key.
const AnonPrefix = "anon:"

// ItemAdded is the data of cart.item_added. Adding a SKU already in the cart
// adds to its quantity and takes the new price and attributes.
type ItemAdded struct {
	CartRef
	Item Item `json:"item"`
}

// ItemUpdated is the data of cart.item_updated: the new quantity of a SKU;
// quantity 0 removes it. A non-zero UnitPriceMinor also updates the price.
type ItemUpdated struct {
	CartRef
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor,omitempty"`
}

// ItemRemoved is the data of cart.item_removed.
type ItemRemoved struct {
	CartRef
	SKU string `json:"sku"`
}

// CartUpdated is the data of cart.updated: a full snapshot that replaces
// the cart's items and attributes.
type CartUpdated struct {
	CartRef
	Items []Item `json:"items"`
}

// CartDiscarded is the data of cart.discarded.
type CartDiscarded struct {
	CartRef
	Reason string `json:"reason,omitempty"`
}

// CheckoutStarted is the data of checkout.started.
type CheckoutStarted struct {
	CartRef
}

// CheckoutCompleted is the data of checkout.completed. TotalMinor is what
// the customer paid, after discounts.
type CheckoutCompleted struct {
	CartRef
	OrderID       string   `json:"order_id"`
	TotalMinor    int64    `json:"total_minor"`
	DiscountCodes []string `json:"discount_codes,omitempty"`
}

// CustomerLoggedIn is the data of customer.logged_in. AnonymousID, when set,
// names the guest session whose carts follow the customer.
type CustomerLoggedIn struct {
	CustomerID  string `json:"customer_id"`
	AnonymousID string `json:"anonymous_id,omitempty"`
}

// CustomerUpdated is the data of customer.updated. Nil pointer fields are
// left unchanged; an empty string clears a field.
type CustomerUpdated struct {
	CustomerID       string  `json:"customer_id"`
	Email            *string `json:"email,omitempty"`
	Name             *string `json:"name,omitempty"`
	Locale           *string `json:"locale,omitempty"`
	TimeZone         *string `json:"time_zone,omitempty"`
	Segment          *string `json:"segment,omitempty"`
	MarketingConsent *bool   `json:"marketing_consent,omitempty"`
}

// CustomerErased is the data of customer.erased (right to be forgotten).
type CustomerErased struct {
	CustomerID string `json:"customer_id"`
}

// CartAssigned is the data of cart.assigned: a guest's cart, as a full
// snapshot, now owned by CustomerID.
//
// The cart keeps its life across the move: Version, LastActivity and the
// decision history travel with it, so a flow in progress goes on where it
// was (a step already sent is not sent again) and an assigned cart is not
// new activity.
type CartAssigned struct {
	CartRef
	FromKey      string           `json:"from_key"`
	Items        []Item           `json:"items"`
	CreatedAt    time.Time        `json:"created_at"`
	ModifiedAt   time.Time        `json:"modified_at"`
	LastActivity time.Time        `json:"last_activity,omitzero"`
	Version      int64            `json:"version,omitempty"`
	Decisions    []AssignedRecord `json:"decisions,omitempty"`
	// Cause is the input event of the cart's last activity under the
	// guest's key (Topic empty), when known: the cause of the steps the
	// customer's side makes due from it.
	Cause *Cause `json:"cause,omitempty"`
}

// AssignedRecord is one entry of the decision history of an assigned cart.
type AssignedRecord struct {
	ID        string    `json:"id,omitempty"`
	Flow      string    `json:"flow"`
	Step      string    `json:"step"`
	StepIndex int       `json:"step_index"`
	Version   int64     `json:"version"`
	At        time.Time `json:"at"`
	// Due is the step's due time when it differs from At (deferred by
	// quiet hours, or combined early).
	Due      time.Time `json:"due,omitzero"`
	Holdout  bool      `json:"holdout,omitempty"`
	Skipped  bool      `json:"skipped,omitempty"`
	Discount bool      `json:"discount,omitempty"`
	// Suppressed names the guard that stopped the step, if one did.
	Suppressed string `json:"suppressed,omitempty"`
	// Cause is the input event that made the step due (Topic empty),
	// when known.
	Cause *Cause `json:"cause,omitempty"`
	// Shadow marks a record of a shadow flow (evaluated, never sent).
	Shadow bool `json:"shadow,omitempty"`
}

// Position is where an input event was read: its topic, partition and
// offset. A backtest over a JSON-lines file uses Partition -1 and the
// line number (from 1) as Offset.
type Position struct {
	Topic     string
	Partition int32
	Offset    int64
}

// MaxAssignedBytes bounds a cart.assigned record, which carries a whole
// cart and its history and may exceed MaxRecordBytes.
const MaxAssignedBytes = 1 << 20

// Event is a decoded, validated input event. Exactly one payload pointer is
// set, matching Type.
type Event struct {
	ID      string
	Source  string
	Type    string
	Time    time.Time
	Subject string
	// Pos says where the runtime read the event; Decode leaves it nil. The
	// fold copies it into the cart an activity is about, as the cause of
	// the steps it makes due (it never keeps the pointer).
	Pos *Position

	ItemAdded         *ItemAdded
	ItemUpdated       *ItemUpdated
	ItemRemoved       *ItemRemoved
	CartUpdated       *CartUpdated
	CartDiscarded     *CartDiscarded
	CheckoutStarted   *CheckoutStarted
	CheckoutCompleted *CheckoutCompleted
	CustomerLoggedIn  *CustomerLoggedIn
	CustomerUpdated   *CustomerUpdated
	CustomerErased    *CustomerErased
	CartAssigned      *CartAssigned
}

// Cart returns the cart reference of a cart-scoped event and false for
// customer-scoped events (login, profile, erasure).
func (e *Event) Cart() (CartRef, bool) {
	switch {
	case e.ItemAdded != nil:
		return e.ItemAdded.CartRef, true
	case e.ItemUpdated != nil:
		return e.ItemUpdated.CartRef, true
	case e.ItemRemoved != nil:
		return e.ItemRemoved.CartRef, true
	case e.CartUpdated != nil:
		return e.CartUpdated.CartRef, true
	case e.CartDiscarded != nil:
		return e.CartDiscarded.CartRef, true
	case e.CheckoutStarted != nil:
		return e.CheckoutStarted.CartRef, true
	case e.CheckoutCompleted != nil:
		return e.CheckoutCompleted.CartRef, true
	case e.CartAssigned != nil:
		return e.CartAssigned.CartRef, true
	}
	return CartRef{}, false
}

// AcceptsKey reports whether k may be the record key of the event: its
// Key, or, for a customer.logged_in that names a guest session, the guest's
// key too (the processor re-keys a login to the guest's partition to move
// the guest's carts).
func (e *Event) AcceptsKey(k string) bool {
	if k == e.Key() {
		return true
	}
	l := e.CustomerLoggedIn
	return l != nil && l.AnonymousID != "" && k == AnonPrefix+l.AnonymousID
}

// Key is the customer key the event belongs to, which is also the Kafka
// record key producers must use.
func (e *Event) Key() string {
	if ref, ok := e.Cart(); ok {
		return ref.OwnerKey()
	}
	switch {
	case e.CustomerLoggedIn != nil:
		return e.CustomerLoggedIn.CustomerID
	case e.CustomerUpdated != nil:
		return e.CustomerUpdated.CustomerID
	case e.CustomerErased != nil:
		return e.CustomerErased.CustomerID
	}
	return ""
}
