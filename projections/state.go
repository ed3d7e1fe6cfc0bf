// Package projections is cartlift's pure fold: the per-customer state, and
// Apply and Fire, which turn an event or a timer into effects (new state,
// timer changes, decisions, outcomes). Nothing here reads the clock, does
// I/O or starts goroutines; all of cartlift's business rules live here so
// they can be tested in microseconds and replayed deterministically.
package projections

import (
	"slices"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Cart statuses.
const (
	StatusOpen       = "open"
	StatusCheckedOut = "checked_out"
	StatusDiscarded  = "discarded"
	StatusExpired    = "expired"
	StatusMerged     = "merged"
)

// CustomerState is everything cartlift knows about one customer key: the
// profile and the carts, open and recently closed. It is the unit of state
// in the store, keyed by the customer key.
type CustomerState struct {
	Key     string  `json:"key"`
	Profile Profile `json:"profile"`
	// Carts sorted by ID.
	Carts []*Cart `json:"carts"`
	// ErasedAt marks a tombstone: the customer was erased at this event
	// time, and events from before it are ignored.
	ErasedAt time.Time `json:"erased_at,omitzero"`
	// Sent holds the decision times of the customer's recent messages
	// (emitted, non-holdout decisions of flows under a frequency cap, on
	// any cart), sorted, for the frequency cap. It is bounded: at most
	// MaxSentTimes entries, none much older than the longest cap window.
	// A state with nothing else in it is deleted, Sent included.
	Sent []time.Time `json:"sent,omitempty"`
	// Seen is the window of the customer's recent input events (see
	// MaxSeenEvents), in arrival order, against which repeats are dropped.
	// Like Sent, it alone does not keep a state alive.
	Seen []SeenEvent `json:"seen,omitempty"`
}

// Erased reports whether the state is a tombstone with nothing in it.
func (s *CustomerState) Erased() bool {
	return !s.ErasedAt.IsZero() && len(s.Carts) == 0 && s.Profile == (Profile{})
}

// Profile is the customer's profile as known from customer.* events.
type Profile struct {
	CustomerID       string    `json:"customer_id,omitempty"`
	Email            string    `json:"email,omitempty"`
	Name             string    `json:"name,omitempty"`
	Locale           string    `json:"locale,omitempty"`
	TimeZone         string    `json:"time_zone,omitempty"`
	Segment          string    `json:"segment,omitempty"`
	MarketingConsent bool      `json:"marketing_consent"`
	LastLoginAt      time.Time `json:"last_login_at,omitzero"`
	UpdatedAt        time.Time `json:"updated_at,omitzero"`
	// ConsentEventID and ConsentAt name the customer.updated event that
	// last set MarketingConsent (its id and event time), for explanations.
	ConsentEventID string    `json:"consent_event_id,omitempty"`
	ConsentAt      time.Time `json:"consent_at,omitzero"`
}

// LineItem is one line of a cart. LineTotalMinor = Quantity * UnitPriceMinor.
type LineItem struct {
	SKU            string `json:"sku"`
	Name           string `json:"name,omitempty"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	LineTotalMinor int64  `json:"line_total_minor"`
	Category       string `json:"category,omitempty"`
	ImageURL       string `json:"image_url,omitempty"`
}

// Cart is one cart of a customer.
type Cart struct {
	ID          string            `json:"id"`
	Type        string            `json:"type,omitempty"`
	Site        string            `json:"site,omitempty"`
	Channel     string            `json:"channel,omitempty"`
	Currency    string            `json:"currency"`
	LegalEntity string            `json:"legal_entity,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Items       []LineItem        `json:"items"`
	TotalMinor  int64             `json:"total_minor"`
	ItemCount   int64             `json:"item_count"`
	Status      string            `json:"status"`
	// Version counts the cart's activities (every accepted event about it).
	// Decision and outcome ids include it.
	Version    int64     `json:"version"`
	CreatedAt  time.Time `json:"created_at"`
	ModifiedAt time.Time `json:"modified_at"`
	// LastActivity is the newest event time of any activity on the cart;
	// inactivity steps count from it.
	LastActivity time.Time `json:"last_activity"`
	// Cause is the input event of the last activity (the one that set
	// LastActivity): the cause of the steps that come due from it. Zero
	// when not known.
	Cause    Cause     `json:"cause,omitzero"`
	ClosedAt time.Time `json:"closed_at,omitzero"`
	OrderID  string    `json:"order_id,omitempty"`
	// Decisions is the cart's decision history, oldest first.
	Decisions []DecisionRecord `json:"decisions,omitempty"`
	// AssignedFrom is the guest key the cart moved from on login, if any.
	AssignedFrom string `json:"assigned_from,omitempty"`
	// WakeAt is when the fold next needs to look at the cart (the next step,
	// expiry, or removal of a closed cart); zero for none. The store keeps
	// one timer per cart at this time.
	WakeAt time.Time `json:"wake_at,omitzero"`
}

// DecisionRecord is one entry of a cart's decision history. Skipped records
// mark steps that came due together with a later step (after downtime, say)
// and were passed over in favour of the later one; they emit nothing.
// Suppressed records mark steps a guard stopped; they emit nothing either.
// Every record marks its step as done for the inactivity period.
type DecisionRecord struct {
	// ID is the emitted decision's id. A suppressed record has none,
	// except a combined one: it names the decision it went out with.
	ID        string `json:"id,omitempty"`
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int    `json:"step_index"`
	Version   int64  `json:"version"`
	// At is the decision time (decided_at); for a skipped record, the
	// step's due time.
	At time.Time `json:"at"`
	// Due is the step's due time when it differs from At: the decision
	// was deferred by quiet hours, or made early for a combined decision.
	Due        time.Time `json:"due,omitzero"`
	Holdout    bool      `json:"holdout,omitempty"`
	Skipped    bool      `json:"skipped,omitempty"`
	Discount   bool      `json:"discount,omitempty"`
	Suppressed string    `json:"suppressed,omitempty"` // a Reason constant
	// Cause is the input event that made the step due (the cart's last
	// activity then, see Cart.Cause); zero when not known.
	Cause Cause `json:"cause,omitzero"`
	// Checks is what the guards found when the step came due; zero for
	// skipped records and records from before checks were recorded.
	Checks Checks `json:"checks,omitzero"`
	// Shadow marks a record of a shadow flow: kept apart from everything
	// a live flow reads (it is not Sent, counts toward no live cap and is
	// never attributed an outcome), and bounded by MaxShadowHistory.
	Shadow bool `json:"shadow,omitempty"`
}

// Cause names the input event behind a cart's activity: its id, and the
// partition and offset it was read from (the input topic is the
// runtime's; a backtest over a file gives partition -1 and the line
// number). The zero value means not known.
type Cause struct {
	EventID   string `json:"event_id"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Known reports whether the cause is set.
func (c Cause) Known() bool { return c.EventID != "" }

// Event returns the cause as output records carry it, with the input
// topic it was read from, or nil when it is not known.
func (c Cause) Event(topic string) *events.Cause {
	if !c.Known() {
		return nil
	}
	if c.Partition < 0 {
		topic = "" // read from a file, not a topic
	}
	return &events.Cause{EventID: c.EventID, Topic: topic, Partition: c.Partition, Offset: c.Offset}
}

// causeOf is the cause an event carries (see events.Event.Pos).
func causeOf(ev *events.Event) Cause {
	if ev.Pos == nil {
		return Cause{}
	}
	return Cause{EventID: ev.ID, Partition: ev.Pos.Partition, Offset: ev.Pos.Offset}
}

// Checks is what the guards of a flow found when one of its steps came
// due, every configured guard evaluated (the first one that failed gave the
// record's Suppressed reason, in the order consent, cart cap, frequency
// cap).
type Checks struct {
	// Consent is ConsentGranted, ConsentDenied or ConsentNotRequired; ""
	// means no checks were recorded. ConsentEventID and ConsentAt name the
	// profile change the consent was read from (see Profile).
	Consent        string    `json:"consent,omitempty"`
	ConsentEventID string    `json:"consent_event_id,omitempty"`
	ConsentAt      time.Time `json:"consent_at,omitzero"`
	// CartMax is the flow's max_messages_per_cart (0: none) and CartCount
	// the messages of the cart's life counted against it.
	CartMax   int `json:"cart_max,omitempty"`
	CartCount int `json:"cart_count,omitempty"`
	// CapMax and CapPer are the frequency cap (0: none), CapCount the
	// customer's messages in the fullest window of length CapPer that
	// contains the decision time.
	CapMax   int           `json:"cap_max,omitempty"`
	CapPer   time.Duration `json:"cap_per,omitempty"`
	CapCount int           `json:"cap_count,omitempty"`
	// QuietZone is the time zone quiet hours were read in, "" when the
	// flow has none; QuietFrom and QuietTo the window, in minutes after
	// midnight.
	QuietZone string `json:"quiet_zone,omitempty"`
	QuietFrom int    `json:"quiet_from,omitempty"`
	QuietTo   int    `json:"quiet_to,omitempty"`
}

// Consent results of Checks.
const (
	ConsentGranted     = "granted"
	ConsentDenied      = "denied"
	ConsentNotRequired = "not_required"
)

// Sent reports whether the record is an emitted decision (holdout
// included) of a live flow.
func (r *DecisionRecord) Sent() bool { return r.decided() && !r.Shadow }

// decided reports whether the record is a decision, live or shadow: not
// skipped, not suppressed.
func (r *DecisionRecord) decided() bool { return !r.Skipped && r.Suppressed == "" }

// Counts reports whether the record counts toward the caps: an emitted
// decision that is not in the holdout group.
func (r *DecisionRecord) Counts() bool { return r.Sent() && !r.Holdout }

// DueAt is when the record's step came due.
func (r *DecisionRecord) DueAt() time.Time {
	if !r.Due.IsZero() {
		return r.Due
	}
	return r.At
}

// IsOpen reports whether the cart is open.
func (c *Cart) IsOpen() bool { return c.Status == StatusOpen }

// Cart returns the cart with the given id, or nil.
func (s *CustomerState) Cart(id string) *Cart {
	i, ok := slices.BinarySearchFunc(s.Carts, id, func(c *Cart, id string) int { return cmpString(c.ID, id) })
	if !ok {
		return nil
	}
	return s.Carts[i]
}

// OpenCarts returns the number of open carts.
func (s *CustomerState) OpenCarts() int {
	n := 0
	for _, c := range s.Carts {
		if c.IsOpen() {
			n++
		}
	}
	return n
}

func (s *CustomerState) addCart(c *Cart) {
	i, _ := slices.BinarySearchFunc(s.Carts, c.ID, func(c *Cart, id string) int { return cmpString(c.ID, id) })
	s.Carts = slices.Insert(s.Carts, i, c)
}

func (s *CustomerState) removeCart(id string) {
	s.Carts = slices.DeleteFunc(s.Carts, func(c *Cart) bool { return c.ID == id })
}

// empty reports whether the state holds nothing worth storing.
func (s *CustomerState) empty() bool {
	return len(s.Carts) == 0 && s.Profile == (Profile{}) && s.ErasedAt.IsZero()
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// recompute refreshes the cart's derived totals.
func (c *Cart) recompute() {
	c.TotalMinor, c.ItemCount = 0, 0
	for i := range c.Items {
		it := &c.Items[i]
		it.LineTotalMinor = it.Quantity * it.UnitPriceMinor
		c.TotalMinor += it.LineTotalMinor
		c.ItemCount += it.Quantity
	}
}

// Snapshot returns the cart as emitted in decisions and outcomes.
func (c *Cart) Snapshot() events.CartSnapshot {
	items := make([]events.Item, len(c.Items))
	for i, it := range c.Items {
		items[i] = events.Item{SKU: it.SKU, Name: it.Name, Quantity: it.Quantity, UnitPriceMinor: it.UnitPriceMinor, Category: it.Category, ImageURL: it.ImageURL}
	}
	return events.CartSnapshot{
		CartID: c.ID, CartType: c.Type, Site: c.Site, Channel: c.Channel, Currency: c.Currency,
		LegalEntity: c.LegalEntity, Items: items, TotalMinor: c.TotalMinor, ItemCount: c.ItemCount,
		Version: c.Version, CreatedAt: c.CreatedAt, ModifiedAt: c.ModifiedAt, Metadata: c.Metadata,
	}
}
