package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// runBacktest is `cartlift backtest`: it runs the fold over a history of
// input events with a pure event-time clock (projections.Backtest) and
// reports, per flow and step, what the flows would have done. It reads
// only: nothing is produced on any topic.
func runBacktest(ctx context.Context, args []string, stdout io.Writer) error {
	return backtestCmd(ctx, args, stdout, os.Stderr)
}

// backtestRun is one flows file under test.
type backtestRun struct {
	file string
	cfg  *projections.Config
	bt   *projections.Backtest
}

// backtestOutput is the --format json document.
type backtestOutput struct {
	Input           string           `json:"input"`
	Events          int64            `json:"events"`
	Rejected        int64            `json:"rejected"`
	ElapsedSeconds  float64          `json:"elapsed_seconds"`
	EventsPerSecond float64          `json:"events_per_second"`
	Results         []backtestResult `json:"results"`
}

type backtestResult struct {
	Flows  string             `json:"flows"`
	Report projections.Report `json:"report"`
}

func backtestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flowsFile := fs.String("flows", "", "flows file to backtest (required)")
	compare := fs.String("compare", "", "a second flows file, run over the same input and shown side by side")
	eventsFile := fs.String("events", "", "JSON-lines file of CloudEvents (record key: the event's customer key)")
	brokers := fs.String("brokers", "", "read the history of --topic from these brokers (comma-separated), from the beginning to the end offsets at start")
	topic := fs.String("topic", "cart-events", "input topic, with --brokers")
	synthetic := fs.Int("synthetic", 0, "backtest N events of the shopper simulation instead")
	customers := fs.Int("customers", 100_000, "with --synthetic: distinct customers")
	seed := fs.Int64("seed", 42, "with --synthetic: the simulation's seed")
	span := fs.Duration("span", 14*24*time.Hour, "with --synthetic: event-time span of the history, ending now")
	format := fs.String("format", "table", "output format: table or json")
	explain := fs.String("explain", "", "instead of the report, print the explanation (JSON) of this customer key's carts, as GET /v1/customers/{id}/carts/{cartId}/explain gives it")
	explainCart := fs.String("cart", "", "with --explain: only this cart, the same JSON as the API without freshness")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("backtest: unexpected arguments %q", fs.Args())
	}
	if *flowsFile == "" {
		return errors.New("backtest: --flows is required")
	}
	if *explainCart != "" && *explain == "" {
		return errors.New("backtest: --cart needs --explain")
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("backtest: --format must be table or json, got %q", *format)
	}
	sources := 0
	for _, set := range []bool{*eventsFile != "", *brokers != "", *synthetic > 0} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return errors.New("backtest: give exactly one input: --events FILE, --brokers ADDR or --synthetic N")
	}
	var runs []backtestRun
	for _, f := range []string{*flowsFile, *compare} {
		if f == "" {
			continue
		}
		cfg, err := loadFlows(f)
		if err != nil {
			return err
		}
		runs = append(runs, backtestRun{file: f, cfg: cfg, bt: projections.NewBacktest(cfg)})
	}

	var (
		n, rejected int64
		last        time.Time
		lastN       int64
	)
	start := time.Now()
	last = start
	apply := func(key string, ev *events.Event) {
		for _, r := range runs {
			r.bt.Apply(key, ev)
		}
		n++
		if n&1023 == 0 {
			if now := time.Now(); now.Sub(last) >= time.Second {
				fmt.Fprintf(stderr, "backtest: %d events read, %.0f events/s\n", n, float64(n-lastN)/now.Sub(last).Seconds())
				last, lastN = now, n
			}
		}
	}
	reject := func() { rejected++ }

	var (
		input string
		err   error
	)
	switch {
	case *eventsFile != "":
		input = *eventsFile
		err = backtestFile(ctx, *eventsFile, apply, reject)
	case *synthetic > 0:
		input = fmt.Sprintf("synthetic: %d events, %d customers, seed %d, over %s", *synthetic, *customers, *seed, *span)
		err = backtestSynthetic(ctx, *synthetic, *customers, *seed, *span, apply, reject)
	default:
		input = *brokers + "/" + *topic
		err = backtestTopic(ctx, strings.Split(*brokers, ","), *topic, stderr, apply, reject)
	}
	if err != nil {
		return err
	}
	// The clock stops at the newest event: what was due by then fired.
	for _, r := range runs {
		r.bt.Finish(r.bt.Report().To)
	}
	if *explain != "" {
		topicName := ""
		if *brokers != "" {
			topicName = *topic
		}
		return printExplain(stdout, runs[0], *explain, *explainCart, topicName)
	}
	elapsed := time.Since(start)
	rate := float64(n) / max(elapsed.Seconds(), 1e-9)

	out := backtestOutput{Input: input, Events: n, Rejected: rejected, ElapsedSeconds: elapsed.Seconds(), EventsPerSecond: rate}
	for _, r := range runs {
		out.Results = append(out.Results, backtestResult{Flows: r.file, Report: r.bt.Report()})
	}
	summary := fmt.Sprintf("events %d, elapsed %s, %.0f events/s", n, elapsed.Round(time.Millisecond), rate)
	if *format == "json" {
		if err := jsonEncode(stdout, out); err != nil {
			return err
		}
		fmt.Fprintln(stderr, summary)
		return nil
	}
	fmt.Fprintf(stdout, "input: %s (%d events, %d rejected)\n", input, n, rejected)
	for _, res := range out.Results {
		fmt.Fprintln(stdout)
		printBacktest(stdout, res)
	}
	if len(out.Results) == 2 {
		fmt.Fprintln(stdout)
		printBacktestCompare(stdout, out.Results[0], out.Results[1])
	}
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, summary)
	return nil
}

// backtestFile reads a JSON-lines file of CloudEvents.
func backtestFile(ctx context.Context, path string, apply func(string, *events.Event), reject func()) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), events.MaxAssignedBytes+1024)
	now := time.Now()
	for line := 0; sc.Scan(); line++ {
		if line&4095 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		ev, err := events.Decode(b, now)
		if err != nil {
			reject()
			continue
		}
		// No partition in a file: -1, and the line number (from 1) as
		// the offset of the causes explanations name.
		ev.Pos = &events.Position{Partition: -1, Offset: int64(line + 1)}
		apply(ev.Key(), ev)
	}
	return sc.Err()
}

// backtestSynthetic feeds n events of the shopper simulation, their times
// spread evenly over span, ending now.
func backtestSynthetic(ctx context.Context, n, customers int, seed int64, span time.Duration, apply func(string, *events.Event), reject func()) error {
	sim := shopper.New(shopper.Options{Seed: seed, Customers: customers})
	now := time.Now()
	end := now.Add(-time.Minute).Truncate(time.Second)
	start := end.Add(-span)
	step := span / time.Duration(n)
	for i := range n {
		if i&4095 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		r := sim.Next(start.Add(time.Duration(i) * step))
		ev, err := events.Decode(r.Value, now)
		if err != nil {
			reject()
			continue
		}
		apply(r.Key, ev)
	}
	return nil
}

// backtestTopic reads a topic from the beginning up to the end offsets it
// has when the backtest starts, without a consumer group: it commits
// nothing and produces nothing.
func backtestTopic(ctx context.Context, brokers []string, topic string, stderr io.Writer, apply func(string, *events.Event), reject func()) error {
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer admin.Close()
	req := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, mt)
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		return err
	}
	var parts []int32
	for _, t := range resp.Topics {
		if t.Topic != nil && *t.Topic == topic {
			if t.ErrorCode != 0 {
				return fmt.Errorf("topic %s: metadata error code %d", topic, t.ErrorCode)
			}
			for _, p := range t.Partitions {
				parts = append(parts, p.Partition)
			}
		}
	}
	if len(parts) == 0 {
		return fmt.Errorf("topic %s not found", topic)
	}
	slices.Sort(parts)
	ends, err := processor.ListEndOffsets(ctx, admin, topic, parts)
	if err != nil {
		return err
	}
	offsets := map[int32]kgo.Offset{}
	for _, p := range parts {
		if ends[p] > 0 {
			offsets[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(offsets) == 0 {
		return nil // an empty topic
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	if err != nil {
		return err
	}
	defer cl.Close()
	now := time.Now()
	// The backtest has one clock in event time, the processor one per
	// partition: the partitions are merged in event time (each one's
	// records in their order), so that one partition's newer records do
	// not move the clock past another's older ones. A partition with
	// backtestQueue records waiting is paused until the others catch up.
	m := btMerge{queues: map[int32][]btQueued{}, open: map[int32]bool{}, apply: apply}
	for p := range offsets {
		m.open[p] = true
	}
	paused := map[int32]bool{}
	for len(offsets) > 0 {
		// A partition whose last records before its end offset are
		// transaction markers never shows them: when nothing comes for a
		// while, what is left is read.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fetches := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fetches.NumRecords() == 0 && pctx.Err() != nil {
			fmt.Fprintf(stderr, "backtest: no records for 5s; %d partition(s) end in transaction markers\n", len(offsets))
			break
		}
		for _, fe := range fetches.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				return fmt.Errorf("fetch %s/%d: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			end, ok := ends[fp.Partition]
			if _, open := offsets[fp.Partition]; !ok || !open {
				return
			}
			for _, rec := range fp.Records {
				if rec.Offset >= end {
					break
				}
				ev, err := events.Decode(rec.Value, now)
				key := string(rec.Key)
				if err != nil || !ev.AcceptsKey(key) {
					reject()
					continue
				}
				ev.Pos = &events.Position{Topic: topic, Partition: rec.Partition, Offset: rec.Offset}
				m.queues[fp.Partition] = append(m.queues[fp.Partition], btQueued{key: key, ev: ev})
			}
			if len(fp.Records) > 0 && fp.Records[len(fp.Records)-1].Offset+1 >= end {
				delete(offsets, fp.Partition)
				delete(m.open, fp.Partition)
				cl.PauseFetchPartitions(map[string][]int32{topic: {fp.Partition}})
			}
		})
		m.drain()
		for p := range offsets {
			switch full := len(m.queues[p]) >= backtestQueue; {
			case full && !paused[p]:
				cl.PauseFetchPartitions(map[string][]int32{topic: {p}})
				paused[p] = true
			case !full && paused[p]:
				cl.ResumeFetchPartitions(map[string][]int32{topic: {p}})
				delete(paused, p)
			}
		}
	}
	m.open = nil // what is left is all there is
	m.drain()
	return nil
}

// backtestQueue bounds the records waiting per partition in btMerge.
const backtestQueue = 50_000

type btQueued struct {
	key string
	ev  *events.Event
}

// btMerge applies the records of several partitions in event time: the
// oldest head first (ties: the lower partition), as long as every
// partition still being read has a record waiting.
type btMerge struct {
	queues map[int32][]btQueued
	open   map[int32]bool // partitions still being read
	apply  func(string, *events.Event)
}

func (m *btMerge) drain() {
	for {
		best := int32(-1)
		for p, q := range m.queues {
			if len(q) == 0 {
				if m.open[p] {
					return // its next record may be older than any waiting
				}
				continue
			}
			if best < 0 || q[0].ev.Time.Before(m.queues[best][0].ev.Time) ||
				(q[0].ev.Time.Equal(m.queues[best][0].ev.Time) && p < best) {
				best = p
			}
		}
		for p := range m.open {
			if len(m.queues[p]) == 0 {
				return
			}
		}
		if best < 0 {
			return
		}
		q := m.queues[best]
		m.apply(q[0].key, q[0].ev)
		q[0] = btQueued{}
		m.queues[best] = q[1:]
	}
}

// explainOutput is what --explain prints without --cart.
type explainOutput struct {
	CustomerKey string                     `json:"customer_key"`
	Carts       []*projections.Explanation `json:"carts"`
}

// printExplain prints the explanation of a customer's carts (or of one)
// from the final state of the backtest of the first flows file, with projections.Explain: the same
// function, and so the same JSON, as the API's.
func printExplain(w io.Writer, run backtestRun, key, cart, topic string) error {
	st, cfg := run.bt.State(key), run.cfg
	if st == nil || st.Erased() {
		return fmt.Errorf("backtest --explain: no customer %q in the history", key)
	}
	if cart != "" {
		x, ok := projections.Explain(st, cart, cfg, topic)
		if !ok {
			return fmt.Errorf("backtest --explain: customer %q has no cart %q", key, cart)
		}
		return jsonEncode(w, x)
	}
	out := explainOutput{CustomerKey: key, Carts: []*projections.Explanation{}}
	for _, c := range st.Carts {
		x, _ := projections.Explain(st, c.ID, cfg, topic)
		out.Carts = append(out.Carts, x)
	}
	return jsonEncode(w, out)
}

var backtestReasons = []string{projections.ReasonNoConsent, projections.ReasonFrequencyCap, projections.ReasonCartCap, projections.ReasonCombined}

func printBacktest(w io.Writer, res backtestResult) {
	r := &res.Report
	fmt.Fprintf(w, "flows: %s (events %s to %s)\n", res.Flows, fmtBTTime(r.From), fmtBTTime(r.To))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"FLOW", "STEP", "REACHED", "HOLDOUT"}
	for _, reason := range backtestReasons {
		head = append(head, "SUPPR:"+strings.ToUpper(reason))
	}
	head = append(head, "DEFERRED", "RECOVERED", "RATE", "RECOVERED VALUE", "CONV HOLDOUT", "HOLDOUT RATE", "")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, f := range r.Flows {
		for _, s := range f.Steps {
			row := []string{f.Name, s.Step, fmt.Sprint(s.Reached), fmt.Sprint(s.Holdout)}
			for _, reason := range backtestReasons {
				row = append(row, fmt.Sprint(s.Suppressed[reason]))
			}
			row = append(row, fmt.Sprint(s.Deferred), fmt.Sprint(s.Recovered), pct(s.Recovered, s.Reached),
				fmtMoney(s.RecoveredValue), fmt.Sprint(s.ConvertedHoldout), pct(s.ConvertedHoldout, s.Holdout), "")
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	tw.Flush()
	for _, f := range r.Flows {
		for _, s := range f.Steps {
			if len(s.Variants) == 0 {
				continue
			}
			var parts []string
			for _, name := range slices.Sorted(mapKeys(s.Variants)) {
				v := s.Variants[name]
				parts = append(parts, fmt.Sprintf("%s reached %d, recovered %d (%s), holdout %d, converted %d (%s)",
					name, v.Reached, v.Recovered, pct(v.Recovered, v.Reached), v.Holdout, v.ConvertedHoldout, pct(v.ConvertedHoldout, v.Holdout)))
			}
			fmt.Fprintf(w, "variants of %s/%s: %s\n", f.Name, s.Step, strings.Join(parts, "; "))
		}
	}
	for _, f := range r.Flows {
		if f.Schedule != "" {
			fmt.Fprintf(w, "scheduled flow %s (%s): %d runs\n", f.Name, f.Schedule, f.Runs)
		}
	}
	var kinds []string
	for _, k := range slices.Sorted(mapKeys(r.Outcomes)) {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, r.Outcomes[k]))
	}
	fmt.Fprintf(w, "outcomes: %s; open carts %d, pending timers %d, timers fired %d, events fed back %d\n",
		strings.Join(kinds, ", "), r.OpenCarts, r.PendingTimers, r.Fires, r.Fed)
}

// printBacktestCompare shows two reports side by side, per flow and step
// (the union of both files' flows and steps).
func printBacktestCompare(w io.Writer, a, b backtestResult) {
	fmt.Fprintf(w, "compare: A = %s, B = %s\n", a.Flows, b.Flows)
	type key struct{ flow, step string }
	var keys []key
	idx := func(r *projections.Report) map[key]projections.StepReport {
		m := map[key]projections.StepReport{}
		for _, f := range r.Flows {
			for _, s := range f.Steps {
				k := key{f.Name, s.Step}
				if _, seen := m[k]; !seen && !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
				m[k] = s
			}
		}
		return m
	}
	ma, mb := idx(&a.Report), idx(&b.Report)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "FLOW\tSTEP\tREACHED A\tREACHED B\tSUPPRESSED A\tSUPPRESSED B\tDEFERRED A\tDEFERRED B\tRECOVERED A\tRECOVERED B\tRATE A\tRATE B\tVALUE A\tVALUE B\t")
	cell := func(m map[key]projections.StepReport, k key, f func(projections.StepReport) string) string {
		s, ok := m[k]
		if !ok {
			return "-"
		}
		return f(s)
	}
	for _, k := range keys {
		row := []string{k.flow, k.step}
		for _, f := range []func(projections.StepReport) string{
			func(s projections.StepReport) string { return fmt.Sprint(s.Reached) },
			func(s projections.StepReport) string { return fmt.Sprint(s.SuppressedTotal()) },
			func(s projections.StepReport) string { return fmt.Sprint(s.Deferred) },
			func(s projections.StepReport) string { return fmt.Sprint(s.Recovered) },
			func(s projections.StepReport) string { return pct(s.Recovered, s.Reached) },
			func(s projections.StepReport) string { return fmtMoney(s.RecoveredValue) },
		} {
			row = append(row, cell(ma, k, f), cell(mb, k, f))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
}

func pct(a, b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
}

// fmtMoney lists amounts by currency in major units, e.g.
// "1,234.56 EUR · 99.00 USD" (the JSON output keeps minor units).
func fmtMoney(m map[string]int64) string {
	var parts []string
	for _, c := range slices.Sorted(mapKeys(m)) {
		if m[c] != 0 {
			parts = append(parts, money(m[c], c))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " · ")
}

func fmtBTTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
