package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/processor"
)

const (
	btDefaultFlows = "../../deploy/flows/default.yaml"
	btDemoFlows    = "../../deploy/flows/demo.yaml"
)

func btFlowNames(t *testing.T, path string) []string {
	t.Helper()
	cfg, err := loadFlows(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range cfg.Flows {
		names = append(names, f.Name)
	}
	return names
}

func runBT(t *testing.T, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := backtestCmd(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("backtest %q: %v\nstderr: %s", args, err, errOut.String())
	}
	return out.String(), errOut.String()
}

// TestBacktestSynthetic runs the command on generated traffic, without a
// broker (none is started and --brokers is not given).
func TestBacktestSynthetic(t *testing.T) {
	out, _ := runBT(t, "--flows", btDefaultFlows, "--synthetic", "20000", "--customers", "2000")
	for _, name := range btFlowNames(t, btDefaultFlows) {
		if !strings.Contains(out, name) {
			t.Errorf("output does not mention flow %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "events 20000, elapsed ") || !strings.Contains(out, " events/s") {
		t.Errorf("output does not end with the summary line:\n%s", out)
	}
}

func TestBacktestCompare(t *testing.T) {
	out, _ := runBT(t, "--flows", btDefaultFlows, "--compare", btDemoFlows, "--synthetic", "20000", "--customers", "2000")
	for _, f := range []string{btDefaultFlows, btDemoFlows} {
		for _, name := range btFlowNames(t, f) {
			if !strings.Contains(out, name) {
				t.Errorf("output does not mention flow %s of %s", name, f)
			}
		}
	}
	if !strings.Contains(out, "compare: A = "+btDefaultFlows+", B = "+btDemoFlows) || !strings.Contains(out, "REACHED A") {
		t.Errorf("no side-by-side table:\n%s", out)
	}
}

// btWriteHistory writes n events of the shopper simulation as JSON lines,
// with a malformed line in the middle.
func btWriteHistory(t *testing.T, n int) string {
	t.Helper()
	sim := shopper.New(shopper.Options{Seed: 7, Customers: 500})
	end := time.Now().Add(-time.Hour)
	start := end.Add(-5 * 24 * time.Hour)
	var buf bytes.Buffer
	for i := range n {
		r := sim.Next(start.Add(time.Duration(i) * (end.Sub(start) / time.Duration(n))))
		buf.Write(r.Value)
		buf.WriteByte('\n')
		if i == n/2 {
			buf.WriteString("{not json\n")
		}
	}
	path := filepath.Join(t.TempDir(), "history.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBacktestEventsFile(t *testing.T) {
	path := btWriteHistory(t, 5000)
	out, _ := runBT(t, "--flows", btDefaultFlows, "--events", path)
	for _, name := range btFlowNames(t, btDefaultFlows) {
		if !strings.Contains(out, name) {
			t.Errorf("output does not mention flow %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "(5000 events, 1 rejected)") {
		t.Errorf("want 5000 events and 1 rejected line:\n%s", out)
	}

	js, _ := runBT(t, "--flows", btDefaultFlows, "--compare", btDemoFlows, "--events", path, "--format", "json")
	var doc backtestOutput
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatalf("json output: %v\n%s", err, js)
	}
	if doc.Events != 5000 || doc.Rejected != 1 || len(doc.Results) != 2 {
		t.Fatalf("json: events %d rejected %d results %d, want 5000, 1, 2", doc.Events, doc.Rejected, len(doc.Results))
	}
	var reached int64
	for _, f := range doc.Results[0].Report.Flows {
		for _, s := range f.Steps {
			reached += s.Reached + s.Holdout
		}
	}
	if reached == 0 {
		t.Errorf("five days of traffic reached no cart: %s", js)
	}
}

func TestBacktestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--synthetic", "10"},
		{"--flows", btDefaultFlows},
		{"--flows", btDefaultFlows, "--synthetic", "10", "--events", "x.jsonl"},
		{"--flows", btDefaultFlows, "--synthetic", "10", "--format", "xml"},
	} {
		var out, errOut bytes.Buffer
		if err := backtestCmd(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("backtest %q: no error", args)
		}
	}
}

// TestBacktestTopic reads a topic's history through the Kafka protocol
// up to its end offsets, and produces nothing on it: its end offsets do
// not move.
func TestBacktestTopic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("cart-events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := processor.EnsureTopics(ctx, cl, 3, "cart-events"); err != nil {
		t.Fatal(err)
	}
	sim := shopper.New(shopper.Options{Seed: 7, Customers: 500})
	start := time.Now().Add(-3 * 24 * time.Hour)
	const n = 3000
	for i := range n {
		r := sim.Next(start.Add(time.Duration(i) * time.Minute))
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(r.Key), Value: r.Value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	before, err := processor.ListEndOffsets(ctx, cl, "cart-events", []int32{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := runBT(t, "--flows", btDefaultFlows, "--brokers", strings.Join(c.ListenAddrs(), ","), "--topic", "cart-events")
	if !strings.Contains(out, "(3000 events, 0 rejected)") {
		t.Errorf("want all 3000 events read:\n%s", out)
	}
	after, err := processor.ListEndOffsets(ctx, cl, "cart-events", []int32{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	for p, off := range before {
		if after[p] != off {
			t.Errorf("partition %d: end offset moved from %d to %d", p, off, after[p])
		}
	}
}
