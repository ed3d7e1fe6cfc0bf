package processor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// testPartitions is the partition count of every topic in these tests.
const testPartitions = 4

// newCluster starts an in-process Kafka-protocol broker on a random port,
// or returns KAFKA_BROKERS when set so the same tests run against real Kafka.
func newCluster(t testing.TB) []string {
	t.Helper()
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return []string{b}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0),
		kfake.SeedTopics(testPartitions, events.TopicEvents, events.TopicDecisions, events.TopicOutcomes, events.TopicDLQ))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func mustFlows(t testing.TB, yaml string) *projections.Config {
	t.Helper()
	flows, err := projections.ParseFlows("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return projections.NewConfig(flows)
}

// testFlows: a reminder after 1 minute and a second after 5 minutes of
// inactivity, expiring after 30 minutes.
const testFlows = `
# Test customers have no profile: consent is not what these tests are about.
guards:
  requires_consent: false
flows:
  - name: rem
    steps:
      - name: first
        after: 1m
        action: email
      - name: second
        after: 5m
        action: email
    expire_after: 30m
    attribution_window: 1h
`

type running struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
	// stopOnce stops the processor and closes it, once; the test's cleanup
	// calls it too.
	stopOnce func()
	// expectErr is an error Run is expected to end with (the test checks
	// it through Err).
	expectErr error
}

func startProcessor(t testing.TB, brokers []string, dir string, flows *projections.Config, mod ...func(*processor.Config)) *running {
	t.Helper()
	cfg := processor.Config{
		Brokers: brokers, DataDir: dir, Flows: flows, Partitions: testPartitions,
		TimerTick: 20 * time.Millisecond, LagPoll: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	p, err := processor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-r.done; err != nil && (r.expectErr == nil || !errors.Is(err, r.expectErr)) {
				t.Errorf("processor: %v", err)
			}
			p.Close()
		})
	}
	r.stopOnce = stop
	t.Cleanup(stop)
	return r
}

// stop stops the processor (its Run returns after committing its last
// batches) and closes it, so that its data dir can be opened again.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.stopOnce()
}

func newProducer(t testing.TB, brokers []string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(events.TopicEvents))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// event builds one encoded event.
type event struct {
	key   string
	value []byte
}

func mkEvent(t testing.TB, id, typ string, at time.Time, data any) event {
	t.Helper()
	v, err := events.Encode(id, "test", typ, at, "", data)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(v, time.Time{})
	if err != nil {
		t.Fatalf("test event %s invalid: %v", id, err)
	}
	return event{key: ev.Key(), value: v}
}

func produce(t testing.TB, cl *kgo.Client, evs ...event) {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, e := range evs {
		recs[i] = &kgo.Record{Key: []byte(e.key), Value: e.value}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func itemAdded(t testing.TB, id, customer, cart string, at time.Time, sku string, qty, price int64) event {
	return mkEvent(t, id, events.TypeItemAdded, at, events.ItemAdded{
		CartRef: events.CartRef{CustomerID: customer, CartID: cart, CartType: "shopping", Channel: "b2c", Currency: "EUR"},
		Item:    events.Item{SKU: sku, Quantity: qty, UnitPriceMinor: price},
	})
}

func checkout(t testing.TB, id, customer, cart string, at time.Time, total int64) event {
	return mkEvent(t, id, events.TypeCheckoutCompleted, at, events.CheckoutCompleted{
		CartRef: events.CartRef{CustomerID: customer, CartID: cart}, OrderID: "o-" + cart, TotalMinor: total,
	})
}

// record is one consumed output record.
type record struct {
	Key     string
	Value   []byte
	Headers map[string]string
	ID      string
}

// consumeAll reads a topic from the start until cond holds for what was
// read, or fails after the timeout.
func consumeUntil(t testing.TB, brokers []string, topic string, timeout time.Duration, cond func([]record) bool) []record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []record
	deadline := time.Now().Add(timeout)
	for !cond(out) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: condition not met after %s; got %d records", topic, timeout, len(out))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			rec := record{Key: string(r.Key), Value: r.Value, Headers: map[string]string{}}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = string(h.Value)
			}
			var env events.Envelope
			if json.Unmarshal(r.Value, &env) == nil {
				rec.ID = env.ID
			}
			out = append(out, rec)
		})
	}
	return out
}

func decisionsOf(t testing.TB, recs []record) []events.Decision {
	t.Helper()
	out := make([]events.Decision, 0, len(recs))
	for _, r := range recs {
		var env events.Envelope
		var d events.Decision
		if err := json.Unmarshal(r.Value, &env); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(env.Data, &d); err != nil {
			t.Fatal(err)
		}
		if env.Type != events.TypeDecision || env.ID != d.ID {
			t.Fatalf("decision envelope: type %q id %q, data id %q", env.Type, env.ID, d.ID)
		}
		out = append(out, d)
	}
	return out
}

func atLeast(n int) func([]record) bool { return func(r []record) bool { return len(r) >= n } }

var _ = fmt.Sprintf
