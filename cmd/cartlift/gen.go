package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
)

const genUsage = `Usage: cartlift gen [flags]

Produces synthetic shopper traffic (cart, checkout and customer events of
contract v1) to the events topic, keyed by customer key and partitioned
with Kafka's default murmur2 partitioner, until interrupted or a limit is
reached. Same -seed, same traffic.

Flags:
`

// Producer settings of `cartlift gen`.
const (
	// genMaxBuffered bounds the records the client holds (about 0.5 KiB
	// each); Produce blocks when it is reached, which paces the generator
	// to what the brokers accept.
	genMaxBuffered = 50_000
	// genLinger lets records of one partition gather into a batch.
	genLinger = 5 * time.Millisecond
	// genTick is the pacing interval: every tick sends the events that the
	// rate allows since the last one, in one burst.
	genTick = 5 * time.Millisecond
	// genFlushTimeout bounds the wait for buffered records when stopping.
	genFlushTimeout = 30 * time.Second
	// genDrainQuiet: a drain (genOptions.Drain) ends once nothing is
	// pending and no decision came for this long.
	genDrainQuiet = 3 * time.Second
)

func runGen(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), genUsage)
		fs.PrintDefaults()
	}
	brokers := fs.String("brokers", defaultGenBrokers(), "comma-separated seed brokers (default from KAFKA_BROKERS, else CARTLIFT_BROKER_ADDR)")
	topic := fs.String("topic", events.TopicEvents, "topic to produce to")
	rate := fs.Float64("rate", 500, "events per second; 0 produces as fast as the brokers take them")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	count := fs.Int64("count", 0, "stop after this many events (0: no limit)")
	customers := fs.Int("customers", shopper.DefaultCustomers, "registered customers in the population")
	seed := fs.Int64("seed", 0, "random seed (default: from the clock, printed at start)")
	returnAfter := fs.Duration("return-after", shopper.DefaultReturnAfter, "longest time before an abandoned cart's shopper returns (use hours for realistic traffic)")
	quiet := fs.Bool("quiet", false, "print only the final summary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("gen: unexpected argument %q", fs.Arg(0))}
	}
	switch {
	case *rate < 0:
		return &exitError{2, fmt.Errorf("gen: -rate must be >= 0, got %v", *rate)}
	case *duration < 0:
		return &exitError{2, fmt.Errorf("gen: -duration must be >= 0, got %v", *duration)}
	case *count < 0:
		return &exitError{2, fmt.Errorf("gen: -count must be >= 0, got %d", *count)}
	case *customers <= 0:
		return &exitError{2, fmt.Errorf("gen: -customers must be > 0, got %d", *customers)}
	case *returnAfter <= 0:
		return &exitError{2, fmt.Errorf("gen: -return-after must be > 0, got %v", *returnAfter)}
	case strings.TrimSpace(*topic) == "":
		return &exitError{2, errors.New("gen: -topic must not be empty")}
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) { seedSet = seedSet || f.Name == "seed" })
	if !seedSet {
		*seed = time.Now().UnixNano()
	}
	seeds := splitBrokers(*brokers)
	if len(seeds) == 0 {
		return &exitError{2, errors.New("gen: -brokers is empty")}
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.DefaultProduceTopic(*topic),
		kgo.ProducerLinger(genLinger),
		kgo.MaxBufferedRecords(genMaxBuffered),
		kgo.ClientID("cartlift-gen"),
	)
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	defer cl.Close()
	pingCtx, cancelPing := context.WithTimeout(ctx, 10*time.Second)
	err = cl.Ping(pingCtx)
	cancelPing()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("gen: cannot reach brokers %s: %w", strings.Join(seeds, ","), err)
	}

	var progress io.Writer
	if !*quiet {
		progress = stdout
		pace := "as fast as possible"
		if *rate > 0 {
			pace = fmt.Sprintf("%g events/s", *rate)
		}
		fmt.Fprintf(stdout, "gen: producing to %s on %s, %s, %d customers, seed %d (repeat with -seed %d)\n",
			*topic, strings.Join(seeds, ","), pace, *customers, *seed, *seed)
	}
	stats, err := produceShopperTraffic(ctx, cl, genOptions{
		Rate:     *rate,
		Duration: *duration,
		Count:    *count,
		Sim:      shopper.Options{Seed: *seed, Customers: *customers, ReturnAfter: *returnAfter},
	}, progress)
	fmt.Fprintln(stdout, stats.String())
	if err != nil && errors.Is(err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("gen: topic %q does not exist on %s (create it first): %w", *topic, strings.Join(seeds, ","), err)
	}
	return err
}

// defaultGenBrokers is the -brokers default: $KAFKA_BROKERS, else
// $CARTLIFT_BROKER_ADDR (the embedded broker), else 127.0.0.1:9092.
func defaultGenBrokers() string {
	for _, env := range []string{"KAFKA_BROKERS", "CARTLIFT_BROKER_ADDR"} {
		if v := strings.TrimSpace(os.Getenv(env)); v != "" {
			return v
		}
	}
	return "127.0.0.1:9092"
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// genOptions configures produceShopperTraffic.
type genOptions struct {
	// Rate is the target in events per second; 0 produces as fast as the
	// client accepts records (Produce blocks while the client's buffer is
	// full, so the brokers set the pace).
	Rate float64
	// Duration stops producing after this long; 0 means no limit.
	Duration time.Duration
	// Count stops after this many events; 0 means no limit.
	Count int64
	// Sim configures the shopper simulation (seed, population, shares);
	// zero fields take the shopper package's defaults.
	Sim shopper.Options
	// OnProgress, when set, is called about once a second, from a
	// goroutine of its own, with the counts so far (ByType left nil). It
	// must not block for long.
	OnProgress func(genStats)
	// FlushTimeout bounds the wait for buffered records once producing
	// stops; records still undelivered then are failed and counted as
	// errors. Default 30s.
	FlushTimeout time.Duration
	// Reminders, when set, are cartlift's decisions as the shop hears of
	// them: each is handed to the simulation (shopper.Sim.Remind, which
	// needs Sim.Response.On) before the next burst, and its Answer to the
	// reminder's Answered, from the producing goroutine.
	Reminders <-chan genReminder
	// Drain, after the end set by Duration or Count, keeps producing for
	// at most this long what is still to come (shopper.Sim.Drain): the
	// sessions in flight, and the shoppers reminders bring back; it ends
	// earlier once nothing is pending and no reminder came for 3 s. 0:
	// none. Cancelling ctx ends it too.
	Drain time.Duration
}

// genReminder is a decision for the simulated shoppers (genOptions.Reminders).
type genReminder struct {
	shopper.Reminder
	// Answered, when set, receives what the shopper does that the caller
	// carries out (a click).
	Answered func(shopper.Answer)
}

// genStats counts what produceShopperTraffic did.
type genStats struct {
	Seed     int64            // the simulation's seed
	Produced int64            // records handed to the client
	Acked    int64            // records the brokers acknowledged
	Errors   int64            // records that failed
	ByType   map[string]int64 // produced records by event type
	Elapsed  time.Duration    // from the first record to the end of the final flush
	FirstErr error            // the first produce error, if any
}

// Rate is the average of acknowledged events per second.
func (s genStats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Acked) / s.Elapsed.Seconds()
}

// String is the one-line summary `cartlift gen` prints at the end: totals,
// average rate, errors, and the counts by type in contract order.
func (s genStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gen: done: %d events sent (%d acked) in %s, %.0f events/s average, %d errors, seed %d",
		s.Produced, s.Acked, s.Elapsed.Round(time.Millisecond), s.Rate(), s.Errors, s.Seed)
	if len(s.ByType) > 0 {
		b.WriteString(";")
		for _, t := range events.InputTypes {
			if n := s.ByType[t]; n > 0 {
				fmt.Fprintf(&b, " %s=%d", t, n)
			}
		}
	}
	return b.String()
}

// produceShopperTraffic produces synthetic shopper events (package
// shopper) with cl until ctx is done, o.Duration has passed or o.Count
// events were produced, then flushes and returns the counts.
//
// cl is the caller's client and stays open. Records carry only a key and
// a value: they go to cl's default produce topic (kgo.DefaultProduceTopic),
// partitioned by cl's partitioner, which for keyed records is Kafka's
// murmur2 unless the caller changed it. Produce is asynchronous; bound
// memory with kgo.MaxBufferedRecords on cl. Event times are the wall clock
// at each burst.
//
// progress, when not nil, receives a status line every second (rewritten
// in place with \r when it is a terminal). Stopping through ctx or
// o.Duration is a normal end: buffered records are still flushed, with
// a bound of o.FlushTimeout. The error is nil unless records failed, in
// which case it counts them and wraps the first failure.
//
// Concurrent calls may share one client; give them different seeds
// (o.Sim.Seed), or their event, cart and order ids collide.
func produceShopperTraffic(ctx context.Context, cl *kgo.Client, o genOptions, progress io.Writer) (genStats, error) {
	sim := shopper.New(o.Sim)
	stats := genStats{Seed: sim.Options().Seed, ByType: make(map[string]int64, len(events.InputTypes))}
	flushTimeout := o.FlushTimeout
	if flushTimeout <= 0 {
		flushTimeout = genFlushTimeout
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	if o.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, o.Duration)
		defer cancel()
	}
	// Records are produced with a context that outlives runCtx, so that
	// stopping does not abort records already buffered. It ends
	// o.Drain+flushTimeout after runCtx, which also frees a Produce blocked on a
	// full buffer when the brokers are unreachable.
	prodCtx, cancelProd := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProd()
	stopAfter := context.AfterFunc(runCtx, func() { time.AfterFunc(o.Drain+flushTimeout, cancelProd) })
	defer stopAfter()

	var produced, acked, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, &err)
			return
		}
		acked.Add(1)
	}

	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	tty := progress != nil && isTerminal(progress)
	var printed atomic.Bool
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		lastN, lastT := int64(0), start
		for {
			select {
			case <-stopProgress:
				return
			case now := <-t.C:
				n := produced.Load()
				cur := genStats{Seed: stats.Seed, Produced: n, Acked: acked.Load(), Errors: failed.Load(), Elapsed: now.Sub(start)}
				if progress != nil {
					rate := float64(n-lastN) / now.Sub(lastT).Seconds()
					line := fmt.Sprintf("gen: %d events, %.0f/s, %d acked, %d errors, %s elapsed",
						n, rate, cur.Acked, cur.Errors, cur.Elapsed.Round(time.Second))
					printed.Store(true)
					if tty {
						fmt.Fprintf(progress, "\r%s\x1b[K", line)
					} else {
						fmt.Fprintln(progress, line)
					}
				}
				lastN, lastT = n, now
				if o.OnProgress != nil {
					o.OnProgress(cur)
				}
			}
		}
	}()

	send := func(rec shopper.Record) {
		stats.ByType[rec.Type]++
		produced.Add(1)
		cl.Produce(prodCtx, &kgo.Record{Key: []byte(rec.Key), Value: rec.Value}, promise)
	}
	// emit produces one event; it reports false once o.Count is reached.
	emit := func(now time.Time) bool {
		if o.Count > 0 && produced.Load() >= o.Count {
			return false
		}
		send(sim.Next(now))
		return true
	}
	// remind hands the decisions that arrived to the simulation.
	var lastReminder time.Time
	remind := func(now time.Time) {
		for {
			select {
			case r := <-o.Reminders:
				lastReminder = now
				a := sim.Remind(r.Reminder, now)
				if r.Answered != nil {
					r.Answered(a)
				}
			default:
				return
			}
		}
	}
	if o.Rate <= 0 {
	fast:
		for runCtx.Err() == nil {
			now := time.Now()
			remind(now)
			for range 256 {
				if !emit(now) {
					break fast
				}
			}
		}
	} else {
		// A token bucket refilled every genTick: each tick sends what the
		// rate allows since the previous one, in one burst. The bucket
		// holds at most 50 ms of events (at least one), so a stall (a
		// full buffer, a slow scheduler) is caught up a little but never
		// turns into a flood.
		tick := time.NewTicker(genTick)
		defer tick.Stop()
		burstCap := max(1, o.Rate*0.05)
		tokens, last := 1.0, start
	paced:
		for {
			now := time.Now()
			remind(now)
			tokens = min(burstCap, tokens+o.Rate*now.Sub(last).Seconds())
			last = now
			for ; tokens >= 1; tokens-- {
				if runCtx.Err() != nil || !emit(now) {
					break paced
				}
			}
			select {
			case <-runCtx.Done():
				break paced
			case <-tick.C:
			}
		}
	}

	if o.Drain > 0 && ctx.Err() == nil {
		sim.Drain()
		tick := time.NewTicker(genTick)
		deadline := time.Now().Add(o.Drain)
		// Until nothing is pending and no decision came for a while (the
		// last sessions' carts are still to be decided), or the deadline.
		lastReminder = time.Now()
		for ctx.Err() == nil && time.Now().Before(deadline) && (sim.Pending() > 0 || time.Since(lastReminder) < genDrainQuiet) {
			now := time.Now()
			remind(now)
			for {
				rec, ok := sim.NextPending(now)
				if !ok {
					break
				}
				send(rec)
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
	}

	flushCtx, cancelFlush := context.WithTimeout(prodCtx, flushTimeout)
	if err := cl.Flush(flushCtx); err != nil {
		// The brokers did not take everything in time: fail what is left
		// so that the promises (and the counts) settle.
		cancelProd()
		settle, cancelSettle := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = cl.Flush(settle)
		cancelSettle()
	}
	cancelFlush()
	close(stopProgress)
	<-progressDone
	if tty && printed.Load() {
		fmt.Fprintln(progress) // end the line rewritten in place
	}

	stats.Produced = produced.Load()
	stats.Acked = acked.Load()
	stats.Errors = failed.Load()
	stats.Elapsed = time.Since(start)
	if unsettled := stats.Produced - stats.Acked - stats.Errors; unsettled > 0 {
		stats.Errors += unsettled // records the client never reported back on
	}
	if p := firstErr.Load(); p != nil {
		stats.FirstErr = *p
	}
	if stats.Errors > 0 {
		err := stats.FirstErr
		if err == nil {
			err = errors.New("records not acknowledged before the flush timeout")
		}
		return stats, fmt.Errorf("gen: %d of %d events failed: %w", stats.Errors, stats.Produced, err)
	}
	return stats, nil
}

// isTerminal reports whether w is a character device (a terminal), where
// a progress line can be rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
