package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/processor"
)

// runLoad is `cartlift load`: it measures end-to-end throughput through
// the Kafka protocol. It produces a backlog of synthetic shopper events
// (event times spread over the past hours, so timers fire by event time
// while the processor catches up), then starts a processor on an empty
// store and times how long it takes to process the whole backlog,
// exactly-once path included (Pebble batches, outbox, relay).
func runLoad(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	n := fs.Int("events", 1_000_000, "events in the backlog")
	customers := fs.Int("customers", 100_000, "distinct customers in the generated traffic")
	partitions := fs.Int("partitions", 8, "partitions of the input topic")
	brokers := fs.String("brokers", "", "external broker (e.g. one started with `cartlift broker`); empty starts one in-process")
	flowsFile := fs.String("flows", "deploy/flows/default.yaml", "flows file")
	span := fs.Duration("span", 6*time.Hour, "event-time span of the backlog")
	sync := fs.Bool("sync", false, "fsync every Pebble batch (CARTLIFT_SYNC_WRITES=true)")
	dir := fs.String("dir", "", "data directory for the processor (default: a temporary one, removed afterwards)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	flows, err := loadFlows(*flowsFile)
	if err != nil {
		return err
	}
	addrs := []string{*brokers}
	suffix := fmt.Sprintf("-load-%d", time.Now().UnixNano())
	if *brokers == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
		if err != nil {
			return err
		}
		defer c.Close()
		addrs = c.ListenAddrs()
	}
	topics := processor.Topics{Events: "cart-events" + suffix, Decisions: "cart-decisions" + suffix,
		Outcomes: "cart-outcomes" + suffix, DLQ: "cart-events.dlq" + suffix}

	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topics.Events),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		return err
	}
	defer prod.Close()
	if err := processor.EnsureTopics(ctx, prod, int32(*partitions), topics.Events, topics.Decisions, topics.Outcomes, topics.DLQ); err != nil {
		return err
	}

	// 1. The backlog.
	sim := shopper.New(shopper.Options{Seed: 42, Customers: *customers})
	end := time.Now().Add(-time.Minute)
	start := end.Add(-*span)
	step := *span / time.Duration(*n)
	fmt.Fprintf(stdout, "producing a backlog of %d events (%d customers, %d partitions)…\n", *n, *customers, *partitions)
	var produceErrs atomic.Int64
	t0 := time.Now()
	for i := range *n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r := sim.Next(start.Add(time.Duration(i) * step))
		prod.Produce(ctx, &kgo.Record{Key: []byte(r.Key), Value: r.Value}, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErrs.Add(1)
			}
		})
		if i%200_000 == 0 && i > 0 {
			fmt.Fprintf(stdout, "  produced %d\n", i)
		}
	}
	if err := prod.Flush(ctx); err != nil {
		return err
	}
	if e := produceErrs.Load(); e > 0 {
		return fmt.Errorf("%d records of the backlog failed to produce", e)
	}
	fmt.Fprintf(stdout, "backlog ready in %s\n", time.Since(t0).Round(time.Millisecond))

	// 2. The processor, from an empty store.
	dataDir := *dir
	if dataDir == "" {
		dataDir, err = os.MkdirTemp("", "cartlift-load-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dataDir)
	}
	p, err := processor.New(processor.Config{
		Brokers: addrs, Group: "cartlift-load" + suffix, Topics: topics, Partitions: int32(*partitions),
		DataDir: filepath.Join(dataDir, "state"), Flows: flows, SyncWrites: *sync,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	t1 := time.Now()
	go func() { done <- p.Run(pctx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	for {
		s := p.Stats()
		if s.EventsConsumed >= int64(*n) {
			break
		}
		select {
		case err := <-done:
			cancel()
			p.Close()
			if err == nil {
				err = errors.New("processor stopped early")
			}
			return err
		case <-ctx.Done():
			cancel()
			<-done
			p.Close()
			return ctx.Err()
		case <-tick.C:
			fmt.Fprintf(stdout, "  processed %d/%d (%d events/s), lag %d, decisions %d\n",
				s.EventsConsumed, *n, s.EventsConsumed-last, s.Lag, s.DecisionsMade)
			last = s.EventsConsumed
		case <-time.After(20 * time.Millisecond):
		}
	}
	took := time.Since(t1)
	s := p.Stats()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	disk := p.DiskUsage()
	cancel()
	if err := <-done; err != nil {
		p.Close()
		return err
	}
	p.Close()
	rate := float64(*n) / took.Seconds()
	procs := runtime.GOMAXPROCS(0)
	fmt.Fprintf(stdout, "\nprocessed %d events in %s: %.0f events/s with GOMAXPROCS=%d (%.0f events/s per core)\n",
		*n, took.Round(time.Millisecond), rate, procs, rate/float64(procs))
	fmt.Fprintf(stdout, "decisions %d, outcomes %d, rejected %d, open carts %d, pending timers %d, sync writes %v\n",
		s.DecisionsMade, s.OutcomesMade, s.EventsRejected, s.OpenCarts, s.PendingTimers, *sync)
	perCart := float64(disk) / float64(max(1, s.OpenCarts))
	fmt.Fprintf(stdout, "store on disk %.1f MiB (%.0f B per open cart, all customers' state, timers and outbox included); Go heap %.1f MiB\n",
		float64(disk)/(1<<20), perCart, float64(ms.HeapAlloc)/(1<<20))
	return nil
}
