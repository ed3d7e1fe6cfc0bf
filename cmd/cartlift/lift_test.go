package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
)

// TestSimulatedEffectIsMeasured runs the demo's loop through the real
// pipeline: shoppers (shopper.Response) answer the processor's decisions,
// which reach them from cart-decisions; decisions and outcomes go
// through the analytics sink into ClickHouse; the report's lift comes
// from there. Two simulations run side by side, each on a site of its
// own with a flow of its own (half of the customers in the holdout): one
// with a true effect of +10 pp, one with none.
//
// Two checks with different jobs. The report against the simulation's
// own record of the same cohort (the decisions of the period, as the
// shoppers heard them, and which of those carts the shoppers came back
// to buy): the same carts in each arm, exactly, and the same lift up to
// 1 pp (the conversions the processor does not attribute: see
// simulatedCohort); this has no sampling noise, so it catches a bias of
// the estimator or the attribution of 1 pp or more in any run. And the
// report's lift against the true effect, within four standard errors
// (one run is one sample: a 95% interval misses one run in twenty by
// design), with an interval that excludes 0 at +10 pp. Whether the
// simulation's conversion rates are what it claims is
// TestSimulatedEffectUnbiased's job, over many seeds.
func TestSimulatedEffectIsMeasured(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pipeline for about 30 s")
	}
	chdirRoot(t)
	ctx := context.Background()
	chAddr := testClickHouse(t)
	database := testDatabase(t, chAddr, "lift_test")
	dir := t.TempDir()
	flows := filepath.Join(dir, "flows.yaml")
	flow := func(name, site string) string {
		return fmt.Sprintf(`  - name: %s
    match: {sites: [%s]}
    steps:
      - name: nudge
        after: 1s
        action: webhook
    expire_after: 1h
    attribution_window: 1h
    holdout_percent: 50
`, name, site)
	}
	if err := os.WriteFile(flows, []byte("flows:\n"+flow("effect-10", "eu")+flow("effect-0", "us")), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CARTLIFT_BROKER_ADDR": "127.0.0.1:0", "CARTLIFT_DATA_DIR": dir, "CARTLIFT_HTTP_ADDR": "off",
		"CARTLIFT_PARTITIONS": "4", "CARTLIFT_FLOWS": flows,
		"CLICKHOUSE_ADDR": chAddr, "CLICKHOUSE_DATABASE": database, "CARTLIFT_ANALYTICS_BATCH_INTERVAL": "200ms",
	}
	n, cfg := startNodeWithAnalytics(t, ctx, env)

	sims := []struct {
		flow, site string
		seed       int64
		effect     float64
	}{{"effect-10", "eu", 101, 0.10}, {"effect-0", "us", 202, 0}}
	reminders := map[string]chan genReminder{}
	for _, s := range sims {
		reminders[s.flow] = make(chan genReminder, 1<<16)
	}
	truth := newSimulatedCohort()
	tail := newDecisionTail(n.brokers, cfg.TopicDecisions, cfg.TopicOutcomes)
	tail.onDecision = func(d events.Decision) {
		truth.decided(d)
		select {
		case reminders[d.Flow] <- genReminder{Reminder: shopper.Reminder{DecisionID: d.ID, CartID: d.Cart.CartID, Holdout: d.Holdout},
			Answered: func(a shopper.Answer) { truth.answered(d.ID, a) }}:
		default:
			t.Errorf("reminder of %s dropped", d.ID)
		}
	}
	tail.onOutcome = truth.outcome
	tailCtx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	go tail.run(tailCtx)

	cl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers...), kgo.DefaultProduceTopic(cfg.TopicEvents), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const traffic = 12 * time.Second
	// The period on whole seconds, as the tables hold them, so that the
	// simulation's cohort is the report's.
	start := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(start))
	var wg sync.WaitGroup
	for _, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Few sessions for the rate, so that no session idles for the
			// step's second mid-visit; no returns or discards but the
			// reminders' (so that the response alone decides), no
			// erasures (the two populations share customer ids).
			_, err := produceShopperTraffic(ctx, cl, genOptions{Rate: 1500, Duration: traffic, Drain: 20 * time.Second,
				Reminders: reminders[s.flow],
				Sim: shopper.Options{Seed: s.seed, Customers: 4000, Sessions: 100, Sites: []string{s.site},
					ReturnShare: -1, DiscardShare: -1, EraseShare: -1,
					Response: shopper.Response{On: true, Base: 0.2, Effect: s.effect, After: 3 * time.Second}}}, nil)
			if err != nil {
				t.Errorf("%s: %v", s.flow, err)
			}
		}()
	}
	wg.Wait()
	// The cohort: the decisions made while shoppers came; every
	// reminded shopper has come back since (the drain).
	until := start.Add(traffic)
	waitUntil(t, "the processor to catch up", 30*time.Second, func() bool { return n.proc.Stats().Lag == 0 })
	if !waitSinkStored(n.analytics, tail, 60*time.Second) {
		t.Fatalf("the sink did not store what the processor emitted: %+v, %d ids seen", n.analytics.stats(), tail.seenIDs())
	}

	// The report and the record of what the tail saw, once they agree
	// or after 10 s: on a busy machine the tail may still be reading
	// when the sink has stored everything, or the other way round.
	lift := func(rep *analytics.Report, flow string) *analytics.Lift {
		for i := range rep.Lift {
			if rep.Lift[i].Flow == flow {
				return &rep.Lift[i]
			}
		}
		return nil
	}
	var rep *analytics.Report
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Second) {
		var err error
		rep, err = buildReport(ctx, clickhouseConfig{Addr: []string{chAddr}, Database: database}, analytics.ReportOptions{Since: start, Until: until})
		if err != nil {
			t.Fatal(err)
		}
		agree := true
		for _, s := range sims {
			l, want := lift(rep, s.flow), truth.counts(s.flow, start, until).attributed
			agree = agree && l != nil && (liftCounts{int(l.TreatedCarts), int(l.TreatedRecovered), int(l.ControlCarts), int(l.ControlConverted)}) == want
		}
		if agree || time.Now().After(deadline) {
			break
		}
	}
	for _, s := range sims {
		l := lift(rep, s.flow)
		if l == nil {
			t.Fatalf("no lift for %s: %+v", s.flow, rep.Lift)
		}
		t.Logf("%s: treated %d/%d (%.3f), holdout %d/%d (%.3f): lift %+.3f [%+.3f, %+.3f], true effect %+.2f",
			s.flow, l.TreatedRecovered, l.TreatedCarts, l.TreatedRate, l.ControlConverted, l.ControlCarts, l.ControlRate,
			l.AbsoluteLift, l.Low, l.High, s.effect)
		sim := truth.counts(s.flow, start, until)
		simLift, _ := sim.simulated.lift()
		t.Logf("%s: the shoppers came back to treated %d/%d, holdout %d/%d (lift %+.3f); the processor attributed %d and %d orders; "+
			"not attributed of those: %d and %d, attributed without a return: %d and %d",
			s.flow, sim.simulated.treatedConverted, sim.simulated.treated, sim.simulated.controlConverted, sim.simulated.control, simLift,
			sim.attributed.treatedConverted, sim.attributed.controlConverted, sim.missed[0], sim.missed[1], sim.extra[0], sim.extra[1])
		// The report counts what the processor decided and attributed:
		// the same carts in each arm and the same conversions, exactly.
		if got, want := (liftCounts{int(l.TreatedCarts), int(l.TreatedRecovered), int(l.ControlCarts), int(l.ControlConverted)}), sim.attributed; got != want {
			t.Errorf("%s: the report counts %+v, the decisions and outcomes it was sent are %+v", s.flow, got, want)
		}
		// The processor attributes the orders the shoppers came back for,
		// up to a few it cannot (see simulatedCohort), and those few fall
		// on both arms alike: the lift moves by no more than their noise.
		n1, n2 := float64(sim.simulated.treated), float64(sim.simulated.control)
		noise := math.Sqrt(float64(sim.missed[0]+sim.extra[0])/(n1*n1) + float64(sim.missed[1]+sim.extra[1])/(n2*n2))
		if d := l.AbsoluteLift - simLift; math.Abs(d) > 4*noise+0.002 {
			t.Errorf("%s: the report's lift %+.3f is %+.3f from the simulated cohort's %+.3f (the unattributed and the extra orders allow ±%.3f)",
				s.flow, l.AbsoluteLift, d, simLift, 4*noise+0.002)
		}
		if off := sim.missed[0] + sim.missed[1] + sim.extra[0] + sim.extra[1]; off*20 > sim.simulated.treated+sim.simulated.control {
			t.Errorf("%s: %d of %d carts converted otherwise than simulated, more than 5%%", s.flow, off, sim.simulated.treated+sim.simulated.control)
		}
		if l.TreatedCarts < 400 || l.ControlCarts < 400 {
			t.Errorf("%s: too few carts for a tight interval: %d treated, %d holdout", s.flow, l.TreatedCarts, l.ControlCarts)
		}
		// A 95% interval misses the truth in one run of twenty by design,
		// so the test asks for the estimate within four standard errors
		// of the true effect (a miss by chance: 1 in 16,000) and logs
		// whether the report's interval covers it.
		se := math.Sqrt(l.TreatedRate*(1-l.TreatedRate)/float64(l.TreatedCarts) + l.ControlRate*(1-l.ControlRate)/float64(l.ControlCarts))
		if d := math.Abs(l.AbsoluteLift - s.effect); d > 4*se {
			t.Errorf("%s: the lift %+.3f is %.1f standard errors (%.3f) from the true effect %+.2f", s.flow, l.AbsoluteLift, d/se, se, s.effect)
		}
		t.Logf("%s: the report's 95%% interval covers the true effect: %v", s.flow, s.effect >= l.Low && s.effect <= l.High)
		if s.effect > 0 && l.Low <= 0 {
			t.Errorf("%s: the interval [%+.3f, %+.3f] does not exclude 0", s.flow, l.Low, l.High)
		}
	}
}

// simulatedCohort is the simulation's own record of the lift test's
// cohort: every decision the shoppers heard of, whether its shopper came
// back to buy (shopper.Answer.Returns, given for a cart's first
// reminder), and the orders the processor attributed to it (recovered,
// converted_holdout). A cart is (customer key, cart id), as in the
// report.
//
// The processor may attribute a few orders otherwise than the
// simulation meant them: fewer (a guest who comes back and logs in
// checks out under the customer id, and when that checkout reaches the
// customer's partition before the cart's hand-over from the guest's
// partition, the order counts as converted, not recovered) or more (a
// cart decided while its session idled, on a busy machine, whose shopper
// then checked out as planned).
type simulatedCohort struct {
	mu         sync.Mutex
	decisions  map[string]events.Decision
	returned   map[string]bool // by decision id
	attributed map[string]bool // by decision id
}

func newSimulatedCohort() *simulatedCohort {
	return &simulatedCohort{decisions: map[string]events.Decision{}, returned: map[string]bool{}, attributed: map[string]bool{}}
}

func (c *simulatedCohort) decided(d events.Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.decisions[d.ID] = d
}

func (c *simulatedCohort) answered(id string, a shopper.Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a.Returns {
		c.returned[id] = true
	}
}

func (c *simulatedCohort) outcome(o events.Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o.Kind == events.OutcomeRecovered || o.Kind == events.OutcomeConvertedHoldout {
		c.attributed[o.DecisionID] = true
	}
}

// cohortCounts are a flow's cohort counted twice: converted as simulated
// (the shopper came back) and as attributed (an order attributed to one
// of the cart's cohort decisions); missed and extra count, per arm
// (treated, holdout), the carts converted in one and not the other.
type cohortCounts struct {
	simulated, attributed liftCounts
	missed, extra         [2]int
}

// counts returns the cohort of flow: its carts decided in [since, until).
func (c *simulatedCohort) counts(flow string, since, until time.Time) cohortCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	type cartKey struct{ key, cart string }
	type cart struct{ holdout, returned, attributed bool }
	carts := map[cartKey]*cart{}
	for id, d := range c.decisions {
		if d.Flow != flow || d.DecidedAt.Before(since) || !d.DecidedAt.Before(until) {
			continue
		}
		k := cartKey{d.Customer.Key, d.Cart.CartID}
		x := carts[k]
		if x == nil {
			x = &cart{holdout: d.Holdout}
			carts[k] = x
		}
		x.returned = x.returned || c.returned[id]
		x.attributed = x.attributed || c.attributed[id]
	}
	var n cohortCounts
	count := func(l *liftCounts, holdout, converted bool) {
		if holdout {
			l.control++
			if converted {
				l.controlConverted++
			}
			return
		}
		l.treated++
		if converted {
			l.treatedConverted++
		}
	}
	for _, x := range carts {
		count(&n.simulated, x.holdout, x.returned)
		count(&n.attributed, x.holdout, x.attributed)
		arm := 0
		if x.holdout {
			arm = 1
		}
		switch {
		case x.returned && !x.attributed:
			n.missed[arm]++
		case x.attributed && !x.returned:
			n.extra[arm]++
		}
	}
	return n
}
