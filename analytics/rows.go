package analytics

import (
	"errors"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	gojson "github.com/goccy/go-json"

	"github.com/cartlift/cartlift/events"
)

// Reasons a record goes to the analytics dead-letter topic.
const (
	ReasonUndecodable = "undecodable"
	ReasonUnknownType = "unknown_type"
	ReasonInvalid     = "invalid"
)

// RecordError is why a record cannot become a row.
type RecordError struct {
	Reason string // one of the Reason constants
	Err    error
}

// Error is the reason and the cause.
func (e *RecordError) Error() string { return e.Reason + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *RecordError) Unwrap() error { return e.Err }

// record is the part of a CloudEvents record the sink reads, decoded in
// one pass: the data of a decision and of an outcome share one struct (the
// fields both have, decision_id, flow, step and holdout, appear once, in
// decisionData), and the type says which half is meant. The
// decision half keeps what the decisions table needs (the items, the
// customer's address and name stay out of analytics). The JSON names are
// the contract's (events.Decision, events.Outcome);
// TestDecodeFollowsTheContract encodes both and checks every column.
type record struct {
	Type string     `json:"type"`
	Data recordData `json:"data"`
}

type recordData struct {
	decisionData
	outcomeData
	suppressionData
}

// suppressionData is what events.Suppression and events.Deferral have
// beyond the fields decisionData and outcomeData already have.
type suppressionData struct {
	SuppressionID string    `json:"suppression_id"`
	DeferralID    string    `json:"deferral_id"`
	Reason        string    `json:"reason"`
	Stage         string    `json:"stage"`
	Into          string    `json:"into"`
	Due           time.Time `json:"due_at"`
	Until         time.Time `json:"until"`
}

type decisionData struct {
	DecisionID string           `json:"decision_id"`
	Flow       string           `json:"flow"`
	Step       string           `json:"step"`
	StepIndex  int              `json:"step_index"`
	Action     string           `json:"action"`
	Template   string           `json:"template"`
	Discount   *events.Discount `json:"discount"`
	Variant    string           `json:"variant"`
	Holdout    bool             `json:"holdout"`
	Cart       struct {
		CartID      string    `json:"cart_id"`
		CartType    string    `json:"cart_type"`
		Site        string    `json:"site"`
		Channel     string    `json:"channel"`
		Currency    string    `json:"currency"`
		LegalEntity string    `json:"legal_entity"`
		TotalMinor  int64     `json:"total_minor"`
		ItemCount   int64     `json:"item_count"`
		Version     int64     `json:"version"`
		CreatedAt   time.Time `json:"created_at"`
		ModifiedAt  time.Time `json:"modified_at"`
	} `json:"cart"`
	Customer struct {
		Key              string `json:"key"`
		Locale           string `json:"locale"`
		MarketingConsent bool   `json:"marketing_consent"`
	} `json:"customer"`
	DecidedAt  time.Time `json:"decided_at"`
	ValidUntil time.Time `json:"valid_until"`
	// A shadow flow's decision (cart-decisions.shadow) has these.
	Shadow         bool      `json:"shadow"`
	ShadowOf       string    `json:"shadow_of"`
	AttributeUntil time.Time `json:"attribute_until"`
}

// outcomeData is events.Outcome without the fields decisionData already
// has (decision_id, flow, step, holdout).
type outcomeData struct {
	OutcomeID    string    `json:"outcome_id"`
	Kind         string    `json:"kind"`
	CustomerKey  string    `json:"customer_key"`
	CartID       string    `json:"cart_id"`
	CartType     string    `json:"cart_type"`
	Site         string    `json:"site"`
	Channel      string    `json:"channel"`
	Currency     string    `json:"currency"`
	ValueMinor   int64     `json:"value_minor"`
	OrderID      string    `json:"order_id"`
	Decisions    int       `json:"decisions"`
	At           time.Time `json:"at"`
	SinceDecided int64     `json:"since_decision_seconds"`
}

// outcome is the events.Outcome of the record's data.
func (d *recordData) outcome() events.Outcome {
	return events.Outcome{ID: d.OutcomeID, Kind: d.Kind, CustomerKey: d.CustomerKey, CartID: d.CartID,
		CartType: d.CartType, Site: d.Site, Channel: d.Channel, Currency: d.Currency, ValueMinor: d.ValueMinor,
		OrderID: d.OrderID, DecisionID: d.DecisionID, Flow: d.Flow, Step: d.Step, Holdout: d.Holdout,
		Decisions: d.Decisions, At: d.At, SinceDecided: d.SinceDecided}
}

// column is one column of an insert: its name and its values, a slice of
// the Go type clickhouse-go appends to the column's ClickHouse type.
type column struct {
	name   string
	values any
}

// decisionRows are decisions in columns, as the native protocol sends them.
type decisionRows struct {
	id, flow, step, action, template                                []string
	customerKey, cartID, cartType, site, channel, currency, entity  []string
	locale, variant                                                 []string
	decidedAt, validUntil, cartCreatedAt, cartModifiedAt            []time.Time
	stepIndex                                                       []uint16
	holdout, consent                                                []uint8
	discPercent, discAmount, discMax, value, itemCount, cartVersion []int64
}

func (r *decisionRows) add(d *decisionData) {
	r.id = append(r.id, d.DecisionID)
	r.decidedAt = append(r.decidedAt, chTime(d.DecidedAt))
	r.validUntil = append(r.validUntil, chTime(d.ValidUntil))
	r.flow = append(r.flow, d.Flow)
	r.step = append(r.step, d.Step)
	r.stepIndex = append(r.stepIndex, uint16(min(max(d.StepIndex, 0), 65535)))
	r.action = append(r.action, d.Action)
	r.template = append(r.template, d.Template)
	r.holdout = append(r.holdout, b2u(d.Holdout))
	var disc events.Discount
	if d.Discount != nil {
		disc = *d.Discount
	}
	r.discPercent = append(r.discPercent, disc.Percent)
	r.discAmount = append(r.discAmount, disc.AmountMinor)
	r.discMax = append(r.discMax, disc.MaxMinor)
	r.customerKey = append(r.customerKey, d.Customer.Key)
	r.cartID = append(r.cartID, d.Cart.CartID)
	r.cartType = append(r.cartType, d.Cart.CartType)
	r.site = append(r.site, d.Cart.Site)
	r.channel = append(r.channel, d.Cart.Channel)
	r.currency = append(r.currency, d.Cart.Currency)
	r.entity = append(r.entity, d.Cart.LegalEntity)
	r.value = append(r.value, d.Cart.TotalMinor)
	r.itemCount = append(r.itemCount, d.Cart.ItemCount)
	r.cartVersion = append(r.cartVersion, d.Cart.Version)
	r.cartCreatedAt = append(r.cartCreatedAt, chTime(d.Cart.CreatedAt))
	r.cartModifiedAt = append(r.cartModifiedAt, chTime(d.Cart.ModifiedAt))
	r.consent = append(r.consent, b2u(d.Customer.MarketingConsent))
	r.locale = append(r.locale, d.Customer.Locale)
	r.variant = append(r.variant, d.Variant)
}

func (r *decisionRows) len() int { return len(r.id) }

func (r *decisionRows) reset() {
	truncate(&r.id, &r.flow, &r.step, &r.action, &r.template, &r.customerKey, &r.cartID, &r.cartType,
		&r.site, &r.channel, &r.currency, &r.entity, &r.locale, &r.variant)
	truncate(&r.decidedAt, &r.validUntil, &r.cartCreatedAt, &r.cartModifiedAt)
	truncate(&r.stepIndex)
	truncate(&r.holdout, &r.consent)
	truncate(&r.discPercent, &r.discAmount, &r.discMax, &r.value, &r.itemCount, &r.cartVersion)
}

func (r *decisionRows) columns(insertedAt time.Time) []column {
	return []column{
		{"id", r.id}, {"decided_at", r.decidedAt}, {"valid_until", r.validUntil},
		{"flow", r.flow}, {"step", r.step}, {"step_index", r.stepIndex}, {"action", r.action},
		{"template", r.template}, {"holdout", r.holdout},
		{"discount_percent", r.discPercent}, {"discount_amount_minor", r.discAmount}, {"discount_max_minor", r.discMax},
		{"customer_key", r.customerKey}, {"cart_id", r.cartID}, {"cart_type", r.cartType}, {"site", r.site},
		{"channel", r.channel}, {"currency", r.currency}, {"legal_entity", r.entity},
		{"cart_value_minor", r.value}, {"item_count", r.itemCount}, {"cart_version", r.cartVersion},
		{"cart_created_at", r.cartCreatedAt}, {"cart_modified_at", r.cartModifiedAt},
		{"marketing_consent", r.consent}, {"locale", r.locale}, {"variant", r.variant},
		{"inserted_at", repeatTime(insertedAt, r.len())},
	}
}

// shadowRows are shadow flows' decisions in columns: a decision's columns
// and the shadow's.
type shadowRows struct {
	decisionRows
	shadowOf       []string
	attributeUntil []time.Time
}

func (r *shadowRows) add(d *decisionData) {
	r.decisionRows.add(d)
	r.shadowOf = append(r.shadowOf, d.ShadowOf)
	r.attributeUntil = append(r.attributeUntil, chTime(d.AttributeUntil))
}

func (r *shadowRows) reset() {
	r.decisionRows.reset()
	truncate(&r.shadowOf)
	truncate(&r.attributeUntil)
}

func (r *shadowRows) columns(insertedAt time.Time) []column {
	cols := r.decisionRows.columns(insertedAt)
	return append(cols, column{"shadow_of", r.shadowOf}, column{"attribute_until", r.attributeUntil})
}

// outcomeRows are cart outcomes in columns.
type outcomeRows struct {
	id, kind, customerKey, cartID, cartType, site, channel, currency []string
	orderID, decisionID, flow, step                                  []string
	at                                                               []time.Time
	value, since                                                     []int64
	holdout                                                          []uint8
	decisions                                                        []uint16
}

func (r *outcomeRows) add(o *events.Outcome) {
	r.id = append(r.id, o.ID)
	r.kind = append(r.kind, o.Kind)
	r.at = append(r.at, chTime(o.At))
	r.customerKey = append(r.customerKey, o.CustomerKey)
	r.cartID = append(r.cartID, o.CartID)
	r.cartType = append(r.cartType, o.CartType)
	r.site = append(r.site, o.Site)
	r.channel = append(r.channel, o.Channel)
	r.currency = append(r.currency, o.Currency)
	r.value = append(r.value, o.ValueMinor)
	r.orderID = append(r.orderID, o.OrderID)
	r.decisionID = append(r.decisionID, o.DecisionID)
	r.flow = append(r.flow, o.Flow)
	r.step = append(r.step, o.Step)
	r.holdout = append(r.holdout, b2u(o.Holdout))
	r.decisions = append(r.decisions, uint16(min(max(o.Decisions, 0), 65535)))
	r.since = append(r.since, o.SinceDecided)
}

func (r *outcomeRows) len() int { return len(r.id) }

func (r *outcomeRows) reset() {
	truncate(&r.id, &r.kind, &r.customerKey, &r.cartID, &r.cartType, &r.site, &r.channel, &r.currency,
		&r.orderID, &r.decisionID, &r.flow, &r.step)
	truncate(&r.at)
	truncate(&r.value, &r.since)
	truncate(&r.holdout)
	truncate(&r.decisions)
}

func (r *outcomeRows) columns(insertedAt time.Time) []column {
	return []column{
		{"id", r.id}, {"kind", r.kind}, {"at", r.at}, {"customer_key", r.customerKey}, {"cart_id", r.cartID},
		{"cart_type", r.cartType}, {"site", r.site}, {"channel", r.channel}, {"currency", r.currency},
		{"value_minor", r.value}, {"order_id", r.orderID}, {"decision_id", r.decisionID}, {"flow", r.flow},
		{"step", r.step}, {"holdout", r.holdout}, {"decisions", r.decisions}, {"since_decision_seconds", r.since},
		{"inserted_at", repeatTime(insertedAt, r.len())},
	}
}

// actionRows are action results in columns. They keep no customer key
// (the decision has it).
type actionRows struct {
	id, kind, decisionID, cartID, flow, step, currency []string
	at                                                 []time.Time
	holdout                                            []uint8
	value                                              []int64
}

func (r *actionRows) add(o *events.Outcome) {
	r.id = append(r.id, o.ID)
	r.kind = append(r.kind, o.Kind)
	r.at = append(r.at, chTime(o.At))
	r.decisionID = append(r.decisionID, o.DecisionID)
	r.cartID = append(r.cartID, o.CartID)
	r.flow = append(r.flow, o.Flow)
	r.step = append(r.step, o.Step)
	r.holdout = append(r.holdout, b2u(o.Holdout))
	r.currency = append(r.currency, o.Currency)
	r.value = append(r.value, o.ValueMinor)
}

func (r *actionRows) len() int { return len(r.id) }

func (r *actionRows) reset() {
	truncate(&r.id, &r.kind, &r.decisionID, &r.cartID, &r.flow, &r.step, &r.currency)
	truncate(&r.at)
	truncate(&r.holdout)
	truncate(&r.value)
}

func (r *actionRows) columns(insertedAt time.Time) []column {
	return []column{
		{"id", r.id}, {"kind", r.kind}, {"at", r.at}, {"decision_id", r.decisionID},
		{"cart_id", r.cartID}, {"flow", r.flow}, {"step", r.step},
		{"holdout", r.holdout}, {"currency", r.currency}, {"value_minor", r.value},
		{"inserted_at", repeatTime(insertedAt, r.len())},
	}
}

// suppressionRows are suppressed and deferred steps in columns.
type suppressionRows struct {
	id, kind, reason, stage, decisionID, into, flow, step, action []string
	customerKey, cartID, cartType, site, channel, currency        []string
	dueAt, at, until                                              []time.Time
	stepIndex                                                     []uint16
	holdout                                                       []uint8
	value                                                         []int64
}

// add appends a suppression (kind "suppressed") or a deferral ("deferred").
func (r *suppressionRows) add(kind, id string, d *recordData) {
	r.id = append(r.id, id)
	r.kind = append(r.kind, kind)
	r.reason = append(r.reason, d.Reason)
	r.stage = append(r.stage, d.Stage)
	r.decisionID = append(r.decisionID, d.DecisionID)
	r.into = append(r.into, d.Into)
	r.flow = append(r.flow, d.Flow)
	r.step = append(r.step, d.Step)
	r.stepIndex = append(r.stepIndex, uint16(min(max(d.StepIndex, 0), 65535)))
	r.action = append(r.action, d.Action)
	r.holdout = append(r.holdout, b2u(d.Holdout))
	r.customerKey = append(r.customerKey, d.CustomerKey)
	r.cartID = append(r.cartID, d.CartID)
	r.cartType = append(r.cartType, d.CartType)
	r.site = append(r.site, d.Site)
	r.channel = append(r.channel, d.Channel)
	r.currency = append(r.currency, d.Currency)
	r.value = append(r.value, d.ValueMinor)
	r.dueAt = append(r.dueAt, chTime(d.Due))
	r.at = append(r.at, chTime(d.At))
	r.until = append(r.until, chTime(d.Until))
}

func (r *suppressionRows) len() int { return len(r.id) }

func (r *suppressionRows) reset() {
	truncate(&r.id, &r.kind, &r.reason, &r.stage, &r.decisionID, &r.into, &r.flow, &r.step, &r.action,
		&r.customerKey, &r.cartID, &r.cartType, &r.site, &r.channel, &r.currency)
	truncate(&r.dueAt, &r.at, &r.until)
	truncate(&r.stepIndex)
	truncate(&r.holdout)
	truncate(&r.value)
}

func (r *suppressionRows) columns(insertedAt time.Time) []column {
	return []column{
		{"id", r.id}, {"kind", r.kind}, {"reason", r.reason}, {"stage", r.stage}, {"decision_id", r.decisionID},
		{"into_decision_id", r.into}, {"flow", r.flow}, {"step", r.step}, {"step_index", r.stepIndex},
		{"action", r.action}, {"holdout", r.holdout}, {"customer_key", r.customerKey}, {"cart_id", r.cartID},
		{"cart_type", r.cartType}, {"site", r.site}, {"channel", r.channel}, {"currency", r.currency},
		{"value_minor", r.value}, {"due_at", r.dueAt}, {"at", r.at}, {"until", r.until},
		{"inserted_at", repeatTime(insertedAt, r.len())},
	}
}

// Kinds of the suppressions table.
const (
	KindSuppressed = "suppressed"
	KindDeferred   = "deferred"
)

// rows are the rows of one batch, per table, and the batch's erasures.
type rows struct {
	decisions    decisionRows
	shadow       shadowRows
	outcomes     outcomeRows
	actions      actionRows
	suppressions suppressionRows
	erased       []erasure
}

// erasure is an erased outcome: the customer key and the erasure's time.
// What the customer did up to then goes; what came after stays (a
// customer may come back).
type erasure struct {
	key string
	at  time.Time
}

// reset empties the rows and keeps their capacity for the next batch.
func (r *rows) reset() {
	r.decisions.reset()
	r.shadow.reset()
	r.outcomes.reset()
	r.actions.reset()
	r.suppressions.reset()
	truncate(&r.erased)
}

// truncate empties slices, keeping their backing arrays.
func truncate[T any](slices ...*[]T) {
	for _, s := range slices {
		clear(*s) // drop references (strings) to the previous batch
		*s = (*s)[:0]
	}
}

// erasedKeys maps the xxhash of an erased customer key to the time of its
// latest erasure (see KeyHash). Nil drops nothing.
type erasedKeys map[uint64]time.Time

// KeyHash is the 64-bit xxhash of a customer key, as the erasures table
// keeps it.
func KeyHash(key string) uint64 { return xxhash.Sum64String(key) }

// erasedBy reports whether a record of the key at t is from before an
// erasure of the key.
func (e erasedKeys) erasedBy(key string, t time.Time) bool {
	if len(e) == 0 {
		return false
	}
	at, ok := e[KeyHash(key)]
	return ok && !chTime(t).After(at)
}

// add decodes one record value (CloudEvents structured JSON) into a row of
// its table, unless it is a decision or cart outcome of a customer erased
// after it (erased; then it reports dropped). An erased outcome adds the
// erasure to erased (when not nil). Action results keep no customer key and
// are never dropped. The error is a *RecordError; nothing is added then.
func (r *rows) add(value []byte, erased erasedKeys) (dropped bool, err error) {
	var rec record
	if err := gojson.Unmarshal(value, &rec); err != nil {
		return false, &RecordError{ReasonUndecodable, err}
	}
	switch rec.Type {
	case events.TypeDecision:
		if rec.Data.DecisionID == "" {
			return false, &RecordError{ReasonInvalid, errors.New("decision without decision_id")}
		}
		if erased.erasedBy(rec.Data.Customer.Key, rec.Data.DecidedAt) {
			return true, nil
		}
		if rec.Data.Shadow {
			r.shadow.add(&rec.Data.decisionData) // a shadow flow's: never in decisions
			break
		}
		r.decisions.add(&rec.Data.decisionData)
	case events.TypeOutcome:
		o := rec.Data.outcome()
		switch {
		case o.ID == "":
			return false, &RecordError{ReasonInvalid, errors.New("outcome without outcome_id")}
		case o.Kind == "":
			return false, &RecordError{ReasonInvalid, errors.New("outcome without kind")}
		case o.Kind == events.OutcomeErased:
			if o.CustomerKey == "" {
				return false, &RecordError{ReasonInvalid, errors.New("erased outcome without customer_key")}
			}
			e := erasure{key: o.CustomerKey, at: chTime(o.At)}
			r.erased = append(r.erased, e)
			if h := KeyHash(e.key); erased != nil && e.at.After(erased[h]) {
				erased[h] = e.at
			}
		case events.IsCartOutcome(o.Kind): // else an action result, so new action kinds need no migration
			if erased.erasedBy(o.CustomerKey, o.At) {
				return true, nil
			}
			r.outcomes.add(&o)
		default:
			r.actions.add(&o)
		}
	case events.TypeSuppressed, events.TypeDeferred:
		kind, id := KindSuppressed, rec.Data.SuppressionID
		if rec.Type == events.TypeDeferred {
			kind, id = KindDeferred, rec.Data.DeferralID
		}
		switch {
		case id == "":
			return false, &RecordError{ReasonInvalid, fmt.Errorf("%s without its id", rec.Type)}
		case rec.Data.Reason == "":
			return false, &RecordError{ReasonInvalid, fmt.Errorf("%s without reason", rec.Type)}
		case erased.erasedBy(rec.Data.CustomerKey, rec.Data.At):
			return true, nil
		}
		r.suppressions.add(kind, id, &rec.Data)
	default:
		return false, &RecordError{ReasonUnknownType, fmt.Errorf("type %q is none of %s, %s, %s, %s", rec.Type,
			events.TypeDecision, events.TypeOutcome, events.TypeSuppressed, events.TypeDeferred)}
	}
	return false, nil
}

// The range of ClickHouse's DateTime (seconds since the epoch in a UInt32).
var (
	minDateTime = time.Unix(0, 0).UTC()
	maxDateTime = time.Unix(1<<32-1, 0).UTC()
)

// chTime is t in DateTime's range: a zero or earlier time is the epoch
// (ClickHouse's "no time"), a later one the largest DateTime.
func chTime(t time.Time) time.Time {
	switch {
	case t.Before(minDateTime):
		return minDateTime
	case t.After(maxDateTime):
		return maxDateTime
	}
	return t.UTC()
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func repeatTime(t time.Time, n int) []time.Time {
	s := make([]time.Time, n)
	for i := range s {
		s[i] = t
	}
	return s
}
