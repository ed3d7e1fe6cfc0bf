package projections

// The test harness shared by the golden, replay, fuzz and benchmark tests:
// a miniature runtime that keeps customer states and a timer index the way
// the processor does, fires timers in due order, and checks the fold's
// invariants after every step.

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cartlift/cartlift/events"
)

// timerKey names the one timer a cart may have.
type timerKey struct {
	Key    string
	CartID string
}

// timerEntry is one entry of the timer index. The index is ordered by due
// time, then customer key, then cart id, as the processor's Pebble index is.
type timerEntry struct {
	Due    time.Time `json:"due"`
	Key    string    `json:"key"`
	CartID string    `json:"cart_id"`
}

func cmpTimers(a, b timerEntry) int {
	if c := a.Due.Compare(b.Due); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return cmp.Compare(a.CartID, b.CartID)
}

// timerIndex maps each cart with a timer to its due time.
type timerIndex map[timerKey]time.Time

// apply moves timers as the fold says, checking that every change starts
// from what the index holds: a TimerChange whose Old disagrees with the
// index would leave a stale timer behind in the real store.
func (ix timerIndex) apply(key string, changes []TimerChange) error {
	for _, tc := range changes {
		k := timerKey{key, tc.CartID}
		cur, ok := ix[k]
		switch {
		case tc.Old.IsZero() && ok:
			return fmt.Errorf("timer %s/%s: change from none, but the index holds %s", key, tc.CartID, fmtTime(cur))
		case !tc.Old.IsZero() && !ok:
			return fmt.Errorf("timer %s/%s: change from %s, but the index holds none", key, tc.CartID, fmtTime(tc.Old))
		case !tc.Old.IsZero() && !cur.Equal(tc.Old):
			return fmt.Errorf("timer %s/%s: change from %s, but the index holds %s", key, tc.CartID, fmtTime(tc.Old), fmtTime(cur))
		case tc.Old.Equal(tc.New):
			return fmt.Errorf("timer %s/%s: change from %s to itself", key, tc.CartID, fmtTime(tc.Old))
		}
		if tc.New.IsZero() {
			delete(ix, k)
		} else {
			ix[k] = tc.New
		}
	}
	return nil
}

// first returns the earliest timer.
func (ix timerIndex) first() (timerEntry, bool) {
	var best timerEntry
	found := false
	for k, due := range ix {
		e := timerEntry{Due: due, Key: k.Key, CartID: k.CartID}
		if !found || cmpTimers(e, best) < 0 {
			best, found = e, true
		}
	}
	return best, found
}

func (ix timerIndex) sorted() []timerEntry {
	out := make([]timerEntry, 0, len(ix))
	for k, due := range ix {
		out = append(out, timerEntry{Due: due, Key: k.Key, CartID: k.CartID})
	}
	slices.SortFunc(out, cmpTimers)
	return out
}

// step is one Apply or Fire as the sim ran it, handed to observers.
type step struct {
	Kind   string // "event" or "fire"
	Key    string
	CartID string    // fire only
	Due    time.Time // fire only: the timer's due time
	Now    time.Time // fire only
	Event  *events.Event
	Eff    Effects
	Before bool // the customer had state before the step
}

// sim is a miniature runtime: customer states, the timer index and the
// partition's effective time, driven the way the processor drives the
// fold. It is not safe for concurrent use.
type sim struct {
	cfg    *Config
	states map[string]*CustomerState
	timers timerIndex
	// eff is the effective time: the newest event time seen.
	eff time.Time
	// open is the running sum of OpenCartsDelta.
	open int
	// observe, when set, sees every step after it ran.
	observe func(*step)
	chk     *checker
	// touched holds the customers changed since the last check.
	touched map[string]bool
	// mods is the index of open carts by modification time, kept from
	// Effects.Modified as the processor keeps it: by key, by cart.
	mods map[string]map[string]time.Time
	// lastRun holds the scheduled flows' last runs, by flow index; clock
	// is the effective time Advance keeps.
	lastRun map[int]time.Time
	clock   time.Time
}

func newSim(cfg *Config) *sim {
	return &sim{cfg: cfg, states: map[string]*CustomerState{}, timers: timerIndex{}, chk: newChecker(cfg),
		touched: map[string]bool{}, mods: map[string]map[string]time.Time{}}
}

// apply folds one event into the state of key.
func (s *sim) apply(key string, ev *events.Event) error {
	pre := s.chk.before(s.states[key], ev)
	_, had := s.states[key]
	eff := Apply(s.states[key], key, ev, s.cfg)
	st := &step{Kind: "event", Key: key, Event: ev, Eff: eff, Before: had}
	if err := s.store(key, eff); err != nil {
		return fmt.Errorf("apply %s %s at %s: %w", key, ev.Type, fmtTime(ev.Time), err)
	}
	if err := s.chk.afterApply(key, ev, pre, eff, s.states[key]); err != nil {
		return fmt.Errorf("apply %s %s at %s: %w", key, ev.Type, fmtTime(ev.Time), err)
	}
	if s.observe != nil {
		s.observe(st)
	}
	return nil
}

// fire runs the timer of one cart at now.
func (s *sim) fire(key, cartID string, due, now time.Time) error {
	_, had := s.states[key]
	eff := Fire(s.states[key], key, cartID, now, s.cfg)
	st := &step{Kind: "fire", Key: key, CartID: cartID, Due: due, Now: now, Eff: eff, Before: had}
	if err := s.store(key, eff); err != nil {
		return fmt.Errorf("fire %s/%s at %s: %w", key, cartID, fmtTime(now), err)
	}
	if err := s.chk.afterFire(key, cartID, now, eff, s.states[key]); err != nil {
		return fmt.Errorf("fire %s/%s at %s: %w", key, cartID, fmtTime(now), err)
	}
	if s.observe != nil {
		s.observe(st)
	}
	return nil
}

// runSchedule runs one scheduled run of the named flow at run, as the
// processor does: every open cart in the modification index (sorted by
// customer key, then cart id) goes through FireSchedule, which decides
// whether it is in the run's time frame.
func (s *sim) runSchedule(flow string, run time.Time) error {
	var fl *Flow
	for i := range s.cfg.Flows {
		if s.cfg.Flows[i].Name == flow {
			fl = &s.cfg.Flows[i]
		}
	}
	if fl == nil || fl.Schedule == nil {
		return fmt.Errorf("no scheduled flow %q", flow)
	}
	for _, key := range slices.Sorted(maps.Keys(s.mods)) {
		for _, cart := range slices.Sorted(maps.Keys(s.mods[key])) {
			_, had := s.states[key]
			eff := FireSchedule(s.states[key], key, cart, fl, run, s.cfg)
			st := &step{Kind: "schedule", Key: key, CartID: cart, Now: run, Eff: eff, Before: had}
			if err := s.store(key, eff); err != nil {
				return fmt.Errorf("run %s at %s, %s/%s: %w", flow, fmtTime(run), key, cart, err)
			}
			if s.observe != nil && (len(eff.Decisions) > 0 || len(eff.Suppressed) > 0) {
				s.observe(st)
			}
		}
	}
	return nil
}

func (s *sim) store(key string, eff Effects) error {
	s.touched[key] = true
	if eff.State == nil {
		delete(s.states, key)
	} else {
		if eff.State.Key != key {
			return fmt.Errorf("state of %q has key %q", key, eff.State.Key)
		}
		s.states[key] = eff.State
	}
	s.open += eff.OpenCartsDelta
	if err := s.applyMods(key, eff.Modified); err != nil {
		return err
	}
	return s.timers.apply(key, eff.Timers)
}

// applyMods keeps the modification index and checks it against the state:
// exactly the open carts, at their ModifiedAt.
func (s *sim) applyMods(key string, changes []ModChange) error {
	m := s.mods[key]
	if m == nil {
		m = map[string]time.Time{}
		s.mods[key] = m
	}
	for _, mc := range changes {
		cur, ok := m[mc.CartID]
		if ok != !mc.Old.IsZero() || (ok && !cur.Equal(mc.Old)) {
			return fmt.Errorf("modification index of %s/%s: change from %s, but it is at %s (%v)", key, mc.CartID, fmtTime(mc.Old), fmtTime(cur), ok)
		}
		if mc.New.IsZero() {
			delete(m, mc.CartID)
		} else {
			m[mc.CartID] = mc.New
		}
	}
	n := 0
	if st := s.states[key]; st != nil {
		for _, c := range st.Carts {
			if !c.IsOpen() || c.ModifiedAt.IsZero() {
				continue
			}
			n++
			if at, ok := m[c.ID]; !ok || !at.Equal(c.ModifiedAt) {
				return fmt.Errorf("modification index of %s/%s: %s (%v), cart modified at %s", key, c.ID, fmtTime(at), ok, fmtTime(c.ModifiedAt))
			}
		}
	}
	if n != len(m) {
		return fmt.Errorf("modification index of %s: %d entries, %d open carts", key, len(m), n)
	}
	if len(m) == 0 {
		delete(s.mods, key)
	}
	return nil
}

// fireDue fires, in due order, every timer due before limit (strict) or at
// or before it (!strict), each with now = at(its due time). A fired timer
// that moves to another due time in range fires again.
func (s *sim) fireDue(limit time.Time, at func(due time.Time) time.Time, strict bool) error {
	// A timer fires at most once per step of a flow, then for the expiry,
	// then for the drop: more fires than this means a timer that moves but
	// never out of range.
	bound := 10 * (len(s.timers) + 10)
	for n := 0; ; n++ {
		e, ok := s.timers.first()
		if !ok || e.Due.After(limit) || (strict && e.Due.Equal(limit)) {
			return nil
		}
		if n > bound {
			return fmt.Errorf("timers do not make progress: %s/%s due %s keeps firing", e.Key, e.CartID, fmtTime(e.Due))
		}
		now := at(e.Due)
		if err := s.fire(e.Key, e.CartID, e.Due, now); err != nil {
			return err
		}
		if due, ok := s.timers[timerKey{e.Key, e.CartID}]; ok && due.Equal(e.Due) {
			return fmt.Errorf("timer %s/%s due %s fired at %s and did not move", e.Key, e.CartID, fmtTime(e.Due), fmtTime(now))
		}
	}
}

// event is the runtime's loop body for one input record while it works
// through a backlog, as in processor/worker.go: the clock moves in event
// time to just before the event (Advance, Catchup: every timer due by then
// fires at its own due time, every scheduled run due by then happens; an
// event exactly at a due time counts as activity first); then the event is
// applied, and the effective time moves to the newest event time seen.
func (s *sim) event(key string, ev *events.Event) error {
	if err := Advance(s.cfg, s, ev.Time.Add(-1), Catchup); err != nil {
		return err
	}
	if err := s.apply(key, ev); err != nil {
		return err
	}
	if ev.Time.After(s.eff) {
		s.eff = ev.Time
	}
	return nil
}

// advance moves the effective time to t (if later) and fires every timer
// due at or before it at t, like a caught-up partition's timer driver
// (Live). Scheduled runs are left to the scripts' run and catchup
// commands.
func (s *sim) advance(t time.Time) error {
	if t.After(s.eff) {
		s.eff = t
	}
	to := later(s.eff, s.clock)
	err := s.FireTimers(Firing{UpTo: to, Mode: Live, From: s.clock})
	s.clock = to
	return err
}

// Clock, SetClock and FireTimers are the sim's Partition methods (see
// Advance).
func (s *sim) Clock() time.Time     { return s.clock }
func (s *sim) SetClock(t time.Time) { s.clock = t }

func (s *sim) FireTimers(f Firing) error { return s.fireDue(f.UpTo, f.At, false) }

// LastRun, SetLastRun and Run are the sim's Partition methods.
func (s *sim) LastRun(flow int) (time.Time, bool) {
	t, ok := s.lastRun[flow]
	return t, ok
}

func (s *sim) SetLastRun(flow int, t time.Time) {
	if s.lastRun == nil {
		s.lastRun = map[int]time.Time{}
	}
	s.lastRun[flow] = t
}

func (s *sim) Run(flow int, run time.Time) error {
	s.SetLastRun(flow, run)
	return s.runSchedule(s.cfg.Flows[flow].Name, run)
}

// snapshot is everything a runtime persists: states, timers, effective
// time. Its JSON is what the restart test round-trips.
type snapshot struct {
	Eff    time.Time        `json:"eff"`
	Clock  time.Time        `json:"clock"`
	Open   int              `json:"open"`
	States []*CustomerState `json:"states"`
	Timers []timerEntry     `json:"timers"`
}

func (s *sim) snapshot() snapshot {
	snap := snapshot{Eff: s.eff, Clock: s.clock, Open: s.open, Timers: s.timers.sorted()}
	for _, k := range slices.Sorted(maps.Keys(s.states)) {
		snap.States = append(snap.States, s.states[k])
	}
	return snap
}

func (s *sim) marshal() []byte {
	b, err := json.Marshal(s.snapshot())
	if err != nil {
		panic(err)
	}
	return b
}

// restore replaces the sim's state by a snapshot's JSON.
func (s *sim) restore(data []byte) error {
	var snap snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return err
	}
	s.eff, s.clock, s.open = snap.Eff, snap.Clock, snap.Open
	s.states = map[string]*CustomerState{}
	for _, st := range snap.States {
		s.states[st.Key] = st
	}
	s.timers = timerIndex{}
	for _, e := range snap.Timers {
		s.timers[timerKey{e.Key, e.CartID}] = e.Due
	}
	return nil
}

// check verifies the invariants that tie states and the timer index
// together, for the customers changed since the last check.
func (s *sim) check() error {
	keys := s.touched
	s.touched = map[string]bool{}
	return s.checkKeys(keys)
}

// checkAll verifies the invariants for every customer, and the open-carts
// count.
func (s *sim) checkAll() error {
	s.touched = map[string]bool{}
	return s.checkKeys(nil)
}

// checkKeys checks the given customers, or all when keys is nil.
func (s *sim) checkKeys(keys map[string]bool) error {
	var errs []error
	open := 0
	timers := map[string]int{}
	for k := range s.timers {
		if keys == nil || keys[k.Key] {
			timers[k.Key]++
		}
	}
	for key, st := range s.states {
		if keys != nil && !keys[key] {
			continue
		}
		if st == nil {
			errs = append(errs, fmt.Errorf("%s: nil state stored", key))
			continue
		}
		if st.empty() {
			errs = append(errs, fmt.Errorf("%s: empty state stored instead of deleted", key))
		}
		for i, c := range st.Carts {
			if i > 0 && st.Carts[i-1].ID >= c.ID {
				errs = append(errs, fmt.Errorf("%s: carts not sorted by id or duplicated: %q then %q", key, st.Carts[i-1].ID, c.ID))
			}
			if c.IsOpen() {
				open++
			}
			if err := checkCart(c); err != nil {
				errs = append(errs, fmt.Errorf("%s/%s: %w", key, c.ID, err))
			}
			due, ok := s.timers[timerKey{key, c.ID}]
			if ok {
				timers[key]--
			}
			switch {
			case c.WakeAt.IsZero() && ok:
				errs = append(errs, fmt.Errorf("%s/%s: no WakeAt, but the index holds a timer at %s", key, c.ID, fmtTime(due)))
			case !c.WakeAt.IsZero() && !ok:
				errs = append(errs, fmt.Errorf("%s/%s: WakeAt %s, but the index holds no timer", key, c.ID, fmtTime(c.WakeAt)))
			case ok && !due.Equal(c.WakeAt):
				errs = append(errs, fmt.Errorf("%s/%s: WakeAt %s, but the index holds %s", key, c.ID, fmtTime(c.WakeAt), fmtTime(due)))
			}
		}
	}
	for key, n := range timers {
		if n != 0 {
			errs = append(errs, fmt.Errorf("%s: %d timers in the index without a cart", key, n))
		}
	}
	if keys == nil && open != s.open {
		errs = append(errs, fmt.Errorf("%d open carts, but the OpenCartsDelta sum is %d", open, s.open))
	}
	return errors.Join(errs...)
}

// checkCart verifies a cart's derived fields.
func checkCart(c *Cart) error {
	var total, count int64
	for _, it := range c.Items {
		if it.LineTotalMinor != it.Quantity*it.UnitPriceMinor {
			return fmt.Errorf("line %s: line total %d != %d x %d", it.SKU, it.LineTotalMinor, it.Quantity, it.UnitPriceMinor)
		}
		if it.Quantity <= 0 || it.Quantity > events.MaxQuantity {
			return fmt.Errorf("line %s: quantity %d out of range", it.SKU, it.Quantity)
		}
		total += it.LineTotalMinor
		count += it.Quantity
	}
	switch {
	case total != c.TotalMinor:
		return fmt.Errorf("total %d, but the lines sum to %d", c.TotalMinor, total)
	case count != c.ItemCount:
		return fmt.Errorf("item count %d, but the lines sum to %d", c.ItemCount, count)
	case len(c.Items) > events.MaxItems:
		return fmt.Errorf("%d lines, the limit is %d", len(c.Items), events.MaxItems)
	case len(c.Decisions) > MaxDecisionHistory:
		return fmt.Errorf("%d decision records, the limit is %d", len(c.Decisions), MaxDecisionHistory)
	case c.IsOpen() && !c.ClosedAt.IsZero():
		return fmt.Errorf("open, but closed at %s", fmtTime(c.ClosedAt))
	case !c.IsOpen() && c.ClosedAt.IsZero():
		return fmt.Errorf("%s, but no closing time", c.Status)
	case c.Version <= 0:
		return fmt.Errorf("version %d", c.Version)
	}
	skus := map[string]bool{}
	for _, it := range c.Items {
		if skus[it.SKU] {
			return fmt.Errorf("sku %s on two lines", it.SKU)
		}
		skus[it.SKU] = true
	}
	return nil
}

// checker follows a run's outputs and checks the rules that span steps:
// decision and outcome ids are unique, decisions come only from timers and
// never for a cart whose checkout (or discard) came before the step's due
// time, outcomes are attributed to decisions that were emitted, and the
// guards hold: no decision inside quiet hours, no cap exceeded, no email
// without the consent it needs.
type checker struct {
	cfg       *Config
	decisions map[string]decisionInfo
	outcomes  map[string]events.Outcome
	closes    map[timerKey]closeInfo
	// credited holds the decisions a recovered or converted_holdout
	// outcome was attributed to: a decision earns one conversion at most.
	credited map[string]string
	// sent holds every emitted decision by cart, flow, step and due time:
	// the same step of the same inactivity period goes out once.
	sent map[sentKey]string
	// allowRederive accepts a repeated decision id when it names the very
	// same cart life, version, flow and step (a dropped cart re-created by
	// a stale event at its old creation time derives the same decision).
	allowRederive bool
	// messages holds, by customer key, the decision times of the
	// customer's messages under a frequency cap, as the checker saw them
	// go out (and come along with assigned carts). A customer whose state
	// is deleted or erased starts afresh, as the fold does.
	messages map[string][]time.Time
	// guardStats counts suppressions by reason, deferrals ("deferred") and
	// combined decisions, for coverage checks.
	guardStats map[string]int
}

type decisionInfo struct {
	Key       string
	Cart      string
	Created   time.Time
	Version   int64
	Flow      string
	Step      string
	DecidedAt time.Time
	Holdout   bool
}

// closeInfo tracks the latest checkout or discard of a cart that closed
// it, and the newest activity time seen after it in log order.
type closeInfo struct {
	ClosedAt      time.Time
	ActivityAfter time.Time
}

func newChecker(cfg *Config) *checker {
	return &checker{cfg: cfg, decisions: map[string]decisionInfo{}, outcomes: map[string]events.Outcome{},
		closes: map[timerKey]closeInfo{}, credited: map[string]string{}, sent: map[sentKey]string{},
		messages: map[string][]time.Time{}, guardStats: map[string]int{}}
}

type sentKey struct {
	Key, Cart, Flow, Step string
	Due                   int64
}

type preApply struct {
	cartStatus string    // "" for no cart
	erasedAt   time.Time // the customer's tombstone, if any
	// assignRepeat: a cart.assigned the customer already has
	assignRepeat bool
}

func (ck *checker) before(st *CustomerState, ev *events.Event) preApply {
	var p preApply
	if st != nil {
		p.erasedAt = st.ErasedAt
	}
	if ref, ok := ev.Cart(); ok && st != nil {
		if c := st.Cart(ref.CartID); c != nil {
			p.cartStatus = c.Status
			if d := ev.CartAssigned; d != nil {
				p.assignRepeat = c.AssignedFrom == d.FromKey && c.Version >= max(d.Version, 1)
			}
		}
	}
	return p
}

func isActivity(ev *events.Event) bool {
	return ev.ItemAdded != nil || ev.ItemUpdated != nil || ev.ItemRemoved != nil || ev.CartUpdated != nil ||
		ev.CartAssigned != nil || ev.CheckoutStarted != nil
}

func (ck *checker) afterApply(key string, ev *events.Event, pre preApply, eff Effects, st *CustomerState) error {
	if len(eff.Decisions) > 0 || len(eff.Suppressed) > 0 || len(eff.Deferred) > 0 {
		return fmt.Errorf("Apply decided (%d decisions, %d suppressed, %d deferred); only timers decide",
			len(eff.Decisions), len(eff.Suppressed), len(eff.Deferred))
	}
	if eff.State == nil || ev.CustomerErased != nil {
		delete(ck.messages, key)
	}
	if d := ev.CartAssigned; d != nil && !pre.assignRepeat && eff.State != nil {
		// The assigned cart's messages count toward the customer's cap.
		for _, r := range d.Decisions {
			if fl := ck.cfg.flow(r.Flow); !r.Skipped && r.Suppressed == "" && !r.Holdout && (fl == nil || fl.Guards.FrequencyCap != nil) {
				ck.addMessage(key, r.At)
			}
		}
	}
	if ev.CustomerErased != nil && (pre.erasedAt.IsZero() || ev.Time.After(pre.erasedAt)) {
		// All that is left is a tombstone.
		if eff.State == nil || !eff.State.Erased() {
			return fmt.Errorf("customer.erased left state behind: %+v", eff.State)
		}
		if !eff.Erased {
			return fmt.Errorf("customer.erased did not flag the erasure")
		}
		for k := range ck.closes {
			if k.Key == key {
				delete(ck.closes, k)
			}
		}
	}
	if ref, ok := ev.Cart(); ok {
		k := timerKey{key, ref.CartID}
		var c *Cart
		if st != nil {
			c = st.Cart(ref.CartID)
		}
		closing := ev.CheckoutCompleted != nil || ev.CartDiscarded != nil
		switch {
		case c == nil:
			delete(ck.closes, k)
		case closing && !c.IsOpen() && pre.cartStatus != c.Status:
			ck.closes[k] = closeInfo{ClosedAt: ev.Time}
		case isActivity(ev) && c.IsOpen():
			if ci, ok := ck.closes[k]; ok && ev.Time.After(ci.ActivityAfter) {
				ci.ActivityAfter = ev.Time
				ck.closes[k] = ci
			}
		}
	}
	for _, o := range eff.Outcomes {
		if err := ck.outcome(key, o, ev.Time); err != nil {
			return err
		}
	}
	return nil
}

func (ck *checker) afterFire(key, cartID string, now time.Time, eff Effects, st *CustomerState) error {
	if st == nil || st.Cart(cartID) == nil {
		delete(ck.closes, timerKey{key, cartID})
	}
	if st == nil {
		delete(ck.messages, key)
	}
	for _, tc := range eff.Timers {
		if tc.CartID != cartID {
			return fmt.Errorf("the timer of cart %s moved the timer of cart %s", cartID, tc.CartID)
		}
	}
	if err := ck.guards(key, cartID, now, eff, st); err != nil {
		return err
	}
	for _, d := range eff.Decisions {
		// A combined decision may be about another cart of the customer.
		cartID := d.Cart.CartID
		if st == nil || st.Cart(cartID) == nil || !st.Cart(cartID).IsOpen() {
			return fmt.Errorf("decision %s about cart %s, which the customer does not have open", d.ID, d.Cart.CartID)
		}
		if d.DecidedAt.After(now) {
			return fmt.Errorf("decision %s decided at %s, after now %s", d.ID, fmtTime(d.DecidedAt), fmtTime(now))
		}
		if !d.ValidUntil.After(now) {
			return fmt.Errorf("decision %s valid until %s, not after now %s", d.ID, fmtTime(d.ValidUntil), fmtTime(now))
		}
		if d.Customer.Key != key {
			return fmt.Errorf("decision %s for customer %q under key %q", d.ID, d.Customer.Key, key)
		}
		var sum int64
		for _, it := range d.Cart.Items {
			sum += it.Quantity * it.UnitPriceMinor
		}
		if sum != d.Cart.TotalMinor || len(d.Cart.Items) == 0 {
			return fmt.Errorf("decision %s: cart total %d, lines sum to %d (%d lines)", d.ID, d.Cart.TotalMinor, sum, len(d.Cart.Items))
		}
		if ci, ok := ck.closes[timerKey{key, cartID}]; ok && d.DecidedAt.After(ci.ClosedAt) && !ci.ActivityAfter.After(ci.ClosedAt) {
			return fmt.Errorf("decision %s (%s/%s due %s) for cart %s, which was checked out or discarded at %s with no activity since",
				d.ID, d.Flow, d.Step, fmtTime(d.DecidedAt), cartID, fmtTime(ci.ClosedAt))
		}
		info := decisionInfo{Key: key, Cart: cartID, Created: d.Cart.CreatedAt, Version: d.Cart.Version, Flow: d.Flow,
			Step: d.Step, DecidedAt: d.DecidedAt, Holdout: d.Holdout}
		if prev, dup := ck.decisions[d.ID]; dup {
			if !ck.allowRederive || !prev.sameDecision(info) {
				return fmt.Errorf("decision id %s emitted twice: %+v and now %+v", d.ID, prev, info)
			}
		}
		ck.decisions[d.ID] = info
		sk := sentKey{key, cartID, d.Flow, d.Step, d.DecidedAt.UnixNano()}
		if prev, dup := ck.sent[sk]; dup && prev != d.ID {
			return fmt.Errorf("decision %s repeats %s: %s/%s of cart %s due %s was already sent", d.ID, prev, d.Flow, d.Step, cartID, fmtTime(d.DecidedAt))
		}
		ck.sent[sk] = d.ID
	}
	for _, o := range eff.Outcomes {
		if o.Kind != events.OutcomeLost {
			return fmt.Errorf("a timer emitted a %s outcome", o.Kind)
		}
		if err := ck.outcome(key, o, now); err != nil {
			return err
		}
	}
	return nil
}

// guards checks the guard rules of one Fire's effects: no decision (and no
// deferral's end) inside the flow's quiet hours, and no decision made
// while now is inside them; no frequency or cart cap exceeded; consent
// where the flow needs it; suppressions recorded in the carts' histories,
// combined ones naming a decision of the same Fire.
func (ck *checker) guards(key, cartID string, now time.Time, eff Effects, st *CustomerState) error {
	ids := map[string]bool{}
	for _, d := range eff.Decisions {
		ids[d.ID] = true
		fl := ck.cfg.flow(d.Flow)
		if fl == nil {
			return fmt.Errorf("decision %s of unknown flow %q", d.ID, d.Flow)
		}
		g := &fl.Guards
		loc := g.customerLocation(&Profile{TimeZone: d.Customer.TimeZone})
		if q := g.QuietHours; q != nil {
			if q.Contains(d.DecidedAt, loc) {
				return fmt.Errorf("decision %s decided at %s, inside quiet hours in %s", d.ID, fmtTime(d.DecidedAt), loc)
			}
			if q.Contains(now, loc) {
				return fmt.Errorf("decision %s made at %s, inside quiet hours in %s", d.ID, fmtTime(now), loc)
			}
		}
		if g.needsConsent(d.Action) && !d.Customer.MarketingConsent {
			return fmt.Errorf("decision %s (%s) without consent", d.ID, d.Action)
		}
		if n := g.MaxMessagesPerCart; n > 0 && st != nil {
			if c := st.Cart(d.Cart.CartID); c != nil && messages(c, fl) > n {
				return fmt.Errorf("decision %s: cart %s has had %d messages, over the cap of %d", d.ID, c.ID, messages(c, fl), n)
			}
		}
		if fc := g.FrequencyCap; fc != nil && !d.Holdout {
			msgs := ck.messages[key]
			// Brute force: every window [s, s+Per) that holds the new
			// message, starting at any message or at it.
			for _, s := range append(slices.Clone(msgs), d.DecidedAt) {
				if s.After(d.DecidedAt) || !d.DecidedAt.Before(s.Add(fc.Per)) {
					continue
				}
				n := 1
				for _, m := range msgs {
					if !m.Before(s) && m.Before(s.Add(fc.Per)) {
						n++
					}
				}
				if n > fc.Max {
					return fmt.Errorf("decision %s at %s: %d messages in the %s from %s, the cap is %d", d.ID,
						fmtTime(d.DecidedAt), n, fc.Per, fmtTime(s), fc.Max)
				}
			}
		}
		if g.FrequencyCap != nil && !d.Holdout {
			ck.addMessage(key, d.DecidedAt)
		}
	}
	for _, sp := range eff.Suppressed {
		ck.guardStats["suppressed "+sp.Reason]++
		switch sp.Reason {
		case ReasonNoConsent, ReasonCartCap, ReasonFrequencyCap:
			if sp.Into != "" {
				return fmt.Errorf("suppression %+v names a decision", sp)
			}
		case ReasonCombined:
			if !ids[sp.Into] {
				return fmt.Errorf("step %s/%s of cart %s combined into %q, not a decision of this Fire", sp.Flow, sp.Step, sp.CartID, sp.Into)
			}
		case ReasonSuperseded:
			// Passed over for a later step: decided now, or suppressed.
			if sp.Into != "" && !ids[sp.Into] {
				return fmt.Errorf("step %s/%s of cart %s superseded by %q, not a decision of this Fire", sp.Flow, sp.Step, sp.CartID, sp.Into)
			}
			if !sp.Due.Equal(sp.At) {
				return fmt.Errorf("superseded step %s/%s of cart %s: due %s, at %s", sp.Flow, sp.Step, sp.CartID, sp.Due, sp.At)
			}
		default:
			return fmt.Errorf("suppression with unknown reason: %+v", sp)
		}
		if sp.At.After(now) {
			return fmt.Errorf("suppression %+v after now %s", sp, fmtTime(now))
		}
		var c *Cart
		if st != nil {
			c = st.Cart(sp.CartID)
		}
		if c == nil || !slices.ContainsFunc(c.Decisions, func(r DecisionRecord) bool {
			recorded := r.Suppressed == sp.Reason || r.Skipped && sp.Reason == ReasonSuperseded // a skipped record
			return recorded && r.Flow == sp.Flow && r.StepIndex == sp.StepIndex && r.At.Equal(sp.At)
		}) {
			return fmt.Errorf("suppression %+v is not in the cart's history", sp)
		}
	}
	if len(eff.Decisions) > 0 && slices.ContainsFunc(eff.Suppressed, func(sp Suppression) bool { return sp.Reason == ReasonCombined }) {
		ck.guardStats["combined decision"]++
	}
	for _, df := range eff.Deferred {
		ck.guardStats["deferred"]++
		fl := ck.cfg.flow(df.Flow)
		if fl == nil || fl.Guards.QuietHours == nil || df.CartID != cartID || st == nil {
			return fmt.Errorf("deferral %+v without quiet hours, or of another cart", df)
		}
		loc := fl.Guards.customerLocation(&st.Profile)
		if !df.Until.After(now) || fl.Guards.QuietHours.Contains(df.Until, loc) {
			return fmt.Errorf("deferral %+v: until must be after now %s and outside quiet hours", df, fmtTime(now))
		}
		if c := st.Cart(df.CartID); c == nil || c.WakeAt.After(df.Until) {
			return fmt.Errorf("deferral %+v: the cart's timer is not at or before the end of the deferral", df)
		}
	}
	return nil
}

func (ck *checker) addMessage(key string, t time.Time) {
	msgs := ck.messages[key]
	i, _ := slices.BinarySearchFunc(msgs, t, func(a, b time.Time) int { return a.Compare(b) })
	ck.messages[key] = slices.Insert(msgs, i, t)
}

func (a decisionInfo) sameDecision(b decisionInfo) bool {
	return a.Key == b.Key && a.Cart == b.Cart && a.Created.Equal(b.Created) && a.Version == b.Version &&
		a.Flow == b.Flow && a.Step == b.Step
}

func (ck *checker) outcome(key string, o events.Outcome, stepTime time.Time) error {
	if o.CustomerKey != key {
		return fmt.Errorf("outcome %s for customer %q under key %q", o.ID, o.CustomerKey, key)
	}
	if prev, dup := ck.outcomes[o.ID]; dup && !ck.allowRederive {
		return fmt.Errorf("outcome id %s emitted twice: %+v and now %+v", o.ID, prev, o)
	}
	ck.outcomes[o.ID] = o
	switch o.Kind {
	case events.OutcomeRecovered, events.OutcomeConvertedHoldout:
		d, ok := ck.decisions[o.DecisionID]
		if !ok {
			return fmt.Errorf("outcome %s (%s) attributed to decision %q, which was never emitted", o.ID, o.Kind, o.DecisionID)
		}
		if d.Key != key || d.Cart != o.CartID || d.Flow != o.Flow || d.Step != o.Step || d.Holdout != o.Holdout {
			return fmt.Errorf("outcome %s attributed to decision %s of %+v", o.ID, o.DecisionID, d)
		}
		if (o.Kind == events.OutcomeConvertedHoldout) != d.Holdout {
			return fmt.Errorf("outcome %s is %s for a decision with holdout=%v", o.ID, o.Kind, d.Holdout)
		}
		if d.DecidedAt.After(o.At) {
			return fmt.Errorf("outcome %s at %s attributed to a decision made later, at %s", o.ID, fmtTime(o.At), fmtTime(d.DecidedAt))
		}
		if w := ck.window(d.Flow); o.At.Sub(d.DecidedAt) > w {
			return fmt.Errorf("outcome %s at %s attributed to a decision at %s, outside the %s window", o.ID, fmtTime(o.At), fmtTime(d.DecidedAt), w)
		}
		if want := int64(o.At.Sub(d.DecidedAt) / time.Second); o.SinceDecided != want {
			return fmt.Errorf("outcome %s: since_decision_seconds %d, want %d", o.ID, o.SinceDecided, want)
		}
		if o.Decisions == 0 {
			return fmt.Errorf("outcome %s attributed, but counts no decisions", o.ID)
		}
		if prev, dup := ck.credited[o.DecisionID]; dup {
			return fmt.Errorf("outcome %s (%s) credits decision %s, which outcome %s already credited", o.ID, o.Kind, o.DecisionID, prev)
		}
		ck.credited[o.DecisionID] = o.ID
	default:
		if o.DecisionID != "" || o.SinceDecided != 0 {
			return fmt.Errorf("outcome %s (%s) carries an attribution", o.ID, o.Kind)
		}
	}
	return nil
}

func (ck *checker) window(flow string) time.Duration {
	for _, f := range ck.cfg.Flows {
		if f.Name == flow {
			return f.AttributionWindow
		}
	}
	return DefaultAttributionWindow
}

// encodeEvent builds an event the way a producer would and runs it through
// the real decoder.
func encodeEvent(id, typ string, t time.Time, data any) (*events.Event, error) {
	raw, err := events.Encode(id, "test", typ, t, "", data)
	if err != nil {
		return nil, err
	}
	return events.Decode(raw, time.Time{})
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
