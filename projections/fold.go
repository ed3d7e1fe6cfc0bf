package projections

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"time"

	"github.com/cartlift/cartlift/events"
)

// MaxCartsPerCustomer bounds the carts one customer key holds (open and
// recently closed). A new cart beyond it is ignored: one misbehaving key
// cannot grow its state, or the cost of its events, without bound.
const MaxCartsPerCustomer = 100

// MaxDecisionHistory bounds a cart's decision history; older records are
// dropped first.
const MaxDecisionHistory = 32

// MaxShadowHistory bounds the records of shadow flows in a cart's history,
// apart from MaxDecisionHistory: shadow records never push a live record
// out. The oldest shadow records that decided nothing go first.
const MaxShadowHistory = 16

// TimerChange moves a cart's timer from Old to New. A zero Old means the
// cart had no timer; a zero New means it has none now. The store keeps one
// timer per (customer key, cart id), ordered by due time.
type TimerChange struct {
	CartID string
	Old    time.Time
	New    time.Time
}

// ModChange moves an open cart in the index of open carts by last
// modification (the sweep of scheduled flows) from Old to New. A zero Old
// means the cart was not in the index (new, reopened); a zero New means it
// leaves it (closed, removed).
type ModChange struct {
	CartID string
	Old    time.Time
	New    time.Time
}

// Effects is what one Apply or Fire produces. The runtime must persist all
// of it atomically, together with the input position.
type Effects struct {
	// State is the customer's new state; nil means the state is deleted.
	// It may be the same pointer Apply or Fire was given.
	State *CustomerState
	// Timers lists the carts whose timer moved.
	Timers []TimerChange
	// Modified lists the open carts whose last modification moved, for
	// the runtime's index of open carts by modification time.
	Modified []ModChange
	// Decisions and Outcomes to publish, in order.
	Decisions []events.Decision
	Outcomes  []events.Outcome
	// OpenCartsDelta is the change in the number of open carts.
	OpenCartsDelta int
	// Emits are events for the input topic, to be produced through the
	// outbox: a login handed over to the guest's key, carts assigned to
	// the customer who logged in.
	Emits []Emit
	// Erased is set when the customer was erased: the runtime also drops
	// output for the customer that is still waiting in its outbox.
	Erased bool
	// Suppressed lists the steps that came due but were stopped by a
	// guard (consent, caps) or combined into another cart's decision.
	// They are recorded in the carts' histories; nothing is published for
	// them. Fire only.
	Suppressed []Suppression
	// Deferred lists the steps that came due inside quiet hours: they stay
	// pending, and their carts' timers move to the end of the window.
	// Fire only.
	Deferred []Deferral
	// Shadow lists the decisions of shadow flows (Decision.Shadow set),
	// for the shadow decisions topic: never actioned, never on the
	// decisions topic. Their suppressed, superseded and deferred steps are
	// recorded in the carts' histories and not published. Fire only.
	Shadow []events.Decision
	// Duplicate is set when Apply dropped the event as a repeat of one in
	// the customer's window (same source and id, see MaxSeenEvents).
	Duplicate bool
}

// Emit is an input event the fold produces, keyed by the customer key it
// is for. ID is deterministic.
type Emit struct {
	Key  string
	ID   string
	Type string
	Time time.Time
	Data any
}

// Apply folds one event into a customer's state. key is the customer key
// (the record key); state is nil for a customer seen for the first time.
//
// Apply takes ownership of state and may modify it in place: callers that
// need the old state must copy it first. It is pure: the same state, event
// and config always give the same effects.
func Apply(state *CustomerState, key string, ev *events.Event, cfg *Config) Effects {
	return new(Folder).Apply(state, key, ev, cfg)
}

// A Folder runs folds (Apply, Fire, FireSchedule) in memory it keeps from
// one to the next, so that a runtime folding a stream allocates no fold
// per event. The Effects of a Folder's call share that memory: they are
// valid until its next call. A Folder is not safe for concurrent use; its
// zero value is ready. Its folds are the package functions', which use a
// new Folder each.
type Folder struct{ f fold }

// Apply is the package's Apply, with the Folder's memory.
func (fo *Folder) Apply(state *CustomerState, key string, ev *events.Event, cfg *Config) Effects {
	f := fo.begin(state, key, cfg)
	f.cause = causeOf(ev)
	t := ev.Time
	if !f.s.ErasedAt.IsZero() && !t.After(f.s.ErasedAt) {
		return f.end() // a late event from before the customer's erasure
	}
	if ev.ID != "" {
		h := EventHash(ev.Source, ev.ID)
		if f.s.seen(h) {
			f.eff.Duplicate = true
			return f.end()
		}
		f.s.noteSeen(h, t)
	}
	switch {
	case ev.ItemAdded != nil:
		d := ev.ItemAdded
		if c := f.mutateCart(d.CartRef, t, true); c != nil {
			addItem(c, d.Item)
			f.touched(c)
		}
	case ev.ItemUpdated != nil:
		d := ev.ItemUpdated
		if c := f.mutateCart(d.CartRef, t, false); c != nil {
			updateItem(c, d.SKU, d.Quantity, d.UnitPriceMinor)
			f.touched(c)
		}
	case ev.ItemRemoved != nil:
		d := ev.ItemRemoved
		if c := f.mutateCart(d.CartRef, t, false); c != nil {
			updateItem(c, d.SKU, 0, 0)
			f.touched(c)
		}
	case ev.CartUpdated != nil:
		d := ev.CartUpdated
		if c := f.mutateCart(d.CartRef, t, true); c != nil {
			setItems(c, d.Items)
			f.touched(c)
		}
	case ev.CartAssigned != nil:
		f.assign(ev.CartAssigned)
	case ev.CheckoutStarted != nil:
		if c := f.mutateCart(ev.CheckoutStarted.CartRef, t, false); c != nil {
			f.touched(c)
		}
	case ev.CartDiscarded != nil:
		if c := f.mutateCart(ev.CartDiscarded.CartRef, t, false); c != nil {
			f.close(c, StatusDiscarded, t)
			f.outcome(c, events.OutcomeDiscarded, c.TotalMinor, t, nil, "")
		}
	case ev.CheckoutCompleted != nil:
		f.checkout(ev.CheckoutCompleted, t)
	case ev.CustomerLoggedIn != nil:
		l := ev.CustomerLoggedIn
		if key != l.CustomerID {
			// The guest's side of a login: the guest's open carts move.
			f.moveGuestCarts(l, t)
			break
		}
		p := &f.s.Profile
		p.CustomerID = l.CustomerID
		p.LastLoginAt = later(p.LastLoginAt, t)
		if l.AnonymousID != "" {
			// The guest's carts live under the guest's key, on its own
			// partition: hand the login over to it.
			f.eff.Emits = append(f.eff.Emits, Emit{Key: events.AnonPrefix + l.AnonymousID,
				ID: ev.ID + "#guest", Type: events.TypeCustomerLoggedIn, Time: t, Data: *l})
		}
	case ev.CustomerUpdated != nil:
		f.updateProfile(ev.CustomerUpdated, ev.ID, t)
	case ev.CustomerErased != nil:
		// Everything goes; a tombstone remembers when, so that late events
		// from before the erasure do not bring data back.
		f.s.Carts = nil
		f.s.Profile = Profile{}
		f.s.Sent = nil
		f.s.ErasedAt = t
		f.eff.Erased = true
		// Downstream (analytics, CRMs) forgets too.
		f.eff.Outcomes = append(f.eff.Outcomes, events.Outcome{ID: OutcomeID(f.key, "", t, events.OutcomeErased, 0),
			Kind: events.OutcomeErased, CustomerKey: f.key, At: t})
	}
	return f.end()
}

// Fire runs the timer of one cart at time now: it decides the latest
// inactivity step due by now of every flow that matches the cart, expires
// the cart, or drops a closed cart whose retention is over, and sets the
// cart's next timer. A timer that is not due by now, or whose cart is
// gone, has no effect.
//
// A step that comes due passes the flow's guards (see Guards) before a
// decision goes out: inside quiet hours it is deferred (it stays pending
// and the timer moves to the end of the window); without consent, or over
// a cap, it is suppressed (recorded in the cart's history and reported in
// Effects.Suppressed, nothing published); with a combine window, the
// customer's other carts with a step of the flow due within it go out as
// one decision, for the most valuable cart, and the others are recorded as
// combined into it. Fire may therefore decide about other carts of the
// customer than cartID; it moves no timer but cartID's.
//
// now is the partition's effective time, chosen by the runtime; Fire never
// reads the clock. Ownership of state is as for Apply.
func Fire(state *CustomerState, key, cartID string, now time.Time, cfg *Config) Effects {
	return new(Folder).Fire(state, key, cartID, now, cfg)
}

// Fire is the package's Fire, with the Folder's memory.
func (fo *Folder) Fire(state *CustomerState, key, cartID string, now time.Time, cfg *Config) Effects {
	f := fo.begin(state, key, cfg)
	c := f.s.Cart(cartID)
	if c == nil || c.WakeAt.IsZero() || c.WakeAt.After(now) {
		return f.end()
	}
	fired := c.WakeAt
	switch {
	case !c.IsOpen():
		if !now.Before(c.ClosedAt.Add(f.cfg.ClosedRetention)) {
			f.s.removeCart(c.ID)
			return f.end()
		}
	case !now.Before(f.expiry(c)):
		at := f.expiry(c)
		f.close(c, StatusExpired, at)
		if len(c.Items) == 0 {
			f.s.removeCart(c.ID) // an empty cart was never abandoned
			return f.end()
		}
		f.outcome(c, events.OutcomeLost, c.TotalMinor, at, nil, "")
	case len(c.Items) > 0:
		for i := range f.cfg.Flows {
			fl := &f.cfg.Flows[i]
			if fl.Schedule == nil && fl.Match.Matches(&f.s.Profile, c) {
				f.fireFlow(c, fl, fired, now)
			}
		}
	}
	f.schedule(c)
	return f.end()
}

// fold carries one Apply or Fire.
type fold struct {
	s          *CustomerState
	key        string
	cfg        *Config
	wakes      []TimerChange // carts' timers before, by cart id
	mods       []ModChange   // open carts' modification times before, by cart id
	openBefore int
	eff        Effects
	// deferrals made by this Fire: schedule keeps those steps' wakes at
	// or after them.
	deferrals []deferral
	// cause is the input event Apply folds (see Cause).
	cause Cause
	// Room for the usual few carts, so that a fold allocates once: the
	// backing arrays of wakes and mods, and of the effects' Timers and
	// Modified (the effects share the fold's memory).
	wakeBuf  [2]TimerChange
	modBuf   [2]ModChange
	timerBuf [2]TimerChange
	modifBuf [2]ModChange
}

type deferral struct {
	cart, flow string
	until      time.Time
}

// begin starts a fold in the Folder's memory, keeping only the capacity
// of its deferrals, which no Effects share.
func (fo *Folder) begin(s *CustomerState, key string, cfg *Config) *fold {
	if s == nil {
		s = &CustomerState{Key: key}
	}
	f := &fo.f
	deferrals := f.deferrals[:0]
	*f = fold{s: s, key: key, cfg: cfg, openBefore: s.OpenCarts(), deferrals: deferrals}
	f.wakes, f.mods = f.wakeBuf[:0], f.modBuf[:0]
	f.eff.Timers, f.eff.Modified = f.timerBuf[:0], f.modifBuf[:0]
	for _, c := range s.Carts {
		if !c.WakeAt.IsZero() {
			f.wakes = append(f.wakes, TimerChange{CartID: c.ID, Old: c.WakeAt})
		}
		if c.IsOpen() && !c.ModifiedAt.IsZero() {
			f.mods = append(f.mods, ModChange{CartID: c.ID, Old: c.ModifiedAt})
		}
	}
	return f
}

// end diffs the carts' timers against those at begin and returns the
// effects.
func (f *fold) end() Effects {
	for i := range f.wakes {
		w := &f.wakes[i]
		if c := f.s.Cart(w.CartID); c != nil {
			w.New = c.WakeAt
		}
		if !w.New.Equal(w.Old) {
			f.eff.Timers = append(f.eff.Timers, *w)
		}
	}
	for _, c := range f.s.Carts {
		if !c.WakeAt.IsZero() && !f.hadTimer(c.ID) {
			f.eff.Timers = append(f.eff.Timers, TimerChange{CartID: c.ID, New: c.WakeAt})
		}
	}
	for i := range f.mods {
		m := &f.mods[i]
		if c := f.s.Cart(m.CartID); c != nil && c.IsOpen() {
			m.New = c.ModifiedAt
		}
		if !m.New.Equal(m.Old) {
			f.eff.Modified = append(f.eff.Modified, *m)
		}
	}
	for _, c := range f.s.Carts {
		if c.IsOpen() && !c.ModifiedAt.IsZero() && !f.hadMod(c.ID) {
			f.eff.Modified = append(f.eff.Modified, ModChange{CartID: c.ID, New: c.ModifiedAt})
		}
	}
	if len(f.eff.Timers) == 0 {
		f.eff.Timers = nil
	}
	if len(f.eff.Modified) == 0 {
		f.eff.Modified = nil
	}
	f.eff.OpenCartsDelta = f.s.OpenCarts() - f.openBefore
	if !f.s.empty() {
		f.eff.State = f.s
	}
	return f.eff
}

// hadTimer reports whether the cart had a timer at begin. f.wakes is sorted
// by cart id (it is built from the sorted carts), so this is a binary
// search: a customer with many carts costs O(n log n) per event, not O(n²).
func (f *fold) hadTimer(id string) bool {
	_, ok := slices.BinarySearchFunc(f.wakes, id, func(w TimerChange, id string) int { return cmpString(w.CartID, id) })
	return ok
}

// hadMod reports whether the cart was open and indexed at begin (f.mods
// is sorted by cart id, like f.wakes).
func (f *fold) hadMod(id string) bool {
	_, ok := slices.BinarySearchFunc(f.mods, id, func(m ModChange, id string) int { return cmpString(m.CartID, id) })
	return ok
}

// mutateCart returns the cart an activity is about, opening it when create
// is set, or nil when the activity does not apply (unknown or closed cart
// and !create). It counts the activity: version, modification time, and
// the cart's attributes from the event.
func (f *fold) mutateCart(ref events.CartRef, t time.Time, create bool) *Cart {
	c := f.s.Cart(ref.CartID)
	switch {
	case c == nil:
		if !create || len(f.s.Carts) >= MaxCartsPerCustomer {
			return nil
		}
		c = &Cart{ID: ref.CartID, Status: StatusOpen, CreatedAt: t}
		f.s.addCart(c)
	case !c.IsOpen():
		if !create {
			return nil
		}
		// A closed cart that sees new items starts a new life. An expired
		// cart keeps its items: the shop still shows them to the customer.
		if c.Status != StatusExpired {
			if !t.After(c.ClosedAt) {
				// A late event from before the checkout or discard: it is
				// about the life that ended, not a new one.
				return nil
			}
			// The new life has no decisions yet: the old life's must not
			// claim its checkout.
			c.Items, c.CreatedAt, c.Decisions = nil, t, nil
		}
		c.Status, c.ClosedAt, c.OrderID = StatusOpen, time.Time{}, ""
	}
	if ref.CartType != "" {
		c.Type = ref.CartType
	}
	if ref.Site != "" {
		c.Site = ref.Site
	}
	if ref.Channel != "" {
		c.Channel = ref.Channel
	}
	if ref.Currency != "" {
		c.Currency = ref.Currency
	}
	if ref.LegalEntity != "" {
		c.LegalEntity = ref.LegalEntity
	}
	if len(ref.Metadata) > 0 {
		c.Metadata = ref.Metadata
	}
	c.Version++
	c.ModifiedAt = later(c.ModifiedAt, t)
	if !t.Before(c.LastActivity) {
		c.Cause = f.cause // the activity the cart's steps now count from
	}
	c.LastActivity = later(c.LastActivity, t)
	return c
}

// touched finishes an activity on an open cart.
func (f *fold) touched(c *Cart) {
	c.recompute()
	f.schedule(c)
}

func (f *fold) close(c *Cart, status string, at time.Time) {
	c.Status, c.ClosedAt = status, at
	f.schedule(c)
}

func (f *fold) checkout(d *events.CheckoutCompleted, t time.Time) {
	c := f.s.Cart(d.CartID)
	if c == nil || (c.Status != StatusOpen && c.Status != StatusExpired) {
		return // unknown cart, or a duplicate checkout
	}
	c.Version++
	c.OrderID = d.OrderID
	c.ModifiedAt = later(c.ModifiedAt, t)
	f.close(c, StatusCheckedOut, t)

	kind := events.OutcomeConverted
	var attributed *DecisionRecord
	if r := lastDecisionBefore(c, t); r != nil && t.Sub(r.At) <= f.attributionWindow(r.Flow) {
		attributed, kind = r, events.OutcomeRecovered
		if r.Holdout {
			kind = events.OutcomeConvertedHoldout
		}
	}
	f.outcome(c, kind, d.TotalMinor, t, attributed, d.OrderID)
}

// moveGuestCarts is the guest's side of a login: every open cart of the
// guest is closed as merged and re-emitted, whole, as cart.assigned to the
// customer. Carts already merged are not moved again, so a repeated login
// moves nothing twice.
func (f *fold) moveGuestCarts(l *events.CustomerLoggedIn, t time.Time) {
	for _, c := range f.s.Carts {
		if !c.IsOpen() {
			continue
		}
		snap := c.Snapshot()
		d := events.CartAssigned{
			CartRef: events.CartRef{CustomerID: l.CustomerID, CartID: c.ID, CartType: c.Type, Site: c.Site,
				Channel: c.Channel, Currency: c.Currency, LegalEntity: c.LegalEntity, Metadata: c.Metadata},
			FromKey: f.key, Items: snap.Items, CreatedAt: c.CreatedAt, ModifiedAt: c.ModifiedAt,
			LastActivity: c.LastActivity, Version: c.Version, Cause: c.Cause.Event(""),
		}
		for _, r := range c.Decisions {
			d.Decisions = append(d.Decisions, events.AssignedRecord{ID: r.ID, Flow: r.Flow, Step: r.Step,
				StepIndex: r.StepIndex, Version: r.Version, At: r.At, Due: r.Due, Holdout: r.Holdout,
				Skipped: r.Skipped, Discount: r.Discount, Suppressed: r.Suppressed, Cause: r.Cause.Event(""), Shadow: r.Shadow})
		}
		f.eff.Emits = append(f.eff.Emits, Emit{Key: l.CustomerID, Type: events.TypeCartAssigned, Time: t, Data: d,
			ID: "a-" + hashID(f.key, c.ID, idTime(c.CreatedAt), strconv.FormatInt(c.Version, 10))})
		f.close(c, StatusMerged, t)
		f.outcome(c, events.OutcomeMerged, c.TotalMinor, t, nil, "")
	}
}

// assign is the customer's side of a login: a guest's cart arrives with its
// items, version, last activity and decision history, so a flow in
// progress goes on where it was, and the messages it already had count
// toward the caps (the cart's own, and the customer's frequency cap). A
// repeated assignment changes nothing.
func (f *fold) assign(d *events.CartAssigned) {
	c := f.s.Cart(d.CartID)
	if c != nil && c.AssignedFrom == d.FromKey && c.Version >= max(d.Version, 1) {
		return // already assigned
	}
	hist := make([]DecisionRecord, 0, len(d.Decisions))
	longest := f.cfg.longestCap()
	// The guest's last activity is the cause of the steps that count from
	// it; without one, the assignment itself is.
	cause := f.cause
	if d.Cause != nil && d.Cause.EventID != "" {
		cause = Cause{EventID: d.Cause.EventID, Partition: d.Cause.Partition, Offset: d.Cause.Offset}
	}
	for _, r := range d.Decisions {
		hist = append(hist, DecisionRecord{ID: r.ID, Flow: r.Flow, Step: r.Step, StepIndex: r.StepIndex,
			Version: r.Version, At: r.At, Due: r.Due, Holdout: r.Holdout, Skipped: r.Skipped, Discount: r.Discount,
			Suppressed: r.Suppressed, Shadow: r.Shadow})
		if r.Cause != nil && r.Cause.EventID != "" {
			hist[len(hist)-1].Cause = Cause{EventID: r.Cause.EventID, Partition: r.Cause.Partition, Offset: r.Cause.Offset}
		}
		if rec := &hist[len(hist)-1]; longest > 0 && rec.Counts() && f.capped(rec.Flow) {
			f.s.noteSent(rec.At, longest)
		}
	}
	if c != nil && c.IsOpen() {
		// Events under the customer's id came first for this cart id: the
		// shop kept the guest's cart id across the login. Both sides are
		// the same cart, so the lines merge (see mergeLines), the guest's
		// activities count toward the version (decision ids then differ
		// from both sides' earlier ones), and the guest's start and
		// history are adopted. The newest activity of either side starts
		// the flows' period, so the guest's records of an older period do
		// not hold back the steps of the new one.
		if !d.CreatedAt.IsZero() && d.CreatedAt.Before(c.CreatedAt) {
			c.CreatedAt = d.CreatedAt
		}
		mergeLines(c, d.Items)
		c.Version += max(d.Version, 1)
		c.ModifiedAt = later(c.ModifiedAt, d.ModifiedAt)
		if guest := later(d.LastActivity, d.ModifiedAt); !guest.Before(c.LastActivity) {
			c.Cause = cause
		}
		c.LastActivity = later(c.LastActivity, later(d.LastActivity, d.ModifiedAt))
		c.Decisions = append(hist, c.Decisions...)
		trimHistory(c)
		c.AssignedFrom = d.FromKey
		c.recompute()
		f.schedule(c)
		return
	}
	if c != nil && !later(d.LastActivity, d.ModifiedAt).After(c.ClosedAt) {
		// The customer's cart of this id closed (checked out, discarded)
		// after the guest's last activity on it: the guest's copy is the
		// life that ended, not a new one.
		return
	}
	if c == nil {
		if len(f.s.Carts) >= MaxCartsPerCustomer {
			return
		}
		c = &Cart{ID: d.CartID}
		f.s.addCart(c)
	}
	*c = Cart{ID: d.CartID, Type: d.CartType, Site: d.Site, Channel: d.Channel, Currency: d.Currency,
		LegalEntity: d.LegalEntity, Metadata: d.Metadata, Status: StatusOpen, Version: max(d.Version, 1),
		CreatedAt: d.CreatedAt, ModifiedAt: d.ModifiedAt, LastActivity: later(d.LastActivity, d.ModifiedAt),
		Cause: cause, Decisions: hist, AssignedFrom: d.FromKey}
	trimHistory(c)
	setItems(c, d.Items)
	c.recompute()
	f.schedule(c)
}

// capped reports whether the named flow's messages count toward the
// frequency cap; a flow no longer configured counts, to be safe.
func (f *fold) capped(flow string) bool {
	fl := f.cfg.flow(flow)
	return fl == nil || fl.Guards.FrequencyCap != nil
}

// flow returns the configured flow of the given name, or nil.
func (c *Config) flow(name string) *Flow {
	for i := range c.Flows {
		if c.Flows[i].Name == name {
			return &c.Flows[i]
		}
	}
	return nil
}

// lastDecisionBefore returns the newest emitted decision made at or before t.
func lastDecisionBefore(c *Cart, t time.Time) *DecisionRecord {
	for i := len(c.Decisions) - 1; i >= 0; i-- {
		r := &c.Decisions[i]
		if r.Sent() && !r.At.After(t) {
			return r
		}
	}
	return nil
}

func (f *fold) attributionWindow(flow string) time.Duration {
	for i := range f.cfg.Flows {
		if f.cfg.Flows[i].Name == flow {
			return f.cfg.Flows[i].AttributionWindow
		}
	}
	return DefaultAttributionWindow
}

func (f *fold) updateProfile(d *events.CustomerUpdated, id string, t time.Time) {
	p := &f.s.Profile
	p.CustomerID = d.CustomerID
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&p.Email, d.Email)
	set(&p.Name, d.Name)
	set(&p.Locale, d.Locale)
	set(&p.TimeZone, d.TimeZone)
	set(&p.Segment, d.Segment)
	if d.MarketingConsent != nil {
		p.MarketingConsent = *d.MarketingConsent
		p.ConsentEventID, p.ConsentAt = id, t
	}
	p.UpdatedAt = later(p.UpdatedAt, t)
	// Flows may match on the profile, and quiet hours follow its time
	// zone: the carts' next wakes may have moved.
	for _, c := range f.s.Carts {
		if c.IsOpen() {
			f.schedule(c)
		}
	}
}

// expiry is when an open cart expires: its last activity plus the longest
// expire_after of the live flows that match it, or IdleExpireAfter when none
// do. Shadow flows do not count: adding one must not keep a live cart open
// longer (a shadow step due after the cart expires never comes due).
func (f *fold) expiry(c *Cart) time.Time {
	var d time.Duration
	for i := range f.cfg.Flows {
		if fl := &f.cfg.Flows[i]; !fl.Shadow && fl.Match.Matches(&f.s.Profile, c) {
			d = max(d, fl.ExpireAfter)
		}
	}
	if d == 0 {
		d = f.cfg.IdleExpireAfter
	}
	return c.LastActivity.Add(d)
}

// nextStep returns the index of the flow's first step not yet decided in
// the cart's current inactivity period, or -1 when all are. A step counts
// as decided when a record of it has the cart's current version, or has an
// older version but the same due time: a late event (older than the cart's
// last activity) bumps the version without starting a new period, and must
// not send the period's steps again.
func nextStep(key string, c *Cart, fl *Flow) int {
	next := 0
	for i := range c.Decisions {
		r := &c.Decisions[i]
		if r.Flow != fl.Name || r.StepIndex < next {
			continue
		}
		samePeriod := r.StepIndex < len(fl.Steps) && r.DueAt().Equal(c.LastActivity.Add(fl.afterFor(key, r.StepIndex)))
		if r.Version == c.Version || samePeriod {
			next = r.StepIndex + 1
		}
	}
	if next >= len(fl.Steps) {
		return -1
	}
	return next
}

// stepPlan is the step of a flow a cart has due by some time: the latest
// one due (last), and the earlier ones due with it (first..last-1), which
// are passed over.
type stepPlan struct {
	c           *Cart
	first, last int
	due         time.Time // of step last
	checks      Checks    // what the guards found, once evaluated
}

func planStep(key string, c *Cart, fl *Flow, by time.Time) (stepPlan, bool) {
	first := nextStep(key, c, fl)
	if first < 0 {
		return stepPlan{}, false
	}
	last := -1
	for i := first; i < len(fl.Steps); i++ {
		if !c.LastActivity.Add(fl.afterFor(key, i)).After(by) {
			last = i
		}
	}
	if last < 0 {
		return stepPlan{}, false
	}
	return stepPlan{c: c, first: first, last: last, due: c.LastActivity.Add(fl.afterFor(key, last))}, true
}

// fireFlow decides the latest step of fl that is due by now. Earlier steps
// due at the same time are recorded as skipped: a customer gets one message,
// not a burst of all the ones that were missed. fired is the due time of
// the cart's timer that is running.
func (f *fold) fireFlow(c *Cart, fl *Flow, fired, now time.Time) {
	p, ok := planStep(f.key, c, fl, now)
	if !ok {
		return
	}
	at := f.decisionTime(fl, p.due, fired, now)
	if at.After(now) {
		st := &fl.Steps[p.last]
		f.deferrals = append(f.deferrals, deferral{cart: c.ID, flow: fl.Name, until: at})
		if fl.Shadow {
			return // pending like a live step's, and not published
		}
		f.eff.Deferred = append(f.eff.Deferred, Deferral{
			ID:         DeferralID(f.key, c.ID, c.CreatedAt, fl.Name, st.Name, p.due),
			DecisionID: DecisionID(f.key, c.ID, c.CreatedAt, fl.Name, st.Name, c.Version),
			Reason:     events.DeferredQuietHours, Flow: fl.Name, Step: st.Name, StepIndex: p.last, Action: st.Action,
			Holdout: fl.InHoldout(f.key), CustomerKey: f.key, CartID: c.ID, CartType: c.Type, Site: c.Site,
			Channel: c.Channel, Currency: c.Currency, ValueMinor: c.TotalMinor,
			Due: p.due, At: p.due, Until: at, Cause: c.Cause.Event("")})
		return
	}
	holdout := fl.InHoldout(f.key)
	reason, checks := f.guard(c, fl, &fl.Steps[p.last], at)
	p.checks = checks
	if reason != "" {
		f.suppress(p, fl, at, holdout, reason, "")
		return
	}
	group := []stepPlan{p}
	if w := fl.Guards.CombineWindow; w > 0 {
		group = f.combinable(group, fl, at, later(at.Add(w), now))
	}
	win := 0
	for i := 1; i < len(group); i++ {
		if group[i].c.TotalMinor > group[win].c.TotalMinor {
			win = i
		}
	}
	id := f.decide(group[win], fl, at, holdout)
	for i, g := range group {
		if i != win {
			f.suppress(g, fl, at, holdout, ReasonCombined, id)
		}
	}
	// The other carts' timers stay where they are: each fires as it
	// would have, finds its step decided, and moves on. Their wakes can
	// only have moved later, and Fire keeps to moving the timer it runs
	// (a runtime that fetched a batch of due timers may rely on it).
	if fc := fl.Guards.FrequencyCap; fc != nil && !holdout && !fl.Shadow {
		f.s.noteSent(at, f.cfg.longestCap())
	}
}

// decisionTime is when a step due at due is decided, its cart's timer
// having come due at fired and running at now: not before either, and
// never inside the flow's quiet hours, neither at that time nor at now (a
// lagging runtime must not send at night what came due in the evening).
// A time after now means: deferred until then.
func (f *fold) decisionTime(fl *Flow, due, fired, now time.Time) time.Time {
	at := later(due, fired)
	q := fl.Guards.QuietHours
	if q == nil {
		return at
	}
	loc := fl.Guards.customerLocation(&f.s.Profile)
	at = q.End(at, loc)
	if !at.After(now) && q.Contains(now, loc) {
		at = q.End(now, loc)
	}
	return at
}

// guard returns why the step of fl may not be sent for the cart at t, or
// "" when it may, and what each guard found (every configured guard is
// evaluated; the first that fails, in the order consent, cart cap,
// frequency cap, gives the reason).
func (f *fold) guard(c *Cart, fl *Flow, st *Step, t time.Time) (string, Checks) {
	g := &fl.Guards
	p := &f.s.Profile
	reason := ""
	ck := Checks{Consent: ConsentNotRequired}
	if g.needsConsent(st.Action) {
		ck.Consent, ck.ConsentEventID, ck.ConsentAt = ConsentGranted, p.ConsentEventID, p.ConsentAt
		if !p.MarketingConsent {
			ck.Consent, reason = ConsentDenied, ReasonNoConsent
		}
	}
	if g.MaxMessagesPerCart > 0 {
		ck.CartMax, ck.CartCount = g.MaxMessagesPerCart, messages(c, fl)
		if ck.CartCount >= ck.CartMax && reason == "" {
			reason = ReasonCartCap
		}
	}
	if fc := g.FrequencyCap; fc != nil {
		n := fc.fullest(f.capTimes(fl), t)
		ck.CapMax, ck.CapPer, ck.CapCount = fc.Max, fc.Per, n-1
		if n > fc.Max && reason == "" {
			reason = ReasonFrequencyCap
		}
	}
	if q := g.QuietHours; q != nil {
		ck.QuietZone, ck.QuietFrom, ck.QuietTo = g.customerLocation(p).String(), q.From, q.To
	}
	return reason, ck
}

// The caps count fl's own holdout decisions as if they had been sent, for
// fl's steps only. So they filter both arms of fl's lift alike: a treated
// customer's later steps of fl are capped by the messages fl sent, and a
// holdout customer's by the ones fl would have sent; otherwise the holdout
// would keep carts the treated arm loses to the caps, and the arms would
// be different populations. Other flows count only what was sent: not
// messaging the holdout is part of what fl's lift measures.

// A shadow flow's own decisions count toward the caps for its own steps,
// as if they had been sent (that is what would happen were it live), and
// so do the live flows' messages; a shadow decision counts toward no
// live flow's caps, so that it never stops a live message.

// messages counts the messages of the cart's current life that the cart
// cap counts for a step of fl. trimHistory keeps those records longest.
func messages(c *Cart, fl *Flow) int {
	n := 0
	for i := range c.Decisions {
		if r := &c.Decisions[i]; r.Counts() || r.Holdout && r.Sent() && r.Flow == fl.Name || fl.Shadow && r.ownShadow(fl) {
			n++
		}
	}
	return n
}

// ownShadow reports whether the record is a decision of the shadow flow fl.
func (r *DecisionRecord) ownShadow(fl *Flow) bool {
	return r.Shadow && r.decided() && r.Flow == fl.Name
}

// capTimes returns the message times the frequency cap counts for a step
// of fl, sorted: the customer's sent messages and fl's holdout decisions
// (for a shadow flow, its own decisions).
func (f *fold) capTimes(fl *Flow) []time.Time {
	var held []time.Time
	for _, c := range f.s.Carts {
		for i := range c.Decisions {
			if r := &c.Decisions[i]; r.Holdout && r.Sent() && r.Flow == fl.Name || fl.Shadow && r.ownShadow(fl) {
				held = append(held, r.At)
			}
		}
	}
	if len(held) == 0 {
		return f.s.Sent
	}
	all := append(slices.Clone(f.s.Sent), held...)
	slices.SortFunc(all, time.Time.Compare)
	return all
}

// combinable adds to a group of one the customer's other open carts that a
// decision of fl at `at` can cover: same currency, matched by fl, a step of
// fl due by `by` with the same action, passing the guards, and not
// expiring by then.
func (f *fold) combinable(group []stepPlan, fl *Flow, at, by time.Time) []stepPlan {
	a := group[0]
	action := fl.Steps[a.last].Action
	for _, b := range f.s.Carts {
		if b == a.c || !b.IsOpen() || len(b.Items) == 0 || b.Currency != a.c.Currency ||
			!fl.Match.Matches(&f.s.Profile, b) || !by.Before(f.expiry(b)) {
			continue
		}
		bp, ok := planStep(f.key, b, fl, by)
		if !ok || fl.Steps[bp.last].Action != action {
			continue
		}
		reason, checks := f.guard(b, fl, &fl.Steps[bp.last], at)
		if reason != "" {
			continue
		}
		bp.checks = checks
		group = append(group, bp)
	}
	return group
}

// skipEarlier records the steps passed over by a plan, and publishes each
// as suppressed (superseded) into the plan's decision, if it has one.
func (f *fold) skipEarlier(p stepPlan, fl *Flow, holdout bool, into string) {
	c := p.c
	for i := p.first; i < p.last; i++ {
		due := c.LastActivity.Add(fl.afterFor(f.key, i))
		f.record(c, DecisionRecord{Flow: fl.Name, Step: fl.Steps[i].Name, StepIndex: i, Version: c.Version,
			At: due, Skipped: true, Cause: c.Cause, Shadow: fl.Shadow})
		if fl.Shadow {
			continue
		}
		id := DecisionID(f.key, c.ID, c.CreatedAt, fl.Name, fl.Steps[i].Name, c.Version)
		f.eff.Suppressed = append(f.eff.Suppressed, f.suppression(c, fl, i, id, ReasonSuperseded, into, due, due, holdout))
	}
}

// decide emits the decision of a plan at `at` and returns its id.
func (f *fold) decide(p stepPlan, fl *Flow, at time.Time, holdout bool) string {
	c := p.c
	st, _ := fl.StepFor(f.key, p.last)
	id := DecisionID(f.key, c.ID, c.CreatedAt, fl.Name, st.Name, c.Version)
	f.skipEarlier(p, fl, holdout, id)
	validUntil := f.expiry(c)
	if p.last+1 < len(fl.Steps) {
		validUntil = c.LastActivity.Add(fl.afterFor(f.key, p.last+1))
	}
	r := DecisionRecord{ID: id, Flow: fl.Name, Step: st.Name, StepIndex: p.last, Version: c.Version,
		At: at, Holdout: holdout, Discount: st.Discount != nil, Cause: c.Cause, Checks: p.checks, Shadow: fl.Shadow}
	if !p.due.Equal(at) {
		r.Due = p.due
	}
	f.record(c, r)
	f.emitDecision(c, fl, p.last, id, at, validUntil, holdout)
	return id
}

// emitDecision publishes the decision of step j of fl for the cart: the
// step as the customer's variant has it (template, discount), naming the
// variant; a holdout decision names the variant too, and is sent nothing.
func (f *fold) emitDecision(c *Cart, fl *Flow, j int, id string, at, validUntil time.Time, holdout bool) {
	st, variant := fl.StepFor(f.key, j)
	pr := &f.s.Profile
	d := events.Decision{
		ID: id, Flow: fl.Name, Step: st.Name, StepIndex: j, Action: st.Action, Template: st.Template,
		Discount: st.Discount, Variant: variant, Holdout: holdout, Cart: c.Snapshot(),
		Customer: events.CustomerSnapshot{Key: f.key, CustomerID: pr.CustomerID, Email: pr.Email, Name: pr.Name,
			Locale: pr.Locale, TimeZone: pr.TimeZone, MarketingConsent: pr.MarketingConsent},
		DecidedAt: at, ValidUntil: validUntil, Cause: c.Cause.Event(""),
	}
	if fl.Shadow {
		d.Shadow, d.ShadowOf, d.AttributeUntil = true, fl.ShadowOf, at.Add(fl.AttributionWindow)
		f.eff.Shadow = append(f.eff.Shadow, d)
		return
	}
	f.eff.Decisions = append(f.eff.Decisions, d)
}

// suppress records a plan's step as suppressed for reason; into names the
// decision a combined step went out with.
func (f *fold) suppress(p stepPlan, fl *Flow, at time.Time, holdout bool, reason, into string) {
	c := p.c
	f.skipEarlier(p, fl, holdout, "")
	st := &fl.Steps[p.last]
	r := DecisionRecord{ID: into, Flow: fl.Name, Step: st.Name, StepIndex: p.last, Version: c.Version,
		At: at, Holdout: holdout, Suppressed: reason, Cause: c.Cause, Checks: p.checks, Shadow: fl.Shadow}
	if !p.due.Equal(at) {
		r.Due = p.due
	}
	f.record(c, r)
	if fl.Shadow {
		return // recorded, for the shadow flow's own steps; not published
	}
	f.eff.Suppressed = append(f.eff.Suppressed,
		f.suppression(c, fl, p.last, DecisionID(f.key, c.ID, c.CreatedAt, fl.Name, st.Name, c.Version), reason, into, p.due, at, holdout))
}

// suppression is the record of step j of fl suppressed for the cart.
func (f *fold) suppression(c *Cart, fl *Flow, j int, decisionID, reason, into string, due, at time.Time, holdout bool) Suppression {
	st := &fl.Steps[j]
	return Suppression{ID: SuppressionID(decisionID), DecisionID: decisionID, Reason: reason,
		Stage: events.StageProcessor, Into: into, Flow: fl.Name, Step: st.Name, StepIndex: j, Action: st.Action,
		Holdout: holdout, CustomerKey: f.key, CartID: c.ID, CartType: c.Type, Site: c.Site, Channel: c.Channel,
		Currency: c.Currency, ValueMinor: c.TotalMinor, Due: due, At: at, Cause: c.Cause.Event("")}
}

func (f *fold) record(c *Cart, r DecisionRecord) {
	c.Decisions = append(c.Decisions, r)
	trimHistory(c)
}

// trimHistory bounds the cart's history to MaxDecisionHistory records of
// live flows and MaxShadowHistory of shadow flows, each apart: a shadow
// record never pushes out a live one, so the live records are the same
// with and without shadow flows. It drops the oldest record that decided
// nothing (skipped, suppressed) first, so that the caps keep seeing every
// decision of the cart's life, holdout decisions included (see messages).
func trimHistory(c *Cart) {
	shadow := 0
	for i := range c.Decisions {
		if c.Decisions[i].Shadow {
			shadow++
		}
	}
	for ; shadow > MaxShadowHistory; shadow-- {
		dropRecord(c, true)
	}
	for len(c.Decisions)-shadow > MaxDecisionHistory {
		dropRecord(c, false)
	}
}

// dropRecord drops the oldest record of a shadow (or live) flow that
// decided nothing, or else the oldest one.
func dropRecord(c *Cart, shadow bool) {
	i := slices.IndexFunc(c.Decisions, func(r DecisionRecord) bool { return r.Shadow == shadow && !r.decided() })
	if i < 0 {
		i = slices.IndexFunc(c.Decisions, func(r DecisionRecord) bool { return r.Shadow == shadow })
	}
	c.Decisions = slices.Delete(c.Decisions, i, i+1)
}

// schedule sets the cart's WakeAt: for an open cart the earliest of its
// next step's wake in any matching flow (see wake) and its expiry; for a
// closed cart the end of its retention.
func (f *fold) schedule(c *Cart) {
	if !c.IsOpen() {
		c.WakeAt = c.ClosedAt.Add(f.cfg.ClosedRetention)
		return
	}
	next := f.expiry(c)
	if len(c.Items) > 0 {
		for i := range f.cfg.Flows {
			fl := &f.cfg.Flows[i]
			if fl.Schedule != nil || !fl.Match.Matches(&f.s.Profile, c) {
				continue
			}
			if w := f.wake(c, fl); !w.IsZero() && w.Before(next) {
				next = w
			}
		}
	}
	c.WakeAt = next
}

// wake is when the fold must look at the cart's next step of fl: its due
// time, or the end of a deferral made by this Fire; zero when no step is
// pending.
//
// A step due inside quiet hours wakes the cart at its due time, and Fire
// defers it then (Effects.Deferred): the deferral is visible, and it
// follows the time zone the customer has when the step comes due. The
// deferral is not stored: when something reschedules the cart before the
// window ends (a profile change, say), the timer goes back to the due time
// and the next Fire defers the step again.
func (f *fold) wake(c *Cart, fl *Flow) time.Time {
	j := nextStep(f.key, c, fl)
	if j < 0 {
		return time.Time{}
	}
	at := c.LastActivity.Add(fl.afterFor(f.key, j))
	for _, d := range f.deferrals {
		if d.cart == c.ID && d.flow == fl.Name {
			at = later(at, d.until)
		}
	}
	return at
}

func (f *fold) outcome(c *Cart, kind string, value int64, at time.Time, r *DecisionRecord, orderID string) {
	o := events.Outcome{
		ID: OutcomeID(f.key, c.ID, c.CreatedAt, kind, c.Version), Kind: kind, CustomerKey: f.key, CartID: c.ID,
		CartType: c.Type, Site: c.Site, Channel: c.Channel, Currency: c.Currency, ValueMinor: value,
		OrderID: orderID, At: at,
	}
	for i := range c.Decisions {
		if c.Decisions[i].Sent() {
			o.Decisions++
		}
	}
	if r != nil {
		o.DecisionID, o.Flow, o.Step, o.Holdout = r.ID, r.Flow, r.Step, r.Holdout
		o.SinceDecided = int64(at.Sub(r.At) / time.Second)
	}
	f.eff.Outcomes = append(f.eff.Outcomes, o)
}

func addItem(c *Cart, it events.Item) {
	for i := range c.Items {
		if li := &c.Items[i]; li.SKU == it.SKU {
			li.Quantity = min(li.Quantity+it.Quantity, events.MaxQuantity)
			li.UnitPriceMinor = it.UnitPriceMinor
			li.Name, li.Category, li.ImageURL = it.Name, it.Category, it.ImageURL
			return
		}
	}
	if len(c.Items) >= events.MaxItems {
		return // bounded state: further lines are ignored
	}
	c.Items = append(c.Items, LineItem{SKU: it.SKU, Name: it.Name, Quantity: it.Quantity,
		UnitPriceMinor: it.UnitPriceMinor, Category: it.Category, ImageURL: it.ImageURL})
}

// updateItem sets a line's quantity (0 removes it) and, when price > 0, its
// unit price. Unknown SKUs are ignored.
func updateItem(c *Cart, sku string, qty, price int64) {
	for i := range c.Items {
		if li := &c.Items[i]; li.SKU == sku {
			if qty == 0 {
				c.Items = append(c.Items[:i], c.Items[i+1:]...)
				return
			}
			li.Quantity = qty
			if price > 0 {
				li.UnitPriceMinor = price
			}
			return
		}
	}
}

// mergeLines adds a guest's lines to the customer's side of the same cart:
// a SKU on both sides gets the sum of the quantities (item_added counts
// what was added, and each side saw only its own additions) at the
// customer side's price, which is newer; a SKU only the guest had is
// added as it was.
func mergeLines(c *Cart, guest []events.Item) {
	for _, it := range guest {
		if i := slices.IndexFunc(c.Items, func(li LineItem) bool { return li.SKU == it.SKU }); i >= 0 {
			c.Items[i].Quantity = min(c.Items[i].Quantity+it.Quantity, events.MaxQuantity)
			continue
		}
		addItem(c, it)
	}
}

func setItems(c *Cart, items []events.Item) {
	c.Items = c.Items[:0]
	for _, it := range items {
		addItem(c, it)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// DecisionID is the deterministic id of the decision for one step of one
// flow on one version of a cart. created is the cart's creation time: it
// tells the lives of a cart id apart, since a cart that is dropped from
// state (retention over, emptied and expired, customer erased) and comes
// back starts again at version 1.
func DecisionID(key, cartID string, created time.Time, flow, step string, version int64) string {
	return "d-" + hashID(key, cartID, idTime(created), flow, step, strconv.FormatInt(version, 10))
}

// OutcomeID is the deterministic id of an outcome of one version of a cart
// created at created (see DecisionID).
func OutcomeID(key, cartID string, created time.Time, kind string, version int64) string {
	return "o-" + hashID(key, cartID, idTime(created), kind, strconv.FormatInt(version, 10))
}

func idTime(t time.Time) string {
	return strconv.FormatInt(t.Unix(), 10) + "." + strconv.Itoa(t.Nanosecond())
}

func hashID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}
