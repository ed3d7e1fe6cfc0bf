package processor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// deleteInput deletes every record of the input topic up to its end, as
// retention would.
func deleteInput(t testing.TB, brokers []string, topic string) {
	t.Helper()
	adm := kadm.NewClient(adminClient(t, brokers))
	os := kadm.Offsets{}
	for p, end := range endOffsets(t, brokers, topic) {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: end})
	}
	rs, err := adm.DeleteRecords(context.Background(), os)
	if err == nil {
		err = rs.Error()
	}
	if err != nil {
		t.Fatalf("deleting the input's records: %v", err)
	}
}

// A partition's state survives its machine and the input's retention: an
// instance processes profiles (with consent) and carts, stops, and the
// input's records are deleted; a new instance with an empty data
// directory restores every customer from the changelog, serves them, fires
// their timers when due (exactly once over both instances), and credits a
// later checkout to the reminder.
func TestStateSurvivesTheMachineAndTheInputRetention(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	t0 := time.Now().UTC().Truncate(time.Second)
	clock := newFakeClock(t0)
	const n = 200
	var evs []event
	email, yes := "x@example.com", true
	for i := range n {
		c := fmt.Sprintf("c-%03d", i)
		evs = append(evs, mkEvent(t, "p-"+c, events.TypeCustomerUpdated, t0.Add(-time.Second),
			events.CustomerUpdated{CustomerID: c, Email: &email, MarketingConsent: &yes}))
		evs = append(evs, itemAdded(t, "a-"+c, c, "k-"+c, t0, "A", int64(1+i%3), 1000))
	}
	produceTo(t, prod, tp.Events, evs...)
	a := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, clock.opt())
	waitCaughtUp(t, a, int64(len(evs)), 30*time.Second)
	waitDrained(t, a, 10*time.Second)
	before := a.p.Stats()
	a.stop(t)
	deleteInput(t, brokers, tp.Events)

	b := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, clock.opt())
	s := waitCaughtUp(t, b, 0, 30*time.Second)
	if s.RestoredCustomers != n || s.Restoring != 0 {
		t.Fatalf("restored %d customers (%d partitions still restoring), want %d", s.RestoredCustomers, s.Restoring, n)
	}
	if s.OpenCarts != before.OpenCarts || s.PendingTimers != before.PendingTimers || s.OpenCarts != n {
		t.Fatalf("restored %d open carts and %d timers, had %d and %d", s.OpenCarts, s.PendingTimers, before.OpenCarts, before.PendingTimers)
	}
	for i := range n {
		c := fmt.Sprintf("c-%03d", i)
		st, _, owned, err := b.p.Lookup(c)
		if err != nil || !owned || st == nil {
			t.Fatalf("%s after the restore: %+v, owned %v, %v", c, st, owned, err)
		}
		if !st.Profile.MarketingConsent || st.Profile.Email != email || st.Cart("k-"+c) == nil || st.Cart("k-"+c).ItemCount != int64(1+i%3) {
			t.Fatalf("%s restored as %+v", c, st)
		}
	}

	clock.set(t0.Add(90 * time.Second)) // step 1 of every cart
	waitClock(t, b, t0.Add(90*time.Second))
	waitDrained(t, b, 10*time.Second)
	produceTo(t, prod, tp.Events, checkout(t, "buy-c-007", "c-007", "k-c-007", t0.Add(100*time.Second), 2000))
	waitCaughtUp(t, b, 1, 20*time.Second)
	waitDrained(t, b, 10*time.Second)

	decisions := readTopic(t, brokers, tp.Decisions)
	if len(decisions) != n || len(duplicateIDs(decisions)) != 0 {
		t.Fatalf("%d decisions (%d duplicated ids) for %d carts", len(decisions), len(duplicateIDs(decisions)), n)
	}
	recovered := 0
	for _, o := range outcomesOf(t, readTopic(t, brokers, tp.Outcomes)) {
		if o.Kind == events.OutcomeRecovered && o.CustomerKey == "c-007" {
			recovered++
		}
	}
	if recovered != 1 {
		t.Fatalf("%d recovered outcomes for c-007's checkout, want 1", recovered)
	}
}

// Without a changelog, an input that no longer starts at offset 0 is not
// silently turned into a state that misses the deleted history: the
// partition fails to start, naming CARTLIFT_REPLAY_INPUT, unless replay is
// allowed.
func TestNoChangelogAndDeletedInputNeedsReplayOptIn(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	at := time.Now().Add(-time.Minute).UTC()
	var evs []event
	for p := range int32(testPartitions) {
		c := keyIn("c-old", p, testPartitions)
		evs = append(evs, itemAdded(t, "a-"+c, c, "k", at, "A", 1, 100))
	}
	produceTo(t, prod, tp.Events, evs...)
	deleteInput(t, brokers, tp.Events)

	p, err := processor.New(processor.Config{Brokers: brokers, DataDir: t.TempDir(), Flows: mustFlows(t, testFlows),
		Topics: tp, Group: uniqueName(t, "g"), Partitions: testPartitions})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = p.Run(ctx)
	p.Close()
	if err == nil || !strings.Contains(err.Error(), "CARTLIFT_REPLAY_INPUT") {
		t.Fatalf("run without a changelog over deleted input: %v", err)
	}

	r := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, uniqueName(t, "g"), func(c *processor.Config) {
		c.ReplayInput = true
	})
	waitCaughtUp(t, r, 0, 30*time.Second)
}

// A zombie owner (an instance that lost its partition without noticing)
// is fenced: once the partition's next owner has initialised its
// transactional producer, nothing the old one produces reaches a
// read_committed consumer, and the old one stops.
func TestZombieOwnerIsFenced(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	t0 := time.Now().UTC().Truncate(time.Second)
	clock := newFakeClock(t0)
	zombie := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group, clock.opt())
	zombie.expectErr = processor.ErrFenced // the test checks it
	c := keyIn("c-z", 0, testPartitions)
	produceTo(t, prod, tp.Events, itemAdded(t, "a-1", c, "k-1", t0, "A", 1, 100))
	waitCaughtUp(t, zombie, 1, 20*time.Second)

	// The next owner of partition 0 initialises its transactional producer.
	next, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(group+"-0"))
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if _, _, err := next.ProducerID(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The zombie still processes: its step 1 comes due, another cart too.
	clock.set(t0.Add(90 * time.Second))
	produceTo(t, prod, tp.Events, itemAdded(t, "a-2", c, "k-2", t0.Add(90*time.Second), "B", 1, 100))
	select {
	case err := <-zombie.done:
		zombie.done <- err // for the cleanup's stop
		if !errors.Is(err, processor.ErrFenced) {
			t.Fatalf("the zombie stopped with %v, want it fenced", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the zombie is still running")
	}
	zombie.stop(t)
	if d := readTopic(t, brokers, tp.Decisions); len(d) != 0 {
		t.Fatalf("a read_committed consumer sees %d decisions of the fenced owner", len(d))
	}
	for _, r := range readTopic(t, brokers, tp.State) {
		if r.Key == c && strings.Contains(string(r.Value), "k-2") {
			t.Fatal("the fenced owner's state after the fence reached the changelog")
		}
	}
}

// Verify compares a stopped instance's store with the changelog; a store
// that another owner has since moved past differs, and Rebuild makes it
// equal again.
func TestVerifyAndRebuildAgainstTheChangelog(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	at := time.Now().Add(-10 * time.Second).UTC()
	var evs []event
	for i := range 40 {
		c := fmt.Sprintf("c-v%02d", i)
		evs = append(evs, itemAdded(t, "a-"+c, c, "k", at, "A", 1, 100))
	}
	produceTo(t, prod, tp.Events, evs...)
	dirA := t.TempDir()
	a := startOn(t, brokers, dirA, mustFlows(t, testFlows), tp, group)
	waitCaughtUp(t, a, int64(len(evs)), 20*time.Second)
	waitDrained(t, a, 10*time.Second)
	a.stop(t)
	customers := 0
	for _, c := range verifyStore(t, brokers, dirA, tp, group) {
		if !c.OK() {
			t.Fatalf("a store just stopped differs from its changelog: %+v", c)
		}
		customers += c.Customers
	}
	if customers != len(evs) {
		t.Fatalf("verified %d customers, want %d", customers, len(evs))
	}

	// Another owner moves on: A's copy is behind.
	b := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group)
	waitCaughtUp(t, b, 0, 20*time.Second)
	produceTo(t, prod, tp.Events, itemAdded(t, "a-more", "c-v00", "k", at.Add(time.Second), "B", 1, 100))
	waitCaughtUp(t, b, 1, 20*time.Second)
	waitDrained(t, b, 10*time.Second)
	b.stop(t)
	differ := 0
	for _, c := range verifyStore(t, brokers, dirA, tp, group) {
		if !c.OK() {
			differ++
		}
	}
	if differ != 1 {
		t.Fatalf("%d partitions differ, want 1 (the one b moved on)", differ)
	}

	p, err := processor.OpenStore(processor.Config{Brokers: brokers, DataDir: dirA, Flows: mustFlows(t, testFlows), Topics: tp, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Rebuild(context.Background(), func(int32, int64, int64) {}); err != nil {
		t.Fatal(err)
	}
	p.Close()
	for _, c := range verifyStore(t, brokers, dirA, tp, group) {
		// A rebuild draws a new lineage, so only the content is compared.
		if c.LocalOffset != c.ChangelogOffset || c.OnlyLocal+c.OnlyChangelog+c.Differ != 0 {
			t.Fatalf("after the rebuild: %+v", c)
		}
	}
}

// An erasure survives a restore: the changelog's last record of an erased
// customer is the erasure's tombstone state (no profile, no carts; it
// keeps the erasure time so that late events stay ignored), and a new
// owner restores nothing of what was erased.
func TestErasureSurvivesARestore(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	at := time.Now().Add(-10 * time.Second).UTC()
	c := keyIn("c-erase", 1, testPartitions)
	email := "erase-me@example.com"
	produceTo(t, prod, tp.Events,
		mkEvent(t, "p-1", events.TypeCustomerUpdated, at, events.CustomerUpdated{CustomerID: c, Email: &email}),
		itemAdded(t, "a-1", c, "k-secret", at, "A", 1, 100),
		mkEvent(t, "e-1", events.TypeCustomerErased, at.Add(time.Second), events.CustomerErased{CustomerID: c}))
	a := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group)
	waitCaughtUp(t, a, 3, 20*time.Second)
	waitDrained(t, a, 10*time.Second)
	a.stop(t)
	var last []byte
	for _, r := range readTopic(t, brokers, tp.State) {
		if r.Key == c {
			last = r.Value
		}
	}
	if last == nil || bytes.Contains(last, []byte(email)) || bytes.Contains(last, []byte("k-secret")) {
		t.Fatalf("the erased customer's last changelog record: %q", last)
	}
	b := startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, group)
	waitCaughtUp(t, b, 0, 20*time.Second)
	if st, _, _, err := b.p.Lookup(c); err != nil || st != nil {
		t.Fatalf("after a restore the erased customer is %+v, %v", st, err)
	}
}

// A rolling upgrade in two phases: instances that write state format 3
// (CARTLIFT_STATE_FORMAT=3, what builds before format 4 read) and then,
// restarted with the default, format 4 on the same store and changelog;
// a new instance restores the mixed changelog and the verify finds it
// equal to the store, customer by customer.
func TestStateFormatRollingUpgrade(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	flows := mustFlows(t, testFlows)
	prod := newProducer(t, brokers)
	at := time.Now().Add(-10 * time.Second).UTC()
	const customers = 20
	round := func(name string, offset time.Duration) []event {
		var evs []event
		for i := range customers {
			c := fmt.Sprintf("c-u%02d", i)
			evs = append(evs, itemAdded(t, name+"-"+c, c, "k", at.Add(offset), name, 1, 100))
		}
		return evs
	}
	// formats counts the state records of the changelog by format.
	formats := func() map[byte]int {
		got := map[byte]int{}
		for _, r := range readTopic(t, brokers, tp.State) {
			if strings.HasPrefix(r.Key, "c-u") && len(r.Value) > 0 {
				got[r.Value[0]]++
			}
		}
		return got
	}

	dir := t.TempDir()
	produceTo(t, prod, tp.Events, round("v3", 0)...)
	old := startOn(t, brokers, dir, flows, tp, group, func(c *processor.Config) { c.StateFormat = 3 })
	waitCaughtUp(t, old, customers, 20*time.Second)
	waitDrained(t, old, 10*time.Second)
	old.stop(t)
	if got := formats(); got[3] != customers || len(got) != 1 {
		t.Fatalf("the first phase wrote state records of formats %v, want %d of format 3", got, customers)
	}

	produceTo(t, prod, tp.Events, round("v4", time.Second)...)
	upgraded := startOn(t, brokers, dir, flows, tp, group)
	waitCaughtUp(t, upgraded, customers, 20*time.Second)
	waitDrained(t, upgraded, 10*time.Second)
	want := upgraded.p.Stats().OpenCarts
	upgraded.stop(t)
	if got := formats(); got[3] != customers || got[4] != customers || len(got) != 2 {
		t.Fatalf("the changelog holds state records of formats %v, want %d of format 3 and then %d of format 4", got, customers, customers)
	}

	// A new instance restores from the changelog, which holds both.
	fresh := startOn(t, brokers, t.TempDir(), flows, tp, group)
	s := waitCaughtUp(t, fresh, 0, 20*time.Second)
	fresh.stop(t)
	if s.OpenCarts != want || want != customers {
		t.Fatalf("restored %d open carts, the upgraded instance had %d, want %d", s.OpenCarts, want, customers)
	}
	for _, c := range verifyStore(t, brokers, dir, tp, group) {
		if !c.OK() {
			t.Fatalf("the upgraded store differs from the changelog: %+v", c)
		}
	}
}

// verifyStore opens the stopped instance's store in dir and compares it
// with the changelog (`cartlift state verify`).
func verifyStore(t *testing.T, brokers []string, dir string, tp processor.Topics, group string) []processor.PartitionCheck {
	t.Helper()
	p, err := processor.OpenStore(processor.Config{Brokers: brokers, DataDir: dir, Flows: mustFlows(t, testFlows), Topics: tp, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	checks, err := p.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return checks
}

// A restore whose records outgrow its memory budget reads the changelog
// twice (each key's last offset, then those records in chunks): with a
// budget of a few records it restores what a restore in one pass does,
// customer by customer, superseded records and erasures included.
func TestRestoreInTwoPassesEqualsOnePass(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	flows := mustFlows(t, testFlows)
	prod := newProducer(t, brokers)
	at := time.Now().Add(-time.Minute).UTC()
	const n = 60
	var evs []event
	for i := range n {
		c := fmt.Sprintf("c-r%02d", i)
		evs = append(evs, itemAdded(t, "a-"+c, c, "k", at, "A", 1, 100))
	}
	for i := range n { // a second record of every customer supersedes the first
		c := fmt.Sprintf("c-r%02d", i)
		if i%10 == 0 {
			evs = append(evs, mkEvent(t, "x-"+c, events.TypeCustomerErased, at.Add(time.Second), events.CustomerErased{CustomerID: c}))
		} else {
			evs = append(evs, itemAdded(t, "b-"+c, c, fmt.Sprintf("k-%d", i%3), at.Add(time.Second), "B", 2, 300))
		}
	}
	produceTo(t, prod, tp.Events, evs...)
	a := startOn(t, brokers, t.TempDir(), flows, tp, group)
	waitCaughtUp(t, a, int64(len(evs)), 20*time.Second)
	waitDrained(t, a, 10*time.Second)
	want := a.p.Stats()
	a.stop(t)

	restore := func(name string, budget int64) processor.Stats {
		dir := t.TempDir()
		r := startOn(t, brokers, dir, flows, tp, group, func(c *processor.Config) { c.RestoreMemoryBytes = budget })
		s := waitCaughtUp(t, r, 0, 20*time.Second)
		r.stop(t)
		if s.OpenCarts != want.OpenCarts || s.PendingTimers != want.PendingTimers || s.RestoredCustomers != n {
			t.Fatalf("%s: restored %d customers, %d open carts, %d timers; want %d, %d, %d", name,
				s.RestoredCustomers, s.OpenCarts, s.PendingTimers, n, want.OpenCarts, want.PendingTimers)
		}
		for _, c := range verifyStore(t, brokers, dir, tp, group) {
			// A restore draws a new lineage, so only the content is compared.
			if c.LocalOffset != c.ChangelogOffset || c.OnlyLocal+c.OnlyChangelog+c.Differ != 0 {
				t.Fatalf("%s: the restored store differs from the changelog: %+v", name, c)
			}
		}
		return s
	}
	restore("one pass", 0)     // the default: all of it at once
	restore("two passes", 512) // a few records per chunk
}
