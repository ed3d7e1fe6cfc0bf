package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
)

// TestBacktestExplainEqualsLive: events go to a topic of a Kafka-protocol
// broker (kfake); `cartlift run` processes them live, its steps come due
// and are decided or suppressed while it runs, and its API explains the
// carts; then `cartlift backtest --explain` over the same topic prints the
// same explanations, byte for byte as JSON (the API's freshness aside):
// the same causes (partitions, offsets), guard checks and ids.
func TestBacktestExplainEqualsLive(t *testing.T) {
	chdirRoot(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := strings.Join(c.ListenAddrs(), ",")

	// Quiet hours far from now (never entered in the test), so that their
	// check shows without deferring anything.
	now := time.Now().UTC()
	from := now.Add(12 * time.Hour).Hour()
	flowsFile := filepath.Join(t.TempDir(), "flows.yaml")
	if err := os.WriteFile(flowsFile, []byte(fmt.Sprintf(`
guards:
  frequency_cap: {max: 1, per: 1h}
  max_messages_per_cart: 2
  quiet_hours: {from: "%02d:00", to: "%02d:00"}
flows:
  - name: rem
    steps:
      - {name: first, after: 2s, action: email}
      - {name: second, after: 4s, action: email}
      - {name: hook, after: 6s, action: webhook}
    expire_after: 1h
    holdout_percent: 0
`, from, (from+1)%24)), 0o644); err != nil {
		t.Fatal(err)
	}
	n, cfg := startRunNode(t, map[string]string{
		"KAFKA_BROKERS":       brokers,
		"CARTLIFT_DATA_DIR":   t.TempDir(),
		"CARTLIFT_HTTP_ADDR":  "127.0.0.1:0",
		"CARTLIFT_PARTITIONS": "2",
		"CARTLIFT_FLOWS":      flowsFile,
		"CARTLIFT_TIMER_TICK": "20ms",
	})
	ctx := t.Context()
	api := "http://" + n.httpLn.Addr().String()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(api + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(cfg.TopicEvents))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(id, typ string, at time.Time, data any) {
		t.Helper()
		v, err := events.Encode(id, "shop", typ, at, "", data)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := events.Decode(v, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(ev.Key()), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	add := func(id, customer, cart string, at time.Time, sku string) {
		produce(id, events.TypeItemAdded, at, events.ItemAdded{
			CartRef: events.CartRef{CustomerID: customer, CartID: cart, Currency: "EUR"},
			Item:    events.Item{SKU: sku, Quantity: 1, UnitPriceMinor: 1200}})
	}
	yes := true
	base := time.Now().UTC().Truncate(time.Millisecond)
	tz := "Europe/Berlin"
	produce("u-1", events.TypeCustomerUpdated, base, events.CustomerUpdated{CustomerID: "c-1", MarketingConsent: &yes, TimeZone: &tz})
	add("e-1", "c-1", "k1", base.Add(time.Millisecond), "A")
	add("e-2", "c-1", "k1", base.Add(2*time.Millisecond), "B")
	add("e-3", "c-2", "k2", base.Add(3*time.Millisecond), "C") // no consent

	// Every step of both carts comes due and is decided or suppressed.
	carts := map[string]string{"c-1": "k1", "c-2": "k2"}
	deadline := time.Now().Add(60 * time.Second)
	for key, cart := range carts {
		for {
			code, body := get("/v1/customers/" + key + "/carts/" + cart + "/explain")
			var x struct{ Steps []json.RawMessage }
			if code == 200 && json.Unmarshal(body, &x) == nil && len(x.Steps) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/%s: %d %s", key, cart, code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A last event moves the backtest's clock (event time) past those
	// steps' due times, as the wall clock moved the live processor's.
	add("e-9", "c-9", "k9", time.Now().UTC(), "Z")
	for {
		if code, _ := get("/v1/customers/c-9/carts/k9"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the last event was not processed")
		}
		time.Sleep(50 * time.Millisecond)
	}

	for key, cart := range carts {
		code, live := get("/v1/customers/" + key + "/carts/" + cart + "/explain")
		if code != 200 {
			t.Fatalf("%s: %d %s", key, code, live)
		}
		var liveDoc map[string]any
		if err := json.Unmarshal(live, &liveDoc); err != nil {
			t.Fatal(err)
		}
		delete(liveDoc, "freshness")
		out, _ := runBT(t, "--flows", flowsFile, "--brokers", brokers, "--topic", cfg.TopicEvents, "--explain", key, "--cart", cart)
		var btDoc map[string]any
		if err := json.Unmarshal([]byte(out), &btDoc); err != nil {
			t.Fatalf("backtest output: %v\n%s", err, out)
		}
		a, _ := json.MarshalIndent(liveDoc, "", "  ")
		b, _ := json.MarshalIndent(btDoc, "", "  ")
		if !bytes.Equal(a, b) {
			t.Fatalf("%s/%s: the backtest explains otherwise than the live API:\nlive:\n%s\nbacktest:\n%s", key, cart, a, b)
		}
		// The explanation names real records: a cause with the topic and
		// an offset, the consent's source.
		if !strings.Contains(string(a), `"topic": "`+cfg.TopicEvents+`"`) || !strings.Contains(string(a), `"offset"`) {
			t.Fatalf("%s: no cause in\n%s", key, a)
		}
		if key == "c-1" {
			t.Logf("explanation of %s/%s:\n%s", key, cart, live)
		}
	}

	// Without --cart: every cart of the customer; an unknown customer is an error.
	out, _ := runBT(t, "--flows", flowsFile, "--brokers", brokers, "--topic", cfg.TopicEvents, "--explain", "c-1")
	var all explainOutput
	if err := json.Unmarshal([]byte(out), &all); err != nil || all.CustomerKey != "c-1" || len(all.Carts) != 1 || all.Carts[0].CartID != "k1" {
		t.Fatalf("--explain c-1: %v\n%s", err, out)
	}
	var o, e bytes.Buffer
	if err := backtestCmd(ctx, []string{"--flows", flowsFile, "--brokers", brokers, "--topic", cfg.TopicEvents, "--explain", "c-404"}, &o, &e); err == nil {
		t.Fatal("--explain of an unknown customer: no error")
	}
}
