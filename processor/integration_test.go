package processor_test

// Integration tests of the processor through the Kafka protocol: franz-go
// against an in-process kfake broker (or real Kafka with KAFKA_BROKERS).
// Every test uses its own topics and group.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// keyOf returns a condition that holds once a record with the key was read.
func keyOf(key string) func([]record) bool {
	return func(rs []record) bool {
		return slices.ContainsFunc(rs, func(r record) bool { return r.Key == key })
	}
}

// TestCheckoutBeforeDelayNoDecision: a cart checked out before its first
// step is due gets no decision, ever, but one converted outcome; even
// when the wall clock is long past every step's due time.
func TestCheckoutBeforeDelayNoDecision(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)

	// The whole story is in the backlog: by the wall clock both steps of
	// the buyer's cart are long due when the processor starts.
	t.Run("backlog", func(t *testing.T) {
		tp := testTopics(t, brokers)
		prod := newProducer(t, brokers)
		base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
		const buyer = "c-buyer"
		produceTo(t, prod, tp.Events,
			itemAdded(t, "e1", buyer, "k-buyer", base, "A", 1, 2500),
			itemAdded(t, "e2", buyer, "k-buyer", base.Add(10*time.Second), "B", 2, 500),
			checkout(t, "e3", buyer, "k-buyer", base.Add(30*time.Second), 3500),
		)
		r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
		waitCaughtUp(t, r, 3, 20*time.Second)

		// Checkpoint: another customer in the buyer's partition, with a
		// cart idle for 10 minutes. Its decision comes from the same
		// worker's timer driver and outbox, after any decision for the
		// buyer's cart would have come.
		probe := keyIn("c-probe", partitionOf(buyer, testPartitions), testPartitions)
		produceTo(t, prod, tp.Events, itemAdded(t, "e4", probe, "k-probe", base, "C", 1, 100))
		consumeUntil(t, brokers, tp.Decisions, 20*time.Second, keyOf(probe))
		waitCaughtUp(t, r, 4, 10*time.Second)
		waitDrained(t, r, 10*time.Second)

		assertOnlyProbeDecision(t, readTopic(t, brokers, tp.Decisions), buyer, probe)
		assertConverted(t, readTopic(t, brokers, tp.Outcomes), buyer, "k-buyer", 3500)
	})

	// Live: the processor is caught up when the cart is added and when it
	// is checked out; then the (test's) wall clock moves past both steps.
	t.Run("live", func(t *testing.T) {
		tp := testTopics(t, brokers)
		prod := newProducer(t, brokers)
		var clock atomic.Int64
		start := time.Now().UTC().Truncate(time.Second)
		clock.Store(start.UnixNano())
		r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"), func(c *processor.Config) {
			c.Clock = func() time.Time { return time.Unix(0, clock.Load()) }
		})
		waitCaughtUp(t, r, 0, 20*time.Second)

		const buyer = "c-buyer"
		// Added 50s ago: the first step is due in 10s.
		produceTo(t, prod, tp.Events, itemAdded(t, "e1", buyer, "k-buyer", start.Add(-50*time.Second), "A", 1, 2500))
		waitCaughtUp(t, r, 1, 10*time.Second)
		produceTo(t, prod, tp.Events, checkout(t, "e2", buyer, "k-buyer", start.Add(-20*time.Second), 2500))
		waitCaughtUp(t, r, 2, 10*time.Second)

		// Ten minutes later by the processor's clock: both steps of the
		// buyer's cart are long due (not yet its expiry, 30 minutes).
		clock.Store(start.Add(10 * time.Minute).UnixNano())
		probe := keyIn("c-probe", partitionOf(buyer, testPartitions), testPartitions)
		produceTo(t, prod, tp.Events, itemAdded(t, "e3", probe, "k-probe", start, "C", 1, 100))
		consumeUntil(t, brokers, tp.Decisions, 20*time.Second, keyOf(probe))
		waitCaughtUp(t, r, 3, 10*time.Second)
		waitDrained(t, r, 10*time.Second)

		assertOnlyProbeDecision(t, readTopic(t, brokers, tp.Decisions), buyer, probe)
		assertConverted(t, readTopic(t, brokers, tp.Outcomes), buyer, "k-buyer", 2500)
	})
}

func assertOnlyProbeDecision(t *testing.T, recs []record, buyer, probe string) {
	t.Helper()
	for _, d := range decisionsOf(t, recs) {
		if d.Customer.Key == buyer {
			t.Errorf("decision %s (step %s, decided at %s) for %s, whose cart was checked out before the first step",
				d.ID, d.Step, d.DecidedAt, buyer)
		}
	}
	if len(recs) != 1 || recs[0].Key != probe {
		t.Fatalf("want exactly one decision, for %s; got %d: %+v", probe, len(recs), decisionsOf(t, recs))
	}
	if d := decisionsOf(t, recs)[0]; d.Step != "second" {
		t.Errorf("probe's decision is step %q, want the latest due step, second", d.Step)
	}
}

func assertConverted(t *testing.T, recs []record, key, cart string, total int64) {
	t.Helper()
	outs := outcomesOf(t, recs)
	if len(outs) != 1 {
		t.Fatalf("want one outcome, got %d: %+v", len(outs), outs)
	}
	o := outs[0]
	if o.Kind != events.OutcomeConverted || o.CustomerKey != key || o.CartID != cart || o.ValueMinor != total ||
		o.DecisionID != "" || o.Decisions != 0 || recs[0].Key != key {
		t.Errorf("outcome %+v (record key %q), want converted %d of %s/%s without decisions", o, recs[0].Key, total, key, cart)
	}
}

// TestInvalidRecordToDLQ: invalid records go to the DLQ unchanged, with
// headers naming the error and where the record came from; an unknown
// type is skipped, not dead-lettered; processing goes on.
func TestInvalidRecordToDLQ(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)

	raw := func(id, typ string, data any) []byte {
		v, err := events.Encode(id, "test", typ, base, "", data)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ref := events.CartRef{CustomerID: "c-1", CartID: "k-1", CartType: "shopping", Channel: "b2c", Currency: "EUR"}
	valid := itemAdded(t, "e1", "c-1", "k-1", base, "A", 2, 1500)
	mismatch := itemAdded(t, "e4", "c-1", "k-1", base, "B", 1, 100)
	recs := []*kgo.Record{
		{Key: []byte("c-1"), Value: valid.value},
		// Malformed JSON, with a header of the producer's that must survive.
		{Key: []byte("c-1"), Value: []byte(`{"specversion":"1.0","id":"e2","type":`),
			Headers: []kgo.RecordHeader{{Key: "trace-id", Value: []byte("abc")}}},
		// A valid envelope, invalid data: quantity 0.
		{Key: []byte("c-1"), Value: raw("e3", events.TypeItemAdded, events.ItemAdded{CartRef: ref,
			Item: events.Item{SKU: "Z", Quantity: 0, UnitPriceMinor: 100}})},
		// A valid event under another customer's key.
		{Key: []byte("c-someone-else"), Value: mismatch.value},
		// A type from the future: skipped.
		{Key: []byte("c-1"), Value: raw("e5", "cart.future_type", map[string]string{"customer_id": "c-1"})},
		// Then another customer, whose decision shows processing went on.
		{Key: []byte("c-2"), Value: itemAdded(t, "e6", "c-2", "k-2", base, "C", 1, 700).value},
	}
	for _, r := range recs {
		r.Topic = tp.Events
	}
	if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	wantReasons := map[int]string{1: events.ReasonMalformed, 2: events.ReasonData, 3: events.ReasonKeyMismatch}

	r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
	consumeUntil(t, brokers, tp.Decisions, 20*time.Second, keyOf("c-2"))
	s := waitCaughtUp(t, r, int64(len(recs)), 10*time.Second)
	s = waitDrained(t, r, 10*time.Second)
	if s.EventsRejected != 3 || s.EventsSkipped != 1 || s.DeadLettered != 3 {
		t.Errorf("stats: rejected %d, skipped %d, dead-lettered %d; want 3, 1, 3", s.EventsRejected, s.EventsSkipped, s.DeadLettered)
	}

	dlq := readTopic(t, brokers, tp.DLQ)
	if len(dlq) != len(wantReasons) {
		t.Errorf("DLQ has %d records, want %d", len(dlq), len(wantReasons))
	}
	for i, reason := range wantReasons {
		src := recs[i]
		j := slices.IndexFunc(dlq, func(d record) bool {
			return d.Headers[events.HeaderSourcePartition] == strconv.Itoa(int(src.Partition)) &&
				d.Headers[events.HeaderSourceOffset] == strconv.FormatInt(src.Offset, 10)
		})
		if j < 0 {
			t.Errorf("record %d (%s, partition %d offset %d) is not in the DLQ", i, reason, src.Partition, src.Offset)
			continue
		}
		d := dlq[j]
		if d.Key != string(src.Key) || string(d.Value) != string(src.Value) {
			t.Errorf("DLQ record of %d changed: key %q value %q, want key %q value %q", i, d.Key, d.Value, src.Key, src.Value)
		}
		if got := d.Headers[events.HeaderErrorReason]; got != reason {
			t.Errorf("DLQ record of %d: reason %q, want %q", i, got, reason)
		}
		if msg := d.Headers[events.HeaderError]; !strings.HasPrefix(msg, reason+": ") || len(msg) <= len(reason)+2 {
			t.Errorf("DLQ record of %d: error header %q does not explain %s", i, msg, reason)
		}
		if got := d.Headers[events.HeaderSourceTopic]; got != tp.Events {
			t.Errorf("DLQ record of %d: source topic %q, want %q", i, got, tp.Events)
		}
		for _, h := range src.Headers {
			if d.Headers[h.Key] != string(h.Value) {
				t.Errorf("DLQ record of %d lost the producer's header %s=%s", i, h.Key, h.Value)
			}
		}
	}

	// The invalid records did not touch c-1's cart: its decision shows
	// only the valid event's item.
	ds := decisionsOf(t, readTopic(t, brokers, tp.Decisions))
	byKey := map[string][]int64{}
	for _, d := range ds {
		byKey[d.Customer.Key] = append(byKey[d.Customer.Key], d.Cart.TotalMinor)
	}
	if len(ds) != 2 || !slices.Equal(byKey["c-1"], []int64{3000}) || !slices.Equal(byKey["c-2"], []int64{700}) {
		t.Errorf("decisions by customer (cart totals) %v, want c-1: [3000], c-2: [700]", byKey)
	}
}

// TestBacklogDoesNotRemindCheckedOut: a backlog processed in event time
// reminds exactly the customers the flow says, when it says, and never one
// whose checkout is further down the backlog.
func TestBacklogDoesNotRemindCheckedOut(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	now := time.Now().UTC().Truncate(time.Second)
	base := now.Add(-20 * time.Minute)

	const n = 200
	type timed struct {
		at time.Time
		ev event
	}
	var evs []timed
	added := make([]time.Time, n)
	for i := range n {
		c, k := fmt.Sprintf("c-%03d", i), fmt.Sprintf("k-%03d", i)
		added[i] = base.Add(time.Duration(i) * time.Second)
		evs = append(evs, timed{added[i], itemAdded(t, "add-"+c, c, k, added[i], "SKU-"+strconv.Itoa(i%7), 1+int64(i%3), 1000)})
		if i%2 == 0 { // checks out 30s later, before the first step (1m)
			evs = append(evs, timed{added[i].Add(30 * time.Second),
				checkout(t, "co-"+c, c, k, added[i].Add(30*time.Second), (1+int64(i%3))*1000)})
		}
	}
	// Every partition sees an event every 10s up to a minute ago (profile
	// updates, no carts), so its event time passes every step's due time
	// soon after it: each step fires on its own, in event time.
	for p := range int32(testPartitions) {
		key := keyIn("c-clock", p, testPartitions)
		for at, j := base, 0; at.Before(now.Add(-time.Minute)); at, j = at.Add(10*time.Second), j+1 {
			email := fmt.Sprintf("%s+%d@example.com", key, j)
			evs = append(evs, timed{at, mkEvent(t, fmt.Sprintf("%s-%d", key, j), events.TypeCustomerUpdated, at,
				events.CustomerUpdated{CustomerID: key, Email: &email})})
		}
	}
	slices.SortStableFunc(evs, func(a, b timed) int { return a.at.Compare(b.at) })
	all := make([]event, len(evs))
	for i, e := range evs {
		all[i] = e.ev
	}
	produceTo(t, prod, tp.Events, all...)

	r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
	waitCaughtUp(t, r, int64(len(all)), 30*time.Second)
	// Checkpoint: a probe per partition with a cart idle for 10 minutes,
	// reminded by the wall clock once its worker's timers had their turn.
	var probes []string
	for p := range int32(testPartitions) {
		probe := keyIn("c-probe", p, testPartitions)
		probes = append(probes, probe)
		produceTo(t, prod, tp.Events, itemAdded(t, "add-"+probe, probe, "k-"+probe, now.Add(-10*time.Minute), "P", 1, 100))
	}
	consumeUntil(t, brokers, tp.Decisions, 20*time.Second, func(rs []record) bool {
		for _, p := range probes {
			if !keyOf(p)(rs) {
				return false
			}
		}
		return true
	})
	waitCaughtUp(t, r, int64(len(all)+len(probes)), 10*time.Second)
	waitDrained(t, r, 10*time.Second)

	recs := readTopic(t, brokers, tp.Decisions)
	if dups := duplicateIDs(recs); len(dups) > 0 {
		t.Errorf("%d decision ids occur more than once: %v", len(dups), dups)
	}
	got := map[string][]string{} // customer -> "step@due"
	for _, d := range decisionsOf(t, recs) {
		got[d.Customer.Key] = append(got[d.Customer.Key], d.Step+"@"+d.DecidedAt.UTC().Format(time.TimeOnly))
	}
	for i := range n {
		c := fmt.Sprintf("c-%03d", i)
		var want []string
		if i%2 == 1 {
			want = []string{"first@" + added[i].Add(time.Minute).Format(time.TimeOnly),
				"second@" + added[i].Add(5*time.Minute).Format(time.TimeOnly)}
		}
		if !slices.Equal(got[c], want) {
			t.Errorf("%s (checked out: %v): decisions %v, want %v", c, i%2 == 0, got[c], want)
		}
		delete(got, c)
	}
	for _, p := range probes {
		if len(got[p]) != 1 || !strings.HasPrefix(got[p][0], "second@") {
			t.Errorf("probe %s: decisions %v, want one of step second", p, got[p])
		}
		delete(got, p)
	}
	if len(got) > 0 {
		t.Errorf("decisions for unexpected customers: %v", got)
	}

	outs := outcomesOf(t, readTopic(t, brokers, tp.Outcomes))
	converted := 0
	for _, o := range outs {
		i, err := strconv.Atoi(strings.TrimPrefix(o.CustomerKey, "c-"))
		if err != nil || o.Kind != events.OutcomeConverted || i%2 != 0 || o.Decisions != 0 {
			t.Errorf("unexpected outcome %+v", o)
			continue
		}
		converted++
	}
	if converted != n/2 {
		t.Errorf("%d converted outcomes, want %d", converted, n/2)
	}
}

// TestRestartResumesFromLocalOffset: a restarted processor resumes from
// the offsets in its store, not from the group's committed offsets (here
// rewound to 0 while it was down), and re-emits nothing.
func TestRestartResumesFromLocalOffset(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	dir := t.TempDir()
	prod := newProducer(t, brokers)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)

	var first []event
	for i := range 20 {
		c := fmt.Sprintf("c-a%02d", i)
		first = append(first, itemAdded(t, "a-"+c, c, "k-"+c, base, "A", 1, 1000))
	}
	produceTo(t, prod, tp.Events, first...)
	a := startOn(t, brokers, dir, flows, tp, group)
	waitCaughtUp(t, a, int64(len(first)), 20*time.Second)
	waitFor(t, 10*time.Second, "20 decisions", func() bool { return a.p.Stats().DecisionsMade == 20 })
	waitDrained(t, a, 10*time.Second)
	a.stop(t)

	ends := endOffsets(t, brokers, tp.Events)
	if got := committedOffsets(t, brokers, group, tp.Events); !mapsEqual(got, ends) {
		t.Errorf("group offsets after a clean stop: %v, want the end offsets %v", got, ends)
	}
	// Rewind the group: only the store knows where the processor was.
	zero := map[int32]int64{}
	for p := range ends {
		zero[p] = 0
	}
	commitGroupOffsets(t, brokers, group, tp.Events, zero)

	second := []event{
		// New activity on a cart the first run knows: a new period, with
		// the first item still in the cart.
		itemAdded(t, "b-c-a00", "c-a00", "k-c-a00", base.Add(time.Minute), "B", 1, 500),
	}
	for i := range 10 {
		c := fmt.Sprintf("c-b%02d", i)
		second = append(second, itemAdded(t, "b-"+c, c, "k-"+c, base, "A", 1, 1000))
	}
	produceTo(t, prod, tp.Events, second...)

	b := startOn(t, brokers, dir, flows, tp, group)
	s := waitCaughtUp(t, b, int64(len(second)), 20*time.Second)
	waitFor(t, 10*time.Second, "11 decisions", func() bool { return b.p.Stats().DecisionsMade >= 11 })
	s = waitDrained(t, b, 10*time.Second)
	if s.EventsConsumed != int64(len(second)) || s.DecisionsMade != 11 {
		t.Errorf("restarted processor consumed %d records and made %d decisions, want %d and 11 (stats %+v)",
			s.EventsConsumed, s.DecisionsMade, len(second), s)
	}

	recs := readTopic(t, brokers, tp.Decisions)
	if dups := duplicateIDs(recs); len(dups) > 0 {
		t.Errorf("decisions re-emitted after the restart: %v", dups)
	}
	if len(recs) != 31 {
		t.Errorf("%d decisions, want 31", len(recs))
	}
	var a00 []int64
	for _, d := range decisionsOf(t, recs) {
		if d.Customer.Key == "c-a00" {
			a00 = append(a00, d.Cart.TotalMinor)
		}
	}
	if !slices.Equal(a00, []int64{1000, 1500}) {
		t.Errorf("c-a00's decisions have cart totals %v, want [1000 1500]: the restart lost the cart's state", a00)
	}
}

func mapsEqual(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestNoLocalStateRebuildsFromEarliest: a processor that joins a group
// with committed offsets but has no local state rebuilds its partitions
// from the earliest offset instead of starting at the group's offsets,
// and ends with the same state and the same (byte-identical) decisions.
func TestNoLocalStateRebuildsFromEarliest(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	tpA := testTopics(t, brokers)
	// B reads the same input and writes to its own output topics.
	tpB := processor.Topics{Events: tpA.Events, Decisions: uniqueName(t, "decisions-b"),
		Outcomes: uniqueName(t, "outcomes-b"), DLQ: uniqueName(t, "dlq-b")}
	createTopics(t, brokers, testPartitions, tpB.Decisions, tpB.Outcomes, tpB.DLQ)
	group := uniqueName(t, "g")
	prod := newProducer(t, brokers)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)

	var evs []event
	for i := range 40 {
		c := fmt.Sprintf("c-%02d", i)
		evs = append(evs, itemAdded(t, "a-"+c, c, "k-"+c, base, "A", 1+int64(i%4), 1000))
		if i%3 == 0 {
			evs = append(evs, checkout(t, "co-"+c, c, "k-"+c, base.Add(20*time.Second), (1+int64(i%4))*1000))
		}
	}
	produceTo(t, prod, tpA.Events, evs...)

	a := startOn(t, brokers, t.TempDir(), flows, tpA, group)
	sa := waitCaughtUp(t, a, int64(len(evs)), 20*time.Second)
	waitFor(t, 10*time.Second, "decisions of A", func() bool { return a.p.Stats().DecisionsMade == 26 })
	sa = waitDrained(t, a, 10*time.Second)
	if sa.OpenCarts != 26 {
		t.Errorf("A has %d open carts, want 26", sa.OpenCarts)
	}
	a.stop(t)
	ends := endOffsets(t, brokers, tpA.Events)
	if got := committedOffsets(t, brokers, group, tpA.Events); !mapsEqual(got, ends) {
		t.Fatalf("precondition: A committed %v, want the end offsets %v", got, ends)
	}

	b := startOn(t, brokers, t.TempDir(), flows, tpB, group)
	sb := waitCaughtUp(t, b, int64(len(evs)), 20*time.Second)
	waitFor(t, 10*time.Second, "decisions of B", func() bool { return b.p.Stats().DecisionsMade >= sa.DecisionsMade })
	sb = waitDrained(t, b, 10*time.Second)
	if sb.EventsConsumed != int64(len(evs)) || sb.OpenCarts != sa.OpenCarts || sb.PendingTimers != sa.PendingTimers ||
		sb.DecisionsMade != sa.DecisionsMade || sb.OutcomesMade != sa.OutcomesMade {
		t.Errorf("rebuilt processor: consumed %d, open carts %d, timers %d, decisions %d, outcomes %d; "+
			"want %d, %d, %d, %d, %d as A", sb.EventsConsumed, sb.OpenCarts, sb.PendingTimers, sb.DecisionsMade, sb.OutcomesMade,
			len(evs), sa.OpenCarts, sa.PendingTimers, sa.DecisionsMade, sa.OutcomesMade)
	}
	// The rebuild derives the very same records: same ids, same bytes.
	for _, pair := range [][2]string{{tpA.Decisions, tpB.Decisions}, {tpA.Outcomes, tpB.Outcomes}} {
		ra, rb := readTopic(t, brokers, pair[0]), readTopic(t, brokers, pair[1])
		va, vb := valuesByID(ra), valuesByID(rb)
		if len(va) != len(ra) || len(vb) != len(rb) || len(va) == 0 {
			t.Errorf("%s: %d records, %d ids; %s: %d records, %d ids", pair[0], len(ra), len(va), pair[1], len(rb), len(vb))
		}
		for id, v := range va {
			if w, ok := vb[id]; !ok || w != v {
				t.Errorf("id %s: A emitted %s, the rebuild %s", id, v, w)
			}
		}
		for id := range vb {
			if _, ok := va[id]; !ok {
				t.Errorf("id %s: emitted by the rebuild only", id)
			}
		}
	}
}

// valuesByID maps each record id to its value (the last one read).
func valuesByID(recs []record) map[string]string {
	m := make(map[string]string, len(recs))
	for _, r := range recs {
		m[r.ID] = string(r.Value)
	}
	return m
}

// TestDenseTimersBacklog: a backlog in which every event makes earlier
// timers come due (one partition, a cart a second, each cart's steps
// and expiry firing in event time) must be processed at a rate that does
// not depend on how many timers fired before. The bound is two orders of
// magnitude below the design's throughput target, so only a super-linear
// cost per event (e.g. a timer scan that walks every timer deleted
// earlier in the batch or memtable) makes it fail.
func TestDenseTimersBacklog(t *testing.T) {
	const n = 2000
	const bound = 8 * time.Second
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	tp := testTopics(t, brokers)
	prod := newProducer(t, brokers)
	base := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Second)
	var evs []event
	for i := 0; len(evs) < n; i++ {
		c := fmt.Sprintf("c-%d", i)
		if partitionOf(c, testPartitions) != 0 {
			continue
		}
		at := base.Add(time.Duration(len(evs)) * time.Second)
		evs = append(evs, itemAdded(t, "e-"+c, c, "k-"+c, at, "A", 1, 1000))
	}
	produceTo(t, prod, tp.Events, evs...)

	start := time.Now()
	r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
	var s processor.Stats
	deadline := start.Add(bound)
	for s = r.p.Stats(); s.EventsConsumed < n; s = r.p.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("%d events with dense timers not processed within %s (%.0f events/s wanted at least): "+
				"the cost per event grows with the timers fired before it; stats %+v", n, bound, n/bound.Seconds(), s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("%d events, %d timers fired, in %s", n, s.TimersFired, took.Round(time.Millisecond))
	// Nearly every cart's two steps fired in event time, each firing
	// leaving a deleted timer behind.
	if s.TimersFired < n*3/2 {
		t.Errorf("only %d timers fired, want at least %d: the test does not measure what it should", s.TimersFired, n*3/2)
	}
}

// TestResumedPartitionCommitsGroupOffset: the group's committed offsets
// are for lag monitoring. A processor that resumes a partition from its
// store at an offset the group has not seen committed (it was killed
// before its last auto-commit) must commit that offset, even when the
// partition gets no new input: otherwise the partition shows its whole
// log (or no offset at all) as lag until new input arrives.
func TestResumedPartitionCommitsGroupOffset(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "g")
	dir := t.TempDir()
	prod := newProducer(t, brokers)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	var evs []event
	for i := range 20 {
		c := fmt.Sprintf("c-%02d", i)
		evs = append(evs, itemAdded(t, "a-"+c, c, "k-"+c, base, "A", 1, 1000))
	}
	produceTo(t, prod, tp.Events, evs...)
	a := startOn(t, brokers, dir, flows, tp, group)
	waitCaughtUp(t, a, int64(len(evs)), 20*time.Second)
	waitDrained(t, a, 10*time.Second)
	a.stop(t)
	// As after a kill -9 before the auto-commit: the group knows nothing.
	ends := endOffsets(t, brokers, tp.Events)
	zero := map[int32]int64{}
	for p := range ends {
		zero[p] = 0
	}
	commitGroupOffsets(t, brokers, group, tp.Events, zero)

	b := startOn(t, brokers, dir, flows, tp, group)
	waitCaughtUp(t, b, 0, 20*time.Second)
	// Within an auto-commit interval (5s) and then some.
	deadline := time.Now().Add(8 * time.Second)
	for got := committedOffsets(t, brokers, group, tp.Events); !mapsEqual(got, ends); got = committedOffsets(t, brokers, group, tp.Events) {
		if time.Now().After(deadline) {
			t.Fatalf("group offsets 8s after a processor resumed at the end of every partition: %v, want %v", got, ends)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.stop(t)
	if got := committedOffsets(t, brokers, group, tp.Events); !mapsEqual(got, ends) {
		t.Errorf("group offsets after the processor stopped: %v, want %v", got, ends)
	}
}

// TestErasurePurgesPendingOutput pins the right to be forgotten on the
// output side: a decision for a customer that still waits in the outbox
// when the erasure is processed is never produced; one already produced
// before the erasure arrived cannot be recalled. Output for an erased
// customer therefore depends on timing, by design (the kill test leaves
// erasures out for that reason).
func TestErasurePurgesPendingOutput(t *testing.T) {
	brokers := newCluster(t)
	flows := mustFlows(t, testFlows)
	now := time.Now().UTC().Truncate(time.Second)
	const customer = "c-erase"
	other := keyIn("c-other", partitionOf(customer, testPartitions), testPartitions)
	email := "other@example.com"
	evs := []event{
		itemAdded(t, "e1", customer, "k-1", now.Add(-20*time.Minute), "A", 1, 1000),
		mkEvent(t, "e2", events.TypeCustomerUpdated, now.Add(-6*time.Minute),
			events.CustomerUpdated{CustomerID: other, Email: &email}),
		mkEvent(t, "e3", events.TypeCustomerErased, now.Add(-5*time.Minute), events.CustomerErased{CustomerID: customer}),
	}
	run := func(name string, split int) (decisions []record) {
		tp := testTopics(t, brokers)
		prod := newProducer(t, brokers)
		produceTo(t, prod, tp.Events, evs[:split]...)
		r := startOn(t, brokers, t.TempDir(), flows, tp, uniqueName(t, "g"))
		waitCaughtUp(t, r, int64(split), 20*time.Second)
		if split < len(evs) {
			waitDrained(t, r, 10*time.Second)
			produceTo(t, prod, tp.Events, evs[split:]...)
			waitCaughtUp(t, r, int64(len(evs)), 20*time.Second)
		}
		r.stop(t) // the relay drains the outbox before Run returns
		decisions = readTopic(t, brokers, tp.Decisions)
		t.Logf("%s: %d decisions", name, len(decisions))
		// Downstream hears of the erasure, whatever the timing: one erased
		// outcome for the customer, not purged with the rest.
		var erased int
		for _, o := range readTopic(t, brokers, tp.Outcomes) {
			if strings.Contains(string(o.Value), `"kind":"erased"`) {
				if o.Key != customer || !strings.Contains(string(o.Value), `"customer_key":"`+customer+`"`) {
					t.Fatalf("%s: erased outcome for the wrong customer: %s %s", name, o.Key, o.Value)
				}
				erased++
			}
		}
		if erased != 1 {
			t.Fatalf("%s: %d erased outcomes, want 1", name, erased)
		}
		return decisions
	}
	// In one batch: the reminders (due 19 and 15 minutes before the
	// erasure) are decided and then purged with the erasure, before the
	// relay sees them.
	if d := run("in one go", len(evs)); len(d) != 0 {
		t.Fatalf("a decision for an erased customer was produced from the outbox: %d", len(d))
	}
	// The reminders produced before the erasure arrived stay produced:
	// both steps came due (in event time, each at its own due time)
	// before the profile event that the first run stopped at.
	d := run("erasure after the relay caught up", 2)
	if len(d) != 2 {
		t.Fatalf("want the two reminders produced before the erasure, got %d", len(d))
	}
	for _, r := range d {
		if r.Key != customer {
			t.Fatalf("reminder for %q, want %q", r.Key, customer)
		}
	}
}
