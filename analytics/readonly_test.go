package analytics_test

import (
	"context"
	"testing"
	"time"

	"github.com/cartlift/cartlift/analytics"
)

// TestReportWithAReadOnlyUser: a data team's read-only account (the local
// server's "reader") opens the database and builds the report; it may not
// write.
func TestReportWithAReadOnlyUser(t *testing.T) {
	ctx := context.Background()
	var cfg analytics.ClickHouseConfig
	if server.local != nil {
		_, cfg = migrated(t)
	} else { // CLICKHOUSE_ADDR's server has no "reader": a local one has
		ch, err := analytics.StartLocal(ctx, t.TempDir())
		if err != nil {
			t.Skipf("CLICKHOUSE_ADDR's server has no read-only user and no local server starts: %v", err)
		}
		t.Cleanup(func() { ch.Stop() })
		cfg = analytics.ClickHouseConfig{Addr: []string{ch.Addr}, Database: "readonly_test"}
		conn, err := analytics.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := analytics.Migrate(ctx, conn); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	cfg.Username, cfg.Password = "reader", "reader"
	conn, err := analytics.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("a read-only user cannot open an existing database: %v", err)
	}
	defer conn.Close()
	rep, err := analytics.BuildReport(ctx, conn, analytics.ReportOptions{Since: time.Now().Add(-time.Hour), Until: time.Now()})
	if err != nil {
		t.Fatalf("a read-only user cannot build the report: %v", err)
	}
	if rep.Funnel.AbandonedCarts != 0 {
		t.Fatalf("report of an empty database: %+v", rep.Funnel)
	}
	if err := conn.Exec(ctx, "CREATE TABLE should_fail (x UInt8) ENGINE = Memory"); err == nil {
		t.Fatal("the read-only user could create a table: the test proves nothing")
	}
}
