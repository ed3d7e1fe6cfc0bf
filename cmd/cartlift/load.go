package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	json "github.com/goccy/go-json"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
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
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the processor's run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file when the backlog is processed")
	stateCache := fs.Int64("state-cache-mib", 256, "CARTLIFT_STATE_CACHE_MIB of the processor")
	blockCache := fs.Int64("block-cache-mib", 256, "CARTLIFT_BLOCK_CACHE_MIB of the processor")
	memTable := fs.Int64("memtable-mib", 64, "CARTLIFT_MEMTABLE_MIB of the processor")
	fetchMax := fs.Int64("fetch-max-mib", 4, "CARTLIFT_FETCH_MAX_MIB of the processor")
	openCarts := fs.Bool("open-carts", false, "instead of simulated shoppers, each event is a different customer adding one item and leaving: -events open carts, to measure a large store")
	baseline := fs.Bool("baseline", true, "also time a bare group consumer that decodes only the envelope, over the same topic before and after the processor, and print the ratio")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for name, v := range map[string]int64{"-state-cache-mib": *stateCache, "-block-cache-mib": *blockCache, "-memtable-mib": *memTable} {
		if v < 1 || v > 1<<20 {
			return fmt.Errorf("%s must be between 1 and 1048576, got %d", name, v)
		}
	}
	if *fetchMax < 1 || *fetchMax > 1024 { // as CARTLIFT_FETCH_MAX_MIB
		return fmt.Errorf("-fetch-max-mib must be between 1 and 1024, got %d", *fetchMax)
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
	next := shopper.New(shopper.Options{Seed: 42, Customers: *customers}).Next
	if *openCarts {
		*customers = *n
		next = openCartEvents()
	}
	end := daytimeEnd(time.Now().Add(-time.Minute))
	start := end.Add(-*span)
	step := *span / time.Duration(*n)
	fmt.Fprintf(stdout, "producing a backlog of %d events (%d customers, %d partitions)…\n", *n, *customers, *partitions)
	var produceErrs atomic.Int64
	t0 := time.Now()
	for i := range *n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r := next(start.Add(time.Duration(i) * step))
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
	fmt.Fprintf(stdout, "backlog ready in %s (event times %s to %s)\n", time.Since(t0).Round(time.Millisecond),
		start.Format(time.RFC3339), end.Format(time.RFC3339))

	var bare, bareCPU []float64 // events/s, CPU µs per event
	runBare := func(round int) error {
		if !*baseline {
			return nil
		}
		c0 := cpuTime()
		rate, err := bareConsumer(ctx, addrs, topics.Events, fmt.Sprintf("cartlift-load-bare-%d%s", round, suffix), *n)
		if err != nil {
			return fmt.Errorf("bare consumer: %w", err)
		}
		cpu := perEvent(cpuTime()-c0, *n)
		fmt.Fprintf(stdout, "bare consumer (envelope only), round %d: %.0f events/s, %.1f µs of CPU per event\n", round, rate, cpu)
		bare, bareCPU = append(bare, rate), append(bareCPU, cpu)
		return nil
	}
	if err := runBare(1); err != nil {
		return err
	}

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
		StateCacheBytes: *stateCache << 20, BlockCacheBytes: *blockCache << 20, MemTableBytes: *memTable << 20,
		FetchMaxBytes: int32(*fetchMax << 20),
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	t1, c1 := time.Now(), cpuTime()
	go func() { done <- p.Run(pctx) }()
	first := false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	var maxLive uint64 // the largest live heap seen at a collection
	for {
		s := p.Stats()
		if !first && s.Partitions > 0 {
			// Timed from the assignment on, as the bare consumer is from
			// its first record: the group's join is not processing. (From
			// the first processed event on, a backlog that fits one batch
			// would take no time at all.)
			first, t1 = true, time.Now()
		}
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
			maxLive = max(maxLive, liveHeap())
			fmt.Fprintf(stdout, "  processed %d/%d (%d events/s), lag %d, decisions %d\n",
				s.EventsConsumed, *n, s.EventsConsumed-last, s.Lag, s.DecisionsMade)
			last = s.EventsConsumed
		case <-time.After(2 * time.Millisecond):
		}
	}
	took, cpu := time.Since(t1), perEvent(cpuTime()-c1, *n)
	maxLive = max(maxLive, liveHeap())
	pprof.StopCPUProfile()
	s := p.Stats()
	var heapErr error
	if *memProfile != "" {
		heapErr = writeHeapProfile(*memProfile)
	}
	disk, writes := p.DiskUsage(), p.StoreWrites()
	cancel()
	if err := <-done; err != nil {
		p.Close()
		return err
	}
	p.Close()
	if heapErr != nil {
		return heapErr
	}
	if err := runBare(2); err != nil {
		return err
	}
	rate := float64(*n) / took.Seconds()
	procs := runtime.GOMAXPROCS(0)
	fmt.Fprintf(stdout, "\nprocessed %d events in %s: %.0f events/s with GOMAXPROCS=%d (%.0f events/s per core, %.1f µs of wall time per event per core)\n",
		*n, took.Round(time.Millisecond), rate, procs, rate/float64(procs), 1e6*float64(procs)/rate)
	if len(bare) > 0 {
		mean := 0.0
		for _, b := range bare {
			mean += b / float64(len(bare))
		}
		fmt.Fprintf(stdout, "ratio to the bare consumer (mean of %d rounds, %.0f events/s): %.2f\n", len(bare), mean, rate/mean)
		meanCPU := 0.0
		for _, c := range bareCPU {
			meanCPU += c / float64(len(bareCPU))
		}
		// CPU time is what a busy machine does not distort: wall time
		// waits for other processes, CPU time does not.
		fmt.Fprintf(stdout, "CPU per event: %.1f µs, the bare consumer %.1f µs: ratio %.2f (this process only; an external broker is not counted)\n",
			cpu, meanCPU, meanCPU/cpu)
	} else {
		fmt.Fprintf(stdout, "CPU per event: %.1f µs (this process only; an external broker is not counted)\n", cpu)
	}
	fmt.Fprintf(stdout, "decisions %d (suppressed %d, deferred %d), outcomes %d, rejected %d, open carts %d, pending timers %d, sync writes %v\n",
		s.DecisionsMade, s.DecisionsSuppressed, s.DecisionsDeferred, s.OutcomesMade, s.EventsRejected, s.OpenCarts, s.PendingTimers, *sync)
	perCart := float64(disk) / float64(max(1, s.OpenCarts))
	allocated := allocatedBytes(filepath.Join(dataDir, "state"))
	fmt.Fprintf(stdout, "store on disk %.1f MiB (%.0f B per open cart, all customers' state, timers and outbox included), allocated after close (du) %.1f MiB (%.0f B per open cart)\n",
		float64(disk)/(1<<20), perCart, float64(allocated)/(1<<20), float64(allocated)/float64(max(1, s.OpenCarts)))
	// The live heap, not HeapAlloc: at a few hundred MB/s of allocation,
	// HeapAlloc counts as much garbage as live data a moment after any
	// collection.
	fmt.Fprintf(stdout, "memory: live Go heap at most %.0f MiB while processing (what a collection found live), peak RSS %.0f MiB (Pebble's block cache and memtables are outside the Go heap)\n",
		float64(maxLive)/(1<<20), float64(peakRSS())/(1<<20))
	fmt.Fprintf(stdout, "store writes: write-ahead log %.1f MiB (%.0f B per event), flushes %.1f MiB, compactions %.1f MiB\n",
		float64(writes.WAL)/(1<<20), float64(writes.WAL)/float64(*n), float64(writes.Flushed)/(1<<20), float64(writes.Compacted)/(1<<20))
	return nil
}

// openCartEvents returns the generator of the -open-carts backlog: its
// n-th call is customer c-<n> adding one item to a new cart, so n calls
// leave n open carts.
func openCartEvents() func(time.Time) shopper.Record {
	var n int
	return func(t time.Time) shopper.Record {
		n++
		customer := fmt.Sprintf("c-%08d", n)
		data := events.ItemAdded{
			CartRef: events.CartRef{CustomerID: customer, CartID: fmt.Sprintf("k-open-%d", n), CartType: "shopping", Channel: "b2c", Site: "shop-de", Currency: "EUR"},
			Item:    events.Item{SKU: fmt.Sprintf("sku-%04d", n%5000), Name: "Trail running shoe", Quantity: 1, UnitPriceMinor: 8999, Category: "shoes"},
		}
		v, err := events.Encode(fmt.Sprintf("e-open-%d", n), "https://shop.example/de", events.TypeItemAdded, t, customer, data)
		if err != nil {
			panic(err) // a fixed struct always encodes
		}
		return shopper.Record{Key: customer, Value: v}
	}
}

// liveHeap is the Go heap the last collection found live (runtime/metrics
// /gc/heap/live:bytes), 0 where the runtime does not report it.
func liveHeap() uint64 {
	sample := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(sample)
	if sample[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// allocatedBytes is what the files under dir occupy on disk, as du counts
// it (preallocated blocks included), 0 where the file system does not tell.
func allocatedBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}

// daytimeEnd is the latest 17:00 UTC not after t: a backlog that ends
// then spans the afternoon in Europe and the morning in America, so that
// its timers come due outside the flows' quiet hours and produce
// decisions, outbox entries and changelog records during the measurement.
func daytimeEnd(t time.Time) time.Time {
	t = t.UTC()
	end := time.Date(t.Year(), t.Month(), t.Day(), 17, 0, 0, 0, time.UTC)
	if end.After(t) {
		end = end.AddDate(0, 0, -1)
	}
	return end
}

// bareConsumer consumes n records of topic in a new group, decoding only
// each record's CloudEvents envelope, and returns the records per second
// from the first record on: the baseline of `cartlift load`.
func bareConsumer(ctx context.Context, brokers []string, topic, group string, n int) (float64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(32<<20), kgo.FetchMaxPartitionBytes(4<<20), kgo.DisableAutoCommit())
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var t0 time.Time
	seen := 0
	for seen < n {
		fs := cl.PollRecords(ctx, 20_000)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err := fs.Err0(); err != nil {
			return 0, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			if t0.IsZero() {
				t0 = time.Now()
			}
			var env events.Envelope
			_ = json.Unmarshal(r.Value, &env) // go-json, the fastest decoder the module has
			seen++
		})
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// The heap profile lags up to two collections behind the heap: two
	// collections make it show what is live now, not what was live
	// before the last batches.
	runtime.GC()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perEvent is d per event, in microseconds.
func perEvent(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(max(1, n))
}

// peakRSS is the process's peak resident set size (VmHWM), 0 where
// /proc does not tell.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
