package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// variantFlowsFile is the flow of TestVariantsThroughThePipeline: one
// webhook step with three variants (a template each, a discount on b, a
// later after on c) and a holdout group.
const variantFlowsFile = `flows:
  - name: ab
    steps:
      - name: nudge
        after: 1s
        action: webhook
        template: t-a
        variants:
          - {name: a, weight: 50}
          - {name: b, weight: 30, template: t-b, discount: {percent: 5}}
          - {name: c, weight: 20, template: t-c, after: 2s}
    expire_after: 1h
    attribution_window: 1h
    holdout_percent: 20
`

// TestVariantsThroughThePipeline runs A/B variants through the real
// pipeline: events on the broker, the processor, cart-decisions, the
// analytics sink, ClickHouse and the report. Carts of 150 customers are
// abandoned and decided, a third of them bought back; the processor
// stops and starts again on its data (a restart); each customer abandons
// a second cart; then a replay (a new group) decides everything again.
// Every decision names the variant the flow file assigns the customer,
// with that variant's template, discount and delay, the same before and
// after the restart; every copy of a decision id on the topic (the
// replay's included) is the same decision; and the report's per-variant
// counts equal the counts from the raw decisions and outcomes topics.
func TestVariantsThroughThePipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pipeline three times for about 20 s")
	}
	chdirRoot(t)
	ctx := context.Background()
	chAddr := testClickHouse(t)
	database := testDatabase(t, chAddr, "variants_test")
	dir := t.TempDir()
	// The broker on its own, so that the processor can stop and start
	// again against it.
	broker, err := startBroker(brokerConfig{Addr: "127.0.0.1:0", DataDir: filepath.Join(dir, "kafka"), Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	brokers := broker.ListenAddrs()
	flowsPath := filepath.Join(dir, "flows.yaml")
	if err := os.WriteFile(flowsPath, []byte(variantFlowsFile), 0o644); err != nil {
		t.Fatal(err)
	}
	parsed, err := projections.ParseFlows(flowsPath, []byte(variantFlowsFile))
	if err != nil {
		t.Fatal(err)
	}
	flow := &parsed[0]
	env := map[string]string{
		"KAFKA_BROKERS": brokers[0], "CARTLIFT_DATA_DIR": filepath.Join(dir, "node"), "CARTLIFT_HTTP_ADDR": "off",
		"CARTLIFT_PARTITIONS": "4", "CARTLIFT_FLOWS": flowsPath,
		"CLICKHOUSE_ADDR": chAddr, "CLICKHOUSE_DATABASE": database, "CARTLIFT_ANALYTICS_BATCH_INTERVAL": "200ms",
	}
	start := time.Now()
	first, cfg := startStoppableNode(t, ctx, env)

	send := eventSender(t, ctx, brokers, cfg.TopicEvents)
	const customers = 150
	abandon := func(cart string) {
		for i := range customers {
			c := fmt.Sprintf("c-%d", i)
			send("add-"+cart+"-"+c, events.TypeItemAdded, events.ItemAdded{CartRef: events.CartRef{CustomerID: c, CartID: cart, Currency: "EUR"},
				Item: events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 1000}}, c)
		}
	}
	decisions := topicReader(t, brokers, cfg.TopicDecisions)
	outcomes := topicReader(t, brokers, cfg.TopicOutcomes)

	abandon("k1")
	decisions.waitFor(t, "the first carts' decisions", 60*time.Second, func(ds map[string][]json.RawMessage) bool { return len(ds) >= customers })
	bought := 0
	for i := 0; i < customers; i += 3 {
		c := fmt.Sprintf("c-%d", i)
		send("buy-k1-"+c, events.TypeCheckoutCompleted, events.CheckoutCompleted{CartRef: events.CartRef{CustomerID: c, CartID: "k1", Currency: "EUR"},
			OrderID: "o-" + c, TotalMinor: 1000}, c)
		bought++
	}
	outcomes.waitFor(t, "the checkouts' outcomes", 60*time.Second, func(os map[string][]json.RawMessage) bool { return len(os) >= bought })

	// The restart: the processor stops (committing what it did) and
	// starts again on the same data directory and group.
	first.stop(t)
	second, _ := startStoppableNode(t, ctx, env)
	abandon("k2")
	decisions.waitFor(t, "the second carts' decisions", 60*time.Second, func(ds map[string][]json.RawMessage) bool { return len(ds) >= 2*customers })

	// A replay: a processor of a group of its own, with a state of its
	// own, reads the input from the start and decides again, onto the
	// same topic; every decision and outcome comes a second time, with the
	// same id and the same contents (checked below), and the report counts
	// each once.
	replayEnv := map[string]string{}
	for k, v := range env {
		replayEnv[k] = v
	}
	replayEnv["CARTLIFT_GROUP"] = "cartlift-replay"
	replayEnv["CARTLIFT_DATA_DIR"] = filepath.Join(dir, "replay")
	replayCfg, err := loadRunConfig(ctx, envconfig.MapLookuper(replayEnv))
	if err != nil {
		t.Fatal(err)
	}
	replayCtx, stopReplay := context.WithCancel(ctx)
	replay, err := startNode(replayCtx, replayCfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		stopReplay()
		t.Fatal(err)
	}
	twice := func(m map[string][]json.RawMessage) bool {
		for _, copies := range m {
			if len(copies) < 2 {
				return false
			}
		}
		return true
	}
	decisions.waitFor(t, "the replay's decisions", 60*time.Second, func(ds map[string][]json.RawMessage) bool { return twice(ds) })
	outcomes.waitFor(t, "the replay's outcomes", 60*time.Second, func(os map[string][]json.RawMessage) bool { return twice(os) })
	stopReplay()
	if err := replay.wait(); err != nil {
		t.Errorf("replay: %v", err)
	}

	// Every decision names the customer's variant, with its template,
	// discount and delay; every copy of an id is the same decision; both
	// carts of a customer, one decided before the restart and one after,
	// have the same variant.
	type raw struct {
		d      events.Decision
		copies int
	}
	byID := map[string]raw{}
	for id, copies := range decisions.snapshot() {
		var first events.Decision
		for i, v := range copies {
			var d events.Decision
			if err := json.Unmarshal(v, &d); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = d
			} else if !reflect.DeepEqual(d, first) {
				t.Errorf("decision %s: copy %d differs:\n%+v\n%+v", id, i, d, first)
			}
		}
		byID[id] = raw{first, len(copies)}
	}
	variantByCart := map[string]string{}
	for _, r := range byID {
		d := r.d
		st, variant := flow.StepFor(d.Customer.Key, 0)
		if d.Variant != variant || d.Template != st.Template || !reflect.DeepEqual(d.Discount, st.Discount) {
			t.Errorf("%s %s: variant %q template %q discount %+v, want %q %q %+v", d.Customer.Key, d.Cart.CartID,
				d.Variant, d.Template, d.Discount, variant, st.Template, st.Discount)
		}
		if d.Holdout != flow.InHoldout(d.Customer.Key) {
			t.Errorf("%s: holdout %v", d.Customer.Key, d.Holdout)
		}
		// Variant c waits 2 s, the others 1 s, after the cart's last
		// activity (the event time, which send took from the clock).
		if since := d.DecidedAt.Sub(d.Cart.ModifiedAt); since < st.After || since > st.After+10*time.Second {
			t.Errorf("%s (%s): decided %v after the last activity, want %v", d.Customer.Key, d.Variant, since, st.After)
		}
		variantByCart[d.Customer.Key+"/"+d.Cart.CartID] = d.Variant
	}
	seen := map[string]int{}
	for i := range customers {
		c := fmt.Sprintf("c-%d", i)
		v1, ok1 := variantByCart[c+"/k1"]
		v2, ok2 := variantByCart[c+"/k2"]
		if !ok1 || !ok2 || v1 != v2 {
			t.Errorf("%s: variant %q (%v) before the restart, %q (%v) after", c, v1, ok1, v2, ok2)
		}
		seen[v1]++
	}
	if len(byID) != 2*customers || len(seen) != 3 {
		t.Fatalf("%d decisions, want %d; variants %v", len(byID), 2*customers, seen)
	}

	// The counts from the raw topics, per variant: treated and holdout
	// decisions, treated carts and the recovered among them, holdout carts
	// and the converted among them.
	want := map[string]*analytics.VariantRow{}
	type cart struct{ key, id string }
	treated, control := map[string]map[cart]bool{}, map[string]map[cart]bool{}
	recovered, converted := map[string]map[cart]bool{}, map[string]map[cart]bool{}
	add := func(m map[string]map[cart]bool, v string, c cart) {
		if m[v] == nil {
			m[v] = map[cart]bool{}
		}
		m[v][c] = true
	}
	for _, r := range byID {
		d := r.d
		w := want[d.Variant]
		if w == nil {
			w = &analytics.VariantRow{Variant: d.Variant}
			want[d.Variant] = w
		}
		c := cart{d.Customer.Key, d.Cart.CartID}
		if d.Holdout {
			w.HoldoutDecisions++
			add(control, d.Variant, c)
		} else {
			w.Decisions++
			add(treated, d.Variant, c)
		}
	}
	for id, copies := range outcomes.snapshot() {
		var o events.Outcome
		if err := json.Unmarshal(copies[0], &o); err != nil {
			t.Fatal(err)
		}
		for i, v := range copies[1:] {
			if string(v) != string(copies[0]) {
				t.Errorf("outcome %s: copy %d differs:\n%s\n%s", id, i+1, v, copies[0])
			}
		}
		r, ok := byID[o.DecisionID]
		if !ok {
			continue
		}
		c := cart{r.d.Customer.Key, r.d.Cart.CartID}
		switch {
		case o.Kind == events.OutcomeRecovered && !r.d.Holdout:
			add(recovered, r.d.Variant, c)
		case o.Kind == events.OutcomeConvertedHoldout && r.d.Holdout:
			add(converted, r.d.Variant, c)
		}
	}
	var wantRows []analytics.VariantRow
	for v, w := range want {
		w.TreatedCarts, w.Recovered = int64(len(treated[v])), int64(len(recovered[v]))
		w.ControlCarts, w.ControlConverted = int64(len(control[v])), int64(len(converted[v]))
		wantRows = append(wantRows, *w)
	}
	sort.Slice(wantRows, func(i, j int) bool { return wantRows[i].Variant < wantRows[j].Variant })
	if n := len(recovered["a"]) + len(recovered["b"]) + len(recovered["c"]); n == 0 {
		t.Fatalf("no recovered carts: %+v", wantRows)
	}

	// The report, once the sink has stored everything: the same counts.
	counts := func(rows []analytics.VariantRow) []analytics.VariantRow {
		out := make([]analytics.VariantRow, len(rows))
		for i, r := range rows {
			out[i] = analytics.VariantRow{Variant: r.Variant, Decisions: r.Decisions, HoldoutDecisions: r.HoldoutDecisions,
				TreatedCarts: r.TreatedCarts, Recovered: r.Recovered, ControlCarts: r.ControlCarts, ControlConverted: r.ControlConverted}
		}
		return out
	}
	var got []analytics.VariantRow
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep, err := buildReport(ctx, clickhouseConfig{Addr: []string{chAddr}, Database: database},
			analytics.ReportOptions{Since: start.Add(-time.Minute), Until: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if len(rep.VariantTests) == 1 && rep.VariantTests[0].Flow == "ab" && rep.VariantTests[0].Step == "nudge" {
			got = counts(rep.VariantTests[0].Variants)
		}
		if reflect.DeepEqual(got, wantRows) {
			t.Logf("report and raw topics agree: %+v (winner %q)", got, rep.VariantTests[0].Winner)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the report's variants\n %+v\nthe raw topics'\n %+v\n(sink %+v)", got, wantRows, second.analytics.stats())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stoppableNode is a node of `cartlift run` with the analytics role that
// a test can stop before its end.
type stoppableNode struct {
	*node
	stopOnce func()
}

func (n *stoppableNode) stop(t *testing.T) {
	t.Helper()
	n.stopOnce()
}

// startStoppableNode starts `cartlift run` with the analytics role, as the
// environment env configures them, with a stop; the test's
// cleanup stops the node if the test did not.
func startStoppableNode(t *testing.T, ctx context.Context, env map[string]string) (*stoppableNode, runConfig) {
	t.Helper()
	cfg, err := loadRunConfig(ctx, envconfig.MapLookuper(env))
	if err != nil {
		t.Fatal(err)
	}
	acfg, err := loadAnalyticsConfig(ctx, envconfig.MapLookuper(env))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := startNode(runCtx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	acfg.Brokers = n.brokers
	n.analytics = startAnalyticsRole(runCtx, acfg, log, n.metrics.reg)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := n.wait(); err != nil {
				t.Errorf("node: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &stoppableNode{n, stop}, cfg
}

// recordTail reads a topic from its start (read_committed) in the
// background and keeps every record's data by CloudEvents id, copies
// included.
type recordTail struct {
	mu   sync.Mutex
	byID map[string][]json.RawMessage
}

func topicReader(t *testing.T, brokers []string, topic string) *recordTail {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		cl.Close()
	})
	rt := &recordTail{byID: map[string][]json.RawMessage{}}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				var env events.Envelope
				if json.Unmarshal(r.Value, &env) != nil {
					return
				}
				rt.mu.Lock()
				rt.byID[env.ID] = append(rt.byID[env.ID], env.Data)
				rt.mu.Unlock()
			})
		}
	}()
	return rt
}

// snapshot returns what was read so far, by id.
func (rt *recordTail) snapshot() map[string][]json.RawMessage {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make(map[string][]json.RawMessage, len(rt.byID))
	for id, vs := range rt.byID {
		out[id] = append([]json.RawMessage(nil), vs...)
	}
	return out
}

// waitFor waits until cond holds for what was read.
func (rt *recordTail) waitFor(t *testing.T, what string, timeout time.Duration, cond func(map[string][]json.RawMessage) bool) {
	t.Helper()
	waitUntil(t, what, timeout, func() bool { return cond(rt.snapshot()) })
}
