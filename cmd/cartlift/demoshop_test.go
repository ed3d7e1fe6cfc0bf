package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

// The shop page shows the cart the API answers, with its lines and total
// and the button; the button produces checkout.completed for that cart,
// keyed by the customer, and the page then thanks for the order; an
// ordered cart has no button; a guest's order names the anonymous id.
func TestDemoShop(t *testing.T) {
	status := "open"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var key, cartID string
		switch p := r.URL.EscapedPath(); {
		case strings.HasPrefix(p, "/v1/customers/c-1/carts/"):
			key, cartID = "c-1", strings.TrimPrefix(p, "/v1/customers/c-1/carts/")
		case strings.HasPrefix(p, "/v1/customers/anon%3Ag-7/carts/"):
			key, cartID = "anon:g-7", strings.TrimPrefix(p, "/v1/customers/anon%3Ag-7/carts/")
		}
		if cartID != "k-1" {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(processor.CartResponse{CustomerKey: key, Cart: processor.CartView{
			ID: "k-1", Type: "shopping", Site: "eu", Channel: "b2c", Currency: "EUR", Status: status, Version: 3, ItemCount: 3, TotalMinor: 132497,
			Items: []processor.ItemView{
				{SKU: "SKU-1", Name: "Trail shoe <b>", Quantity: 1, UnitPriceMinor: 5999, LineTotalMinor: 5999},
				{SKU: "SKU-2", Quantity: 2, UnitPriceMinor: 63249, LineTotalMinor: 126498},
			}}})
	}))
	defer api.Close()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(1, "cart-events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	shop, err := startDemoShop(httpConfig{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, MaxHeaderBytes: 1 << 14, MaxConns: 16},
		strings.TrimPrefix(api.URL, "http://"), c.ListenAddrs(), "cart-events", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer shop.close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(shop.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, page := get("/cart/k-1?c=c-1&d=d-9")
	for _, want := range []string{"cartlift demo shop", "Trail shoe &lt;b&gt;", "59.99 EUR", "632.49 EUR", "1,264.98 EUR", "1,324.97 EUR", "3 items", "Complete order", `action="/cart/k-1/order"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if code != http.StatusOK {
		t.Errorf("page: %d", code)
	}
	// make shop-screenshots: the page, for headless Chromium.
	if out := os.Getenv("CARTLIFT_SHOP_PREVIEW"); out != "" {
		if err := os.WriteFile(out, []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, page = get("/cart/k-2?c=c-1"); code != http.StatusNotFound || !strings.Contains(page, "could not find") {
		t.Errorf("unknown cart: %d", code)
	}

	consumer, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("cart-events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	order := func(customer string) (string, *events.Event) {
		t.Helper()
		resp, err := noRedirect.PostForm(shop.url+"/cart/k-1/order", url.Values{"c": {customer}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "ordered=") {
			t.Fatalf("order: %d, to %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fs := consumer.PollRecords(ctx, 1)
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		r := fs.Records()[0]
		ev, err := events.Decode(r.Value, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != customer || ev.Key() != customer {
			t.Errorf("record key %q, event key %q, want %q", r.Key, ev.Key(), customer)
		}
		return resp.Header.Get("Location"), ev
	}
	loc, ev := order("c-1")
	if ev.CheckoutCompleted == nil || ev.CheckoutCompleted.TotalMinor != 132497 || ev.CheckoutCompleted.CartID != "k-1" ||
		ev.CheckoutCompleted.OrderID != "o-shop-k-1-3" || ev.CheckoutCompleted.Currency != "EUR" {
		t.Fatalf("event %+v", ev.CheckoutCompleted)
	}
	if code, page = get(strings.TrimPrefix(loc, shop.url)); code != http.StatusOK || !strings.Contains(page, "Thank you for your order") ||
		!strings.Contains(page, "o-shop-k-1-3") || strings.Contains(page, "<button") {
		t.Errorf("after the order (%s): %d\n%s", loc, code, page)
	}
	if _, ev = order("anon:g-7"); ev.CheckoutCompleted == nil || ev.CheckoutCompleted.AnonymousID != "g-7" {
		t.Errorf("guest order %+v", ev.CheckoutCompleted)
	}
	status = "checked_out"
	if _, page = get("/cart/k-1?c=c-1"); !strings.Contains(page, "has been ordered") || strings.Contains(page, "<button") {
		t.Errorf("an ordered cart:\n%s", page)
	}
}

// The command the demo prints writes the report again: it starts a
// ClickHouse over the demo's data directory, reports the same period,
// and stops it.
func TestDemoReportCommandReproduces(t *testing.T) {
	if os.Getenv("CLICKHOUSE_ADDR") != "" {
		t.Skip("reports from a local clickhouse-server's data directory; CLICKHOUSE_ADDR is set")
	}
	chdirRoot(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "clickhouse")
	srv, err := analytics.StartLocal(ctx, dir)
	if err != nil {
		t.Fatalf("this test needs clickhouse-server (make tools): %v", err)
	}
	conn, err := analytics.Open(ctx, analytics.ClickHouseConfig{Addr: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := analytics.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := conn.Exec(ctx, `INSERT INTO decisions (id, decided_at, flow, step, holdout, customer_key, cart_id, currency, cart_value_minor)
		SELECT 'd-1', toDateTime('`+now.Add(-time.Minute).Format(time.DateTime)+`', 'UTC'), 'demo-reminders', 'reminder', 0, 'c-1', 'k-1', 'EUR', 5999`); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	want, err := buildReport(ctx, clickhouseConfig{Addr: []string{srv.Addr}, Database: analytics.DefaultDatabase},
		analytics.ReportOptions{Since: now.Add(-time.Hour), Until: now})
	if err != nil {
		t.Fatal(err)
	}
	_ = srv.Stop() // as the demo leaves it

	t.Setenv("CLICKHOUSE_ADDR", "")
	out := filepath.Join(t.TempDir(), "report.html")
	cmd := demoReportCommand("./bin/cartlift", dir, clickhouseConfig{}, want, out)
	args := strings.Fields(cmd)
	if args[0] != "./bin/cartlift" || args[1] != "report" || strings.Contains(cmd, "'") {
		t.Fatalf("command %q", cmd)
	}
	// The same command, in JSON, to compare.
	args = append(args[1:len(args)-4], "--format", "json", "--out", out+".json")
	if err := run(ctx, args, io.Discard, io.Discard); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	raw, err := os.ReadFile(out + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var got analytics.Report
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Since.Equal(want.Since) || !got.Until.Equal(want.Until) || got.Funnel != want.Funnel || got.Funnel.TreatedCarts != 1 {
		t.Errorf("reproduced %v–%v %+v, want %v–%v %+v", got.Since, got.Until, got.Funnel, want.Since, want.Until, want.Funnel)
	}
	// And as printed, in HTML.
	if err := run(ctx, strings.Fields(cmd)[1:], io.Discard, io.Discard); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), "chart-funnel") {
		t.Errorf("html report: %v", err)
	}
	// A directory without ClickHouse data is refused, naming the flag.
	err = run(ctx, []string{"report", "--clickhouse-dir", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--clickhouse-dir") {
		t.Errorf("empty --clickhouse-dir: %v", err)
	}
	t.Setenv("CLICKHOUSE_ADDR", "127.0.0.1:9000")
	if err := run(ctx, []string{"report", "--clickhouse-dir", dir}, io.Discard, io.Discard); err == nil || exitCode(err) != 2 {
		t.Errorf("--clickhouse-dir with CLICKHOUSE_ADDR: %v", err)
	}
}
