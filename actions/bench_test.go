package actions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkEmailsThroughActions measures emails per second through the
// actions role: b.N email decisions (with consent, distinct ids) on
// cart-decisions of an in-process broker, the Consumer (no rate limit)
// sending them to the Mailpit of TestMain, until b.N email.sent outcomes.
//
//	go test -run '^$' -bench EmailsThroughActions -benchtime 2000x ./actions/
func BenchmarkEmailsThroughActions(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0),
		kfake.SeedTopics(1, events.TopicDecisions, events.TopicOutcomes, actions.TopicActionsDLQ))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	cfg := testConfig(mailpit.smtpPort)
	sender, err := actions.NewSMTPSender(cfg)
	if err != nil {
		b.Fatal(err)
	}
	store, err := actions.OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	h, err := actions.NewHandler(cfg, sender, store, nil)
	if err != nil {
		b.Fatal(err)
	}

	// The decisions are on the topic before the clock starts.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(events.TopicDecisions),
		kgo.ConsumeTopics(events.TopicOutcomes), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	run := time.Now().UnixNano()
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, b.N)
	for i := range b.N {
		d := benchDecision(run, i, now)
		v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Key: []byte(d.Cart.CartID), Value: v})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	start := time.Now()
	cons, err := actions.NewConsumer(actions.ConsumerConfig{Brokers: brokers, EmailsPerSecond: 0,
		Logger: slog.New(slog.DiscardHandler)}, h)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := cons.Run(ctx); err != nil {
			b.Errorf("consumer: %v", err)
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	sent, other := 0, 0
	deadline := time.Now().Add(5*time.Minute + time.Duration(b.N)*10*time.Millisecond)
	for sent < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d emails sent (%d other outcomes) before the deadline", sent, b.N, other)
		}
		pctx, pcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) {
			var env events.Envelope
			var o events.Outcome
			if json.Unmarshal(r.Value, &env) == nil && json.Unmarshal(env.Data, &o) == nil && o.Kind == actions.KindEmailSent {
				sent++
			} else {
				other++
			}
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if other > 0 {
		b.Errorf("%d outcomes other than %s", other, actions.KindEmailSent)
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "emails/s")
}

// benchDecision is an email decision with consent and without a discount
// (one outcome each), for a distinct recipient.
func benchDecision(run int64, i int, now time.Time) events.Decision {
	return events.Decision{
		ID:     fmt.Sprintf("dec-bench-%d-%06d", run, i),
		Flow:   "default",
		Step:   "first",
		Action: "email",
		Cart: events.CartSnapshot{
			CartID:   fmt.Sprintf("cart-bench-%d", i),
			Currency: "EUR",
			Items: []events.Item{
				{SKU: "sku-1", Name: "Rain jacket", Quantity: 1, UnitPriceMinor: 5999},
				{SKU: "sku-2", Name: "Wool socks", Quantity: 2, UnitPriceMinor: 850},
			},
			TotalMinor: 7699,
			ItemCount:  3,
		},
		Customer: events.CustomerSnapshot{
			Key: fmt.Sprintf("cust-bench-%d", i), CustomerID: fmt.Sprintf("cust-bench-%d", i),
			Email: fmt.Sprintf("bench-%d-%d@example.com", run, i), Name: "Ada Lovelace",
			Locale: "en-GB", MarketingConsent: true,
		},
		DecidedAt:  now,
		ValidUntil: now.Add(time.Hour),
	}
}
