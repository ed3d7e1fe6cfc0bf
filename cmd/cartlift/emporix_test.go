package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/events/emporix"
	"github.com/cartlift/cartlift/processor"
)

const emporixTestSecret = "whsec_Y2FydGxpZnQtZW1wb3JpeC10ZXN0LXNlY3JldA=="

const emporixTestFlows = `
guards:
  requires_consent: false
flows:
  - name: emporix-reminder
    steps:
      - name: first
        after: 6s
        action: email
        template: reminder
    expire_after: 1h
    attribution_window: 1h
`

// emporixNode starts `cartlift run`'s node with the adapter on.
func emporixNode(t *testing.T, env map[string]string) (*node, string) {
	t.Helper()
	chdirRoot(t)
	flows := filepath.Join(t.TempDir(), "flows.yaml")
	if err := os.WriteFile(flows, []byte(emporixTestFlows), 0o644); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"CARTLIFT_BROKER_ADDR":             "127.0.0.1:0",
		"CARTLIFT_DATA_DIR":                t.TempDir(),
		"CARTLIFT_HTTP_ADDR":               "127.0.0.1:0",
		"CARTLIFT_PARTITIONS":              "2",
		"CARTLIFT_FLOWS":                   flows,
		"CARTLIFT_EMPORIX_WEBHOOK_SECRET":  emporixTestSecret,
		"CARTLIFT_EMPORIX_PENDING_MAX_AGE": "1h",
	}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := loadRunConfig(context.Background(), envconfig.MapLookuper(base))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := startNode(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := n.wait(); err != nil {
			t.Errorf("node: %v", err)
		}
	})
	return n, "http://" + n.httpLn.Addr().String()
}

// webhook posts a body as Svix would deliver it: signed with secret at ts.
func webhook(t *testing.T, url, secret, id string, ts time.Time, body []byte) (int, string) {
	t.Helper()
	v, err := emporix.NewVerifier(secret, 0)
	if err != nil {
		t.Fatal(err)
	}
	return postSigned(t, url, id, strconv.FormatInt(ts.Unix(), 10), v.Sign(id, ts, body), body)
}

func postSigned(t *testing.T, url, id, ts, sig string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if id != "" {
		req.Header.Set("svix-id", id)
	}
	req.Header.Set("svix-timestamp", ts)
	req.Header.Set("svix-signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEmporixWebhookRefusals: through the real server, bad deliveries get
// JSON errors with the right codes, and nothing reaches cart-events.
func TestEmporixWebhookRefusals(t *testing.T) {
	n, base := emporixNode(t, map[string]string{"CARTLIFT_HTTP_MAX_BODY": "4096"})
	url := base + "/v1/adapters/emporix"
	now := time.Now()
	good := []byte(`{"type":"customer.updated","data":{"id":"C-1","firstName":"Jana","contactEmail":"jana@example.com"}}`)
	v, _ := emporix.NewVerifier(emporixTestSecret, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := v.Sign("msg_ok", now, good)
	for _, c := range []struct {
		name         string
		id, ts, sig  string
		body         []byte
		code         int
		errorMention string
	}{
		{"tampered body", "msg_ok", ts, sig, bytes.Replace(good, []byte("Jana"), []byte("Jane"), 1), 401, "no signature matches"},
		{"wrong secret", "msg_ok", ts, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", good, 401, "no signature matches"},
		{"stale timestamp", "msg_ok", strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10), v.Sign("msg_ok", now.Add(-10*time.Minute), good), good, 401, "tolerance"},
		{"no svix-id", "", ts, sig, good, 401, "svix-id"},
		{"too large", "msg_big", ts, v.Sign("msg_big", now, bytes.Repeat([]byte(" "), 5000)), bytes.Repeat([]byte(" "), 5000), 413, "limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := postSigned(t, url, c.id, c.ts, c.sig, c.body)
			if code != c.code || !strings.Contains(body, `"error"`) || !strings.Contains(body, c.errorMention) {
				t.Fatalf("%d %s, want %d mentioning %q", code, body, c.code, c.errorMention)
			}
		})
	}
	for _, c := range []struct {
		name, body string
		code       int
	}{
		{"malformed JSON", `{"type":"cart.updated","data":`, 400},
		{"no type", `{"id":"c1"}`, 400},
		{"unknown type", `{"type":"cart.exploded","data":{"id":"c1"}}`, 422},
		{"invalid cart", `{"type":"cart.updated","data":{"id":"c1","customerId":"C-1","currency":"XXX1"}}`, 422},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := webhook(t, url, emporixTestSecret, "msg_"+strings.ReplaceAll(c.name, " ", "_"), now, []byte(c.body))
			if code != c.code || !strings.Contains(body, `"error"`) {
				t.Fatalf("%d %s, want %d", code, body, c.code)
			}
		})
	}
	// A signed, valid delivery is accepted.
	if code, body := postSigned(t, url, "msg_ok", ts, sig, good); code != 202 || !strings.Contains(body, "emporix-msg_ok") {
		t.Fatalf("good delivery: %d %s", code, body)
	}
	// Nothing of the refused ones reached the input topic: one record.
	if got := countRecords(t, n.brokers, events.TopicEvents); got != 1 {
		t.Fatalf("%d records on cart-events, want the 1 accepted", got)
	}
}

// TestEmporixEndToEnd: signed Emporix deliveries posted to a running
// `cartlift run` come out as a decision on cart-decisions. A guest's item
// event arrives before any snapshot of its cart and waits; the snapshot
// releases it; the login moves the cart to the customer; a redelivery of
// the snapshot is dropped as a repeat; six seconds of inactivity later the
// customer's reminder is decided.
func TestEmporixEndToEnd(t *testing.T) {
	n, base := emporixNode(t, nil)
	url := base + "/v1/adapters/emporix"
	now := time.Now().UTC().Truncate(time.Millisecond)
	post := func(id string, at time.Time, body string) string {
		t.Helper()
		code, resp := webhook(t, url, emporixTestSecret, id, at, []byte(body))
		if code != 202 {
			t.Fatalf("%s: %d %s", id, code, resp)
		}
		return resp
	}
	if resp := post("msg_e2e_item", now, `{"type":"cart.item-updated","data":{"tenant":"t","cartId":"cart-e2e","itemId":"0","quantity":3,"priceId":"p1"}}`); !strings.Contains(resp, `"pending"`) {
		t.Fatalf("an item of an unknown cart: %s", resp)
	}
	snapshot := fmt.Sprintf(`{"type":"cart.updated","data":{"id":"cart-e2e","sessionId":"sess-e2e","status":"OPEN","currency":"EUR","type":"shopping","siteCode":"main",
		"channel":{"name":"storefront","source":"https://shop.example/"},
		"items":[{"id":"0","product":{"id":"boot-12","sku":"BOOT 12","name":"Hiking boot"},"quantity":2,"price":{"priceId":"p1","effectiveAmount":179.9,"currency":"EUR"}}],
		"metadata":{"createdAt":%q,"modifiedAt":%q,"version":2}}}`, now.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
	post("msg_e2e_snapshot", now, snapshot)
	guest := events.AnonPrefix + "sess-e2e"
	cart := waitCart(t, base, guest, "cart-e2e", func(c processor.CartView) bool { return len(c.Items) == 1 && c.Items[0].Quantity == 3 })
	if cart.Items[0].SKU != "boot-12" || cart.Items[0].UnitPriceMinor != 17990 || cart.Site != "main" || cart.Channel != "storefront" {
		t.Fatalf("the guest's cart: %+v", cart)
	}
	// Svix redelivers the snapshot (same message id, new attempt).
	post("msg_e2e_snapshot", now.Add(time.Second), snapshot)
	post("msg_e2e_login", now.Add(time.Second), `{"type":"customer.logged.in","data":{"tenant":"t","sessionId":"sess-e2e","customerId":"C-e2e"}}`)
	waitCart(t, base, "C-e2e", "cart-e2e", func(c processor.CartView) bool { return c.Status == "open" && len(c.Items) == 1 })

	cl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers...), kgo.ConsumeTopics(events.TopicDecisions),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no decision for the Emporix cart within 30s")
		}
		var d *events.Decision
		fs.EachRecord(func(r *kgo.Record) {
			var env events.Envelope
			var dec events.Decision
			if json.Unmarshal(r.Value, &env) == nil && json.Unmarshal(env.Data, &dec) == nil && dec.Cart.CartID == "cart-e2e" {
				if string(r.Key) != "C-e2e" {
					t.Errorf("decision keyed %q", r.Key)
				}
				d = &dec
			}
		})
		if d != nil {
			if d.Flow != "emporix-reminder" || d.Cart.TotalMinor != 3*17990 || d.Cart.Currency != "EUR" {
				t.Fatalf("decision %+v", d)
			}
			break
		}
	}
	if s := n.proc.Stats(); s.EventsDuplicate < 1 || s.EventsRejected != 0 {
		t.Fatalf("the redelivered snapshot was not dropped as a repeat, or events were rejected: %+v", s)
	}
}

// waitCart polls the API until the customer's cart satisfies ok.
func waitCart(t *testing.T, base, key, cartID string, ok func(processor.CartView) bool) processor.CartView {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/customers/" + strings.ReplaceAll(key, ":", "%3A") + "/carts/" + cartID)
		if err != nil {
			t.Fatal(err)
		}
		var cr processor.CartResponse
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && json.Unmarshal(b, &cr) == nil && ok(cr.Cart) {
			return cr.Cart
		}
		if time.Now().After(deadline) {
			t.Fatalf("cart %s of %s: %d %s", cartID, key, resp.StatusCode, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countRecords counts the committed records of a topic.
func countRecords(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		got := 0
		fs.EachRecord(func(*kgo.Record) { got++ })
		n += got
		if got == 0 {
			return n
		}
	}
}
