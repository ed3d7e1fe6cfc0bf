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
	n, _ := startRunNode(t, base)
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

// dlqReasons reads the dead letters of cart-events.dlq: reason by svix-id.
func dlqReasons(t *testing.T, brokers []string, want int) map[string]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(events.TopicDLQ),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("dead letters %v, want %d", out, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var id, reason string
			for _, h := range r.Headers {
				switch h.Key {
				case "svix-id":
					id = string(h.Value)
				case events.HeaderErrorReason:
					reason = string(h.Value)
				}
			}
			out[id] = reason
		})
	}
	return out
}

// TestEmporixPendingBounds: an item event whose cart never gets a
// snapshot is dead-lettered after CARTLIFT_EMPORIX_PENDING_MAX_AGE with
// its reason; beyond CARTLIFT_EMPORIX_PENDING_MAX waiting deliveries, the
// next one is dead-lettered at once.
func TestEmporixPendingBounds(t *testing.T) {
	n, base := emporixNode(t, map[string]string{"CARTLIFT_EMPORIX_PENDING_MAX_AGE": "2s", "CARTLIFT_EMPORIX_PENDING_MAX": "1"})
	url := base + "/v1/adapters/emporix"
	now := time.Now()
	item := `{"type":"cart.item-added","data":{"tenant":"t","cartId":"%s","itemId":"0","quantity":1}}`
	if code, resp := webhook(t, url, emporixTestSecret, "msg_lonely", now, fmt.Appendf(nil, item, "never-seen")); code != 202 || !strings.Contains(resp, `"pending"`) {
		t.Fatalf("%d %s", code, resp)
	}
	if code, resp := webhook(t, url, emporixTestSecret, "msg_overflow", now, fmt.Appendf(nil, item, "also-never-seen")); code != 202 || !strings.Contains(resp, "dead_lettered") {
		t.Fatalf("%d %s", code, resp)
	}
	if resp, err := http.Get(base + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "cartlift_emporix_pending 1\n") {
			t.Errorf("metrics lack cartlift_emporix_pending 1")
		}
	}
	got := dlqReasons(t, n.brokers, 2)
	if got["msg_lonely"] != reasonEmporixUnknownCart || got["msg_overflow"] != reasonEmporixPendingFull {
		t.Fatalf("dead letters %v", got)
	}
	// The dead-lettered delivery no longer waits: its cart's snapshot now
	// produces the snapshot alone.
	deadline := time.Now().Add(10 * time.Second)
	for n.emporix.pendingCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries still wait", n.emporix.pendingCount())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEmporixPendingSurvivesRestart: waiting item events are in Kafka, not
// in memory: after the instance restarts (same broker log), the cart's
// snapshot still releases them, in the order they happened.
func TestEmporixPendingSurvivesRestart(t *testing.T) {
	chdirRoot(t)
	dir := t.TempDir()
	flows := filepath.Join(t.TempDir(), "flows.yaml")
	if err := os.WriteFile(flows, []byte(emporixTestFlows), 0o644); err != nil {
		t.Fatal(err)
	}
	env := envconfig.MapLookuper(map[string]string{
		"CARTLIFT_BROKER_ADDR": "127.0.0.1:0", "CARTLIFT_DATA_DIR": dir, "CARTLIFT_HTTP_ADDR": "127.0.0.1:0",
		"CARTLIFT_PARTITIONS": "2", "CARTLIFT_FLOWS": flows, "CARTLIFT_EMPORIX_WEBHOOK_SECRET": emporixTestSecret,
		"CARTLIFT_SESSION_TIMEOUT": "2s",
	})
	start := func() (*node, context.CancelFunc) {
		cfg, err := loadRunConfig(context.Background(), env)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		n, err := startNode(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !n.proc.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("the node did not get ready")
			}
			time.Sleep(20 * time.Millisecond)
		}
		return n, cancel
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	n, cancel := start()
	url := "http://" + n.httpLn.Addr().String() + "/v1/adapters/emporix"
	// Two item events of the cart, the later one first: they are applied
	// in the order they happened.
	if code, resp := webhook(t, url, emporixTestSecret, "msg_before_restart", now.Add(time.Second),
		[]byte(`{"type":"cart.item-updated","data":{"tenant":"t","cartId":"cart-r","itemId":"sku-r","quantity":4}}`)); code != 202 || !strings.Contains(resp, "pending") {
		t.Fatalf("%d %s", code, resp)
	}
	if code, resp := webhook(t, url, emporixTestSecret, "msg_earlier", now,
		[]byte(`{"type":"cart.item-updated","data":{"tenant":"t","cartId":"cart-r","itemId":"sku-r","quantity":2}}`)); code != 202 || !strings.Contains(resp, "pending") {
		t.Fatalf("%d %s", code, resp)
	}
	cancel()
	if err := n.wait(); err != nil {
		t.Fatal(err)
	}
	n, cancel = start()
	defer func() {
		cancel()
		if err := n.wait(); err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	base := "http://" + n.httpLn.Addr().String()
	snap := fmt.Sprintf(`{"type":"cart.updated","data":{"id":"cart-r","customerId":"C-r","currency":"EUR","items":[{"id":"0","product":{"id":"sku-r"},"quantity":1,"price":{"effectiveAmount":5}}],"metadata":{"modifiedAt":%q,"version":1}}}`,
		now.Add(-time.Second).Format(time.RFC3339Nano))
	if code, resp := webhook(t, base+"/v1/adapters/emporix", emporixTestSecret, "msg_after_restart", time.Now(), []byte(snap)); code != 202 {
		t.Fatalf("%d %s", code, resp)
	}
	c := waitCart(t, base, "C-r", "cart-r", func(c processor.CartView) bool { return len(c.Items) == 1 && c.Items[0].Quantity == 4 })
	if c.TotalMinor != 2000 {
		t.Fatalf("cart %+v", c)
	}
}

// TestAdaptEmporixFile: `cartlift adapt emporix` over the golden fixtures
// of events/emporix gives the same events, in order, with the waiting item
// event resolved by the snapshot later in the file.
func TestAdaptEmporixFile(t *testing.T) {
	raw, err := os.ReadFile("../../events/emporix/testdata/guest_login.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Deliveries []json.RawMessage `json:"deliveries"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(t.TempDir(), "deliveries.jsonl")
	var lines []byte
	for _, d := range fx.Deliveries {
		var buf bytes.Buffer
		_ = json.Compact(&buf, d)
		lines = append(append(lines, buf.Bytes()...), '\n')
	}
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"adapt", "emporix", in}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var types []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		ev, err := events.Decode([]byte(l), time.Time{})
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		types = append(types, ev.Type+"@"+ev.Key())
	}
	want := "cart.updated@anon:sess-71c0 cart.item_updated@anon:sess-71c0 cart.item_updated@anon:sess-71c0 customer.logged_in@C-7731 cart.item_updated@C-7731"
	if strings.Join(types, " ") != want {
		t.Fatalf("events %v\nwant %s\n%s", types, want, errOut.String())
	}
	if !strings.Contains(errOut.String(), "7 deliveries: 5 events") {
		t.Fatalf("summary: %s", errOut.String())
	}
	// A file whose item event never meets its cart exits 1 and says why.
	lonely := filepath.Join(t.TempDir(), "lonely.jsonl")
	_ = os.WriteFile(lonely, []byte(`{"id":"msg_l","timestamp":"2026-01-01T00:00:00Z","body":{"type":"cart.item-added","data":{"cartId":"nope","itemId":"0","quantity":1}}}`+"\n"), 0o644)
	errOut.Reset()
	err = run(context.Background(), []string{"adapt", "emporix", lonely}, &out, &errOut)
	if exitCode(err) != 1 || !strings.Contains(errOut.String(), reasonEmporixUnknownCart) {
		t.Fatalf("%v %s", err, errOut.String())
	}
}

// TestEmporixConfig: the adapter's settings are validated at start-up,
// naming the variable, never showing the secret.
func TestEmporixConfig(t *testing.T) {
	chdirRoot(t)
	cfg, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{}))
	if err != nil || cfg.Emporix.enabled() || cfg.Emporix.Topic != "cart-emporix" || cfg.Emporix.Tolerance != 5*time.Minute {
		t.Fatalf("defaults %+v %v", cfg.Emporix, err)
	}
	for _, c := range []struct{ env, value string }{
		{"CARTLIFT_EMPORIX_WEBHOOK_SECRET", "whsec_s3cret!!not-base64"},
		{"CARTLIFT_EMPORIX_WEBHOOK_SECRET", "whsec_czNjcmV0"},
		{"CARTLIFT_EMPORIX_TOLERANCE", "0s"},
		{"CARTLIFT_EMPORIX_TOLERANCE", "five"},
		{"CARTLIFT_EMPORIX_PENDING_MAX_AGE", "0s"},
		{"CARTLIFT_EMPORIX_PENDING_MAX", "0"},
		{"CARTLIFT_EMPORIX_CLOSED_RETENTION", "1s"},
		{"CARTLIFT_EMPORIX_TOPIC", "cart-events"},
	} {
		_, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{c.env: c.value}))
		if err == nil || !strings.Contains(err.Error(), c.env) {
			t.Errorf("%s=%s: %v", c.env, c.value, err)
		} else if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "czNjcmV0") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

// TestEmporixTwoInstances: two `cartlift run` instances on one broker
// share the adapter's view. An item event posted to one waits; the cart's
// snapshot posted to the other releases it (whichever instance owns the
// customer's partition produces it); and the first instance, which never
// saw the snapshot, resolves the cart's next item event at once.
func TestEmporixTwoInstances(t *testing.T) {
	c, err := startBroker(brokerConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	env := map[string]string{"KAFKA_BROKERS": c.ListenAddrs()[0], "CARTLIFT_PARTITIONS": "4", "CARTLIFT_SESSION_TIMEOUT": "2s"}
	a, baseA := emporixNode(t, env)
	b, baseB := emporixNode(t, env)
	deadline := time.Now().Add(60 * time.Second)
	for a.proc.Stats().Partitions+b.proc.Stats().Partitions != 4 || a.proc.Stats().Partitions == 0 || b.proc.Stats().Partitions == 0 || !a.proc.Ready() || !b.proc.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("the instances did not share the partitions: %d + %d", a.proc.Stats().Partitions, b.proc.Stats().Partitions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	now := time.Now().UTC().Truncate(time.Second)
	post := func(base, id string, at time.Time, body string) string {
		t.Helper()
		code, resp := webhook(t, base+"/v1/adapters/emporix", emporixTestSecret, id, at, []byte(body))
		if code != 202 {
			t.Fatalf("%s: %d %s", id, code, resp)
		}
		return resp
	}
	if resp := post(baseA, "msg_two_1", now, `{"type":"cart.item-updated","data":{"cartId":"cart-2i","itemId":"0","quantity":3}}`); !strings.Contains(resp, "pending") {
		t.Fatal(resp)
	}
	post(baseB, "msg_two_2", now, fmt.Sprintf(`{"type":"cart.updated","data":{"id":"cart-2i","customerId":"C-two","currency":"EUR",
		"items":[{"id":"0","product":{"id":"mug"},"quantity":1,"price":{"effectiveAmount":12.5}}],"metadata":{"modifiedAt":%q,"version":1}}}`, now.Format(time.RFC3339)))
	waitCart(t, baseA, "C-two", "cart-2i", func(c processor.CartView) bool { return len(c.Items) == 1 && c.Items[0].Quantity == 3 })
	// A learns B's owner record from the topic.
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, ok := a.emporix.Owner("cart-2i"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instance A never learned the cart's owner")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp := post(baseA, "msg_two_3", now.Add(time.Second), `{"type":"cart.item-updated","data":{"cartId":"cart-2i","itemId":"mug","quantity":5}}`); !strings.Contains(resp, "accepted") {
		t.Fatal(resp)
	}
	cart := waitCart(t, baseB, "C-two", "cart-2i", func(c processor.CartView) bool { return c.Items[0].Quantity == 5 })
	if cart.TotalMinor != 5*1250 {
		t.Fatalf("cart %+v", cart)
	}
	if a.emporix.pendingCount()+b.emporix.pendingCount() != 0 {
		t.Fatalf("still waiting: %d, %d", a.emporix.pendingCount(), b.emporix.pendingCount())
	}
}
