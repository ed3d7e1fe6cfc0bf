package processor_test

// The effective-time rule through the Kafka protocol: a producer's fast
// clock never fires anyone's timer early, and a replay (or a backtest) of
// the input decides what the live processor decided, whatever the gaps
// between events.

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// fakeClock is a processor's wall clock that the test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}

func (c *fakeClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) opt() func(*processor.Config) {
	return func(cfg *processor.Config) { cfg.Clock = c.now }
}

// waitClock waits until every partition's effective time has reached t:
// every timer due by then has fired and been committed.
func waitClock(t testing.TB, r *running, at time.Time) {
	t.Helper()
	waitFor(t, 20*time.Second, "the partitions' clocks to reach "+at.Format(time.RFC3339Nano), func() bool {
		s := r.p.Stats()
		return s.Partitions == testPartitions && !s.Clock.Before(at)
	})
}

// A producer whose clock runs 60 s fast sends one event per partition.
// The decoder accepts it (5 minutes of skew are allowed), but it must not
// move the partition's clock past the wall clock: customers who check out
// one second before their reminder is due get none.
func TestFastProducerClockFiresNothingEarly(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows) // first step after 1m
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	t0 := time.Now().UTC().Truncate(time.Second)
	clock := newFakeClock(t0)
	r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"), clock.opt())
	waitCaughtUp(t, r, 0, 20*time.Second)

	var adds, checkouts, fast []event
	for p := range int32(testPartitions) {
		for i := range 4 {
			c := keyIn(fmt.Sprintf("c-%d-%d", p, i), p, testPartitions)
			adds = append(adds, itemAdded(t, "add-"+c, c, "k-"+c, t0, "A", 1, 1000))
			checkouts = append(checkouts, checkout(t, "buy-"+c, c, "k-"+c, t0.Add(59*time.Second), 1000))
		}
		skewed := keyIn(fmt.Sprintf("c-fast-%d", p), p, testPartitions)
		fast = append(fast, itemAdded(t, "fast-"+skewed, skewed, "k-fast", t0.Add(30*time.Second+60*time.Second), "F", 1, 500))
	}
	produceTo(t, prod, tp.Events, adds...)
	waitCaughtUp(t, r, int64(len(adds)), 20*time.Second)

	clock.set(t0.Add(30 * time.Second))
	produceTo(t, prod, tp.Events, fast...) // 60 s ahead of the wall clock
	waitCaughtUp(t, r, int64(len(adds)+len(fast)), 20*time.Second)

	clock.set(t0.Add(59 * time.Second))
	produceTo(t, prod, tp.Events, checkouts...)
	n := int64(len(adds) + len(fast) + len(checkouts))
	waitCaughtUp(t, r, n, 20*time.Second)
	clock.set(t0.Add(2 * time.Minute))
	waitClock(t, r, t0.Add(2*time.Minute))
	waitDrained(t, r, 10*time.Second)

	for _, d := range decisionsOf(t, readTopic(t, brokers, tp.Decisions)) {
		if d.Cart.CartID != "k-fast" {
			t.Errorf("decision %s for %s (decided at %s): the cart was checked out a second before its reminder was due",
				d.ID, d.Customer.Key, d.DecidedAt.Format(time.RFC3339))
		}
	}
	converted := 0
	for _, o := range outcomesOf(t, readTopic(t, brokers, tp.Outcomes)) {
		if o.Kind == events.OutcomeConverted {
			converted++
		}
	}
	if converted != len(checkouts) {
		t.Errorf("%d carts converted without a reminder, want %d", converted, len(checkouts))
	}
}

// gappyLog is input whose partitions go quiet for longer than the steps'
// intervals: customers add to a cart, stay away past both steps, come
// back, and some check out within the attribution window. It ends with a
// heartbeat per partition after every expiry, so that a replay reaches
// the end of the timeline in event time too.
func gappyLog(t testing.TB, t0 time.Time) []event {
	var evs []event
	for i := range 12 {
		c := fmt.Sprintf("c-gap-%02d", i)
		k := "k-" + c
		at := t0.Add(time.Duration(i) * 7 * time.Second)
		evs = append(evs, itemAdded(t, "a1-"+c, c, k, at, "A", 1, 1000+int64(i)))
		// Back after 8 minutes: both steps (1m, 5m) came due meanwhile.
		back := at.Add(8 * time.Minute)
		evs = append(evs, itemAdded(t, "a2-"+c, c, k, back, "B", 2, 700))
		switch i % 3 {
		case 0: // buys between the first and the second step of the new period
			evs = append(evs, checkout(t, "buy-"+c, c, k, back.Add(3*time.Minute), 2400))
		case 1: // buys after both
			evs = append(evs, checkout(t, "buy-"+c, c, k, back.Add(12*time.Minute), 2400))
		}
	}
	end := t0.Add(80 * time.Minute) // after every expiry (30m after the last activity)
	for p := range int32(testPartitions) {
		c := keyIn("c-heartbeat", p, testPartitions)
		evs = append(evs, itemAdded(t, "hb-"+c, c, "k-hb", end, "H", 1, 1))
	}
	slices.SortStableFunc(evs, func(a, b event) int { return eventTime(t, a).Compare(eventTime(t, b)) })
	return evs
}

func eventTime(t testing.TB, e event) time.Time {
	ev, err := events.Decode(e.value, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return ev.Time
}

// outputs maps each record's id to its value.
func outputs(recs []record) map[string][]byte {
	m := map[string][]byte{}
	for _, r := range recs {
		m[r.ID] = r.Value
	}
	return m
}

// The same input, live and replayed: live, a caught-up processor whose
// wall clock follows the events and ticks between them; then a fresh
// processor (new store, group and output topics) over the whole input at
// once, and a backtest of it. The decisions and outcomes must be the same
// ids with the same bytes, though every cart's partition was idle for
// longer than the steps' interval.
func TestReplayEqualsLive(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	prod := newProducer(t, brokers)
	t0 := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Second)
	evs := gappyLog(t, t0)
	horizon := eventTime(t, evs[len(evs)-1])

	// Live.
	live := testTopics(t, brokers)
	clock := newFakeClock(t0.Add(-time.Second))
	r := startOn(t, brokers, t.TempDir(), flows, live, uniqueName(t, "g"), clock.opt())
	waitCaughtUp(t, r, 0, 20*time.Second)
	next := 0
	for now := t0; !now.After(horizon); now = now.Add(15 * time.Second) {
		clock.set(now)
		var batch []event
		for next < len(evs) && !eventTime(t, evs[next]).After(now) {
			batch = append(batch, evs[next])
			next++
		}
		produceTo(t, prod, live.Events, batch...)
		waitCaughtUp(t, r, int64(next), 20*time.Second)
		waitClock(t, r, now)
	}
	waitDrained(t, r, 10*time.Second)
	r.stop(t)
	liveDecisions, liveOutcomes := outputs(readTopic(t, brokers, live.Decisions)), outputs(readTopic(t, brokers, live.Outcomes))
	if len(liveDecisions) < 24 {
		t.Fatalf("live: only %d decisions", len(liveDecisions))
	}

	// Replay: the same input topic, everything else new, its wall clock
	// where live stopped (a later one would go on to fire the heartbeats'
	// own steps and expiries, which live never reached).
	replay := testTopics(t, brokers)
	replay.Events = live.Events
	clock.set(horizon)
	r2 := startOn(t, brokers, t.TempDir(), flows, replay, uniqueName(t, "g"), clock.opt())
	waitCaughtUp(t, r2, int64(len(evs)), 30*time.Second)
	waitDrained(t, r2, 10*time.Second)
	r2.stop(t)
	for what, pair := range map[string][2]map[string][]byte{
		"decisions": {liveDecisions, outputs(readTopic(t, brokers, replay.Decisions))},
		"outcomes":  {liveOutcomes, outputs(readTopic(t, brokers, replay.Outcomes))},
	} {
		want, got := pair[0], pair[1]
		for _, id := range slices.Sorted(maps.Keys(want)) {
			if !bytes.Equal(want[id], got[id]) {
				t.Errorf("%s %s: live and replay differ:\nlive:   %s\nreplay: %s", what, id, want[id], got[id])
			}
		}
		for id := range got {
			if want[id] == nil {
				t.Errorf("%s %s only in the replay: %s", what, id, got[id])
			}
		}
	}

	// Backtest: the same decision ids.
	bt := projections.NewBacktest(flows)
	btIDs := map[string]bool{}
	bt.Observe = func(_ string, eff *projections.Effects) {
		for _, d := range eff.Decisions {
			btIDs[d.ID] = true
		}
	}
	for _, e := range evs {
		ev, err := events.Decode(e.value, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		bt.Apply(ev.Key(), ev)
	}
	bt.Finish(horizon)
	if !maps.Equal(btIDs, mapSet(liveDecisions)) {
		t.Errorf("backtest decided %d ids, live %d; they differ", len(btIDs), len(liveDecisions))
	}
}

func mapSet(m map[string][]byte) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
