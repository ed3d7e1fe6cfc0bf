package processor

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/projections"
)

// A worker's changelog records refer to the states its batch writes, and
// their values wait in the relay's memory. A crash loses that memory: the
// next worker on the same store must still put into the changelog, for
// every customer, the state its store holds, with the metadata record of
// the same point, and never a state newer than the metadata record that
// follows it in the changelog.
//
// Run twice: with every changelog record of the lost batches a reference,
// and with the relay's memory full after the first of them, so that the
// second batch's records are whole (the worker's fallback while the relay
// lags).
func TestCrashWithStateReferencesKeepsTheChangelogConsistent(t *testing.T) {
	t.Run("references", func(t *testing.T) { testCrashWithStateReferences(t, false) })
	t.Run("references then whole records", func(t *testing.T) { testCrashWithStateReferences(t, true) })
}

func testCrashWithStateReferences(t *testing.T, fill bool) {
	data, err := os.ReadFile("../deploy/flows/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flows, err := projections.ParseFlows("default.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	pr := newDirectProcessor(t, t.TempDir(), projections.NewConfig(flows), false)

	const batch = 1500
	sim := shopper.New(shopper.Options{Seed: 7, Customers: 300})
	start := time.Now().Add(-24 * time.Hour)
	recs := make([]*kgo.Record, 3*batch)
	for i := range recs {
		r := sim.Next(start.Add(time.Duration(i) * time.Second))
		recs[i] = &kgo.Record{Key: []byte(r.Key), Value: r.Value, Offset: int64(i), Topic: pr.cfg.Topics.Events}
	}
	w, err := newWorker(pr, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.b = pr.db.NewBatch()
	fold := func(w *worker, part []*kgo.Record) {
		t.Helper()
		if err := w.process(fetched{records: part, end: int64(len(recs))}); err != nil {
			t.Fatal(err)
		}
		if err := w.endBatch(); err != nil {
			t.Fatal(err)
		}
	}
	// The first batch reaches the changelog; the next two stay in the
	// outbox, as references, when the process dies.
	fold(w, recs[:batch])
	if n, err := w.relay.drainOnce(); err != nil || n == 0 {
		t.Fatalf("relaying the first batch: %d records, %v", n, err)
	}
	if fill {
		w.relay.maxHeld = 1 // full once it holds the next batch's values
	}
	fold(w, recs[batch:2*batch])
	fold(w, recs[2*batch:])
	refs, metas := outboxKinds(t, pr, w.relay.head.Load())
	changedTwice := 0
	for _, n := range refs {
		if n > 1 {
			changedTwice++
		}
	}
	switch {
	case metas != 2:
		t.Fatalf("want two unrelayed batches in the outbox, got %d metadata records", metas)
	case fill && (len(refs) == 0 || changedTwice > 0):
		t.Fatalf("want references in the first unrelayed batch only, got %d customers referred to, %d of them twice", len(refs), changedTwice)
	case !fill && (len(refs) == 0 || changedTwice == 0):
		t.Fatalf("want references in both unrelayed batches, some customers in both; got %d customers referred to, %d of them twice",
			len(refs), changedTwice)
	}
	w.b.Close()
	w.relay.cl.Close() // the crash: the relay's memory is gone

	// The same instance comes back: it resumes its store (the changelog
	// has its lineage) and resolves the references.
	w2, err := newWorker(pr, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.relay.cl.Close()
	if refs, metas := outboxKinds(t, pr, w2.relay.head.Load()); len(refs) != 0 || metas != 1 {
		t.Fatalf("after the takeover the outbox still refers to %d states and holds %d metadata records, want none and one", len(refs), metas)
	}
	for {
		n, err := w2.relay.drainOnce()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}

	// The changelog, read as a restore reads it, equals the store.
	logged := map[string][]byte{}
	var meta changelogMeta
	if err := pr.readChangelog(t.Context(), 0, 0, func(r *kgo.Record) error {
		if string(r.Key) == changelogMetaKey {
			m, err := decodeChangelogMeta(r.Value)
			meta = m
			return err
		}
		logged[string(r.Key)] = r.Value
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if meta.NextOffset != int64(len(recs)) {
		t.Errorf("the changelog's last metadata record is at offset %d, want %d", meta.NextOffset, len(recs))
	}
	lower, upper := partRange(0, kindState)
	it, err := pr.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for ok := it.First(); ok; ok = it.Next() {
		stored++
		key := string(it.Key()[5:])
		if v, ok := logged[key]; !ok || !bytes.Equal(v, it.Value()) {
			t.Errorf("customer %q: the changelog's state (%d bytes, logged %v) is not the store's (%d bytes)", key, len(v), ok, len(it.Value()))
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, v := range logged {
		if len(v) > 0 {
			live++
		}
	}
	if stored == 0 || live != stored {
		t.Errorf("the store holds %d customers, the changelog %d", stored, live)
	}
}

// outboxKinds returns, for the outbox from head on, how many references
// each customer has, and how many changelog metadata records it holds.
func outboxKinds(t *testing.T, pr *Processor, head uint64) (refs map[string]int, metas int) {
	t.Helper()
	refs = map[string]int{}
	_, upper := partRange(0, kindOutbox)
	it, err := pr.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(0, head), UpperBound: upper})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		e, err := decodeOutboxEntry(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Topic == stateRefTopic:
			refs[string(e.Key)]++
		case e.Topic == pr.cfg.Topics.State && string(e.Key) == changelogMetaKey:
			metas++
		}
	}
	return refs, metas
}
