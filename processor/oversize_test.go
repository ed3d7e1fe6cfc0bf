package processor_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// poison is an input record the brokers accept and the decoder rejects as
// too large: a valid envelope padded with a big attribute.
func poison(t testing.TB, customer string, size int) []byte {
	t.Helper()
	v := fmt.Appendf(nil, `{"specversion":"1.0","id":"poison-%d","source":"test","type":"cart.item_added","time":"2026-12-01T00:00:00Z","pad":"`, size)
	v = append(v, bytes.Repeat([]byte("x"), size-len(v)-2)...)
	return append(v, `"}`...)
}

// oversizeRun puts n valid neighbours and the given poison records (after
// every n/(len+1) neighbours) on partition 0, lets step 1 come due for every
// neighbour, and returns what the outputs hold once every neighbour has
// its decision.
func oversizeRun(t *testing.T, n int, poisonSizes []int, alter func(tp processor.Topics, adm *kadm.Client)) (tp processor.Topics, brokers []string, r *running) {
	brokers = newCluster(t)
	tp = testTopics(t, brokers)
	if alter != nil {
		alter(tp, kadm.NewClient(adminClient(t, brokers)))
	}
	big, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerBatchMaxBytes(8<<20),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	t0 := time.Now().UTC().Truncate(time.Second)
	clock := newFakeClock(t0)
	var recs []*kgo.Record
	every := n / (len(poisonSizes) + 1)
	for i := range n {
		if i > 0 && i%every == 0 && i/every <= len(poisonSizes) {
			size := poisonSizes[i/every-1]
			recs = append(recs, &kgo.Record{Topic: tp.Events, Partition: 0, Key: []byte("poison"), Value: poison(t, "poison", size)})
		}
		c := keyIn(fmt.Sprintf("c-n%04d", i), 0, testPartitions)
		ev := itemAdded(t, "add-"+c, c, "k-"+c, t0, "A", 1, 1000)
		recs = append(recs, &kgo.Record{Topic: tp.Events, Partition: 0, Key: []byte(ev.key), Value: ev.value})
	}
	if err := big.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("producing the input: %v", err)
	}
	r = startOn(t, brokers, t.TempDir(), mustFlows(t, testFlows), tp, uniqueName(t, "g"), clock.opt())
	waitCaughtUp(t, r, int64(len(recs)), 60*time.Second)
	clock.set(t0.Add(90 * time.Second))
	waitFor(t, 60*time.Second, "a decision for every neighbour", func() bool {
		return r.p.Stats().DecisionsEmitted >= int64(n)
	})
	waitDrained(t, r, 20*time.Second)
	return tp, brokers, r
}

// One oversized input record must not wedge its partition's outputs: a
// 1 MB and a 2 MB (zstd-compressed) record among 2,100 valid neighbours on
// one partition. Every neighbour's decision is produced exactly once, and
// each poison record is one capped dead letter (its first 64 KiB, with the
// original size and SHA-256) with its reason.
func TestOversizedRecordDoesNotWedgeTheOutputs(t *testing.T) {
	const n = 2100
	sizes := []int{1_010_258, 2_000_000}
	tp, brokers, r := oversizeRun(t, n, sizes, nil)

	decisions := readTopic(t, brokers, tp.Decisions)
	if len(decisions) != n {
		t.Errorf("%d decision records for %d neighbours", len(decisions), n)
	}
	if d := duplicateIDs(decisions); len(d) > 0 {
		t.Errorf("decisions produced more than once: %v", d[:min(len(d), 5)])
	}
	dlq := readTopic(t, brokers, tp.DLQ)
	if len(dlq) != len(sizes) {
		t.Fatalf("%d dead letters, want %d", len(dlq), len(sizes))
	}
	for i, rec := range dlq {
		full := poison(t, "poison", sizes[i])
		sum := sha256.Sum256(full)
		h := rec.Headers
		if h[events.HeaderErrorReason] != events.ReasonTooLarge || len(rec.Value) != 64<<10 ||
			!bytes.Equal(rec.Value, full[:64<<10]) || h["cartlift-original-size"] != strconv.Itoa(sizes[i]) ||
			h["cartlift-original-sha256"] != hex.EncodeToString(sum[:]) || h["cartlift-truncated"] != "value" {
			t.Errorf("dead letter %d: %d bytes, headers %v", i, len(rec.Value), h)
		}
	}
	if s := r.p.Stats(); s.OutputReduced != 0 || s.OutputDropped != 0 || s.DeadLettered != int64(len(sizes)) {
		t.Errorf("stats: %+v", s)
	}
}

// When the brokers refuse even the capped dead letter (here the DLQ topic
// takes at most 16 KiB), the relay replaces that one entry by a reduced
// dead letter and goes on: the neighbours' decisions are produced once,
// and the reduced entry says what happened.
func TestRefusedOutputIsReducedNotRetriedForever(t *testing.T) {
	const n = 2100
	tp, brokers, r := oversizeRun(t, n, []int{100_000}, func(tp processor.Topics, adm *kadm.Client) {
		v := "16384"
		rs, err := adm.AlterTopicConfigs(context.Background(),
			[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &v}}, tp.DLQ)
		if err == nil {
			err = rs[0].Err
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	if d := duplicateIDs(readTopic(t, brokers, tp.Decisions)); len(d) > 0 {
		t.Errorf("decisions produced more than once: %v", d[:min(len(d), 5)])
	}
	dlq := readTopic(t, brokers, tp.DLQ)
	if len(dlq) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dlq))
	}
	h := dlq[0].Headers
	if h[events.HeaderErrorReason] != events.ReasonTooLarge || h["cartlift-produce-error"] == "" ||
		h["cartlift-original-size"] != strconv.Itoa(64<<10) || len(dlq[0].Value) > 16384/4 {
		t.Errorf("reduced dead letter: %d bytes, headers %v", len(dlq[0].Value), h)
	}
	if s := r.p.Stats(); s.OutputReduced != 1 || s.OutputDropped != 0 || s.DecisionsEmitted != n {
		t.Errorf("stats: %+v", s)
	}
}
