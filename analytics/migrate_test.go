package analytics_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cartlift/cartlift/analytics"
)

func TestMigrateTwiceAppliesOnce(t *testing.T) {
	ctx := context.Background()
	cfg := chConfig(t)
	conn, err := analytics.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ms, err := analytics.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	first, err := analytics.Migrate(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var want []uint32
	for _, m := range ms {
		want = append(want, m.Version)
	}
	if !slices.Equal(first, want) {
		t.Fatalf("first run applied %v, want %v", first, want)
	}
	second, err := analytics.Migrate(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 0 {
		t.Fatalf("second run applied %v, want nothing", second)
	}
	var recorded uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM schema_migrations").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if int(recorded) != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want %d", recorded, len(ms))
	}
	for _, table := range []string{"decisions", "outcomes", "action_results"} {
		var engine string
		if err := conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?", cfg.Database, table).Scan(&engine); err != nil {
			t.Fatalf("table %s: %v", table, err)
		}
		if engine != "ReplacingMergeTree" {
			t.Fatalf("table %s engine %s, want ReplacingMergeTree", table, engine)
		}
	}
	// A crash between applying and recording: the statements run again.
	if err := conn.Exec(ctx, "TRUNCATE TABLE schema_migrations"); err != nil {
		t.Fatal(err)
	}
	again, err := analytics.Migrate(ctx, conn)
	if err != nil {
		t.Fatalf("re-applying recorded-lost migrations: %v", err)
	}
	if !slices.Equal(again, want) {
		t.Fatalf("after losing the records applied %v, want %v", again, want)
	}
}

func TestConfigValidateNamesTheProblem(t *testing.T) {
	for _, c := range []struct {
		cfg  analytics.ClickHouseConfig
		want string
	}{
		{analytics.ClickHouseConfig{}, "no address"},
		{analytics.ClickHouseConfig{Addr: []string{"localhost"}}, "not host:port"},
		{analytics.ClickHouseConfig{Addr: []string{"localhost:x"}}, "no valid port"},
		{analytics.ClickHouseConfig{Addr: []string{"localhost:9000"}, Database: "a;DROP"}, "plain identifier"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
	if err := (analytics.ClickHouseConfig{Addr: []string{"127.0.0.1:9000"}, Database: "cartlift"}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
