package projections

import (
	"container/heap"
	"slices"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Backtest runs the fold in memory over a history of input events with a
// pure event-time clock, the way the processor would have run it, and
// counts what the flows would have done. It publishes nothing and reads no
// clock: the same events and config always give the same Report.
//
// Like the runtime working through a backlog, before an event at time T it
// moves the clock in event time to just before T (Advance, Catchup): every
// timer due by then fires at its own due time, in due order (ties by
// customer key then cart id), and every scheduled run due by then happens
// at its own time; then it applies the event. Emits (a login handed over to a
// guest's key, carts assigned to the customer) are applied in-process
// right after the event that made them, instead of going through a topic.
//
// Memory is proportional to the customers in the history: their states,
// one timer per cart, and the steps deferred and not yet decided.
// A Backtest is not safe for concurrent use.
type Backtest struct {
	cfg    *Config
	states map[string]*CustomerState
	timers timerHeap
	byCart map[btTimerKey]*btTimer
	// eff is the effective time: the newest event time seen.
	eff time.Time
	// deferred holds, per cart and flow, the last deferral counted, so
	// that a step deferred again (after a reschedule) counts once. An
	// entry goes when the flow decides or suppresses a step of the cart.
	deferred map[btDeferKey]btDeferral
	steps    map[btStepKey]*StepReport
	rep      Report
	queue    []btQueued
	// lastRun holds the last run time of each scheduled flow, by flow
	// index; a flow gets its first entry at the first event, without a
	// run (as the processor does on its first start).
	lastRun map[int]time.Time
	// Observe, when set, sees the effects of every Apply, Fire and
	// FireSchedule the backtest runs, with the customer key, in order. It
	// must not keep or modify eff.State.
	Observe func(key string, eff *Effects)
	// clock is the effective time Advance keeps (see Partition).
	clock time.Time
	// variants names the variant of each decision that has one, by
	// decision id, for the outcome attributed to it: memory proportional
	// to the decisions of steps with variants.
	variants map[string]string
}

type btTimerKey struct{ key, cart string }

type btTimer struct {
	due       time.Time
	key, cart string
	index     int
}

type btDeferKey struct{ key, cart, flow string }

type btDeferral struct {
	step int
	due  time.Time
}

type btStepKey struct{ flow, step string }

type btQueued struct {
	key string
	ev  *events.Event
}

// timerHeap orders timers by due time, customer key, cart id, as the
// processor's timer index does.
type timerHeap []*btTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if c := a.due.Compare(b.due); c != 0 {
		return c < 0
	}
	if a.key != b.key {
		return a.key < b.key
	}
	return a.cart < b.cart
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*btTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// Report is what a backtest counted.
type Report struct {
	// Events is the number of input events applied; Fed the number of
	// events the fold emitted and the backtest applied in-process.
	Events int64 `json:"events"`
	Fed    int64 `json:"fed_back"`
	// Fires is the number of timers fired.
	Fires int64 `json:"timers_fired"`
	// From and To are the first and the last event time seen.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Outcomes counts all outcomes by kind.
	Outcomes map[string]int64 `json:"outcomes"`
	// Flows in config order, each with its steps in order.
	Flows []FlowReport `json:"flows"`
	// OpenCarts and PendingTimers are what is left at the end.
	OpenCarts     int64 `json:"open_carts"`
	PendingTimers int   `json:"pending_timers"`
}

// FlowReport is one flow's counts.
type FlowReport struct {
	Name           string       `json:"name"`
	HoldoutPercent int          `json:"holdout_percent"`
	Steps          []StepReport `json:"steps"`
	// Schedule is a scheduled flow's cron expression; Runs counts its
	// runs.
	Schedule string `json:"schedule,omitempty"`
	Runs     int64  `json:"runs,omitempty"`
}

// StepReport counts one step of a flow.
type StepReport struct {
	Step string `json:"step"`
	// Reached counts the decisions made for the treated group; Holdout
	// those made for the control group.
	Reached int64 `json:"reached"`
	Holdout int64 `json:"holdout"`
	// Suppressed counts the steps stopped by a guard, by reason (the
	// Reason constants), treated and control group together.
	Suppressed map[string]int64 `json:"suppressed"`
	// Deferred counts the distinct steps (cart, flow, step, due time)
	// deferred by quiet hours.
	Deferred int64 `json:"deferred"`
	// Recovered counts the checkouts attributed to a decision of this
	// step within the flow's attribution window; RecoveredValue sums
	// their totals per currency, in minor units. ConvertedHoldout and
	// HoldoutValue are the same for the control group.
	Recovered        int64            `json:"recovered"`
	RecoveredValue   map[string]int64 `json:"recovered_value_minor"`
	ConvertedHoldout int64            `json:"converted_holdout"`
	HoldoutValue     map[string]int64 `json:"converted_holdout_value_minor"`
	// Variants counts the same per variant of a step with variants, by
	// the variant's name; nil for a step without.
	Variants map[string]VariantReport `json:"variants,omitempty"`
}

// VariantReport counts one variant of a step: decisions for the treated
// and the control group, and the checkouts attributed to them.
type VariantReport struct {
	Reached          int64 `json:"reached"`
	Holdout          int64 `json:"holdout"`
	Recovered        int64 `json:"recovered"`
	ConvertedHoldout int64 `json:"converted_holdout"`
}

// SuppressedTotal is the number of suppressed steps, all reasons.
func (s *StepReport) SuppressedTotal() int64 {
	var n int64
	for _, v := range s.Suppressed {
		n += v
	}
	return n
}

// NewBacktest returns an empty backtest of the flows in cfg.
func NewBacktest(cfg *Config) *Backtest {
	b := &Backtest{cfg: cfg, states: map[string]*CustomerState{}, byCart: map[btTimerKey]*btTimer{},
		deferred: map[btDeferKey]btDeferral{}, steps: map[btStepKey]*StepReport{}, lastRun: map[int]time.Time{},
		variants: map[string]string{}}
	b.rep.Outcomes = map[string]int64{}
	for _, fl := range cfg.Flows {
		fr := FlowReport{Name: fl.Name, HoldoutPercent: fl.HoldoutPercent, Steps: make([]StepReport, len(fl.Steps))}
		for j, st := range fl.Steps {
			fr.Steps[j] = StepReport{Step: st.Name, Suppressed: map[string]int64{},
				RecoveredValue: map[string]int64{}, HoldoutValue: map[string]int64{}}
			if len(st.Variants) > 0 {
				fr.Steps[j].Variants = map[string]VariantReport{}
			}
		}
		if fl.Schedule != nil {
			fr.Schedule = fl.Schedule.Cron
		}
		b.rep.Flows = append(b.rep.Flows, fr)
	}
	for i := range b.rep.Flows {
		fr := &b.rep.Flows[i]
		for j := range fr.Steps {
			b.steps[btStepKey{fr.Name, fr.Steps[j].Step}] = &fr.Steps[j]
		}
	}
	return b
}

// Apply runs one input event of the customer key: the timers due before
// its time fire first, then the event is folded, then the events the fold
// emitted for other keys are applied in turn.
func (b *Backtest) Apply(key string, ev *events.Event) {
	b.rep.Events++
	if b.rep.From.IsZero() || ev.Time.Before(b.rep.From) {
		b.rep.From = ev.Time
	}
	if ev.Time.After(b.rep.To) {
		b.rep.To = ev.Time
	}
	b.event(key, ev)
	for len(b.queue) > 0 {
		q := b.queue[0]
		b.queue[0] = btQueued{}
		b.queue = b.queue[1:]
		b.rep.Fed++
		b.event(q.key, q.ev)
	}
	b.queue = b.queue[:0]
}

func (b *Backtest) event(key string, ev *events.Event) {
	// As in the processor while it works through a backlog: the clock
	// moves in event time to just before the event.
	b.advance(ev.Time.Add(-1))
	b.store(key, Apply(b.states[key], key, ev, b.cfg))
	if ev.Time.After(b.eff) {
		b.eff = ev.Time
	}
}

// advance moves the clock in event time (see Advance). The backtest's
// Partition methods cannot fail.
func (b *Backtest) advance(to time.Time) {
	_ = Advance(b.cfg, b, to, Catchup)
}

// Finish moves the clock to at (if later than the newest event) and fires
// every timer and runs every schedule due by then, each at its own time:
// what a processor that kept running until at would have decided.
func (b *Backtest) Finish(at time.Time) {
	if at.After(b.eff) {
		b.eff = at
	}
	b.advance(b.eff)
	for len(b.queue) > 0 { // Fire emits nothing today; be safe
		q := b.queue[0]
		b.queue = b.queue[1:]
		b.rep.Fed++
		b.event(q.key, q.ev)
	}
}

// FireTimers fires, in order, every timer due at or before upTo (see
// Partition).
func (b *Backtest) FireTimers(f Firing) error {
	for len(b.timers) > 0 {
		t := b.timers[0]
		if t.due.After(f.UpTo) {
			return nil
		}
		due := t.due
		b.rep.Fires++
		b.store(t.key, Fire(b.states[t.key], t.key, t.cart, f.At(due), b.cfg))
		if t.index >= 0 && t.due.Equal(due) {
			// The fold left the timer where it was: drop it rather than
			// fire it forever (the tests check this never happens).
			heap.Remove(&b.timers, t.index)
			delete(b.byCart, btTimerKey{t.key, t.cart})
		}
	}
	return nil
}

// Clock returns the backtest's clock (see Partition).
func (b *Backtest) Clock() time.Time { return b.clock }

// SetClock moves the backtest's clock (see Partition).
func (b *Backtest) SetClock(t time.Time) { b.clock = t }

// LastRun returns a scheduled flow's last run (see Partition).
func (b *Backtest) LastRun(flow int) (time.Time, bool) {
	t, ok := b.lastRun[flow]
	return t, ok
}

// SetLastRun records a scheduled flow's last run (see Partition).
func (b *Backtest) SetLastRun(flow int, t time.Time) { b.lastRun[flow] = t }

// Run runs a scheduled flow at run (see Partition). It scans every state
// for the carts in the run's time frame, and sweeps them in the
// processor's index order (modification time, customer key, cart id).
func (b *Backtest) Run(flow int, run time.Time) error {
	type cand struct {
		mod       time.Time
		key, cart string
	}
	fl := &b.cfg.Flows[flow]
	b.lastRun[flow] = run
	b.rep.Flows[flow].Runs++
	from, to := fl.Schedule.Frame(run)
	var cands []cand
	for key, st := range b.states {
		for _, c := range st.Carts {
			if c.IsOpen() && !c.ModifiedAt.Before(from) && !c.ModifiedAt.After(to) {
				cands = append(cands, cand{c.ModifiedAt, key, c.ID})
			}
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		if c := cmpString(a.key, b.key); c != 0 {
			return c
		}
		return cmpString(a.cart, b.cart)
	})
	for _, c := range cands {
		b.store(c.key, FireSchedule(b.states[c.key], c.key, c.cart, fl, run, b.cfg))
	}
	return nil
}

// store keeps the effects of one Apply or Fire: state, timers, counts.
func (b *Backtest) store(key string, eff Effects) {
	if b.Observe != nil {
		b.Observe(key, &eff)
	}
	if eff.State == nil {
		delete(b.states, key)
	} else {
		b.states[key] = eff.State
	}
	b.rep.OpenCarts += int64(eff.OpenCartsDelta)
	for _, tc := range eff.Timers {
		k := btTimerKey{key, tc.CartID}
		t := b.byCart[k]
		switch {
		case tc.New.IsZero():
			if t != nil {
				heap.Remove(&b.timers, t.index)
				delete(b.byCart, k)
			}
		case t != nil:
			t.due = tc.New
			heap.Fix(&b.timers, t.index)
		default:
			t = &btTimer{due: tc.New, key: key, cart: tc.CartID}
			heap.Push(&b.timers, t)
			b.byCart[k] = t
		}
	}
	for i := range eff.Decisions {
		d := &eff.Decisions[i]
		delete(b.deferred, btDeferKey{key, d.Cart.CartID, d.Flow})
		if s := b.steps[btStepKey{d.Flow, d.Step}]; s != nil {
			if d.Holdout {
				s.Holdout++
			} else {
				s.Reached++
			}
			if d.Variant != "" && s.Variants != nil {
				b.variants[d.ID] = d.Variant
				v := s.Variants[d.Variant]
				if d.Holdout {
					v.Holdout++
				} else {
					v.Reached++
				}
				s.Variants[d.Variant] = v
			}
		}
	}
	for i := range eff.Suppressed {
		x := &eff.Suppressed[i]
		delete(b.deferred, btDeferKey{key, x.CartID, x.Flow})
		if s := b.steps[btStepKey{x.Flow, x.Step}]; s != nil {
			s.Suppressed[x.Reason]++
		}
	}
	for i := range eff.Deferred {
		x := &eff.Deferred[i]
		k := btDeferKey{key, x.CartID, x.Flow}
		d := btDeferral{step: x.StepIndex, due: x.Due}
		if prev, ok := b.deferred[k]; ok && prev.step == d.step && prev.due.Equal(d.due) {
			continue
		}
		b.deferred[k] = d
		if s := b.steps[btStepKey{x.Flow, x.Step}]; s != nil {
			s.Deferred++
		}
	}
	for i := range eff.Outcomes {
		o := &eff.Outcomes[i]
		b.rep.Outcomes[o.Kind]++
		if o.Kind != events.OutcomeRecovered && o.Kind != events.OutcomeConvertedHoldout {
			continue
		}
		s := b.steps[btStepKey{o.Flow, o.Step}]
		if s == nil {
			continue
		}
		if o.Kind == events.OutcomeRecovered {
			s.Recovered++
			s.RecoveredValue[o.Currency] += o.ValueMinor
		} else {
			s.ConvertedHoldout++
			s.HoldoutValue[o.Currency] += o.ValueMinor
		}
		if name, ok := b.variants[o.DecisionID]; ok && s.Variants != nil {
			v := s.Variants[name]
			if o.Kind == events.OutcomeRecovered {
				v.Recovered++
			} else {
				v.ConvertedHoldout++
			}
			s.Variants[name] = v
		}
	}
	if eff.Erased {
		for k := range b.deferred {
			if k.key == key {
				delete(b.deferred, k)
			}
		}
	}
	for _, e := range eff.Emits {
		if ev := emitEvent(e); ev != nil {
			b.queue = append(b.queue, btQueued{key: e.Key, ev: ev})
		}
	}
}

// emitEvent turns an Emit into the event the runtime would read back from
// the input topic, or nil for a payload it does not know.
func emitEvent(e Emit) *events.Event {
	ev := &events.Event{ID: e.ID, Source: "cartlift", Type: e.Type, Time: e.Time}
	switch d := e.Data.(type) {
	case events.CustomerLoggedIn:
		ev.CustomerLoggedIn = &d
	case *events.CustomerLoggedIn:
		ev.CustomerLoggedIn = d
	case events.CartAssigned:
		ev.CartAssigned = &d
	case *events.CartAssigned:
		ev.CartAssigned = d
	default:
		return nil
	}
	return ev
}

// State returns the customer's state so far, or nil. It is the
// backtest's own: read it (Explain), do not modify it.
func (b *Backtest) State(key string) *CustomerState { return b.states[key] }

// Report returns the counts so far. The maps in it are the backtest's
// own: read them, do not keep them across further Apply calls.
func (b *Backtest) Report() Report {
	r := b.rep
	r.PendingTimers = len(b.timers)
	return r
}
