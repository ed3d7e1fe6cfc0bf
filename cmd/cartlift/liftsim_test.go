package main

import (
	"math"
	"testing"
	"time"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// liftCounts are the carts of a cohort per arm and those of them that
// converted, as the report counts them: a cart is (customer key, cart
// id), converted when one of its cohort decisions has a recovered (or
// converted_holdout) outcome.
type liftCounts struct {
	treated, treatedConverted int
	control, controlConverted int
}

func (c *liftCounts) add(o liftCounts) {
	c.treated += o.treated
	c.treatedConverted += o.treatedConverted
	c.control += o.control
	c.controlConverted += o.controlConverted
}

func (c liftCounts) rates() (p1, p2 float64) {
	return float64(c.treatedConverted) / float64(c.treated), float64(c.controlConverted) / float64(c.control)
}

// lift is p1 − p2 and its standard error.
func (c liftCounts) lift() (diff, se float64) {
	p1, p2 := c.rates()
	return p1 - p2, math.Sqrt(p1*(1-p1)/float64(c.treated) + p2*(1-p2)/float64(c.control))
}

// simulateLiftInMemory runs the lift test's shoppers (one site, a flow
// with one step a second after the last change, half of the customers in
// the holdout) against the processor's fold in memory, on a virtual
// clock: rate events a second for traffic, reminders reaching the
// shoppers 50 ms after their decision, then 30 s for the reminded to
// come back. It returns the counts of the decisions made during the
// traffic.
func simulateLiftInMemory(t *testing.T, seed int64, effect float64, traffic time.Duration, rate float64) liftCounts {
	t.Helper()
	flows, err := projections.ParseFlows("flows.yaml", []byte(`flows:
  - name: f
    steps:
      - name: nudge
        after: 1s
        action: webhook
    expire_after: 1h
    attribution_window: 1h
    holdout_percent: 50
`))
	if err != nil {
		t.Fatal(err)
	}
	bt := projections.NewBacktest(projections.NewConfig(flows))
	const latency = 50 * time.Millisecond
	type reminder struct {
		at time.Time
		r  shopper.Reminder
	}
	type decision struct {
		key, cart string
		holdout   bool
		at        time.Time
	}
	var queue []reminder
	var decisions []decision
	byID := map[string]int{}
	converted := map[string]bool{}
	bt.Observe = func(key string, eff *projections.Effects) {
		for _, d := range eff.Decisions {
			byID[d.ID] = len(decisions)
			decisions = append(decisions, decision{key, d.Cart.CartID, d.Holdout, d.DecidedAt})
			queue = append(queue, reminder{d.DecidedAt.Add(latency), shopper.Reminder{DecisionID: d.ID, CartID: d.Cart.CartID, Holdout: d.Holdout}})
		}
		for _, o := range eff.Outcomes {
			if o.Kind == events.OutcomeRecovered || o.Kind == events.OutcomeConvertedHoldout {
				converted[o.DecisionID] = true
			}
		}
	}
	sim := shopper.New(shopper.Options{Seed: seed, Customers: 4000, Sessions: 100, Sites: []string{"eu"},
		ReturnShare: -1, DiscardShare: -1, EraseShare: -1,
		Response: shopper.Response{On: true, Base: 0.2, Effect: effect, After: 3 * time.Second}})
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	deliver := func() {
		for len(queue) > 0 && !queue[0].at.After(now) {
			sim.Remind(queue[0].r, now)
			queue = queue[1:]
		}
	}
	apply := func(r shopper.Record) {
		ev, err := events.Decode(r.Value, now)
		if err != nil {
			t.Fatal(err)
		}
		bt.Apply(r.Key, ev)
	}
	step := time.Duration(float64(time.Second) / rate)
	for until := start.Add(traffic); now.Before(until); now = now.Add(step) {
		deliver()
		apply(sim.Next(now))
	}
	sim.Drain()
	for end := now.Add(30 * time.Second); now.Before(end); now = now.Add(10 * time.Millisecond) {
		bt.Finish(now)
		deliver()
		for {
			r, ok := sim.NextPending(now)
			if !ok {
				break
			}
			apply(r)
		}
	}
	bt.Finish(now)

	type cartKey struct{ key, cart string }
	type cart struct{ holdout, converted bool }
	carts := map[cartKey]*cart{}
	for id, i := range byID {
		d := decisions[i]
		if d.at.Before(start) || !d.at.Before(start.Add(traffic)) {
			continue
		}
		k := cartKey{d.key, d.cart}
		c := carts[k]
		if c == nil {
			c = &cart{holdout: d.holdout}
			carts[k] = c
		}
		c.converted = c.converted || converted[id]
	}
	var n liftCounts
	for _, c := range carts {
		switch {
		case c.holdout:
			n.control++
			if c.converted {
				n.controlConverted++
			}
		default:
			n.treated++
			if c.converted {
				n.treatedConverted++
			}
		}
	}
	return n
}

// TestSimulatedEffectUnbiased checks what the lift test and the demo
// rely on, over many seeds and so beyond the noise of one run: that the
// shoppers convert, as the processor attributes their orders, at Base in
// the holdout and at Base+Effect when treated, so that the lift (treated
// rate minus holdout rate, per cart) estimates Effect without bias. It
// runs the simulation against the processor's fold in memory (no broker,
// no ClickHouse, a virtual clock), 12 seeds at +10 pp and 8 at none, each
// about 2,300 carts; the pooled rates and lifts must lie within 3.5
// standard errors (about ±0.5 pp for a rate) of the simulated truth, and
// the mean lift at +10 pp must not be off by 1 pp or more.
func TestSimulatedEffectUnbiased(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 20 runs of 12 s of traffic")
	}
	const base = 0.2
	for _, c := range []struct {
		effect float64
		seeds  int64
	}{{0.10, 12}, {0, 8}} {
		var pooled liftCounts
		var sumLift float64
		for seed := int64(1); seed <= c.seeds; seed++ {
			n := simulateLiftInMemory(t, 7000+seed, c.effect, 12*time.Second, 1500)
			d, se := n.lift()
			t.Logf("effect %+.2f seed %d: treated %d/%d, holdout %d/%d: lift %+.3f ± %.3f", c.effect, 7000+seed,
				n.treatedConverted, n.treated, n.controlConverted, n.control, d, 1.96*se)
			pooled.add(n)
			sumLift += d
		}
		p1, p2 := pooled.rates()
		d, se := pooled.lift()
		mean := sumLift / float64(c.seeds)
		t.Logf("effect %+.2f pooled over %d seeds: treated %.4f (want %.2f), holdout %.4f (want %.2f), lift %+.4f ± %.4f, mean lift %+.4f",
			c.effect, c.seeds, p1, base+c.effect, p2, base, d, 1.96*se, mean)
		within := func(what string, got, want float64, n int) {
			if se := math.Sqrt(want * (1 - want) / float64(n)); math.Abs(got-want) > 3.5*se {
				t.Errorf("effect %+.2f: %s %.4f is %.1f standard errors from the simulated %.2f", c.effect, what, got, (got-want)/se, want)
			}
		}
		within("the treated rate", p1, base+c.effect, pooled.treated)
		within("the holdout rate", p2, base, pooled.control)
		if math.Abs(d-c.effect) > 3.5*se {
			t.Errorf("effect %+.2f: the pooled lift %+.4f is %.1f standard errors from the truth", c.effect, d, (d-c.effect)/se)
		}
		if math.Abs(mean-c.effect) >= 0.01 {
			t.Errorf("effect %+.2f: the mean lift over %d seeds is %+.4f, off by 1 pp or more", c.effect, c.seeds, mean)
		}
	}
}
