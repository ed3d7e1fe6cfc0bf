package processor_test

// Helpers of the integration tests: unique topics and groups per test (so
// the same tests run against a shared, real Kafka when KAFKA_BROKERS is
// set), snapshot reads of whole topics, group offsets, and polling.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

var nonName = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// uniqueName returns a topic or group name unique to this test and run:
// prefix, the test's name and a random suffix.
func uniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.ToLower(nonName.ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	return prefix + "-" + name + "-" + hex.EncodeToString(b[:])
}

// testTopics returns unique topic names for one test and creates them with
// testPartitions partitions.
func testTopics(t testing.TB, brokers []string) processor.Topics {
	t.Helper()
	tp := processor.Topics{
		Events:    uniqueName(t, "events"),
		Decisions: uniqueName(t, "decisions"),
		Outcomes:  uniqueName(t, "outcomes"),
		DLQ:       uniqueName(t, "dlq"),
		State:     uniqueName(t, "state"),
		// Suppressions too: a test's records stay its own on real Kafka.
		Suppressions:    uniqueName(t, "suppressions"),
		ShadowDecisions: uniqueName(t, "shadow"),
	}
	createTopics(t, brokers, testPartitions, tp.Events, tp.Decisions, tp.Outcomes, tp.DLQ, tp.Suppressions, tp.ShadowDecisions)
	return tp
}

func createTopics(t testing.TB, brokers []string, partitions int32, topics ...string) {
	t.Helper()
	cl := adminClient(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := processor.EnsureTopics(ctx, cl, partitions, topics...); err != nil {
		t.Fatal(err)
	}
	// Wait until every partition has a leader, so that producing and
	// listing offsets work at once.
	for _, topic := range topics {
		waitFor(t, 20*time.Second, "topic "+topic+" to have all its partitions", func() bool {
			return len(partitionsOf(t, cl, topic)) == int(partitions)
		})
	}
}

// adminClient is a client for raw requests. Its versions are capped so that
// group offset requests still name topics (not topic ids).
func adminClient(t testing.TB, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.MaxVersions(kversion.V3_6_0()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// partitionsOf returns the partitions of a topic that have a leader.
func partitionsOf(t testing.TB, cl *kgo.Client, topic string) []int32 {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil
	}
	var parts []int32
	for _, rt := range resp.Topics {
		if rt.ErrorCode != 0 {
			return nil
		}
		for _, p := range rt.Partitions {
			if p.ErrorCode == 0 && p.Leader >= 0 {
				parts = append(parts, p.Partition)
			}
		}
	}
	slices.Sort(parts)
	return parts
}

// endOffsets returns the end offset of every partition of topic.
func endOffsets(t testing.TB, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	cl := adminClient(t, brokers)
	parts := partitionsOf(t, cl, topic)
	if len(parts) == 0 {
		t.Fatalf("topic %s: no partitions", topic)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := processor.ListEndOffsets(ctx, cl, topic, parts)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	return ends
}

func sumOffsets(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// committedOffsets returns the group's committed offsets of topic's
// partitions (-1 for none).
func committedOffsets(t testing.TB, brokers []string, group, topic string) map[int32]int64 {
	t.Helper()
	cl := adminClient(t, brokers)
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = topic
	rt.Partitions = partitionsOf(t, cl, topic)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("offset fetch %s: %v", group, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		t.Fatalf("offset fetch %s: %v", group, err)
	}
	out := map[int32]int64{}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("offset fetch %s %s/%d: %v", group, topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out
}

// commitGroupOffsets overwrites the committed offsets of an empty group
// (a "simple" commit: no generation, no member).
func commitGroupOffsets(t testing.TB, brokers []string, group, topic string, offsets map[int32]int64) {
	t.Helper()
	cl := adminClient(t, brokers)
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group = group
	req.Generation = -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	for _, p := range slices.Sorted(maps.Keys(offsets)) {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition = p
		rp.Offset = offsets[p]
		rp.LeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("offset commit %s: %v", group, err)
	}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("offset commit %s %s/%d: %v", group, topic, p.Partition, err)
			}
		}
	}
}

// readTopic reads every record of topic up to the end offsets it has when
// readTopic is called: a consistent snapshot, with no waiting for records
// that may or may not come.
func readTopic(t testing.TB, brokers []string, topic string) []record {
	t.Helper()
	ends := endOffsets(t, brokers, topic)
	offsets := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, end := range ends {
		if end > 0 {
			offsets[p] = kgo.NewOffset().AtStart()
			left[p] = end
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []record
	deadline := time.Now().Add(60 * time.Second)
	for len(left) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: reading up to %v timed out, partitions left: %v", topic, ends, left)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(_ string, p int32, err error) {
			if ctx.Err() == nil {
				t.Logf("%s/%d: fetch error: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Attrs.IsControl() {
				if r.Offset+1 >= end {
					delete(left, r.Partition)
				}
				return
			}
			rec := record{Key: string(r.Key), Value: r.Value, Headers: map[string]string{}}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = string(h.Value)
			}
			rec.ID = envelopeID(r.Value)
			out = append(out, rec)
			if r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return out
}

// envelopeID returns the CloudEvents id of a record value, "" when it has
// none.
func envelopeID(v []byte) string {
	var env struct {
		ID string `json:"id"`
	}
	if gojson.Unmarshal(v, &env) != nil {
		return ""
	}
	return env.ID
}

// waitFor polls cond every 20ms until it holds, or fails the test.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitCaughtUp waits until the processor owns all testPartitions
// partitions, has caught up with all of them, has no lag, and has
// processed consumed input records; it returns the stats then.
func waitCaughtUp(t testing.TB, r *running, consumed int64, timeout time.Duration) processor.Stats {
	t.Helper()
	var s processor.Stats
	waitFor(t, timeout, fmt.Sprintf("the processor to catch up with %d records", consumed), func() bool {
		s = r.p.Stats()
		return s.Partitions == testPartitions && s.CaughtUp == s.Partitions && s.Lag == 0 && s.EventsConsumed >= consumed
	})
	if s.EventsConsumed != consumed {
		t.Fatalf("processor consumed %d records, want %d (stats %+v)", s.EventsConsumed, consumed, s)
	}
	return s
}

// waitDrained waits until the relay has produced everything the
// processor put in its outbox.
func waitDrained(t testing.TB, r *running, timeout time.Duration) processor.Stats {
	t.Helper()
	var s processor.Stats
	waitFor(t, timeout, "the outbox to drain", func() bool {
		s = r.p.Stats()
		return s.DecisionsEmitted == s.DecisionsMade && s.OutcomesEmitted == s.OutcomesMade &&
			s.DeadLettered == s.EventsRejected
	})
	return s
}

// startOn starts a processor reading and writing the given topics in the
// given group.
func startOn(t testing.TB, brokers []string, dir string, flows *projections.Config, tp processor.Topics, group string, mod ...func(*processor.Config)) *running {
	t.Helper()
	return startProcessor(t, brokers, dir, flows, append([]func(*processor.Config){func(c *processor.Config) {
		c.Topics = tp
		c.Group = group
	}}, mod...)...)
}

// produceTo produces the events to topic, in order, and returns the
// produced records with their partitions and offsets.
func produceTo(t testing.TB, cl *kgo.Client, topic string, evs ...event) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, e := range evs {
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(e.key), Value: e.value}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return recs
}

var keyPartitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

// partitionOf is the partition Kafka's default (murmur2) partitioner
// picks for key among n partitions.
func partitionOf(key string, n int) int32 {
	return int32(keyPartitioner.Partition(&kgo.Record{Key: []byte(key)}, n))
}

// keyIn returns the first key prefix-0, prefix-1, ... in partition p.
func keyIn(prefix string, p int32, n int) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if partitionOf(k, n) == p {
			return k
		}
	}
}

// outcomesOf decodes outcome records.
func outcomesOf(t testing.TB, recs []record) []events.Outcome {
	t.Helper()
	out := make([]events.Outcome, 0, len(recs))
	for _, r := range recs {
		var env events.Envelope
		var o events.Outcome
		if err := json.Unmarshal(r.Value, &env); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(env.Data, &o); err != nil {
			t.Fatal(err)
		}
		if env.Type != events.TypeOutcome || env.ID != o.ID {
			t.Fatalf("outcome envelope: type %q id %q, data id %q", env.Type, env.ID, o.ID)
		}
		out = append(out, o)
	}
	return out
}

// duplicateIDs returns the ids that occur more than once.
func duplicateIDs(recs []record) []string {
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.ID]++
	}
	var dups []string
	for id, n := range seen {
		if n > 1 {
			dups = append(dups, id)
		}
	}
	slices.Sort(dups)
	return dups
}
