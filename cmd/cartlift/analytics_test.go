package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
)

func TestAnalyticsConfigErrorsNameTheVariable(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "CLICKHOUSE_ADDR"},
		{map[string]string{"CLICKHOUSE_ADDR": "localhost"}, "CLICKHOUSE_ADDR"},
		{map[string]string{"CLICKHOUSE_ADDR": "database"}, "CLICKHOUSE_ADDR"},
		{map[string]string{"CLICKHOUSE_ADDR": "localhost:9000", "CLICKHOUSE_DATABASE": "x;drop"}, "CLICKHOUSE_DATABASE"},
		{map[string]string{"CLICKHOUSE_ADDR": "localhost:9000", "CLICKHOUSE_TLS": "maybe"}, "CLICKHOUSE_TLS"},
		{map[string]string{"CLICKHOUSE_ADDR": "localhost:9000", "CARTLIFT_ANALYTICS_BATCH_ROWS": "0"}, "CARTLIFT_ANALYTICS_BATCH_ROWS"},
		{map[string]string{"CLICKHOUSE_ADDR": "localhost:9000", "CARTLIFT_ANALYTICS_BATCH_INTERVAL": "soon"}, "CARTLIFT_ANALYTICS_BATCH_INTERVAL"},
	} {
		_, err := loadAnalyticsConfig(context.Background(), envconfig.MapLookuper(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one naming %s", c.env, err, c.want)
		}
	}
	cfg, err := loadAnalyticsConfig(context.Background(), envconfig.MapLookuper(map[string]string{"CLICKHOUSE_ADDR": "127.0.0.1:9000"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Group != "cartlift-analytics" || cfg.ClickHouse.Database != "cartlift" || cfg.BatchRows != analytics.DefaultBatchRows ||
		cfg.BatchInterval != time.Second || cfg.TopicDLQ != analytics.DefaultTopicDLQ {
		t.Fatalf("defaults %+v", cfg)
	}
}

func TestParseReportTime(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"30d":                  now.AddDate(0, 0, -30),
		"12h":                  now.Add(-12 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"2026-11-01":           time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		"2026-11-01T10:00:00Z": time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseReportTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseReportTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "30", "-3d", "0d", "xd", "-1h", "yesterday", "2026-13-01"} {
		if _, err := parseReportTime(bad, now); err == nil {
			t.Errorf("parseReportTime(%q) accepted", bad)
		}
	}
}

func TestReportFlagErrors(t *testing.T) {
	t.Setenv("CLICKHOUSE_ADDR", "127.0.0.1:1")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "--format", "pdf"}, "--format"},
		{[]string{"report", "--since", "soon"}, "--since"},
		{[]string{"report", "--since", "2026-11-02", "--until", "2026-11-01"}, "must be before"},
		{[]string{"report", "extra"}, "unexpected argument"},
	} {
		err := run(context.Background(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(err) != 2 {
			t.Errorf("%v: error %v (exit %d), want exit 2 naming %s", c.args, err, exitCode(err), c.want)
		}
	}
	t.Setenv("CLICKHOUSE_ADDR", "")
	if err := run(context.Background(), []string{"report"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "CLICKHOUSE_ADDR") {
		t.Errorf("report without CLICKHOUSE_ADDR: %v", err)
	}
}

// TestRunStoresDecisionsAndReports runs the processor with the analytics
// role against a real ClickHouse: carts are abandoned, decided, two of
// them bought back; two more, of customers without consent, are
// suppressed by an email flow; the decisions, outcomes and suppressions
// land in ClickHouse, the role's metrics show on /metrics, and `cartlift
// report` counts them, the suppressed steps with their reason.
func TestRunStoresDecisionsAndReports(t *testing.T) {
	chdirRoot(t)
	ctx := context.Background()
	chAddr := testClickHouse(t)
	database := testDatabase(t, chAddr, "run_test")

	dir := t.TempDir()
	flows := filepath.Join(dir, "flows.yaml")
	if err := os.WriteFile(flows, []byte(`flows:
  - name: quick
    match: {currencies: [EUR]}
    steps:
      - name: nudge
        after: 1s
        action: webhook
    attribution_window: 1h
  - name: mail
    match: {currencies: [USD]}
    steps:
      - name: hello
        after: 1s
        action: email
`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CARTLIFT_BROKER_ADDR": "127.0.0.1:0", "CARTLIFT_DATA_DIR": dir, "CARTLIFT_HTTP_ADDR": "127.0.0.1:0",
		"CARTLIFT_PARTITIONS": "2", "CARTLIFT_FLOWS": flows,
		"CLICKHOUSE_ADDR": chAddr, "CLICKHOUSE_DATABASE": database, "CARTLIFT_ANALYTICS_BATCH_INTERVAL": "200ms",
	}
	n, cfg := startNodeWithAnalytics(t, ctx, env)

	send := eventSender(t, ctx, n.brokers, cfg.TopicEvents)
	for i := 1; i <= 4; i++ {
		c := fmt.Sprintf("c-%d", i)
		send("add-"+c, events.TypeItemAdded, events.ItemAdded{CartRef: events.CartRef{CustomerID: c, CartID: "k", Currency: "EUR"},
			Item: events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 1000 * int64(i)}}, c)
	}
	for i := 5; i <= 6; i++ { // no profile: no consent for the email flow
		c := fmt.Sprintf("c-%d", i)
		send("add-"+c, events.TypeItemAdded, events.ItemAdded{CartRef: events.CartRef{CustomerID: c, CartID: "k", Currency: "USD"},
			Item: events.Item{SKU: "A", Quantity: 1, UnitPriceMinor: 500}}, c)
	}
	waitUntil(t, "four decisions stored", 30*time.Second, func() bool { return n.analytics.stats().Decisions == 4 })
	waitUntil(t, "two suppressions stored", 30*time.Second, func() bool { return n.analytics.stats().Suppressions == 2 })
	for i := 1; i <= 2; i++ {
		c := fmt.Sprintf("c-%d", i)
		send("buy-"+c, events.TypeCheckoutCompleted, events.CheckoutCompleted{CartRef: events.CartRef{CustomerID: c, CartID: "k", Currency: "EUR"},
			OrderID: "o-" + c, TotalMinor: 1000 * int64(i)}, c)
	}
	waitUntil(t, "two outcomes stored", 30*time.Second, func() bool { return n.analytics.stats().Outcomes == 2 })

	// The lag (end offsets minus committed offsets, refreshed every 2 s)
	// is known once the group has committed; it may stay at one per
	// partition, the transaction markers after the processor's last
	// records, which the sink commits past only when a fetch came after
	// them, so it is checked against that bound, not against 0.
	wantMetrics := []string{`cartlift_analytics_rows_total{table="decisions"} 4`, `cartlift_analytics_rows_total{table="outcomes"} 2`,
		`cartlift_analytics_rows_total{table="suppressions"} 2`, `cartlift_decisions_suppressed_total{reason="no_consent"} 2`,
		"cartlift_analytics_clickhouse_up 1"}
	lagLine := regexp.MustCompile(`(?m)^cartlift_analytics_lag (\S+)$`)
	markers := 3 * cfg.Broker.Partitions // decisions, outcomes and suppressions
	var missing []string
	waitUntil(t, "the analytics metrics (the lag is refreshed every 2 s)", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + n.httpLn.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = missing[:0]
		for _, want := range wantMetrics {
			if !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		if m := lagLine.FindSubmatch(body); m == nil {
			missing = append(missing, "cartlift_analytics_lag")
		} else if lag, err := strconv.ParseFloat(string(m[1]), 64); err != nil || lag < 0 || lag > float64(markers) {
			missing = append(missing, fmt.Sprintf("cartlift_analytics_lag 0..%d (got %s)", markers, m[1]))
		}
		return len(missing) == 0
	})

	t.Setenv("CLICKHOUSE_ADDR", chAddr)
	t.Setenv("CLICKHOUSE_DATABASE", database)
	out := filepath.Join(dir, "report.json")
	if err := run(ctx, []string{"report", "--since", "1h", "--format", "json", "--out", out}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep analytics.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	// The period is the hour asked for, ending at the report's time (not a
	// rounded-up second after it).
	if rep.Until.Sub(rep.Since) != time.Hour || rep.Until.After(rep.GeneratedAt) {
		t.Errorf("period %v – %v, generated %v: want one hour ending no later than generated", rep.Since, rep.Until, rep.GeneratedAt)
	}
	// Carts of 10, 20, 30 and 40 EUR; the first two bought back.
	if rep.Funnel.TreatedCarts != 4 || rep.Funnel.RecoveredCarts != 2 || len(rep.Totals) != 1 ||
		rep.Totals[0].RecoveredRevenueMinor != 3000 || rep.Totals[0].RecoveryRate != 0.5 {
		t.Fatalf("report funnel %+v totals %+v", rep.Funnel, rep.Totals)
	}
	// The funnel per step: the email flow's two steps came due and were
	// suppressed for want of consent; the webhook flow's four were decided.
	wantSteps := []analytics.StepFunnel{
		{Flow: "mail", Step: "hello", Due: 2, Suppressed: 2, SuppressedByProcessor: 2, SuppressedBy: map[string]int64{"no_consent": 2}},
		{Flow: "quick", Step: "nudge", Due: 4, SuppressedBy: map[string]int64{}, Decided: 4, Recovered: 2},
	}
	if !reflect.DeepEqual(rep.StepFunnel, wantSteps) || len(rep.NotSent) != 1 || rep.NotSent[0].Reason != "no_consent" ||
		rep.NotSent[0].Stage != "processor" || rep.NotSent[0].Carts != 2 {
		t.Fatalf("step funnel %+v not sent %+v, want %+v and two no_consent carts", rep.StepFunnel, rep.NotSent, wantSteps)
	}
	var table strings.Builder
	if err := run(ctx, []string{"report", "--since", "1h"}, &table, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "no_consent 2") || !strings.Contains(table.String(), "Not sent, by reason") {
		t.Errorf("the terminal report does not show the suppressed steps and their reason:\n%s", table.String())
	}
	var html strings.Builder
	if err := run(ctx, []string{"report", "--since", "1h", "--format", "html", "--flow", "quick"}, &html, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html.String(), `id="chart-funnel"`) || !strings.Contains(html.String(), "quick") {
		t.Fatalf("html report lacks the funnel or the flow")
	}
}

// testClickHouse is CLICKHOUSE_ADDR when set, else a clickhouse-server
// the test starts (make tools installs it).
func testClickHouse(t *testing.T) string {
	t.Helper()
	if addr := os.Getenv("CLICKHOUSE_ADDR"); addr != "" {
		return addr
	}
	ch, err := analytics.StartLocal(context.Background(), t.TempDir())
	if err != nil {
		t.Fatalf("this test needs ClickHouse: set CLICKHOUSE_ADDR or install clickhouse-server (make tools): %v", err)
	}
	t.Cleanup(func() { ch.Stop() })
	return ch.Addr
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startNodeWithAnalytics starts `cartlift run` with the analytics role, as
// the environment env configures them; the test's cleanup stops both (see
// startStoppableNode).
func startNodeWithAnalytics(t *testing.T, ctx context.Context, env map[string]string) (*node, runConfig) {
	t.Helper()
	n, cfg := startStoppableNode(t, ctx, env)
	return n.node, cfg
}

// testDatabase names a ClickHouse database of its own for the test (the
// sink creates it), dropped when the test ends.
func testDatabase(t *testing.T, chAddr, prefix string) string {
	database := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := analytics.Open(ctx, analytics.ClickHouseConfig{Addr: []string{chAddr}, Database: "default"}); err == nil {
			_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+database)
			conn.Close()
		}
	})
	return database
}

// eventSender returns a function that produces one event, enveloped as
// a shop would send it (now, source "shop"), keyed by customer, to topic.
func eventSender(t *testing.T, ctx context.Context, brokers []string, topic string) func(id, typ string, data any, customer string) {
	t.Helper()
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	return func(id, typ string, data any, customer string) {
		t.Helper()
		v, err := events.Encode(id, "shop", typ, time.Now(), "", data)
		if err != nil {
			t.Fatal(err)
		}
		if err := producer.ProduceSync(ctx, &kgo.Record{Key: []byte(customer), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}
