package processor

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/projections"
)

// BenchmarkFoldPebble measures the processor's in-process path per event:
// decode, fold, timers, outbox and one Pebble batch per fetched batch of
// 1000 records, committed as a backlog commits them (maxRecordsPerBatch
// per Pebble batch: state, timers, outbox and offset), without producing.
func BenchmarkFoldPebble(b *testing.B) {
	for _, sync := range []bool{false, true} {
		name := "nosync"
		if sync {
			name = "sync"
		}
		b.Run(name, func(b *testing.B) { benchFoldPebble(b, sync) })
	}
}

func benchFoldPebble(b *testing.B, sync bool) {
	data, err := os.ReadFile("../deploy/flows/default.yaml")
	if err != nil {
		b.Fatal(err)
	}
	flows, err := projections.ParseFlows("default.yaml", data)
	if err != nil {
		b.Fatal(err)
	}
	cfg := projections.NewConfig(flows)
	pr := newDirectProcessor(b, b.TempDir(), cfg, sync)

	// Pre-generate the input: 100k customers, event times 10ms apart.
	const batch = 1000
	sim := shopper.New(shopper.Options{Seed: 1, Customers: 100_000})
	start := time.Now().Add(-24 * time.Hour)
	recs := make([]*kgo.Record, max(b.N, batch))
	for i := range recs {
		r := sim.Next(start.Add(time.Duration(i) * 10 * time.Millisecond))
		recs[i] = &kgo.Record{Key: []byte(r.Key), Value: r.Value, Offset: int64(i), Topic: pr.cfg.Topics.Events}
	}
	w, err := newWorker(pr, 0)
	if err != nil {
		b.Fatal(err)
	}
	w.b = pr.db.NewBatch()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		if err := w.process(fetched{records: recs[i:min(i+batch, b.N)], end: int64(len(recs))}); err != nil {
			b.Fatal(err)
		}
		// A backlog: queued fetches join the batch up to its bound.
		if w.batchRecords >= maxRecordsPerBatch || i+batch >= b.N {
			if err := w.endBatch(); err != nil {
				b.Fatal(err)
			}
			// As if relayed (the relay does not run): an erasure's
			// purge reads the outbox from the relay's head.
			w.relay.head.Store(w.meta.OutboxSeq)
			w.relay.dropRefs(w.meta.OutboxSeq)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	w.b.Close()
	w.relay.cl.Close()
}

// newDirectProcessor opens a processor on an in-process broker (kfake)
// without joining its group: the caller drives one worker directly,
// whose takeover reads the changelog and fences the partition's producer
// as in production. Its relay does not run unless the caller drives it.
func newDirectProcessor(b testing.TB, dir string, flows *projections.Config, sync bool) *Processor {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	cfg := Config{Brokers: c.ListenAddrs(), DataDir: dir, Flows: flows, SyncWrites: sync,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	pr, err := open(cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pr.admin.Close(); pr.db.Close() })
	// A client that never joins: the benchmark marks offsets on it.
	pr.consumer, err = kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pr.consumer.Close)
	pr.runCtx = b.Context()
	pr.messageLimit = defaultMessageLimit
	if err := EnsureTopicsWith(b.Context(), pr.admin, 1, changelogTopicConfig, pr.cfg.Topics.State); err != nil {
		b.Fatal(err)
	}
	tp := pr.cfg.Topics
	if err := EnsureTopics(b.Context(), pr.admin, 1, tp.Events, tp.Decisions, tp.Outcomes, tp.DLQ, tp.Suppressions, tp.ShadowDecisions); err != nil {
		b.Fatal(err)
	}
	return pr
}
