package analytics_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	code := run(m)
	for _, f := range afterTests {
		f()
	}
	os.Exit(code)
}

// afterTests run when every test has ended (the chDB session of the
// compatibility test closes there).
var afterTests []func()

func run(m *testing.M) int {
	if addr := os.Getenv("CLICKHOUSE_ADDR"); addr != "" {
		server.addr = addr
		return m.Run()
	}
	// make test keeps the server's data and logs in the build directory
	// (CARTLIFT_CLICKHOUSE_DIR) for a look after a failure; a bare go test
	// uses a temporary directory.
	dir := os.Getenv("CARTLIFT_CLICKHOUSE_DIR")
	if dir != "" {
		dir = filepath.Join(dir, "analytics-test")
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else {
		tmp, err := os.MkdirTemp("", "cartlift-clickhouse-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
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

// stoppable is a ClickHouse a test can take down and bring back.
type stoppable interface {
	Stop() error
	Start(context.Context) error
}

// stoppableServer is a ClickHouse for a test that stops it: a
// clickhouse-server of the test's own when the machine has the binary,
// else (CLICKHOUSE_ADDR names a server elsewhere) a TCP proxy in front of
// that server, whose Stop refuses new connections and cuts the open ones.
func stoppableServer(t *testing.T) (analytics.ClickHouseConfig, stoppable) {
	t.Helper()
	if _, err := analytics.FindServer(); err == nil || server.local != nil {
		ch, err := analytics.StartLocal(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ch.Stop() })
		return analytics.ClickHouseConfig{Addr: []string{ch.Addr}}, ch
	}
	p := &proxy{target: server.addr, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.Stop() })
	cfg := chConfig(t)
	cfg.Addr = []string{p.addr}
	return cfg, p
}

// migratedStoppable is a migrated database on a stoppableServer.
func migratedStoppable(t *testing.T) (driver.Conn, stoppable) {
	t.Helper()
	cfg, ch := stoppableServer(t)
	conn, err := analytics.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := analytics.Migrate(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	return conn, ch
}

// proxy forwards TCP connections to target while started.
type proxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// Stop closes the listener and every forwarded connection.
func (p *proxy) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	return nil
}

// Start listens again on the same address.
func (p *proxy) Start(context.Context) error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.serve(ln)
	return nil
}
