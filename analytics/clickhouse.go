// Package analytics lands cartlift's decisions and outcomes in ClickHouse
// and measures recovery from them: the schema and its migrations, the sink
// (consumer group cartlift-analytics on cart-decisions and cart-outcomes)
// and the report (recovery rate, recovered revenue, time to recovery and
// the incremental lift over the holdout group).
//
// It depends on events only: it reads the topics' contract, never the
// processor's internals.
package analytics

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ClickHouseConfig says where the analytics tables live.
type ClickHouseConfig struct {
	// Addr are host:port addresses of the native protocol (9000, or 9440
	// with TLS).
	Addr []string
	// Database holds the tables; it is created when missing. Default
	// "cartlift".
	Database string
	Username string
	Password string
	// TLS connects with TLS; InsecureSkipVerify skips the certificate check
	// (self-signed development servers only).
	TLS                bool
	InsecureSkipVerify bool
	// DialTimeout bounds connecting; default 5s.
	DialTimeout time.Duration
}

// DefaultDatabase is the database of the tables unless configured.
const DefaultDatabase = "cartlift"

var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ConfigError is a problem of one field of a ClickHouseConfig.
type ConfigError struct {
	Field string // "Addr" or "Database"
	Err   error
}

// Error names the field and the problem.
func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate reports the first problem of the configuration, a *ConfigError.
func (c ClickHouseConfig) Validate() error {
	if len(c.Addr) == 0 {
		return &ConfigError{"Addr", errors.New("no address")}
	}
	for _, a := range c.Addr {
		if i := strings.LastIndexByte(a, ':'); i <= 0 || i == len(a)-1 {
			return &ConfigError{"Addr", fmt.Errorf("address %q is not host:port", a)}
		} else if p, err := strconv.Atoi(a[i+1:]); err != nil || p <= 0 || p > 65535 {
			return &ConfigError{"Addr", fmt.Errorf("address %q has no valid port", a)}
		}
	}
	if c.Database != "" && !databaseName.MatchString(c.Database) {
		return &ConfigError{"Database", fmt.Errorf("database %q is not a plain identifier", c.Database)}
	}
	return nil
}

func (c ClickHouseConfig) withDefaults() ClickHouseConfig {
	if c.Database == "" {
		c.Database = DefaultDatabase
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	return c
}

func (c ClickHouseConfig) options(database string) *clickhouse.Options {
	o := &clickhouse.Options{
		Addr:        c.Addr,
		Auth:        clickhouse.Auth{Database: database, Username: c.Username, Password: c.Password},
		DialTimeout: c.DialTimeout,
		// Inserts and report queries only; a query that runs longer than
		// this is a bug or an overloaded server.
		ReadTimeout:     5 * time.Minute,
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: time.Hour,
	}
	if c.TLS {
		o.TLS = &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented
	}
	return o
}

// Open connects to ClickHouse and returns a connection whose default
// database is cfg's, creating the database first when it is missing (so a
// read-only user, say for reports, never needs CREATE). It does not
// migrate: see Migrate.
func Open(ctx context.Context, cfg ClickHouseConfig) (driver.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	cfg = cfg.withDefaults()
	conn, err := clickhouse.Open(cfg.options(cfg.Database))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	err = conn.Ping(ctx)
	if err == nil {
		return conn, nil
	}
	conn.Close()
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) || ex.Code != codeUnknownDatabase {
		return nil, fmt.Errorf("clickhouse %v: %w", cfg.Addr, err)
	}
	boot, err := clickhouse.Open(cfg.options(""))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.Database)
	boot.Close()
	if err != nil {
		return nil, fmt.Errorf("clickhouse %v: create database %s: %w", cfg.Addr, cfg.Database, err)
	}
	if conn, err = clickhouse.Open(cfg.options(cfg.Database)); err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse %v: %w", cfg.Addr, err)
	}
	return conn, nil
}

// ClickHouse's error codes: UNKNOWN_DATABASE, and ILLEGAL_COLUMN (which
// 18.16 gives an ADD COLUMN of a column that exists).
const (
	codeUnknownDatabase = 81
	codeIllegalColumn   = 44
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one SQL file of analytics/migrations, NNNN_name.sql.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, path := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, fmt.Errorf("migration %s: the name must be NNNN_name.sql", path)
		}
		body, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: uint32(v), Name: name, Statements: splitStatements(string(body))})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %d_%s and %d_%s share a version", ms[i].Version, ms[i].Name, ms[i-1].Version, ms[i-1].Name)
		}
	}
	return ms, nil
}

// splitStatements splits SQL at semicolons that end a line, after dropping
// whole-line "--" comments. Migrations keep to that shape.
func splitStatements(sql string) []string {
	var b strings.Builder
	for line := range strings.Lines(sql) {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
	}
	var out []string
	for stmt := range strings.SplitSeq(b.String(), ";\n") {
		if s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stmt), ";")); s != "" {
			out = append(out, s)
		}
	}
	return out
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version`

// Migrate applies the migrations not yet recorded in schema_migrations, in
// order, recording each after its statements succeeded, and returns the
// versions it applied. Every statement is idempotent (IF NOT EXISTS, or an
// ADD COLUMN that execMigration skips when the column exists), so a crash
// between applying and recording, or two instances migrating at once, is
// harmless: running Migrate twice applies nothing the second time.
func Migrate(ctx context.Context, conn driver.Conn) ([]uint32, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	if err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("migrate: schema_migrations: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var done []uint32
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		for i, stmt := range m.Statements {
			if err := execMigration(ctx, conn, stmt); err != nil {
				return done, fmt.Errorf("migrate: %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
		if err == nil {
			err = b.Append(m.Version, m.Name, time.Now().UTC())
		}
		if err == nil {
			err = b.Send()
		} else if b != nil {
			_ = b.Abort()
		}
		if err != nil {
			return done, fmt.Errorf("migrate: record %04d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m.Version)
	}
	return done, nil
}

// addColumn matches a migration's ALTER TABLE t ADD COLUMN c: ClickHouse
// 18.16 has no IF NOT EXISTS there (current releases do), so
// execMigration makes it idempotent itself.
var addColumn = regexp.MustCompile(`(?is)^ALTER\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)\s+ADD\s+COLUMN\s+([A-Za-z_][A-Za-z0-9_]*)\s`)

// execMigration runs one statement of a migration. An ADD COLUMN of a
// column the table has is skipped, and one that another instance ran
// meanwhile (the server says the column exists) counts as done, so the
// statement is as idempotent as the IF NOT EXISTS of the others, on
// every release.
func execMigration(ctx context.Context, conn driver.Conn, stmt string) error {
	m := addColumn.FindStringSubmatch(stmt)
	if m == nil {
		return conn.Exec(ctx, stmt)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?",
		m[1], m[2]).Scan(&n); err != nil {
		return fmt.Errorf("does %s have %s: %w", m[1], m[2], err)
	}
	if n > 0 {
		return nil
	}
	err := conn.Exec(ctx, stmt)
	var ex *clickhouse.Exception
	if errors.As(err, &ex) && ex.Code == codeIllegalColumn && strings.Contains(ex.Message, "already exists") {
		return nil
	}
	return err
}
