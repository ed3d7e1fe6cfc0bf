package processor

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/projections"
)

// BenchmarkRestore restores one partition of N customers (default 1M,
// CARTLIFT_RESTORE_CUSTOMERS) from a changelog on an in-process broker into
// an empty store, and reports customers/s. Its baseline, measured in the
// same run on the same records, is a bare consumer reading the partition
// (restore_vs_bare: how much the restore costs over reading alone).
func BenchmarkRestore(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CARTLIFT_RESTORE_CUSTOMERS")); err == nil && v > 0 {
		n = v
	}
	const topic = "state"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(1, topic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for i := range n {
		key := fmt.Sprintf("c-%07d", i)
		st := &projections.CustomerState{Key: key, Profile: projections.Profile{CustomerID: key, Email: key + "@example.com", MarketingConsent: true},
			Carts: []*projections.Cart{{ID: "k-1", Currency: "EUR", Status: projections.StatusOpen, Version: 2,
				Items:     []projections.LineItem{{SKU: "SKU-1", Quantity: 2, UnitPriceMinor: 1999, LineTotalMinor: 3998}},
				CreatedAt: t0, ModifiedAt: t0, LastActivity: t0, WakeAt: t0.Add(time.Hour)}}}
		prod.Produce(ctx, &kgo.Record{Key: []byte(key), Value: appendState(nil, st)}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	meta := changelogMeta{NextOffset: int64(n), Lineage: 7}
	if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(changelogMetaKey), Value: meta.appendTo(nil)}).FirstErr(); err != nil {
		b.Fatal(err)
	}
	prod.Close()

	bare := func() time.Duration {
		start := time.Now()
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
			kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		for read := 0; read <= n; {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(*kgo.Record) { read++ })
		}
		return time.Since(start)
	}
	var restoreTook, bareTook time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		p, err := New(Config{Brokers: brokers, DataDir: b.TempDir(), Flows: projections.NewConfig(nil), Topics: Topics{State: topic}})
		if err != nil {
			b.Fatal(err)
		}
		bareTook += bare()
		b.StartTimer()
		start := time.Now()
		m, ok, err := p.restore(ctx, 0, func(int64, int64) {})
		restoreTook += time.Since(start)
		b.StopTimer()
		if err != nil || !ok || m.OpenCarts != int64(n) || m.Timers != int64(n) || m.NextOffset != int64(n) {
			b.Fatalf("restore: %+v, %v, %v", m, ok, err)
		}
		p.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/restoreTook.Seconds(), "customers/s")
	b.ReportMetric(float64(n)*float64(b.N)/bareTook.Seconds(), "bare_records/s")
	b.ReportMetric(restoreTook.Seconds()/bareTook.Seconds(), "restore_vs_bare")
}
