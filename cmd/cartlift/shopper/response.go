package shopper

import (
	"container/heap"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"
)

// Response makes the simulated shoppers answer cartlift's reminders, so
// that a message has a true, known effect on whether an abandoned cart is
// bought after all. It is off by default: without it (and in any case
// until the caller reports decisions with Sim.Remind) a Sim produces
// exactly the traffic it produced before, record for record.
//
// With On set, an abandoned cart's fate is decided by its first reminder
// (the first decision Remind reports for it, treated or holdout) instead
// of by ReturnShare and DiscardShare: the shopper comes back and checks
// out with probability Base, whether a message was sent or not, and a
// treated shopper (a message was sent) with probability Base+Effect; the
// others do not come back (cartlift expires the cart). So the conversion
// of treated carts exceeds the holdout's by Effect, exactly in
// expectation. Abandoned carts that get no decision (no consent, no
// matching flow) keep the usual returns.
//
// Each draw depends only on the seed and the cart id, never on the order
// in which decisions arrive, so a rerun of the same traffic decides the
// same carts the same way.
type Response struct {
	// On turns the feedback loop on.
	On bool
	// Base is the share of reminded carts whose shopper comes back and
	// buys whatever the message: the holdout group's conversion. Default
	// 0.15; negative means none.
	Base float64
	// Effect is the true effect of a message in absolute terms: treated
	// carts convert with Base+Effect (clamped to [0, 1]). 0, the default,
	// is no effect; negative values are allowed (a message that puts
	// shoppers off).
	Effect float64
	// ClickShare is the share of messages whose link is clicked by a
	// shopper who does not come back because of it (browsing, not
	// buying). A shopper the message brings back (the Effect) always
	// comes through the link. Default 0.2; negative means none.
	ClickShare float64
	// After is the longest delay from a reminder to the shopper's return
	// or click. Delays are log-uniform between After/60 and After, so
	// that returns spread over the whole range with most of them early
	// (with After = 6h: from 6 minutes to 6 hours, half within 47
	// minutes). Default ReturnAfter.
	After time.Duration
}

// Defaults of Response.
const (
	DefaultResponseBase       = 0.15
	DefaultResponseClickShare = 0.2
	// responseSpread is After over the shortest delay.
	responseSpread = 60
)

func (r Response) withDefaults(returnAfter time.Duration) Response {
	switch {
	case r.Base == 0:
		r.Base = DefaultResponseBase
	case r.Base < 0:
		r.Base = 0
	case r.Base > 1:
		r.Base = 1
	}
	switch {
	case r.ClickShare == 0:
		r.ClickShare = DefaultResponseClickShare
	case r.ClickShare < 0:
		r.ClickShare = 0
	case r.ClickShare > 1:
		r.ClickShare = 1
	}
	r.Effect = max(-r.Base, min(r.Effect, 1-r.Base))
	if r.After <= 0 {
		r.After = returnAfter
	}
	return r
}

// Reminder is a decision of cartlift about one of the simulated carts, as
// a shop that reads cart-decisions sees it.
type Reminder struct {
	// DecisionID names the message; clicks are drawn per message.
	DecisionID string
	// CartID is the decision's cart.
	CartID string
	// Holdout is true for the control group: no message was sent.
	Holdout bool
}

// Answer is what a shopper does about a Reminder that the caller, not the
// simulation, carries out: clicking the message's link (through the
// shop's signed-link server, so that the click is recorded).
type Answer struct {
	// Click is true when the shopper clicks the link of the message, at
	// ClickAt. A shopper who comes back because of the message clicks
	// just before its return.
	Click   bool
	ClickAt time.Time
	// Returns is true when the shopper comes back and checks out at
	// ReturnAt (Next produces those events once it is given that time).
	Returns  bool
	ReturnAt time.Time
}

// indexed is an abandoned cart that a reminder may reach.
type indexed struct {
	cart *cart
	cust int32
	anon string
	gen  uint32
}

// maxIndexedPerSession bounds the abandoned carts a Sim with Response.On
// remembers, per session slot; the oldest are forgotten first.
const maxIndexedPerSession = 64

// indexCart remembers an abandoned cart for Remind (Response.On only).
func (s *Sim) indexCart(x *session) {
	if !s.o.Response.On {
		return
	}
	id := x.cart.id
	if _, ok := s.byCart[id]; !ok {
		s.cartFIFO = append(s.cartFIFO, id)
	}
	e := indexed{cart: x.cart, cust: x.cust, anon: x.anon}
	if x.cust >= 0 {
		e.gen = s.customers[x.cust].gen
	}
	s.byCart[id] = e
	for len(s.byCart) > maxIndexedPerSession*s.o.Sessions && len(s.cartFIFO) > 0 {
		delete(s.byCart, s.cartFIFO[0])
		s.cartFIFO = s.cartFIFO[1:]
	}
	if len(s.cartFIFO) > 2*maxIndexedPerSession*s.o.Sessions {
		// Ids of carts already gone: compact.
		live := s.cartFIFO[:0]
		for _, id := range s.cartFIFO {
			if _, ok := s.byCart[id]; ok {
				live = append(live, id)
			}
		}
		s.cartFIFO = live
	}
}

// unindexCart forgets a cart that is shopped again or closed.
func (s *Sim) unindexCart(c *cart) {
	if s.o.Response.On && c != nil {
		delete(s.byCart, c.id)
	}
}

// draws returns the random source of one (cart or message, purpose): a
// function of the seed and the names only.
func (s *Sim) draws(name, purpose string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(purpose))
	return rand.New(rand.NewPCG(uint64(s.o.Seed), h.Sum64()))
}

// responseDelay draws a delay, log-uniform in [After/60, After].
func (s *Sim) responseDelay(r *rand.Rand) time.Duration {
	after := float64(s.o.Response.After)
	return time.Duration(after * math.Pow(responseSpread, r.Float64()-1))
}

// Remind tells the simulation that cartlift decided r at now, and returns
// what the shopper does about it that the caller must carry out. Without
// Response.On, and for a cart the simulation does not know as abandoned
// (closed, shopped again right now, erased, or long forgotten), it does
// nothing. Only a cart's first reminder decides whether its shopper comes
// back (see Response); every treated reminder may be clicked. Callers
// must not call Remind concurrently with Next.
func (s *Sim) Remind(r Reminder, now time.Time) Answer {
	if !s.o.Response.On {
		return Answer{}
	}
	e, ok := s.byCart[r.CartID]
	if !ok || (e.cust >= 0 && s.customers[e.cust].gen != e.gen) {
		return Answer{}
	}
	var a Answer
	o := s.o.Response
	c := e.cart
	if !c.reminded {
		c.reminded = true
		s.stats.Reminded++
		u := s.draws(c.id, "return").Float64()
		back := u < o.Base || (!r.Holdout && u < o.Base+o.Effect)
		c.fate++ // the return or discard parked at abandonment is off
		if back {
			a.Returns = true
			a.ReturnAt = now.Add(s.responseDelay(s.draws(c.id, "delay")))
			if !r.Holdout && u >= o.Base {
				// Brought back by the message: through its link.
				a.Click, a.ClickAt = true, a.ReturnAt.Add(-time.Second)
				if a.ClickAt.Before(now) {
					a.ClickAt = now
				}
			}
			s.nPark++
			heap.Push(&s.parked, parked{due: a.ReturnAt.UnixNano(), seq: s.nPark, cart: c, cust: e.cust, anon: e.anon,
				gen: e.gen, respond: true, fate: c.fate})
			s.stats.Responses++
		}
	}
	if !r.Holdout && !a.Click && r.DecisionID != "" {
		if d := s.draws(r.DecisionID, "click"); d.Float64() < o.ClickShare {
			a.Click, a.ClickAt = true, now.Add(s.responseDelay(d))
		}
	}
	if a.Click {
		s.stats.Clicks++
	}
	return a
}

// Drain stops the simulation from starting new sessions: from then on
// NextPending continues the sessions in flight and brings back the
// shoppers that reminders will bring back (Response), and nothing else
// (returns and discards by ReturnShare and DiscardShare are dropped).
func (s *Sim) Drain() { s.draining = true }

// Pending reports how many sessions are in flight and how many reminded
// shoppers are still to come back; once Drain was called, NextPending has
// nothing more to produce when it is 0.
func (s *Sim) Pending() int {
	n := len(s.active)
	for _, p := range s.parked {
		if p.respond && p.fate == p.cart.fate {
			n++
		}
	}
	return n
}

// NextPending is Next for a draining Sim (see Drain): the next event due
// at now, and false when nothing is due at now (Pending tells whether
// anything will be).
func (s *Sim) NextPending(now time.Time) (Record, bool) {
	if !s.draining {
		return s.Next(now), true
	}
	s.now, s.nowN = now, now.UnixNano()
	for len(s.parked) > 0 && s.parked[0].due <= s.nowN {
		if typ, handled := s.unpark(); handled {
			if typ != "" {
				return s.record(typ), true
			}
			continue
		}
		break
	}
	for len(s.active) > 0 {
		idx := s.rng.IntN(len(s.active))
		x := s.active[idx]
		typ := s.step(x)
		if x.done {
			s.endSession(idx, x)
		}
		if typ != "" {
			return s.record(typ), true
		}
	}
	return Record{}, false
}
