package events

import (
	"time"

	gojson "github.com/goccy/go-json"
)

// Source is the CloudEvents source of everything cartlift emits.
const Source = "cartlift"

// Encode builds the CloudEvents structured-JSON value of one event. data is
// any of this package's payload types (or a Decision or Outcome).
func Encode(id, source, typ string, t time.Time, subject string, data any) ([]byte, error) {
	raw, err := gojson.Marshal(data)
	if err != nil {
		return nil, err
	}
	return gojson.Marshal(Envelope{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            typ,
		Time:            t.UTC(),
		Subject:         subject,
		DataContentType: "application/json",
		Data:            raw,
	})
}

// CartSnapshot is the state of one cart as cartlift emits it in decisions
// and outcomes.
type CartSnapshot struct {
	CartID      string            `json:"cart_id"`
	CartType    string            `json:"cart_type,omitempty"`
	Site        string            `json:"site,omitempty"`
	Channel     string            `json:"channel,omitempty"`
	Currency    string            `json:"currency"`
	LegalEntity string            `json:"legal_entity,omitempty"`
	Items       []Item            `json:"items"`
	TotalMinor  int64             `json:"total_minor"`
	ItemCount   int64             `json:"item_count"`
	Version     int64             `json:"version"`
	CreatedAt   time.Time         `json:"created_at"`
	ModifiedAt  time.Time         `json:"modified_at"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// CustomerSnapshot is what a decision carries about the customer. It holds
// personal data: consumers must not log it.
type CustomerSnapshot struct {
	Key              string `json:"key"`
	CustomerID       string `json:"customer_id,omitempty"`
	Email            string `json:"email,omitempty"`
	Name             string `json:"name,omitempty"`
	Locale           string `json:"locale,omitempty"`
	TimeZone         string `json:"time_zone,omitempty"`
	MarketingConsent bool   `json:"marketing_consent"`
}

// Discount is an offer attached to a decision step. Exactly one of Percent
// and AmountMinor is non-zero; MaxMinor caps a percentage discount.
type Discount struct {
	Percent         int64  `json:"percent,omitempty"`
	AmountMinor     int64  `json:"amount_minor,omitempty"`
	MaxMinor        int64  `json:"max_minor,omitempty"`
	ValidForSeconds int64  `json:"valid_for_seconds,omitempty"`
	Prefix          string `json:"prefix,omitempty"`
}

// Decision is the data of a cart.abandonment.decided event on the
// decisions topic. ID is deterministic: the same cart, flow, step and cart
// version always give the same ID, so consumers de-duplicate on it.
type Decision struct {
	ID        string    `json:"decision_id"`
	Flow      string    `json:"flow"`
	Step      string    `json:"step"`
	StepIndex int       `json:"step_index"`
	Action    string    `json:"action"`
	Template  string    `json:"template,omitempty"`
	Discount  *Discount `json:"discount,omitempty"`
	// Variant names the variant of the step's A/B test the customer is
	// assigned to (the flow file's variants), whose template and discount
	// the decision carries; empty when the step has no variants. A
	// holdout decision names the variant the customer would have had.
	Variant    string           `json:"variant,omitempty"`
	Holdout    bool             `json:"holdout"`
	Cart       CartSnapshot     `json:"cart"`
	Customer   CustomerSnapshot `json:"customer"`
	DecidedAt  time.Time        `json:"decided_at"`
	ValidUntil time.Time        `json:"valid_until"`
	// Cause is the input event that made the step due (see Cause); nil
	// when it is not known (a cart from before causes were recorded).
	Cause *Cause `json:"cause,omitempty"`
	// Shadow marks the decision of a shadow flow: evaluated like a live
	// one, published on the shadow decisions topic only, never actioned.
	Shadow bool `json:"shadow,omitempty"`
	// ShadowOf names, for a shadow decision, the live flow the shadow
	// flow is compared with.
	ShadowOf string `json:"shadow_of,omitempty"`
	// AttributeUntil is, for a shadow decision, the end of the shadow
	// flow's attribution window: a checkout of the cart by then is what
	// the shadow flow would have been credited with.
	AttributeUntil time.Time `json:"attribute_until,omitzero"`
}

// Cause names the input event that made a step due: the cart's last
// activity, from which the step's inactivity period counts. EventID is the
// event's CloudEvents id; Topic, Partition and Offset say where it was read.
// A backtest over a JSON-lines file gives Partition -1 and the event's line
// number (from 1) as Offset, and no Topic. With it any downstream service
// can trace a message back to the record that caused it.
type Cause struct {
	EventID   string `json:"event_id"`
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Outcome kinds on the outcomes topic.
const (
	OutcomeRecovered        = "recovered"
	OutcomeConverted        = "converted"
	OutcomeConvertedHoldout = "converted_holdout"
	OutcomeLost             = "lost"
	OutcomeDiscarded        = "discarded"
	OutcomeMerged           = "merged"
	// OutcomeErased says the customer was erased (customer.erased) at At:
	// a consumer that keeps data about the customer key should forget what
	// it holds from up to At (the analytics sink does; a customer may come
	// back afterwards). It names no cart (CartID is empty) and carries no
	// value; its ID is deterministic per customer key and erasure time.
	OutcomeErased = "erased"
)

// IsCartOutcome reports whether kind says what became of a cart
// (recovered, converted, converted_holdout, lost, discarded, merged), as
// opposed to erased or an action's result (email.sent, link.clicked, ...),
// which share the cart.outcome record.
func IsCartOutcome(kind string) bool {
	switch kind {
	case OutcomeRecovered, OutcomeConverted, OutcomeConvertedHoldout, OutcomeLost, OutcomeDiscarded, OutcomeMerged:
		return true
	}
	return false
}

// Outcome is the data of a cart.outcome event. ID is deterministic (cart,
// kind, cart version). For recovered and converted_holdout outcomes,
// DecisionID, Flow and Step name the decision the outcome is attributed to.
type Outcome struct {
	ID           string    `json:"outcome_id"`
	Kind         string    `json:"kind"`
	CustomerKey  string    `json:"customer_key"`
	CartID       string    `json:"cart_id"`
	CartType     string    `json:"cart_type,omitempty"`
	Site         string    `json:"site,omitempty"`
	Channel      string    `json:"channel,omitempty"`
	Currency     string    `json:"currency"`
	ValueMinor   int64     `json:"value_minor"`
	OrderID      string    `json:"order_id,omitempty"`
	DecisionID   string    `json:"decision_id,omitempty"`
	Flow         string    `json:"flow,omitempty"`
	Step         string    `json:"step,omitempty"`
	Holdout      bool      `json:"holdout"`
	Decisions    int       `json:"decisions"`
	At           time.Time `json:"at"`
	SinceDecided int64     `json:"since_decision_seconds,omitempty"`
}

// Reasons a step that came due was not sent, as a Suppression carries
// them. The processor's guards give no_consent, frequency_cap, cart_cap
// (the flow's max_messages_per_cart) and combined, and the processor gives
// superseded for a step that came due together with a later step of its
// flow (after downtime, say) and was passed over for it; the actions role gives
// no_consent, no_address, expired (past valid_until) and no_channel (no
// channel of the role handles the decision's action). A deferral's reason
// is quiet_hours.
const (
	SuppressedNoConsent    = "no_consent"
	SuppressedFrequencyCap = "frequency_cap"
	SuppressedCartCap      = "cart_cap"
	SuppressedCombined     = "combined"
	SuppressedSuperseded   = "superseded"
	SuppressedNoAddress    = "no_address"
	SuppressedExpired      = "expired"
	SuppressedNoChannel    = "no_channel"
	DeferredQuietHours     = "quiet_hours"
)

// Stages that suppress a step: the processor's guards (no decision was
// made) and the actions role (the decision was made and not acted on).
const (
	StageProcessor = "processor"
	StageActions   = "actions"
)

// Suppression is the data of a cart.step.suppressed event on the
// suppressions topic: a step of a flow came due and nothing was sent for
// it. ID is deterministic, so consumers de-duplicate on it: for the
// processor's guards it is the id the decision would have had with the
// prefix "s-" instead of "d-" (one per cart, life, flow, step and cart
// version); for the actions role "s-" followed by the decision id. A
// holdout decision is not a suppression (it is a decision with holdout
// true); a holdout customer's step that a guard stops is one, with Holdout
// set.
type Suppression struct {
	ID string `json:"suppression_id"`
	// DecisionID is the decision the step would have had (StageProcessor)
	// or the decision that was dropped (StageActions).
	DecisionID string `json:"decision_id"`
	// Reason is one of the Suppressed constants; Stage StageProcessor or
	// StageActions.
	Reason string `json:"reason"`
	Stage  string `json:"stage"`
	// Into names the decision a combined step went out with (reason
	// combined), or the later step's decision that replaced a superseded
	// one (empty if that step was suppressed too).
	Into        string `json:"into,omitempty"`
	Flow        string `json:"flow"`
	Step        string `json:"step"`
	StepIndex   int    `json:"step_index"`
	Action      string `json:"action,omitempty"`
	Holdout     bool   `json:"holdout"`
	CustomerKey string `json:"customer_key"`
	CartID      string `json:"cart_id"`
	CartType    string `json:"cart_type,omitempty"`
	Site        string `json:"site,omitempty"`
	Channel     string `json:"channel,omitempty"`
	Currency    string `json:"currency"`
	// ValueMinor is the cart's total when the step came due.
	ValueMinor int64 `json:"value_minor"`
	// Due is when the step came due; At when it was (or would have been)
	// decided: later than Due after a quiet-hours deferral, and for
	// StageActions the decision's decided_at.
	Due time.Time `json:"due_at"`
	At  time.Time `json:"at"`
	// Cause is the input event that made the step due (StageProcessor;
	// nil when not known).
	Cause *Cause `json:"cause,omitempty"`
}

// Deferral is the data of a cart.step.deferred event on the suppressions
// topic: a step came due inside the flow's quiet hours and will be decided
// at Until instead (then a decision or a suppression follows). ID is
// deterministic per cart, life, flow, step and due time: a step deferred
// again (a profile change reschedules it before the window ends) has the
// same ID, and counts once.
type Deferral struct {
	ID string `json:"deferral_id"`
	// DecisionID is the id the decision will have if the cart does not
	// change before Until.
	DecisionID  string `json:"decision_id"`
	Reason      string `json:"reason"` // DeferredQuietHours
	Flow        string `json:"flow"`
	Step        string `json:"step"`
	StepIndex   int    `json:"step_index"`
	Action      string `json:"action,omitempty"`
	Holdout     bool   `json:"holdout"`
	CustomerKey string `json:"customer_key"`
	CartID      string `json:"cart_id"`
	CartType    string `json:"cart_type,omitempty"`
	Site        string `json:"site,omitempty"`
	Channel     string `json:"channel,omitempty"`
	Currency    string `json:"currency"`
	ValueMinor  int64  `json:"value_minor"`
	// Due is when the step came due and Until when it will be decided.
	// At equals Due: a deferral is dated by its step's due time, so that
	// every copy of one id is the same record.
	Due   time.Time `json:"due_at"`
	At    time.Time `json:"at"`
	Until time.Time `json:"until"`
	// Cause is the input event that made the step due (nil when not
	// known).
	Cause *Cause `json:"cause,omitempty"`
}

// SuppressionID is the id of the actions role's suppression of a decision.
func SuppressionID(decisionID string) string { return "s-" + decisionID }
