package analytics_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
)

// broker is an in-process Kafka-protocol broker with the topics the sink
// reads, and a producer.
type broker struct {
	addrs []string
	cl    *kgo.Client
	adm   *kadm.Client
}

func newBroker(t testing.TB) *broker {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0),
		kfake.SeedTopics(4, events.TopicDecisions, events.TopicOutcomes, events.TopicSuppressions))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &broker{addrs: c.ListenAddrs(), cl: cl, adm: kadm.NewClient(cl)}
}

func (b *broker) produce(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	if err := b.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// committed is the group's committed offsets summed over the partitions.
func (b *broker) committed(t testing.TB, group string) int64 {
	t.Helper()
	offs, err := b.adm.FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

var base = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

// decisionRecord is decision i on cart-decisions: customer c<i>, cart k<i>.
func decisionRecord(t testing.TB, i int, holdout bool) *kgo.Record {
	t.Helper()
	d := events.Decision{
		ID: fmt.Sprintf("d-%06d", i), Flow: "reminder", Step: "first", Action: "email", Template: "reminder",
		Holdout: holdout,
		Cart: events.CartSnapshot{CartID: fmt.Sprintf("k%d", i), CartType: "standard", Channel: "web", Currency: "EUR",
			Items: []events.Item{{SKU: "sku-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1250}}, TotalMinor: 2500,
			ItemCount: 2, Version: 3, CreatedAt: base.Add(-time.Hour), ModifiedAt: base.Add(-30 * time.Minute)},
		Customer:  events.CustomerSnapshot{Key: fmt.Sprintf("c%d", i), Email: "x@example.com", MarketingConsent: true},
		DecidedAt: base.Add(time.Duration(i) * time.Second), ValidUntil: base.Add(48 * time.Hour),
	}
	v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: events.TopicDecisions, Key: []byte(d.Customer.Key), Value: v}
}

// outcomeRecord is an outcome (or action result) of kind for decision i.
func outcomeRecord(t testing.TB, i int, kind string, value int64) *kgo.Record {
	t.Helper()
	o := events.Outcome{ID: fmt.Sprintf("o-%06d-%s", i, kind), Kind: kind, CustomerKey: fmt.Sprintf("c%d", i),
		CartID: fmt.Sprintf("k%d", i), Currency: "EUR", ValueMinor: value, DecisionID: fmt.Sprintf("d-%06d", i),
		Flow: "reminder", Step: "first", At: base.Add(2 * time.Hour), SinceDecided: 7200}
	v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, o.CartID, o)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: events.TopicOutcomes, Key: []byte(o.CustomerKey), Value: v}
}

// traffic is n decisions, an email.sent for each and a recovered outcome
// for every third: n + n + n/3 records.
func traffic(t testing.TB, from, n int) []*kgo.Record {
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, decisionRecord(t, i, false), outcomeRecord(t, i, "email.sent", 0))
		if i%3 == 0 {
			recs = append(recs, outcomeRecord(t, i, events.OutcomeRecovered, 2500))
		}
	}
	return recs
}

type tableRows struct{ decisions, outcomes, actions uint64 }

// distinct counts distinct ids per table; raw counts every row.
func tableCounts(t testing.TB, conn driver.Conn, expr string) tableRows {
	t.Helper()
	var c tableRows
	for table, dst := range map[string]*uint64{"decisions": &c.decisions, "outcomes": &c.outcomes, "action_results": &c.actions} {
		if err := conn.QueryRow(context.Background(), "SELECT "+expr+" FROM "+table).Scan(dst); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func startSink(t testing.TB, ctx context.Context, cfg analytics.SinkConfig, conn driver.Conn) (*analytics.Sink, chan error) {
	t.Helper()
	s, err := analytics.NewSink(cfg, conn)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx); s.Close() }()
	return s, done
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSinkExactlyOnceInEffectAcrossAReplay(t *testing.T) {
	conn, _ := migrated(t)
	b := newBroker(t)
	const n = 300
	recs := traffic(t, 0, n)
	// A record that is not a decision or an outcome goes to the DLQ.
	recs = append(recs, &kgo.Record{Topic: events.TopicOutcomes, Key: []byte("x"), Value: []byte(`{"type":"cart.item_added","data":{}}`)},
		&kgo.Record{Topic: events.TopicDecisions, Key: []byte("y"), Value: []byte(`not json`)})
	b.produce(t, recs...)
	want := tableRows{decisions: n, outcomes: n / 3, actions: n}

	run := func(group string) analytics.SinkStats {
		ctx, cancel := context.WithCancel(context.Background())
		s, done := startSink(t, ctx, analytics.SinkConfig{Brokers: b.addrs, Group: group, BatchRows: 128,
			BatchInterval: 100 * time.Millisecond}, conn)
		waitFor(t, "every record read and stored", 30*time.Second, func() bool {
			st := s.Stats()
			return st.Records == int64(len(recs)) && st.Pending == 0
		})
		cancel()
		if err := <-done; err != context.Canceled {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
		return s.Stats()
	}
	first := run("analytics-a")
	if first.Decisions != n || first.Outcomes != n/3 || first.ActionResults != n || first.DeadLettered != 2 {
		t.Fatalf("first run stats %+v", first)
	}
	if first.Batches < 2 {
		t.Fatalf("%d records in batches of 128 took %d batches", len(recs), first.Batches)
	}
	if got := b.committed(t, "analytics-a"); got != int64(len(recs)) {
		t.Fatalf("group committed %d offsets, want %d", got, len(recs))
	}
	if got := tableCounts(t, conn, "uniqExact(id)"); got != want {
		t.Fatalf("distinct ids after one run %+v, want %+v", got, want)
	}

	// The same records again, from offset 0 (a new group): rows repeat,
	// ids do not, and queries that deduplicate count each once.
	run("analytics-replay")
	raw := tableCounts(t, conn, "count()")
	if raw.decisions < n {
		t.Fatalf("raw rows after the replay %+v", raw)
	}
	if got := tableCounts(t, conn, "uniqExact(id)"); got != want {
		t.Fatalf("distinct ids after the replay %+v, want %+v", got, want)
	}
	var recovered, revenue int64
	if err := conn.QueryRow(context.Background(), `SELECT toInt64(count()), toInt64(sum(v)) FROM (
		SELECT id, argMax(value_minor, inserted_at) AS v FROM outcomes WHERE kind = 'recovered' GROUP BY id)`).Scan(&recovered, &revenue); err != nil {
		t.Fatal(err)
	}
	if recovered != n/3 || revenue != n/3*2500 {
		t.Fatalf("deduplicated recovered %d revenue %d, want %d and %d", recovered, revenue, n/3, n/3*2500)
	}
	// Once merged, the table itself holds each id once.
	for _, table := range []string{"decisions", "outcomes", "action_results"} {
		if err := conn.Exec(context.Background(), "OPTIMIZE TABLE "+table+" FINAL"); err != nil {
			t.Fatal(err)
		}
	}
	if got := tableCounts(t, conn, "count()"); got != want {
		t.Fatalf("rows after OPTIMIZE FINAL %+v, want %+v", got, want)
	}

	// The dead letters carry the reason and the source.
	dl, err := kgo.NewClient(kgo.SeedBrokers(b.addrs...), kgo.ConsumeTopics(analytics.DefaultTopicDLQ),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	reasons := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(reasons) < 2 && ctx.Err() == nil {
		dl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			reasons[string(r.Key)] = h[events.HeaderErrorReason] + "@" + h[events.HeaderSourceTopic]
		})
	}
	if reasons["x"] != analytics.ReasonUnknownType+"@"+events.TopicOutcomes || reasons["y"] != analytics.ReasonUndecodable+"@"+events.TopicDecisions {
		t.Fatalf("dead letters %v", reasons)
	}
}

func TestSinkBatchesBySizeAndByTime(t *testing.T) {
	conn, _ := migrated(t)
	b := newBroker(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, done := startSink(t, ctx, analytics.SinkConfig{Brokers: b.addrs, BatchRows: 50, BatchInterval: 300 * time.Millisecond}, conn)

	// Three records: far below the size, so the interval inserts them.
	b.produce(t, decisionRecord(t, 1, false), decisionRecord(t, 2, true), outcomeRecord(t, 1, "email.sent", 0))
	waitFor(t, "a partial batch inserted by time", 10*time.Second, func() bool { return s.Stats().Batches == 1 })
	if got := tableCounts(t, conn, "count()"); got != (tableRows{decisions: 2, actions: 1}) {
		t.Fatalf("after the timed batch %+v", got)
	}
	// Then more records than fit a batch of 50.
	more := traffic(t, 10, 400)
	b.produce(t, more...)
	waitFor(t, "the rest stored", 30*time.Second, func() bool {
		return s.Stats().Records == int64(3+len(more)) && s.Stats().Pending == 0
	})
	st := s.Stats()
	if st.Batches < 1+int64(len(more)/50) {
		t.Fatalf("%d batches for %d records at most 50 per batch", st.Batches, len(more))
	}
	waitFor(t, "the group's lag to reach 0", 10*time.Second, func() bool { return s.Stats().Lag == 0 })
	cancel()
	<-done
}

// TestSinkHoldsWhileClickHouseIsDown stops the ClickHouse server in the
// middle of a stream: the sink holds its position (nothing committed past
// what ClickHouse has), reports the outage and the growing lag, and once
// the server is back every record is stored exactly once in effect.
func TestSinkHoldsWhileClickHouseIsDown(t *testing.T) {
	conn, ch := migratedStoppable(t)
	ctx := context.Background()
	b := newBroker(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, done := startSink(t, runCtx, analytics.SinkConfig{Brokers: b.addrs, BatchRows: 100, BatchInterval: 100 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond}, conn)

	first := traffic(t, 0, 200)
	b.produce(t, first...)
	waitFor(t, "the first half stored", 30*time.Second, func() bool { return s.Stats().Records == int64(len(first)) && s.Stats().Pending == 0 })
	committedBefore := b.committed(t, analytics.DefaultSinkGroup)
	if committedBefore != int64(len(first)) {
		t.Fatalf("committed %d before the outage, want %d", committedBefore, len(first))
	}

	if err := ch.Stop(); err != nil {
		t.Fatal(err)
	}
	second := traffic(t, 200, 300)
	b.produce(t, second...)
	waitFor(t, "the sink to notice the outage", 30*time.Second, func() bool {
		st := s.Stats()
		return !st.ClickHouseUp && st.InsertErrors >= 3
	})
	waitFor(t, "the lag to show the records held", 10*time.Second, func() bool { return s.Stats().Lag >= int64(len(second))-100 })
	// CARTLIFT_TEST_OUTAGE=10m keeps the server down that long (DESIGN.md's
	// target is a 10-minute outage that loses nothing); by default the test
	// resumes once the sink has noticed.
	if d, err := time.ParseDuration(os.Getenv("CARTLIFT_TEST_OUTAGE")); err == nil {
		t.Logf("ClickHouse stays down for %v", d)
		time.Sleep(d)
	}
	st := s.Stats()
	if st.Pending == 0 || st.Pending > 200 {
		t.Fatalf("pending %d during the outage, want at most two batches (1..200)", st.Pending)
	}
	if got := b.committed(t, analytics.DefaultSinkGroup); got != committedBefore {
		t.Fatalf("committed moved from %d to %d while ClickHouse was down", committedBefore, got)
	}

	if err := ch.Start(ctx); err != nil {
		t.Fatal(err)
	}
	total := int64(len(first) + len(second))
	waitFor(t, "everything stored after the restart", 60*time.Second, func() bool {
		st := s.Stats()
		return st.Records == total && st.Pending == 0 && st.ClickHouseUp
	})
	want := tableRows{decisions: 500, outcomes: 167, actions: 500}
	if got := tableCounts(t, conn, "uniqExact(id)"); got != want {
		t.Fatalf("distinct ids after the outage %+v, want %+v", got, want)
	}
	if got := b.committed(t, analytics.DefaultSinkGroup); got != total {
		t.Fatalf("committed %d after the outage, want %d", got, total)
	}
	waitFor(t, "the group's lag to reach 0 after catching up", 10*time.Second, func() bool { return s.Stats().Lag == 0 })
	cancel()
	<-done
}

// TestSinkShutdownDuringAnOutageLosesNothing stops the sink while
// ClickHouse is down: it gives up after its grace period without
// committing what it could not store, and the next run stores everything.
func TestSinkShutdownDuringAnOutageLosesNothing(t *testing.T) {
	conn, ch := migratedStoppable(t)
	ctx := context.Background()
	b := newBroker(t)
	scfg := analytics.SinkConfig{Brokers: b.addrs, BatchRows: 50, BatchInterval: 100 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 300 * time.Millisecond}
	first := traffic(t, 0, 30)
	b.produce(t, first...)
	runCtx, cancel := context.WithCancel(ctx)
	s, done := startSink(t, runCtx, scfg, conn)
	waitFor(t, "the first records stored", 30*time.Second, func() bool { return s.Stats().Records == int64(len(first)) && s.Stats().Pending == 0 })
	if err := ch.Stop(); err != nil {
		t.Fatal(err)
	}
	second := traffic(t, 30, 200) // more than two batches: one in flight, one in hand, more unread
	b.produce(t, second...)
	waitFor(t, "the sink to hold records it cannot store", 30*time.Second, func() bool {
		st := s.Stats()
		return !st.ClickHouseUp && st.InsertErrors >= 3 && st.Pending > 0 && st.Pending <= 100
	})
	t.Log("cancelling the sink during the outage")
	cancel()
	select {
	case <-done:
		t.Log("the sink returned")
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of its cancellation during an outage")
	}
	if got := b.committed(t, analytics.DefaultSinkGroup); got != int64(len(first)) {
		t.Fatalf("committed %d after a shutdown during the outage, want %d (only what ClickHouse stored)", got, len(first))
	}

	if err := ch.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("ClickHouse is back; a new sink starts")
	runCtx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	s2, done2 := startSink(t, runCtx2, scfg, conn)
	waitFor(t, "the rest stored by the next run", 60*time.Second, func() bool {
		return s2.Stats().Records == int64(len(second)) && s2.Stats().Pending == 0 && s2.Stats().ClickHouseUp
	})
	want := tableRows{decisions: 230, outcomes: 77, actions: 230}
	if got := tableCounts(t, conn, "uniqExact(id)"); got != want {
		t.Fatalf("distinct ids %+v, want %+v", got, want)
	}
	cancel2()
	<-done2
}

// TestSinkErasesCustomers: an erased outcome deletes what the customer did
// up to the erasure from every table, and only that: other customers, and
// the same customer's activity after the erasure (a customer may come
// back), stay. Records from before the erasure that arrive after it are
// dropped, also by a sink started afterwards (the erasures are kept in
// ClickHouse).
func TestSinkErasesCustomers(t *testing.T) {
	conn, _ := migrated(t)
	b := newBroker(t)
	cfg := analytics.SinkConfig{Brokers: b.addrs, BatchRows: 100, BatchInterval: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	s, done := startSink(t, ctx, cfg, conn)
	recs := traffic(t, 0, 6) // customers c0..c5, decided at base+i s; c0 and c3 recovered at base+2h
	b.produce(t, recs...)
	waitFor(t, "the traffic stored", 30*time.Second, func() bool { return s.Stats().Records == int64(len(recs)) && s.Stats().Pending == 0 })

	erasedAt := base.Add(3 * time.Hour)
	var erasures []*kgo.Record
	for _, key := range []string{"c1", "c3"} {
		o := events.Outcome{ID: "erased-" + key, Kind: events.OutcomeErased, CustomerKey: key, At: erasedAt}
		v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, "", o)
		if err != nil {
			t.Fatal(err)
		}
		erasures = append(erasures, &kgo.Record{Topic: events.TopicOutcomes, Key: []byte(key), Value: v})
	}
	b.produce(t, erasures...)
	waitFor(t, "two erasures applied", 30*time.Second, func() bool { return s.Stats().Erasures == 2 })
	// What is left, by customer: decisions and outcomes by customer key,
	// action results by their decision's customer (decision ids d-00000i).
	left := func(customers ...int) (tableRows, error) {
		var keys, ids []string
		for _, c := range customers {
			keys = append(keys, fmt.Sprintf("'c%d'", c))
			ids = append(ids, fmt.Sprintf("'d-%06d'", c))
		}
		var r tableRows
		for _, q := range []struct {
			dst *uint64
			sql string
		}{
			{&r.decisions, "SELECT uniqExact(id) FROM decisions WHERE customer_key IN (" + strings.Join(keys, ",") + ")"},
			{&r.outcomes, "SELECT uniqExact(id) FROM outcomes WHERE customer_key IN (" + strings.Join(keys, ",") + ")"},
			{&r.actions, "SELECT uniqExact(id) FROM action_results WHERE decision_id IN (" + strings.Join(ids, ",") + ")"},
		} {
			if err := conn.QueryRow(context.Background(), q.sql).Scan(q.dst); err != nil {
				return r, err
			}
		}
		return r, nil
	}
	waitFor(t, "the erased customers' rows gone (mutations run in the background)", 30*time.Second, func() bool {
		// ClickHouse 18.16 may refuse a read of a part while a mutation
		// rewrites it ("Could not find a column of minimum size"): ask
		// again.
		r, err := left(1, 3)
		if err != nil {
			t.Logf("while the mutations run: %v", err)
		}
		return err == nil && r == tableRows{}
	})
	got, err := left(0, 2, 4, 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := (tableRows{decisions: 4, outcomes: 1, actions: 4}); got != want {
		t.Fatalf("rows of the other customers %+v, want %+v", got, want)
	}

	// Late records from before the erasure (a decision and its email.sent
	// read after it) are dropped; c1's activity after the erasure stays.
	late := decisionRecord(t, 1, false) // decided at base+1s, before the erasure
	back := decisionRecord(t, 1, false)
	{
		d := events.Decision{ID: "d-back", Flow: "reminder", Step: "first", Action: "email",
			Cart:     events.CartSnapshot{CartID: "k-new", Currency: "EUR"},
			Customer: events.CustomerSnapshot{Key: "c1"}, DecidedAt: erasedAt.Add(time.Hour)}
		v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
		if err != nil {
			t.Fatal(err)
		}
		back.Value = v
	}
	b.produce(t, late, back)
	waitFor(t, "the late records read", 30*time.Second, func() bool {
		st := s.Stats()
		return st.Records == int64(len(recs)+len(erasures)+2) && st.Pending == 0
	})
	if st := s.Stats(); st.ErasedDropped != 1 || st.Decisions != 7 {
		t.Fatalf("after the late records: %+v, want 1 dropped and the returning customer's decision stored", st)
	}
	cancel()
	<-done

	// A sink started later knows the erasures: the same late record,
	// read again, is dropped.
	b.produce(t, decisionRecord(t, 3, false))
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	s2, done2 := startSink(t, ctx2, cfg, conn)
	waitFor(t, "the next sink to read it", 30*time.Second, func() bool { return s2.Stats().Records == 1 && s2.Stats().Pending == 0 })
	if st := s2.Stats(); st.ErasedDropped != 1 || st.Decisions != 0 {
		t.Fatalf("a restarted sink stored a record from before an erasure: %+v", st)
	}
	if got, err := left(3); err != nil || got != (tableRows{}) {
		t.Fatalf("rows of an erased customer came back: %+v (%v)", got, err)
	}
	var kept uint64
	if err := conn.QueryRow(context.Background(), "SELECT uniqExact(id) FROM decisions WHERE customer_key = 'c1'").Scan(&kept); err != nil || kept != 1 {
		t.Fatalf("the returning customer's decisions: %d (%v), want 1", kept, err)
	}
	cancel2()
	<-done2
}

// TestSinkIdleLetsARebalanceThrough: a second sink joins the group of an
// idle one and gets partitions; together they store everything once.
func TestSinkIdleLetsARebalanceThrough(t *testing.T) {
	conn, _ := migrated(t)
	b := newBroker(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := analytics.SinkConfig{Brokers: b.addrs, BatchRows: 100, BatchInterval: 100 * time.Millisecond}
	first := traffic(t, 0, 20)
	b.produce(t, first...)
	a, doneA := startSink(t, ctx, cfg, conn)
	waitFor(t, "the first records stored", 30*time.Second, func() bool { return a.Stats().Records == int64(len(first)) && a.Stats().Pending == 0 })
	time.Sleep(500 * time.Millisecond) // idle, with its last insert finished

	second, doneB := startSink(t, ctx, cfg, conn)
	waitFor(t, "both sinks to own partitions", 30*time.Second, func() bool {
		groups, err := b.adm.DescribeGroups(context.Background(), analytics.DefaultSinkGroup)
		if err != nil {
			return false
		}
		g := groups[analytics.DefaultSinkGroup]
		if g.State != "Stable" || len(g.Members) != 2 {
			return false
		}
		for _, m := range g.Members {
			if ca, ok := m.Assigned.AsConsumer(); !ok || len(ca.Topics) == 0 {
				return false
			}
		}
		return true
	})
	more := traffic(t, 20, 200)
	b.produce(t, more...)
	want := tableRows{decisions: 220, outcomes: 74, actions: 220}
	waitFor(t, "everything stored by the two sinks", 30*time.Second, func() bool {
		return tableCounts(t, conn, "uniqExact(id)") == want
	})
	if second.Stats().Records == 0 || a.Stats().Records == int64(len(first)) {
		t.Fatalf("the records were not shared: first sink %d, second %d", a.Stats().Records, second.Stats().Records)
	}
	cancel()
	<-doneA
	<-doneB
}
