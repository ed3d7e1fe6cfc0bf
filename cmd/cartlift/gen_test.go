package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
)

const genTestPartitions = 4

// genTestBroker starts an in-process Kafka-protocol broker on a random
// port with the events topic in genTestPartitions partitions.
func genTestBroker(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(genTestPartitions, events.TopicEvents), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// genConsumeAll reads the events topic from the start until want records
// arrived, then briefly checks that no more follow.
func genConsumeAll(t *testing.T, ctx context.Context, addrs []string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(events.TopicEvents),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(recs), want, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		recs = append(recs, fs.Records()...)
	}
	extraCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if extra := cl.PollFetches(extraCtx).Records(); len(extra) > 0 {
		t.Fatalf("%d records more than the %d produced", len(extra), want)
	}
	return recs
}

// TestProduceShopperTraffic produces 5000 events to a real in-process
// broker and reads them back: every record decodes, its key is the
// event's key, all records of a key are in one partition, and that
// partition is the one Kafka's murmur2 partitioner picks.
func TestProduceShopperTraffic(t *testing.T) {
	const n = 5000
	addrs := genTestBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(events.TopicEvents),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	stats, err := produceShopperTraffic(ctx, cl, genOptions{Count: n, Sim: shopper.Options{Seed: 99, Customers: 500}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var byType int64
	for _, c := range stats.ByType {
		byType += c
	}
	if stats.Produced != n || stats.Acked != n || stats.Errors != 0 || byType != n {
		t.Fatalf("stats %+v, by type sum %d; want %d produced and acked", stats, byType, n)
	}
	t.Log(stats)

	recs := genConsumeAll(t, ctx, addrs, n)
	if len(recs) != n {
		t.Fatalf("consumed %d records, want %d", len(recs), n)
	}
	murmur := kgo.StickyKeyPartitioner(nil).ForTopic(events.TopicEvents)
	partOf := map[string]int32{}
	ids := map[string]bool{}
	types := map[string]int64{}
	perPartition := make([]int, genTestPartitions)
	for _, r := range recs {
		ev, err := events.Decode(r.Value, time.Now())
		if err != nil {
			t.Fatalf("partition %d offset %d: %v\n%s", r.Partition, r.Offset, err, r.Value)
		}
		if string(r.Key) != ev.Key() {
			t.Fatalf("record key %q, event key %q", r.Key, ev.Key())
		}
		if p, seen := partOf[string(r.Key)]; seen && p != r.Partition {
			t.Fatalf("key %q in partitions %d and %d", r.Key, p, r.Partition)
		}
		partOf[string(r.Key)] = r.Partition
		if want := murmur.Partition(&kgo.Record{Key: r.Key}, genTestPartitions); int32(want) != r.Partition {
			t.Fatalf("key %q in partition %d, Kafka's murmur2 partitioner says %d", r.Key, r.Partition, want)
		}
		if ids[ev.ID] {
			t.Fatalf("event id %s twice", ev.ID)
		}
		ids[ev.ID] = true
		types[ev.Type]++
		perPartition[r.Partition]++
	}
	for typ, c := range stats.ByType {
		if types[typ] != c {
			t.Errorf("%s: produced %d, consumed %d", typ, c, types[typ])
		}
	}
	for p, c := range perPartition {
		if c == 0 {
			t.Errorf("partition %d got nothing: %v", p, perPartition)
		}
	}
	t.Logf("%d keys over partitions %v", len(partOf), perPartition)
}

// TestProduceShopperTrafficStopsOnCancel checks that cancelling the
// context is a normal end: nil error, and everything produced is flushed.
func TestProduceShopperTrafficStopsOnCancel(t *testing.T) {
	addrs := genTestBroker(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(events.TopicEvents))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	var progress bytes.Buffer
	stats, err := produceShopperTraffic(ctx, cl, genOptions{Rate: 2000, Sim: shopper.Options{Seed: 1}}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Produced == 0 || stats.Acked != stats.Produced {
		t.Fatalf("stats %+v: want everything produced acknowledged", stats)
	}
	// 2000/s for 0.4 s, with up to 50 ms of burst: about 800.
	if stats.Produced < 400 || stats.Produced > 1200 {
		t.Errorf("produced %d events in 0.4 s at 2000/s", stats.Produced)
	}
}

var genSummaryRE = regexp.MustCompile(`gen: done: (\d+) events sent \((\d+) acked\) in \S+, \d+ events/s average, (\d+) errors, seed (-?\d+)`)

func genRun(t *testing.T, args ...string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	err := runGen(ctx, args, &out)
	return out.String(), time.Since(start), err
}

func genSummary(t *testing.T, out string) (sent, acked, errs int64, seed int64) {
	t.Helper()
	m := genSummaryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in output:\n%s", out)
	}
	p := func(s string) int64 {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return p(m[1]), p(m[2]), p(m[3]), p(m[4])
}

func TestRunGen(t *testing.T) {
	addrs := genTestBroker(t)
	broker := strings.Join(addrs, ",")

	t.Run("count", func(t *testing.T) {
		out, _, err := genRun(t, "-brokers", broker, "-count", "300", "-rate", "0", "-seed", "5", "-quiet")
		if err != nil {
			t.Fatal(err)
		}
		sent, acked, errs, seed := genSummary(t, out)
		if sent != 300 || acked != 300 || errs != 0 || seed != 5 {
			t.Fatalf("summary %d/%d/%d seed %d:\n%s", sent, acked, errs, seed, out)
		}
		if strings.Count(out, "\n") != 1 || !strings.Contains(out, events.TypeItemAdded+"=") {
			t.Fatalf("-quiet should print only the summary, with counts by type:\n%s", out)
		}
	})
	t.Run("rate", func(t *testing.T) {
		out, took, err := genRun(t, "-brokers", broker, "-count", "250", "-rate", "500", "-seed", "6")
		if err != nil {
			t.Fatal(err)
		}
		if sent, _, _, _ := genSummary(t, out); sent != 250 {
			t.Fatalf("sent %d:\n%s", sent, out)
		}
		// 250 events at 500/s take about 0.5 s.
		if took < 400*time.Millisecond || took > 10*time.Second {
			t.Fatalf("250 events at 500/s took %v", took)
		}
		if !strings.Contains(out, "seed 6") {
			t.Fatalf("the start line should name the seed:\n%s", out)
		}
	})
	t.Run("duration and env brokers", func(t *testing.T) {
		t.Setenv("KAFKA_BROKERS", broker)
		out, took, err := genRun(t, "-duration", "1500ms", "-rate", "100")
		if err != nil {
			t.Fatal(err)
		}
		sent, acked, _, seed := genSummary(t, out)
		if sent < 100 || sent > 200 || acked != sent {
			t.Fatalf("sent %d, acked %d in 1.5 s at 100/s:\n%s", sent, acked, out)
		}
		if took > 10*time.Second {
			t.Fatalf("a 1.5 s run took %v", took)
		}
		if seed == 0 || !regexp.MustCompile(`(?m)^gen: \d+ events, \d+/s, \d+ acked, 0 errors, 1s elapsed$`).MatchString(out) {
			t.Fatalf("want a clock seed and a progress line every second:\n%s", out)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{{"-rate", "-1"}, {"-count", "-5"}, {"-customers", "0"}, {"extra"}, {"-brokers", " , "}} {
			_, _, err := genRun(t, args...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 {
				t.Errorf("%v: got %v, want a usage error", args, err)
			}
		}
	})
}

func TestDefaultGenBrokers(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("CARTLIFT_BROKER_ADDR", "")
	if got := defaultGenBrokers(); got != "127.0.0.1:9092" {
		t.Errorf("default %q", got)
	}
	t.Setenv("CARTLIFT_BROKER_ADDR", "127.0.0.1:19092")
	if got := defaultGenBrokers(); got != "127.0.0.1:19092" {
		t.Errorf("with CARTLIFT_BROKER_ADDR: %q", got)
	}
	t.Setenv("KAFKA_BROKERS", "k1:9092,k2:9092")
	if got := defaultGenBrokers(); got != "k1:9092,k2:9092" {
		t.Errorf("with KAFKA_BROKERS: %q", got)
	}
}
