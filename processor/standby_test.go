package processor_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// Two instances with one standby replica each: each keeps a warm copy of
// the other's partitions, following the changelog as it grows. When one
// leaves, the other takes its partitions over from the copies (no
// restore), serves every customer as the changelog has it, and fires the
// timers the copies carried.
func TestStandbyTakesOverWithoutRestore(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	t0 := time.Now().UTC().Truncate(time.Second)
	clock := newFakeClock(t0)
	standby := func(c *processor.Config) { c.StandbyReplicas = 1 }
	const n = 300
	email, yes := "x@example.com", true
	var evs []event
	for i := range n {
		c := fmt.Sprintf("c-%03d", i)
		evs = append(evs, mkEvent(t, "p-"+c, events.TypeCustomerUpdated, t0.Add(-time.Second),
			events.CustomerUpdated{CustomerID: c, Email: &email, MarketingConsent: &yes}))
		evs = append(evs, itemAdded(t, "a-"+c, c, "k-"+c, t0, "A", 1, 1000))
	}
	produceTo(t, prod, tp.Events, evs...)
	a := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, clock.opt(), standby)
	waitCaughtUp(t, a, int64(len(evs)), 30*time.Second)
	b := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, clock.opt(), standby)

	// Balanced, each with warm copies of the other's partitions.
	waitFor(t, 30*time.Second, "two balanced instances with warm standby copies", func() bool {
		sa, sb := a.p.Stats(), b.p.Stats()
		return sa.Partitions == testPartitions/2 && sb.Partitions == testPartitions/2 &&
			sa.StandbyWarm == testPartitions/2 && sb.StandbyWarm == testPartitions/2
	})
	// More input while the copies follow: every customer's cart grows.
	var more []event
	for i := range n {
		c := fmt.Sprintf("c-%03d", i)
		more = append(more, itemAdded(t, "b-"+c, c, "k-"+c, t0.Add(time.Second), "B", 2, 500))
	}
	produceTo(t, prod, tp.Events, more...)
	waitFor(t, 30*time.Second, "both instances to process the new input and their copies to follow", func() bool {
		sa, sb := a.p.Stats(), b.p.Stats()
		return sa.EventsConsumed+sb.EventsConsumed >= int64(len(evs)+len(more)) && sa.Lag == 0 && sb.Lag == 0 &&
			sa.ChangelogLag == 0 && sb.ChangelogLag == 0 && sa.StandbyLag == 0 && sb.StandbyLag == 0
	})
	before := b.p.Stats()
	a.stop(t)

	s := waitCaughtUp(t, b, b.p.Stats().EventsConsumed, 30*time.Second)
	// (b's own half came by restores when it joined.)
	if got := s.Takeovers[processor.FromStandby] - before.Takeovers[processor.FromStandby]; got != testPartitions/2 {
		t.Fatalf("took %d partitions over from standby copies, want %d (takeovers %v, before %v)", got, testPartitions/2, s.Takeovers, before.Takeovers)
	}
	if s.Takeovers[processor.FromChangelog] != before.Takeovers[processor.FromChangelog] || s.RestoredCustomers != before.RestoredCustomers {
		t.Fatalf("restored on takeover: takeovers %v then %v, restored customers %d then %d",
			before.Takeovers, s.Takeovers, before.RestoredCustomers, s.RestoredCustomers)
	}
	if s.OpenCarts != n || s.PendingTimers != n {
		t.Fatalf("after the takeover: %d open carts, %d timers, want %d of each", s.OpenCarts, s.PendingTimers, n)
	}
	for i := range n {
		c := fmt.Sprintf("c-%03d", i)
		st, _, owned, err := b.p.Lookup(c)
		if err != nil || !owned || st == nil {
			t.Fatalf("%s after the takeover: %+v, owned %v, %v", c, st, owned, err)
		}
		if cart := st.Cart("k-" + c); !st.Profile.MarketingConsent || cart == nil || cart.ItemCount != 3 {
			t.Fatalf("%s after the takeover: %+v", c, st)
		}
	}
	// The copies' timers are live: every cart's first reminder fires once.
	clock.set(t0.Add(90 * time.Second))
	waitClock(t, b, t0.Add(90*time.Second))
	waitDrained(t, b, 10*time.Second)
	decisions := readTopic(t, brokers, tp.Decisions)
	if len(decisions) != n || len(duplicateIDs(decisions)) != 0 {
		t.Fatalf("%d decisions (%d duplicated ids) for %d carts", len(decisions), len(duplicateIDs(decisions)), n)
	}
}

// A partition that moved away and is not kept as a standby is dropped
// from the store after the cleanup delay.
func TestIdleLocalCopyIsDropped(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	t0 := time.Now().UTC().Truncate(time.Second)
	var evs []event
	for i := range 100 {
		c := fmt.Sprintf("c-%03d", i)
		evs = append(evs, itemAdded(t, "a-"+c, c, "k-"+c, t0, "A", 1, 1000))
	}
	produceTo(t, prod, tp.Events, evs...)
	cleanup := func(c *processor.Config) { c.CleanupDelay = time.Second }
	a := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, cleanup)
	waitCaughtUp(t, a, int64(len(evs)), 30*time.Second)
	waitFor(t, 10*time.Second, "every partition to be counted local", func() bool {
		return a.p.Stats().LocalPartitions == testPartitions
	})
	startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, cleanup)
	waitFor(t, 30*time.Second, "the moved partitions' copies to be dropped", func() bool {
		s := a.p.Stats()
		return s.Partitions == testPartitions/2 && s.LocalPartitions == testPartitions/2
	})
}

// A session timeout the brokers refuse (kfake, like Kafka, allows 6s to
// 30m by default) stops the processor with an error that names the
// setting, instead of retrying the join for ever.
func TestRefusedSessionTimeoutFailsNamingTheSetting(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	r := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, uniqueName(t, "g"),
		func(c *processor.Config) { c.SessionTimeout = 2 * time.Second })
	select {
	case err := <-r.done:
		if err == nil || !strings.Contains(err.Error(), "CARTLIFT_SESSION_TIMEOUT") {
			t.Fatalf("Run returned %v, want an error naming CARTLIFT_SESSION_TIMEOUT", err)
		}
		t.Log(err)
		r.done <- nil // the cleanup's stop reads it
	case <-time.After(30 * time.Second):
		t.Fatal("the processor kept running with a session timeout the group refuses")
	}
}
