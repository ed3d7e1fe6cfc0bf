package analytics_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
)

// BenchmarkSinkInsert measures the sink's ClickHouse path: decoding
// records and inserting them as one batch, for DESIGN.md's batch of
// 10,000 records and the sink's default of 50,000, in the mix of the
// traffic helper (a decision, an email.sent and a third of a recovered
// outcome per cart).
//
//	go test -run '^$' -bench SinkInsert -benchtime 10x ./analytics
func BenchmarkSinkInsert(b *testing.B) {
	conn, _ := migrated(b)
	for _, carts := range []int{4286, 21429} { // 10,001 and 50,001 records
		recs := traffic(b, 0, carts)
		values := make([][]byte, len(recs))
		for i, r := range recs {
			values[i] = r.Value
		}
		b.Run(fmt.Sprintf("records=%d", len(values)), func(b *testing.B) {
			ctx := context.Background()
			rows := 0
			for b.Loop() {
				n, err := analytics.InsertForTest(ctx, conn, values)
				if err != nil {
					b.Fatal(err)
				}
				rows += n
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkSinkThroughKafka measures the whole sink: b.N records already
// on the topics of an in-process broker, consumed by the sink, inserted
// and committed.
//
//	go test -run '^$' -bench SinkThroughKafka -benchtime 200000x ./analytics
func BenchmarkSinkThroughKafka(b *testing.B) {
	conn, _ := migrated(b)
	br := newBroker(b)
	recs := traffic(b, 0, b.N*3/7+1)[:b.N]
	for i := 0; i < len(recs); i += 5000 {
		br.produce(b, recs[i:min(i+5000, len(recs))]...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	s, done := startSink(b, ctx, analytics.SinkConfig{Brokers: br.addrs, ClientOpts: []kgo.Opt{kgo.FetchMaxPartitionBytes(8 << 20)}}, conn)
	waitFor(b, "every record stored", 10*time.Minute, func() bool {
		st := s.Stats()
		return st.Records == int64(len(recs)) && st.Pending == 0
	})
	b.StopTimer()
	b.ReportMetric(float64(len(recs))/b.Elapsed().Seconds(), "rows/s")
	cancel()
	<-done
}
