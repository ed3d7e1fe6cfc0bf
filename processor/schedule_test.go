package processor_test

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartlift/cartlift/processor"
)

// A scheduled flow running every minute, through kfake, on an injected
// clock: after the clock passes the next minute, decisions exist exactly
// for the carts whose last modification lies in the run's time frame.
// Then the processor is down for ten minutes of its clock: the runs
// missed meanwhile happen once when it comes back.
func TestScheduledFlowFiresForCartsInItsFrame(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, `
guards:
  requires_consent: false
flows:
  - name: sweep
    schedule: {cron: "* * * * *", modified_after: 2h, modified_before: 1h}
    steps:
      - {name: nudge, action: webhook, template: nudge}
`)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	dir := t.TempDir()
	prod := newProducer(t, brokers)
	var clock atomic.Int64
	start := time.Now().UTC().Truncate(time.Minute).Add(30 * time.Second)
	clock.Store(start.UnixNano())
	withClock := func(c *processor.Config) { c.Clock = func() time.Time { return time.Unix(0, clock.Load()) } }
	r := startOn(t, brokers, dir, flows, tp, group, withClock)
	waitCaughtUp(t, r, 0, 20*time.Second)
	// Let every partition's tick record its first "last run" (no run).
	time.Sleep(300 * time.Millisecond)

	// The first run is at the next minute, M = start+30s: its frame is
	// [M-2h, M-1h].
	produceTo(t, prod, tp.Events,
		itemAdded(t, "e1", "c-in1", "k-in1", start.Add(-90*time.Minute), "A", 1, 1000),
		itemAdded(t, "e2", "c-in2", "k-in2", start.Add(-100*time.Minute), "A", 1, 1000),
		itemAdded(t, "e3", "c-new", "k-new", start.Add(-30*time.Minute), "A", 1, 1000), // too recent
		itemAdded(t, "e4", "c-old", "k-old", start.Add(-3*time.Hour), "A", 1, 1000),    // too old
		itemAdded(t, "e5", "c-bought", "k-bought", start.Add(-95*time.Minute), "A", 1, 1000),
		checkout(t, "e6", "c-bought", "k-bought", start.Add(-94*time.Minute), 1000), // closed
	)
	waitCaughtUp(t, r, 6, 20*time.Second)
	if got := readTopic(t, brokers, tp.Decisions); len(got) != 0 {
		t.Fatalf("%d decisions before the first run", len(got))
	}

	clock.Store(start.Add(61 * time.Second).UnixNano())
	consumeUntil(t, brokers, tp.Decisions, 20*time.Second, atLeast(2))
	time.Sleep(300 * time.Millisecond) // more ticks: nothing else may come
	waitDrained(t, r, 10*time.Second)
	ds := decisionsOf(t, readTopic(t, brokers, tp.Decisions))
	run := start.Add(30 * time.Second)
	var carts []string
	for _, d := range ds {
		carts = append(carts, d.Cart.CartID)
		if !d.DecidedAt.Equal(run) || d.Flow != "sweep" || d.Step != "nudge" {
			t.Errorf("decision %s: flow %s step %s decided at %s, want the run at %s", d.ID, d.Flow, d.Step, d.DecidedAt, run)
		}
	}
	slices.Sort(carts)
	if want := []string{"k-in1", "k-in2"}; !slices.Equal(carts, want) {
		t.Fatalf("decisions for %v, want %v", carts, want)
	}

	// Down for ten minutes: one run when it comes back, not ten.
	r.stop(t)
	clock.Store(start.Add(10*time.Minute + 40*time.Second).UnixNano())
	r = startOn(t, brokers, dir, flows, tp, group, withClock)
	consumeUntil(t, brokers, tp.Decisions, 20*time.Second, atLeast(4))
	time.Sleep(300 * time.Millisecond)
	waitDrained(t, r, 10*time.Second)
	ds = decisionsOf(t, readTopic(t, brokers, tp.Decisions))
	if len(ds) != 4 {
		t.Fatalf("%d decisions after the restart, want 4 (one more run)", len(ds))
	}
	late := start.Add(10*time.Minute + 30*time.Second)
	ids := map[string]bool{}
	byRun := map[time.Time][]string{}
	for _, d := range ds {
		if ids[d.ID] {
			t.Errorf("decision id %s repeated", d.ID)
		}
		ids[d.ID] = true
		byRun[d.DecidedAt.UTC()] = append(byRun[d.DecidedAt.UTC()], d.Cart.CartID)
	}
	if len(byRun) != 2 || len(byRun[run]) != 2 || len(byRun[late]) != 2 {
		t.Fatalf("decisions by run: %v, want two for %s and two for %s (the latest missed run)", byRun, run, late)
	}
}
