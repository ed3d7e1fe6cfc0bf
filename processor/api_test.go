package processor_test

// Tests of the HTTP API against running processors: an in-process
// Kafka-protocol broker (kfake, or KAFKA_BROKERS), real HTTP servers on
// loopback, events produced through Kafka or ingested through the API.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// apiNode is one instance: a processor with the API served on a loopback
// listener whose address it advertises.
type apiNode struct {
	run       *running
	api       *processor.API
	addr      string
	url       string
	forwarded atomic.Int64
}

type apiOpts struct {
	flows      string // default testFlows
	tokens     map[string]processor.Scope
	maxBody    int64
	maxEvents  int
	noProducer bool
}

func startAPINode(t testing.TB, brokers []string, dir string, tp processor.Topics, group string, o apiOpts) *apiNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &apiNode{addr: ln.Addr().String()}
	n.url = "http://" + n.addr
	flows := testFlows
	if o.flows != "" {
		flows = o.flows
	}
	n.run = startOn(t, brokers, dir, mustFlows(t, flows), tp, group, func(c *processor.Config) {
		c.AdvertiseAddr = n.addr
	})
	var prod processor.TxnProducer
	if !o.noProducer {
		cl, err := processor.NewTxnProducer(brokers, uniqueName(t, "txn"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		prod = cl
	}
	n.api, err = processor.NewAPI(processor.APIConfig{
		Backend: n.run.p, Producer: prod, EventsTopic: tp.Events, Tokens: o.tokens,
		MaxBody: o.maxBody, MaxEvents: o.maxEvents, SelfAddr: n.addr,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Observe: func(ri processor.RequestInfo) {
			if ri.Forwarded {
				n.forwarded.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.api.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	}))
	srv := &http.Server{Handler: n.api}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return n
}

// reply is one HTTP response.
type reply struct {
	code   int
	header http.Header
	body   []byte
}

func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %d %q: %v", r.code, r.body, err)
	}
}

var apiHTTP = &http.Client{Timeout: 30 * time.Second}

// call sends one request; token "" sends none.
func call(t testing.TB, method, u, token string, body io.Reader, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := apiHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{code: resp.StatusCode, header: resp.Header, body: b}
}

func get(t testing.TB, n *apiNode, path, token string) reply {
	t.Helper()
	return call(t, http.MethodGet, n.url+path, token, nil)
}

func carts(t testing.TB, n *apiNode, key, query, token string) processor.CartsResponse {
	t.Helper()
	r := get(t, n, "/v1/customers/"+url.PathEscape(key)+"/carts"+query, token)
	if r.code != http.StatusOK {
		t.Fatalf("carts of %s%s: %d %s", key, query, r.code, r.body)
	}
	var cr processor.CartsResponse
	r.decode(t, &cr)
	if cr.Count != len(cr.Carts) || cr.CustomerKey != key {
		t.Fatalf("carts of %s: count %d for %d carts, key %q", key, cr.Count, len(cr.Carts), cr.CustomerKey)
	}
	return cr
}

func cartIDs(cr processor.CartsResponse) []string {
	ids := make([]string, len(cr.Carts))
	for i, c := range cr.Carts {
		ids[i] = c.ID
	}
	return ids
}

// addItem builds a cart.item_added with every cart attribute.
func addItem(t testing.TB, id string, ref events.CartRef, at time.Time, sku string, qty, price int64) event {
	if ref.Currency == "" {
		ref.Currency = "EUR"
	}
	return mkEvent(t, id, events.TypeItemAdded, at, events.ItemAdded{CartRef: ref,
		Item: events.Item{SKU: sku, Name: "name " + sku, Quantity: qty, UnitPriceMinor: price, Category: "cat-" + sku,
			ImageURL: "https://img.example/" + sku + ".jpg"}})
}

func TestAPICartsOfCustomer(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	n := startAPINode(t, brokers, t.TempDir(), tp, uniqueName(t, "group"), apiOpts{})
	prod := newProducer(t, brokers)
	base := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	c1 := func(cart, typ, site string) events.CartRef {
		return events.CartRef{CustomerID: "c-1", CartID: cart, CartType: typ, Site: site, Channel: "b2c"}
	}
	b2b := events.CartRef{CustomerID: "c-1", CartID: "k4", CartType: "quote", Site: "eu", Channel: "b2b",
		LegalEntity: "ACME GmbH", Metadata: map[string]string{"po": "PO-7"}}
	evs := []event{
		addItem(t, "e1", c1("k1", "shopping", "eu"), at(1), "A", 2, 1500),
		addItem(t, "e2", c1("k1", "shopping", "eu"), at(2), "B", 1, 999),
		addItem(t, "e3", c1("k2", "wishlist", "us"), at(3), "C", 1, 2500),
		addItem(t, "e4", c1("k3", "shopping", "eu"), at(4), "D", 1, 100),
		checkout(t, "e5", "c-1", "k3", at(5), 100),
		addItem(t, "e6", b2b, at(6), "E", 10, 50),
		addItem(t, "e7", c1("k5", "shopping", "eu"), at(7), "F", 1, 700),
		mkEvent(t, "e8", events.TypeCartDiscarded, at(8), events.CartDiscarded{CartRef: events.CartRef{CustomerID: "c-1", CartID: "k5"}}),
		addItem(t, "e9", events.CartRef{CustomerID: "c-2", CartID: "k6"}, at(9), "G", 1, 1),
		addItem(t, "e10", events.CartRef{AnonymousID: "g-1", CartID: "k7", CartType: "shopping"}, at(10), "H", 3, 333),
		mkEvent(t, "e11", events.TypeCustomerUpdated, at(11), events.CustomerUpdated{CustomerID: "c-1",
			Email: ptr("ada@example.com"), Name: ptr("Ada"), Locale: ptr("de-DE"), TimeZone: ptr("Europe/Berlin"),
			Segment: ptr("vip"), MarketingConsent: ptr(true)}),
	}
	produceTo(t, prod, tp.Events, evs...)
	waitCaughtUp(t, n.run, int64(len(evs)), 30*time.Second)

	// The open carts, newest first, with items and totals.
	cr := carts(t, n, "c-1", "", "")
	if got := cartIDs(cr); !slices.Equal(got, []string{"k4", "k2", "k1"}) {
		t.Fatalf("open carts %v, want [k4 k2 k1]", got)
	}
	byID := map[string]processor.CartView{}
	for _, c := range cr.Carts {
		byID[c.ID] = c
	}
	k1 := byID["k1"]
	if k1.TotalMinor != 3999 || k1.ItemCount != 3 || k1.Currency != "EUR" || k1.Type != "shopping" || k1.Site != "eu" ||
		k1.Channel != "b2c" || k1.Status != "open" || k1.Version != 2 || !k1.CreatedAt.Equal(at(1)) || !k1.ModifiedAt.Equal(at(2)) {
		t.Fatalf("cart k1: %+v", k1)
	}
	wantItems := []processor.ItemView{
		{SKU: "A", Name: "name A", Quantity: 2, UnitPriceMinor: 1500, LineTotalMinor: 3000, Category: "cat-A", ImageURL: "https://img.example/A.jpg"},
		{SKU: "B", Name: "name B", Quantity: 1, UnitPriceMinor: 999, LineTotalMinor: 999, Category: "cat-B", ImageURL: "https://img.example/B.jpg"},
	}
	if !slices.Equal(k1.Items, wantItems) {
		t.Fatalf("k1 items %+v, want %+v", k1.Items, wantItems)
	}
	if k4 := byID["k4"]; k4.TotalMinor != 500 || k4.LegalEntity != "ACME GmbH" || k4.Channel != "b2b" || k4.Metadata["po"] != "PO-7" {
		t.Fatalf("cart k4: %+v", k4)
	}
	if k2 := byID["k2"]; k2.TotalMinor != 2500 || k2.Type != "wishlist" || k2.Site != "us" {
		t.Fatalf("cart k2: %+v", k2)
	}
	part := partitionOf("c-1", testPartitions)
	if f := cr.Freshness; f.Partition != part || !f.CaughtUp || f.Lag != 0 || f.Offset <= 0 {
		t.Fatalf("freshness %+v (partition %d)", f, part)
	}

	// Filters.
	for query, want := range map[string][]string{
		"?status=all":                 {"k5", "k4", "k3", "k2", "k1"},
		"?status=checked_out":         {"k3"},
		"?status=discarded":           {"k5"},
		"?type=wishlist":              {"k2"},
		"?site=us":                    {"k2"},
		"?type=shopping&site=eu":      {"k1"},
		"?status=all&type=shopping":   {"k5", "k3", "k1"},
		"?type=none":                  {},
		"?status=open&site=eu&type=x": {},
	} {
		if got := cartIDs(carts(t, n, "c-1", query, "")); !slices.Equal(got, want) {
			t.Errorf("%s: carts %v, want %v", query, got, want)
		}
	}
	if k3 := carts(t, n, "c-1", "?status=checked_out", "").Carts[0]; k3.OrderID != "o-k3" || k3.ClosedAt == nil {
		t.Errorf("checked-out cart: %+v", k3)
	}

	// One cart; absent carts and customers.
	r := get(t, n, "/v1/customers/c-1/carts/k1", "")
	var one processor.CartResponse
	r.decode(t, &one)
	if r.code != 200 || one.Cart.ID != "k1" || one.Cart.TotalMinor != 3999 || one.Freshness.Partition != part {
		t.Fatalf("cart k1: %d %s", r.code, r.body)
	}
	if r := get(t, n, "/v1/customers/c-1/carts/k5", ""); r.code != 200 || !strings.Contains(string(r.body), `"status":"discarded"`) {
		t.Fatalf("closed cart by id: %d %s", r.code, r.body)
	}
	for _, path := range []string{"/v1/customers/c-1/carts/nope", "/v1/customers/nobody"} {
		r := get(t, n, path, "")
		var e struct {
			Error     string               `json:"error"`
			Freshness *processor.Freshness `json:"freshness"`
		}
		r.decode(t, &e)
		if r.code != 404 || e.Error == "" || e.Freshness == nil {
			t.Errorf("%s: %d %s", path, r.code, r.body)
		}
	}
	if cr := carts(t, n, "nobody", "", ""); len(cr.Carts) != 0 || cr.Carts == nil {
		t.Errorf("carts of an unknown customer: %+v", cr)
	}

	// The profile.
	r = get(t, n, "/v1/customers/c-1", "")
	var cust processor.CustomerResponse
	r.decode(t, &cust)
	want := processor.ProfileView{CustomerID: "", Email: "ada@example.com", Name: "Ada", Locale: "de-DE",
		TimeZone: "Europe/Berlin", Segment: "vip", MarketingConsent: true}
	cust.Profile.CustomerID = ""
	if r.code != 200 || cust.Profile != want || cust.OpenCarts != 3 || cust.CustomerKey != "c-1" {
		t.Fatalf("customer: %d %s", r.code, r.body)
	}

	// A guest, by its URL-escaped key.
	if cr := carts(t, n, "anon:g-1", "", ""); len(cr.Carts) != 1 || cr.Carts[0].TotalMinor != 999 {
		t.Fatalf("guest carts %+v", cr)
	}
	if r := get(t, n, "/v1/customers/anon%3Ag-1/carts/k7", ""); r.code != 200 {
		t.Fatalf("guest cart: %d %s", r.code, r.body)
	}

	// Responses show no internal fields.
	raw := get(t, n, "/v1/customers/c-1/carts?status=all", "").body
	for _, internal := range []string{"wake_at", "decisions", "last_activity", "assigned_from"} {
		if bytes.Contains(raw, []byte(internal)) {
			t.Errorf("response exposes %q: %s", internal, raw)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestAPIDiscard: a discard produces cart.discarded with a deterministic
// id; the cart leaves the open list once the processor consumed it.
func TestAPIDiscard(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	tokens := map[string]processor.Scope{"write-token-0123456789": processor.ScopeWrite}
	n := startAPINode(t, brokers, t.TempDir(), tp, uniqueName(t, "group"), apiOpts{tokens: tokens})
	const tok = "write-token-0123456789"
	prod := newProducer(t, brokers)
	base := time.Now().Add(-time.Minute).UTC()
	produceTo(t, prod, tp.Events,
		itemAdded(t, "e1", "c-1", "k1", base, "A", 1, 100),
		itemAdded(t, "e2", "c-1", "k1", base.Add(time.Second), "B", 1, 100),
		itemAdded(t, "e3", "c-1", "k2", base, "C", 1, 200),
		addItem(t, "e4", events.CartRef{AnonymousID: "g/1", CartID: "k3"}, base, "D", 1, 300),
	)
	waitCaughtUp(t, n.run, 4, 30*time.Second)

	r := call(t, http.MethodPost, n.url+"/v1/customers/c-1/carts/k1/discard", tok, strings.NewReader(`{"reason":"changed my mind"}`))
	var d processor.DiscardResponse
	r.decode(t, &d)
	if r.code != http.StatusAccepted || d.Status != "accepted" || d.EventID != processor.DiscardEventID("c-1", "k1", 2) || d.Note == "" {
		t.Fatalf("discard: %d %s", r.code, r.body)
	}
	waitFor(t, 20*time.Second, "the discard to be consumed", func() bool {
		return slices.Equal(cartIDs(carts(t, n, "c-1", "", tok)), []string{"k2"})
	})
	var k1 processor.CartResponse
	get(t, n, "/v1/customers/c-1/carts/k1", tok).decode(t, &k1)
	if k1.Cart.Status != "discarded" {
		t.Fatalf("k1 after discard: %+v", k1.Cart)
	}
	// The event on the topic: the customer's key, the API's source.
	recs := consumeRecords(t, brokers, tp.Events, 5, 10*time.Second)
	last := recs[len(recs)-1]
	ev, err := events.Decode(last.Value, time.Time{})
	if err != nil || ev.ID != d.EventID || ev.Source != processor.APISource || ev.Type != events.TypeCartDiscarded ||
		string(last.Key) != "c-1" || ev.CartDiscarded.Reason != "changed my mind" {
		t.Fatalf("discard event %s %s (%v)", last.Key, last.Value, err)
	}
	// Not open any more: 404, nothing produced.
	if r := call(t, http.MethodPost, n.url+"/v1/customers/c-1/carts/k1/discard", tok, nil); r.code != 404 {
		t.Fatalf("second discard: %d %s", r.code, r.body)
	}
	// A guest's cart, its key escaped ("/" in the anonymous id).
	r = call(t, http.MethodPost, n.url+"/v1/customers/"+url.PathEscape("anon:g/1")+"/carts/k3/discard", tok, nil)
	if r.code != http.StatusAccepted {
		t.Fatalf("guest discard: %d %s", r.code, r.body)
	}
	waitFor(t, 20*time.Second, "the guest's discard to be consumed", func() bool {
		return len(carts(t, n, "anon:g/1", "", tok).Carts) == 0
	})
	if n.run.p.Stats().EventsRejected != 0 {
		t.Fatal("a discard was dead-lettered")
	}
}

// consumeRecords reads the first n records of topic (read committed).
func consumeRecords(t testing.TB, brokers []string, topic string, n int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d records after %s, want %d", topic, len(out), timeout, n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
		cancel()
	}
	slices.SortStableFunc(out, func(a, b *kgo.Record) int { return a.Timestamp.Compare(b.Timestamp) })
	return out
}

// encoded returns an event's JSON value.
func encoded(t testing.TB, id, typ string, at time.Time, data any) []byte {
	t.Helper()
	v, err := events.Encode(id, "shop", typ, at, "", data)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func itemJSON(t testing.TB, id, customer, cart string, at time.Time, qty, price int64) []byte {
	return encoded(t, id, events.TypeItemAdded, at, events.ItemAdded{
		CartRef: events.CartRef{CustomerID: customer, CartID: cart, Currency: "EUR"},
		Item:    events.Item{SKU: "S-" + id, Quantity: qty, UnitPriceMinor: price}})
}

func TestAPIIngest(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	n := startAPINode(t, brokers, t.TempDir(), tp, uniqueName(t, "group"), apiOpts{})
	at := time.Now().Add(-time.Minute).UTC()

	// A JSON array, pretty-printed.
	arr := fmt.Sprintf("  [\n %s,\n %s ,%s]\n", itemJSON(t, "i1", "c-10", "k1", at, 2, 100),
		itemJSON(t, "i2", "c-10", "k1", at.Add(time.Second), 1, 50), itemJSON(t, "i3", "c-11", "k2", at, 1, 7))
	r := call(t, http.MethodPost, n.url+"/v1/events", "", strings.NewReader(arr), "Content-Type", "application/json")
	if r.code != http.StatusAccepted || strings.TrimSpace(string(r.body)) != `{"accepted":3}` {
		t.Fatalf("ingest array: %d %s", r.code, r.body)
	}
	// JSON lines, with blank lines and CRLF; a guest's event.
	guest := encoded(t, "i4", events.TypeItemAdded, at, events.ItemAdded{
		CartRef: events.CartRef{AnonymousID: "x", CartID: "k3", Currency: "EUR"},
		Item:    events.Item{SKU: "S", Quantity: 1, UnitPriceMinor: 10}})
	lines := fmt.Sprintf("%s\r\n\n%s\n", guest, itemJSON(t, "i5", "c-12", "k4", at, 4, 25))
	r = call(t, http.MethodPost, n.url+"/v1/events", "", strings.NewReader(lines), "Content-Type", "application/x-ndjson")
	if r.code != http.StatusAccepted || strings.TrimSpace(string(r.body)) != `{"accepted":2}` {
		t.Fatalf("ingest lines: %d %s", r.code, r.body)
	}
	waitFor(t, 30*time.Second, "the processor to consume 5 records", func() bool { return n.run.p.Stats().EventsConsumed >= 5 })
	for key, total := range map[string]int64{"c-10": 250, "c-11": 7, "anon:x": 10, "c-12": 100} {
		cr := carts(t, n, key, "", "")
		if len(cr.Carts) != 1 || cr.Carts[0].TotalMinor != total {
			t.Errorf("%s: carts %+v, want one with total %d", key, cr.Carts, total)
		}
	}
	if s := n.run.p.Stats(); s.EventsConsumed != 5 || s.EventsRejected != 0 {
		t.Fatalf("stats %+v, want 5 consumed, none rejected", s)
	}
	// Each record is keyed by its customer key.
	for _, rec := range consumeRecords(t, brokers, tp.Events, 5, 10*time.Second) {
		ev, err := events.Decode(rec.Value, time.Time{})
		if err != nil || ev.Key() != string(rec.Key) {
			t.Errorf("record key %q for %s (%v)", rec.Key, rec.Value, err)
		}
	}
}

// highWatermarks returns the high watermark (isolation read uncommitted:
// every record, committed, aborted or open) of every partition of topic.
func highWatermarks(t testing.TB, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	cl := adminClient(t, brokers)
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range partitionsOf(t, cl, topic) {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[int32]int64{}
	for _, shard := range cl.RequestSharded(ctx, req) {
		if shard.Err != nil {
			t.Fatal(shard.Err)
		}
		for _, t2 := range shard.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t2.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					t.Fatal(err)
				}
				out[p.Partition] = p.Offset
			}
		}
	}
	return out
}

// TestAPIRejects: every bad request gets the right 4xx with a JSON error,
// and changes nothing: no record reaches the events topic.
func TestAPIRejects(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	const readTok, writeTok = "read-token-0123456789", "write-token-0123456789"
	n := startAPINode(t, brokers, t.TempDir(), tp, uniqueName(t, "group"), apiOpts{
		tokens:  map[string]processor.Scope{readTok: processor.ScopeRead, writeTok: processor.ScopeWrite},
		maxBody: 4096, maxEvents: 3,
	})
	prod := newProducer(t, brokers)
	at := time.Now().Add(-time.Minute).UTC()
	produceTo(t, prod, tp.Events, itemAdded(t, "e1", "c-1", "k1", at, "A", 1, 100))
	waitCaughtUp(t, n.run, 1, 30*time.Second)
	before := highWatermarks(t, brokers, tp.Events)

	valid := string(itemJSON(t, "v1", "c-1", "k1", at, 1, 1))
	noCart := string(encoded(t, "bad-1", events.TypeItemAdded, at, map[string]any{
		"customer_id": "c-1", "currency": "EUR", "item": map[string]any{"sku": "A", "quantity": 1, "unit_price_minor": 1}}))
	future := string(itemJSON(t, "bad-2", "c-1", "k1", time.Now().Add(time.Hour), 1, 1))
	assigned := string(encoded(t, "bad-3", events.TypeCartAssigned, at, events.CartAssigned{
		CartRef: events.CartRef{CustomerID: "c-1", CartID: "k9", Currency: "EUR"}, FromKey: "anon:z",
		Items: []events.Item{{SKU: "A", Quantity: 1, UnitPriceMinor: 1}}, CreatedAt: at, ModifiedAt: at}))
	big := "[" + strings.Repeat(" ", 8000) + valid + "]"
	carts := "/v1/customers/c-1/carts"

	type tc struct {
		name, method, path, token, body string
		chunked                         bool
		header                          []string
		code                            int
		check                           func(t *testing.T, r reply)
	}
	cases := []tc{
		{name: "no token", method: "GET", path: carts, code: 401,
			check: func(t *testing.T, r reply) {
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
				}
			}},
		{name: "unknown token", method: "GET", path: carts, token: "read-token-0123456780", code: 401},
		{name: "token prefix", method: "GET", path: carts, token: "read-token", code: 401},
		{name: "basic auth", method: "GET", path: carts, header: []string{"Authorization", "Basic cmVhZDp4"}, code: 401},
		{name: "no token on ingest", method: "POST", path: "/v1/events", body: valid, code: 401},
		{name: "read token ingests", method: "POST", path: "/v1/events", token: readTok, body: valid, code: 403},
		{name: "read token discards", method: "POST", path: carts + "/k1/discard", token: readTok, code: 403},
		{name: "malformed array", method: "POST", path: "/v1/events", token: writeTok, body: "[" + valid + ",", code: 400},
		{name: "trailing data", method: "POST", path: "/v1/events", token: writeTok, body: "[" + valid + "] x", code: 400},
		{name: "not JSON", method: "POST", path: "/v1/events", token: writeTok, body: "hello", code: 400},
		{name: "empty body", method: "POST", path: "/v1/events", token: writeTok, body: "  ", code: 400},
		{name: "empty array", method: "POST", path: "/v1/events", token: writeTok, body: "[]", code: 400},
		{name: "oversized body", method: "POST", path: "/v1/events", token: writeTok, body: big, code: 413},
		{name: "oversized chunked body", method: "POST", path: "/v1/events", token: writeTok, body: big, chunked: true, code: 413},
		{name: "too many events", method: "POST", path: "/v1/events", token: writeTok,
			body: strings.Repeat(valid+"\n", 4), code: 413},
		{name: "invalid events", method: "POST", path: "/v1/events", token: writeTok,
			body: "[" + valid + "," + noCart + "," + future + "]", code: 400,
			check: func(t *testing.T, r reply) {
				var e processor.IngestErrorResponse
				r.decode(t, &e)
				want := []processor.EventError{
					{Index: 1, ID: "bad-1", Reason: events.ReasonData, Field: "data.cart_id"},
					{Index: 2, ID: "bad-2", Reason: events.ReasonFutureTime, Field: "time"},
				}
				if e.Error != "invalid events" || e.Invalid != 2 || len(e.Events) != 2 {
					t.Fatalf("%s", r.body)
				}
				for i := range want {
					got := e.Events[i]
					if got.Message == "" {
						t.Errorf("event error without a message: %+v", got)
					}
					got.Message = ""
					if got != want[i] {
						t.Errorf("event error %+v, want %+v", got, want[i])
					}
				}
			}},
		{name: "invalid line", method: "POST", path: "/v1/events", token: writeTok, body: valid + "\n{nope\n", code: 400,
			check: func(t *testing.T, r reply) {
				var e processor.IngestErrorResponse
				r.decode(t, &e)
				if e.Invalid != 1 || e.Events[0].Index != 1 || e.Events[0].Reason != events.ReasonMalformed {
					t.Errorf("%s", r.body)
				}
			}},
		{name: "cart.assigned", method: "POST", path: "/v1/events", token: writeTok, body: assigned, code: 400},
		{name: "malformed discard body", method: "POST", path: carts + "/k1/discard", token: writeTok, body: "{", code: 400},
		{name: "unknown discard field", method: "POST", path: carts + "/k1/discard", token: writeTok, body: `{"x":1}`, code: 400},
		{name: "discard unknown cart", method: "POST", path: carts + "/nope/discard", token: writeTok, code: 404},
		{name: "discard unknown customer", method: "POST", path: "/v1/customers/nobody/carts/k1/discard", token: writeTok, code: 404},
		{name: "bad status filter", method: "GET", path: carts + "?status=lost", token: readTok, code: 400},
		{name: "unknown route", method: "GET", path: "/v1/nope", token: readTok, code: 404},
		{name: "root", method: "GET", path: "/", code: 404},
		{name: "unknown route without token", method: "GET", path: "/v2/customers/c-1", code: 404},
		{name: "wrong method", method: "DELETE", path: "/v1/events", token: writeTok, code: 405,
			check: func(t *testing.T, r reply) {
				if r.header.Get("Allow") == "" {
					t.Error("405 without Allow")
				}
			}},
		{name: "wrong method on carts", method: "PUT", path: carts, token: writeTok, body: "{}", code: 405},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
				if c.chunked {
					body = io.MultiReader(body) // unknown length: sent chunked
				}
			}
			r := call(t, c.method, n.url+c.path, c.token, body, c.header...)
			if r.code != c.code {
				t.Fatalf("status %d, want %d: %s", r.code, c.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e struct {
				Error string `json:"error"`
			}
			r.decode(t, &e)
			if e.Error == "" {
				t.Errorf("no error message: %s", r.body)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
	// The ops route is open; the same token works for reads.
	if r := get(t, n, "/healthz", ""); r.code != 200 {
		t.Fatalf("healthz: %d", r.code)
	}
	if r := get(t, n, carts, writeTok); r.code != 200 {
		t.Fatalf("write token reading: %d %s", r.code, r.body)
	}
	if r := call(t, "GET", n.url+carts, "", nil, "Authorization", "bearer "+readTok); r.code != 200 {
		t.Fatalf("lower-case scheme: %d %s", r.code, r.body)
	}
	// Nothing was produced: not even an aborted transaction.
	if after := highWatermarks(t, brokers, tp.Events); !maps.Equal(before, after) {
		t.Fatalf("the events topic moved from %v to %v", before, after)
	}
	if s := n.run.p.Stats(); s.EventsConsumed != 1 {
		t.Fatalf("the processor consumed %d records, want 1", s.EventsConsumed)
	}
}

// waitOwners waits until the group maps every partition to one of the
// nodes, each node owns some, and every node has caught up.
func waitOwners(t testing.TB, nodes ...*apiNode) map[int32]*apiNode {
	t.Helper()
	return waitOwnersWithin(t, 60*time.Second, nodes...)
}

// waitOwnersWithin is waitOwners with its own timeout.
func waitOwnersWithin(t testing.TB, timeout time.Duration, nodes ...*apiNode) map[int32]*apiNode {
	t.Helper()
	byAddr := map[string]*apiNode{}
	for _, n := range nodes {
		byAddr[n.addr] = n
	}
	var owners map[int32]*apiNode
	waitFor(t, timeout, "every node to own partitions", func() bool {
		total := 0
		for _, n := range nodes {
			s := n.run.p.Stats()
			if s.Partitions == 0 || s.CaughtUp != s.Partitions {
				return false
			}
			total += s.Partitions
		}
		if total != testPartitions {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m, err := nodes[0].run.p.Owners(ctx)
		if err != nil || len(m) != testPartitions {
			return false
		}
		owners = map[int32]*apiNode{}
		seen := map[string]bool{}
		for p, addr := range m {
			n := byAddr[addr]
			if n == nil {
				return false
			}
			if _, _, owned, _ := n.run.p.Lookup(keyIn("probe", p, testPartitions)); !owned {
				return false
			}
			owners[p] = n
			seen[addr] = true
		}
		return len(seen) == len(nodes)
	})
	return owners
}

// TestAPITwoInstances: two processors in one group, each with its API;
// either answers for every customer, forwarding to the owner.
func TestAPITwoInstances(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "group")
	const tok = "write-token-0123456789"
	o := apiOpts{tokens: map[string]processor.Scope{tok: processor.ScopeWrite}}
	a := startAPINode(t, brokers, t.TempDir(), tp, group, o)
	b := startAPINode(t, brokers, t.TempDir(), tp, group, o)
	nodes := []*apiNode{a, b}
	owners := waitOwners(t, a, b)

	prod := newProducer(t, brokers)
	at := time.Now().Add(-time.Minute).UTC()
	keys := map[int32]string{}
	for p := range int32(testPartitions) {
		keys[p] = keyIn("cust", p, testPartitions)
		produceTo(t, prod, tp.Events, itemAdded(t, fmt.Sprintf("e%d", p), keys[p], "k1", at, "A", int64(p)+1, 100))
	}
	for p, key := range keys {
		waitFor(t, 20*time.Second, "the owner to consume "+key, func() bool {
			return len(carts(t, owners[p], key, "", tok).Carts) == 1
		})
	}
	for p, key := range keys {
		for _, n := range nodes {
			cr := carts(t, n, key, "", tok)
			if len(cr.Carts) != 1 || cr.Carts[0].TotalMinor != (int64(p)+1)*100 || cr.Freshness.Partition != p {
				t.Fatalf("%s (partition %d) via %s: %+v", key, p, n.addr, cr)
			}
			if r := get(t, n, "/v1/customers/"+key+"/carts/k1", tok); r.code != 200 {
				t.Fatalf("cart of %s via %s: %d %s", key, n.addr, r.code, r.body)
			}
			if r := get(t, n, "/v1/customers/"+key+"/carts/nope", tok); r.code != 404 {
				t.Fatalf("absent cart of %s via %s: %d %s", key, n.addr, r.code, r.body)
			}
			r := get(t, n, "/v1/customers/"+key+"/carts/k1/explain", tok)
			var x processor.ExplainResponse
			r.decode(t, &x)
			if r.code != 200 || x.Cause == nil || x.Cause.EventID != fmt.Sprintf("e%d", p) || x.Cause.Partition != p || x.Cause.Topic != tp.Events {
				t.Fatalf("explanation of %s via %s: %d %s", key, n.addr, r.code, r.body)
			}
		}
	}
	// Each customer was asked 4 times through the node that does not own it.
	if got := a.forwarded.Load() + b.forwarded.Load(); got != 4*testPartitions {
		t.Fatalf("%d forwarded requests, want %d", got, 4*testPartitions)
	}
	// Without a token, the non-owner refuses before forwarding.
	for p, key := range keys {
		other := a
		if owners[p] == a {
			other = b
		}
		if r := get(t, other, "/v1/customers/"+key+"/carts", ""); r.code != 401 {
			t.Fatalf("forwarding without a token: %d", r.code)
		}
		// A request that was already forwarded is not forwarded again.
		r := call(t, "GET", other.url+"/v1/customers/"+key+"/carts", tok, nil, processor.HeaderForwarded, "1")
		if r.code != 503 || r.header.Get("Retry-After") != "1" || r.header.Get(processor.HeaderNotOwner) == "" {
			t.Fatalf("re-forwarded request: %d %v %s", r.code, r.header, r.body)
		}
		// A discard through the non-owner.
		r = call(t, "POST", other.url+"/v1/customers/"+key+"/carts/k1/discard", tok, strings.NewReader(`{"reason":"x"}`))
		if r.code != http.StatusAccepted {
			t.Fatalf("discard via the non-owner: %d %s", r.code, r.body)
		}
	}
	for _, key := range keys {
		for _, n := range nodes {
			waitFor(t, 20*time.Second, "the discard of "+key, func() bool {
				return len(carts(t, n, key, "", tok).Carts) == 0
			})
		}
	}
}

// latencies are per-request durations, sorted by summary.
type latencies []time.Duration

func (l latencies) summary() string {
	slices.Sort(l)
	q := func(f float64) time.Duration { return l[min(len(l)-1, int(f*float64(len(l))))] }
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  p99.9 %v  max %v", q(.5).Round(time.Microsecond),
		q(.9).Round(time.Microsecond), q(.99).Round(time.Microsecond), q(.999).Round(time.Microsecond), l[len(l)-1].Round(time.Microsecond))
}

// hammer sends total GET requests from clients goroutines; pick returns
// the target node's URL and the customer index of request i; check
// validates a response body. It returns the latencies.
func hammer(t testing.TB, clients, total int, pick func(i int) (string, int), check func(ci int, body []byte) error) latencies {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients * 2, DisableCompression: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	out := make(latencies, total)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				u, ci := pick(i)
				start := time.Now()
				resp, err := cl.Get(u)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
					}
				}
				out[i] = time.Since(start)
				if err == nil {
					err = check(ci, body)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", u, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return out
}

// TestAPITransactionalInputCatchesUp: after events ingested through the
// API (a Kafka transaction: its commit marker takes an offset), the
// processor still reaches the end of the partition: lag 0, caught up,
// ready. Wall-clock timers of a partition that is not caught up would not
// fire.
func TestAPITransactionalInputCatchesUp(t *testing.T) {
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	n := startAPINode(t, brokers, t.TempDir(), tp, uniqueName(t, "group"), apiOpts{})
	at := time.Now().Add(-time.Minute).UTC()
	body := fmt.Sprintf("[%s,%s]", itemJSON(t, "i1", "c-1", "k1", at, 1, 100), itemJSON(t, "i2", "c-2", "k2", at, 1, 100))
	if r := call(t, http.MethodPost, n.url+"/v1/events", "", strings.NewReader(body)); r.code != http.StatusAccepted {
		t.Fatalf("ingest: %d %s", r.code, r.body)
	}
	waitCaughtUp(t, n.run, 2, 30*time.Second)
	cr := carts(t, n, "c-1", "", "")
	if f := cr.Freshness; len(cr.Carts) != 1 || !f.CaughtUp || f.Lag != 0 {
		t.Fatalf("after ingest: %+v", cr)
	}
	if !n.run.p.Ready() {
		t.Fatal("not ready after catching up")
	}
}
