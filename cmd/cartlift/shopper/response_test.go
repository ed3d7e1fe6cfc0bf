package shopper

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Without a Remind call, Response.On changes nothing: same records, byte
// for byte, as without it.
func TestResponseOffIsUnchanged(t *testing.T) {
	a := New(Options{Seed: 3, Customers: 2000})
	b := New(Options{Seed: 3, Customers: 2000, Response: Response{On: true, Effect: 0.1}})
	for i := range 50_000 {
		now := virtualClock(i, 3*time.Millisecond)
		ra, rb := a.Next(now), b.Next(now)
		if ra.Key != rb.Key || !bytes.Equal(ra.Value, rb.Value) {
			t.Fatalf("event %d differs:\n%s\n%s", i, ra.Value, rb.Value)
		}
	}
	if got := a.Remind(Reminder{CartID: "k-3-1"}, t0); got != (Answer{}) {
		t.Errorf("Remind without Response.On answered %+v", got)
	}
}

// miniProcessor stands in for cartlift: a cart idle for after gets one
// decision (the holdout: a cart id ending in 0, 4 or 8, about a quarter), reported to the Sim; a
// checkout after it counts for the decision's group.
type miniProcessor struct {
	after     time.Duration
	last      map[string]time.Time // open carts: last change
	queue     []idle
	decided   map[string]bool // cart → holdout
	carts     [2]int          // treated, holdout
	converted [2]int
	clicks    [2]int
	returns   []time.Duration // reminder → checkout
	remindAt  map[string]time.Time
}

type idle struct {
	cart string
	at   time.Time
}

func newMiniProcessor(after time.Duration) *miniProcessor {
	return &miniProcessor{after: after, last: map[string]time.Time{}, decided: map[string]bool{}, remindAt: map[string]time.Time{}}
}

func (m *miniProcessor) event(t *testing.T, r Record, now time.Time) {
	ev, err := events.Decode(r.Value, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := ev.Cart()
	if !ok {
		return
	}
	switch r.Type {
	case events.TypeCheckoutCompleted, events.TypeCartDiscarded:
		delete(m.last, ref.CartID)
		if holdout, ok := m.decided[ref.CartID]; ok && r.Type == events.TypeCheckoutCompleted {
			m.converted[b2i(holdout)]++
			m.returns = append(m.returns, now.Sub(m.remindAt[ref.CartID]))
		}
	default:
		m.last[ref.CartID] = now
		m.queue = append(m.queue, idle{ref.CartID, now})
	}
}

// tick decides the carts idle since now-after.
func (m *miniProcessor) tick(s *Sim, now time.Time) {
	for len(m.queue) > 0 && !m.queue[0].at.Add(m.after).After(now) {
		q := m.queue[0]
		m.queue = m.queue[1:]
		if last, open := m.last[q.cart]; !open || !last.Equal(q.at) {
			continue
		}
		if _, done := m.decided[q.cart]; done {
			continue
		}
		holdout := q.cart[len(q.cart)-1]%4 == 0
		m.decided[q.cart] = holdout
		m.remindAt[q.cart] = now
		m.carts[b2i(holdout)]++
		if a := s.Remind(Reminder{DecisionID: "d-" + q.cart, CartID: q.cart, Holdout: holdout}, now); a.Click {
			m.clicks[b2i(holdout)]++
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func simulateResponses(t *testing.T, o Options, n int) *miniProcessor {
	t.Helper()
	s := New(o)
	m := newMiniProcessor(10 * time.Second)
	step := 2 * time.Millisecond
	for i := range n {
		now := virtualClock(i, step)
		m.tick(s, now)
		m.event(t, s.Next(now), now)
	}
	// Drain: no new sessions; the reminded shoppers still come back.
	s.Drain()
	now := virtualClock(n, step)
	for i := 0; s.Pending() > 0; i++ {
		m.tick(s, now)
		if r, ok := s.NextPending(now); ok {
			m.event(t, r, now)
			now = now.Add(step)
		} else {
			now = now.Add(time.Second) // nothing due: skip ahead
		}
		if i > 10_000_000 {
			t.Fatalf("drain does not end: %d pending", s.Pending())
		}
	}
	if st := s.Stats(); st.Reminded == 0 || st.Responses == 0 {
		t.Fatalf("no responses: %+v", st)
	}
	return m
}

// The true effect shows in the conversions: holdout carts convert at
// Base, treated carts at Base+Effect; clicks only for treated carts; the
// returns spread over [After/60, After] and a little more (the visit).
func TestResponseEffect(t *testing.T) {
	const base, effect = 0.15, 0.10
	after := time.Hour
	m := simulateResponses(t, Options{Seed: 11, Customers: 20_000, Sessions: 300, ReturnAfter: 2 * time.Minute,
		Response: Response{On: true, Base: base, Effect: effect, After: after}}, 300_000)
	rate := func(g int) float64 { return float64(m.converted[g]) / float64(m.carts[g]) }
	for g, want := range []float64{base + effect, base} {
		se := math.Sqrt(want * (1 - want) / float64(m.carts[g]))
		if got := rate(g); math.Abs(got-want) > 4*se {
			t.Errorf("group %d: %d of %d carts converted (%.4f), want %.4f ± %.4f", g, m.converted[g], m.carts[g], got, want, 4*se)
		}
	}
	if m.carts[0] < 5000 || m.carts[1] < 5000 {
		t.Fatalf("too few decided carts: %v", m.carts)
	}
	if m.clicks[1] != 0 || m.clicks[0] == 0 {
		t.Errorf("clicks treated %d, holdout %d: want some and none", m.clicks[0], m.clicks[1])
	}
	// A few checkouts come soon after a decision made while the shopper
	// was still in a session (idle a while between two clicks), which
	// Remind leaves alone.
	var soon, early, late int
	for _, d := range m.returns {
		switch {
		case d < after/60:
			soon++
		case d < after/6:
			early++
		case d > after/2:
			late++
		}
	}
	if soon > len(m.returns)/50 {
		t.Errorf("%d of %d checkouts of decided carts came before After/60", soon, len(m.returns))
	}
	if early == 0 || late == 0 || early < late {
		t.Errorf("returns not spread log-uniformly: %d within After/6, %d after After/2", early, late)
	}
	t.Logf("carts %v converted %v clicks %v; checkouts of decided carts: %d before After/60, %d before After/6, %d after After/2, of %d",
		m.carts, m.converted, m.clicks, soon, early, late, len(m.returns))
}

// With Effect 0 both groups convert alike.
func TestResponseNoEffect(t *testing.T) {
	m := simulateResponses(t, Options{Seed: 12, Customers: 20_000, Sessions: 300, Response: Response{On: true, After: time.Minute}}, 300_000)
	p1 := float64(m.converted[0]) / float64(m.carts[0])
	p2 := float64(m.converted[1]) / float64(m.carts[1])
	se := math.Sqrt(DefaultResponseBase * (1 - DefaultResponseBase) * (1/float64(m.carts[0]) + 1/float64(m.carts[1])))
	if math.Abs(p1-p2) > 4*se {
		t.Errorf("treated %.4f, holdout %.4f: differ by more than %.4f", p1, p2, 4*se)
	}
}
