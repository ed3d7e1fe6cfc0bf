package analytics_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cartlift/cartlift/analytics"
)

// server is the ClickHouse server of the tests: CLICKHOUSE_ADDR when set,
// else a clickhouse-server that TestMain starts (local is then non-nil).
var server struct {
	addr  string
	local *analytics.LocalServer
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if addr := os.Getenv("CLICKHOUSE_ADDR"); addr != "" {
		server.addr = addr
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "cartlift-clickhouse-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := analytics.StartLocal(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "analytics tests need ClickHouse:", err)
		return 1
	}
	defer s.Stop()
	server.addr, server.local = s.Addr, s
	return m.Run()
}

// chConfig is the configuration of a fresh database of its own for the
// test, dropped when the test ends.
func chConfig(t testing.TB) analytics.ClickHouseConfig {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	cfg := analytics.ClickHouseConfig{Addr: []string{server.addr}, Database: name + "_" + hex.EncodeToString(b[:])}
	t.Cleanup(func() {
		conn, err := analytics.Open(context.Background(), analytics.ClickHouseConfig{Addr: cfg.Addr, Database: "default"})
		if err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
			conn.Close()
		}
	})
	return cfg
}

// migrated opens a fresh, migrated database.
func migrated(t testing.TB) (driver.Conn, analytics.ClickHouseConfig) {
	t.Helper()
	cfg := chConfig(t)
	conn, err := analytics.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := analytics.Migrate(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	return conn, cfg
}
