//go:build chdb

package analytics_test

// chDB (a current ClickHouse release as an in-process library, libchdb.so)
// behind clickhouse-go's driver.Conn, so that the code that runs cartlift's
// SQL on a server (Migrate, BuildReport, the sink's inserts and erasures)
// runs unchanged on it. chDB speaks no network protocol: statements go to
// the library as text, arguments bound into it client-side as
// clickhouse-go binds them for the native protocol, and results come back
// as JSONCompact, with their column types, scanned as strictly as
// clickhouse-go scans (an Int64 column into *int64, never into *uint64).
//
// The library is loaded when the test binary starts, from CHDB_LIB_PATH
// (make test sets it); without it the binary fails at once.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	chdbpurego "github.com/chdb-io/chdb-go/chdb-purego"
)

// chdbEngine is the process's one chDB session (the library allows one at
// a time): statements run one at a time, each in the database of the
// connection that sends it.
var chdbEngine struct {
	sync.Mutex
	conn    chdbpurego.ChdbConn
	dir     string
	current string // the session's current database
	err     error
	once    sync.Once
}

// startChdb opens the session on a temporary directory, in UTC (as the
// test server of deploy/clickhouse/config.xml).
func startChdb() error {
	chdbEngine.once.Do(func() {
		dir, err := os.MkdirTemp("", "cartlift-chdb-")
		if err != nil {
			chdbEngine.err = err
			return
		}
		chdbEngine.dir = dir
		c, err := chdbpurego.NewConnection(1, []string{"--path=" + dir})
		if err != nil {
			chdbEngine.err = fmt.Errorf("chdb: %w", err)
			return
		}
		chdbEngine.conn = c
		if _, err := c.Query("SET session_timezone = 'UTC'", "TabSeparated"); err != nil {
			chdbEngine.err = fmt.Errorf("chdb: %w", err)
		}
	})
	return chdbEngine.err
}

// stopChdb closes the session and removes its directory.
func stopChdb() {
	if chdbEngine.conn != nil {
		chdbEngine.conn.Close()
	}
	if chdbEngine.dir != "" {
		os.RemoveAll(chdbEngine.dir)
	}
}

// chdbRun runs one statement in database db and returns its output in
// format.
func chdbRun(db, sql, format string) ([]byte, error) {
	if err := startChdb(); err != nil {
		return nil, err
	}
	chdbEngine.Lock()
	defer chdbEngine.Unlock()
	if db != chdbEngine.current {
		if _, err := chdbEngine.conn.Query("USE "+db, "TabSeparated"); err != nil {
			return nil, fmt.Errorf("chdb: USE %s: %w", db, err)
		}
		chdbEngine.current = db
	}
	r, err := chdbEngine.conn.Query(sql, format)
	if err != nil {
		return nil, fmt.Errorf("chdb: %w", err)
	}
	if r == nil {
		return nil, nil
	}
	defer r.Free()
	if err := r.Error(); err != nil {
		return nil, fmt.Errorf("chdb: %w", err)
	}
	return bytes.Clone(r.Buf()), nil
}

// openChdb returns a connection to a fresh database of chDB, dropped at
// cleanup.
func openChdb(cleanup func(func()), db string) (*chdbConn, error) {
	if _, err := chdbRun("default", "CREATE DATABASE IF NOT EXISTS "+db, "TabSeparated"); err != nil {
		return nil, err
	}
	cleanup(func() { _, _ = chdbRun("default", "DROP DATABASE IF EXISTS "+db, "TabSeparated") })
	return &chdbConn{db: db}, nil
}

// chdbConn is a driver.Conn on one database of chDB. The methods cartlift
// uses are implemented; the others (the embedded nil Conn) panic.
type chdbConn struct {
	driver.Conn
	db string
}

func (c *chdbConn) Ping(context.Context) error {
	_, err := chdbRun(c.db, "SELECT 1", "TabSeparated")
	return err
}

func (c *chdbConn) Close() error { return nil }

func (c *chdbConn) ServerVersion() (*driver.ServerVersion, error) {
	out, err := chdbRun(c.db, "SELECT version()", "TabSeparated")
	if err != nil {
		return nil, err
	}
	v := &driver.ServerVersion{Name: "chDB"}
	parts := strings.Split(strings.TrimSpace(string(out)), ".")
	for i, dst := range []*uint64{&v.Version.Major, &v.Version.Minor, &v.Version.Patch} {
		if i < len(parts) {
			*dst, _ = strconv.ParseUint(parts[i], 10, 64)
		}
	}
	return v, nil
}

func (c *chdbConn) Exec(_ context.Context, query string, args ...any) error {
	q, err := bindPositional(query, args)
	if err != nil {
		return err
	}
	_, err = chdbRun(c.db, q, "TabSeparated")
	return err
}

func (c *chdbConn) Query(_ context.Context, query string, args ...any) (driver.Rows, error) {
	q, err := bindPositional(query, args)
	if err != nil {
		return nil, err
	}
	out, err := chdbRun(c.db, q, "JSONCompact")
	if err != nil {
		return nil, err
	}
	rows := &chdbRows{i: -1}
	if len(bytes.TrimSpace(out)) == 0 {
		return rows, nil
	}
	var res struct {
		Meta []struct{ Name, Type string }
		Data [][]json.RawMessage
	}
	d := json.NewDecoder(bytes.NewReader(out))
	d.UseNumber()
	if err := d.Decode(&res); err != nil {
		return nil, fmt.Errorf("chdb: decode the result: %w", err)
	}
	for _, m := range res.Meta {
		t, err := scanType(m.Type)
		if err != nil {
			return nil, fmt.Errorf("chdb: column %s: %w", m.Name, err)
		}
		rows.cols = append(rows.cols, chdbColumn{m.Name, m.Type, t})
	}
	rows.data = res.Data
	return rows, nil
}

func (c *chdbConn) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	rows, err := c.Query(ctx, query, args...)
	return &chdbRow{rows: rows, err: err}
}

func (c *chdbConn) PrepareBatch(_ context.Context, query string, _ ...driver.PrepareBatchOption) (driver.Batch, error) {
	open, close := strings.IndexByte(query, '('), strings.LastIndexByte(query, ')')
	if !strings.HasPrefix(query, "INSERT INTO ") || open < 0 || close < open {
		return nil, fmt.Errorf("chdb: batch %q: want INSERT INTO table (columns)", query)
	}
	cols := strings.Split(query[open+1:close], ",")
	return &chdbBatch{conn: c, query: query[:close+1], cols: make([][]any, len(cols))}, nil
}

// chdbColumn is a result column: its name, ClickHouse type and the Go type
// clickhouse-go scans it into.
type chdbColumn struct {
	name, typ string
	scan      reflect.Type
}

func (c chdbColumn) Name() string             { return c.name }
func (c chdbColumn) Nullable() bool           { return strings.HasPrefix(c.typ, "Nullable(") }
func (c chdbColumn) ScanType() reflect.Type   { return c.scan }
func (c chdbColumn) DatabaseTypeName() string { return c.typ }

// scanType is the Go type of a ClickHouse type, as clickhouse-go's.
func scanType(typ string) (reflect.Type, error) {
	if inner, ok := unwrap(typ, "Nullable("); ok {
		t, err := scanType(inner)
		if err != nil {
			return nil, err
		}
		return reflect.PointerTo(t), nil
	}
	if inner, ok := unwrap(typ, "Array("); ok {
		t, err := scanType(inner)
		if err != nil {
			return nil, err
		}
		return reflect.SliceOf(t), nil
	}
	if strings.HasPrefix(typ, "DateTime") || typ == "Date" || typ == "Date32" {
		return reflect.TypeFor[time.Time](), nil
	}
	if strings.HasPrefix(typ, "FixedString(") {
		return reflect.TypeFor[string](), nil
	}
	if t, ok := map[string]reflect.Type{
		"String": reflect.TypeFor[string](), "Bool": reflect.TypeFor[bool](), "Nothing": reflect.TypeFor[any](),
		"Int8": reflect.TypeFor[int8](), "Int16": reflect.TypeFor[int16](), "Int32": reflect.TypeFor[int32](), "Int64": reflect.TypeFor[int64](),
		"UInt8": reflect.TypeFor[uint8](), "UInt16": reflect.TypeFor[uint16](), "UInt32": reflect.TypeFor[uint32](), "UInt64": reflect.TypeFor[uint64](),
		"Float32": reflect.TypeFor[float32](), "Float64": reflect.TypeFor[float64](),
	}[typ]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("type %s not supported by the test's chDB adapter", typ)
}

func unwrap(typ, prefix string) (string, bool) {
	if strings.HasPrefix(typ, prefix) && strings.HasSuffix(typ, ")") {
		return typ[len(prefix) : len(typ)-1], true
	}
	return "", false
}

// chdbRows are a query's decoded result.
type chdbRows struct {
	driver.Rows
	cols []chdbColumn
	data [][]json.RawMessage
	i    int
	err  error
}

func (r *chdbRows) Next() bool   { r.i++; return r.i < len(r.data) }
func (r *chdbRows) Close() error { return nil }
func (r *chdbRows) Err() error   { return r.err }
func (r *chdbRows) HasData() bool {
	return len(r.data) > 0
}

func (r *chdbRows) Columns() []string {
	names := make([]string, len(r.cols))
	for i, c := range r.cols {
		names[i] = c.name
	}
	return names
}

func (r *chdbRows) ColumnTypes() []driver.ColumnType {
	ts := make([]driver.ColumnType, len(r.cols))
	for i, c := range r.cols {
		ts[i] = c
	}
	return ts
}

// Scan sets each destination, which must be a pointer to the column's
// scan type, as clickhouse-go requires.
func (r *chdbRows) Scan(dest ...any) error {
	if r.i < 0 || r.i >= len(r.data) {
		return errors.New("chdb: Scan without a row")
	}
	row := r.data[r.i]
	if len(dest) != len(r.cols) {
		return fmt.Errorf("chdb: %d destinations for %d columns", len(dest), len(r.cols))
	}
	for i, d := range dest {
		v := reflect.ValueOf(d)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Type() != r.cols[i].scan {
			return fmt.Errorf("chdb: column %s (%s): cannot scan into %T, want *%s", r.cols[i].name, r.cols[i].typ, d, r.cols[i].scan)
		}
		if err := decodeValue(row[i], r.cols[i].typ, v.Elem()); err != nil {
			return fmt.Errorf("chdb: column %s (%s): %w", r.cols[i].name, r.cols[i].typ, err)
		}
	}
	return nil
}

// decodeValue sets dst, of typ's scan type, from its JSONCompact value.
func decodeValue(raw json.RawMessage, typ string, dst reflect.Value) error {
	if inner, ok := unwrap(typ, "Nullable("); ok {
		if string(raw) == "null" {
			dst.SetZero()
			return nil
		}
		p := reflect.New(dst.Type().Elem())
		if err := decodeValue(raw, inner, p.Elem()); err != nil {
			return err
		}
		dst.Set(p)
		return nil
	}
	if inner, ok := unwrap(typ, "Array("); ok {
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return err
		}
		s := reflect.MakeSlice(dst.Type(), len(elems), len(elems))
		for i, e := range elems {
			if err := decodeValue(e, inner, s.Index(i)); err != nil {
				return err
			}
		}
		dst.Set(s)
		return nil
	}
	// Numbers come as JSON numbers or, for 64-bit integers, as strings.
	text := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return err
		}
	}
	switch dst.Kind() {
	case reflect.String:
		dst.SetString(text)
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(text, 10, dst.Type().Bits())
		if err != nil {
			return err
		}
		dst.SetInt(n)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(text, 10, dst.Type().Bits())
		if err != nil {
			return err
		}
		dst.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(text, dst.Type().Bits())
		if err != nil {
			return err
		}
		dst.SetFloat(f)
	case reflect.Bool:
		dst.SetBool(text == "true")
	case reflect.Struct: // time.Time: the session is in UTC
		layout := "2006-01-02 15:04:05"
		if typ == "Date" || typ == "Date32" {
			layout = "2006-01-02"
		}
		t, err := time.ParseInLocation(layout, text, time.UTC)
		if err != nil {
			return err
		}
		dst.Set(reflect.ValueOf(t))
	default:
		return fmt.Errorf("cannot decode %s", raw)
	}
	return nil
}

func (r *chdbRows) ScanStruct(any) error { return errors.New("chdb: ScanStruct not supported") }

// chdbRow is QueryRow's result.
type chdbRow struct {
	rows driver.Rows
	err  error
}

func (r *chdbRow) Err() error { return r.err }

func (r *chdbRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	if !r.rows.Next() {
		return errors.New("chdb: no rows in result set")
	}
	return r.rows.Scan(dest...)
}

func (r *chdbRow) ScanStruct(any) error { return errors.New("chdb: ScanStruct not supported") }

// chdbBatch collects an INSERT's rows, by column, and sends them as one
// INSERT … VALUES statement.
type chdbBatch struct {
	driver.Batch
	conn  *chdbConn
	query string
	cols  [][]any
	sent  bool
}

func (b *chdbBatch) Append(v ...any) error {
	if len(v) != len(b.cols) {
		return fmt.Errorf("chdb: %d values for %d columns", len(v), len(b.cols))
	}
	for i, x := range v {
		b.cols[i] = append(b.cols[i], x)
	}
	return nil
}

func (b *chdbBatch) Column(i int) driver.BatchColumn { return chdbBatchColumn{b, i} }
func (b *chdbBatch) Abort() error                    { b.sent = true; return nil }
func (b *chdbBatch) Close() error                    { return nil }
func (b *chdbBatch) IsSent() bool                    { return b.sent }
func (b *chdbBatch) Flush() error                    { return nil }
func (b *chdbBatch) Rows() int                       { return len(b.cols[0]) }
func (b *chdbBatch) Columns() []column.Interface     { return nil }

func (b *chdbBatch) Send() error {
	if b.sent {
		return errors.New("chdb: batch already sent")
	}
	b.sent = true
	n := len(b.cols[0])
	var sb strings.Builder
	sb.WriteString(b.query + " VALUES ")
	for r := range n {
		if r > 0 {
			sb.WriteString(", ")
		}
		sb.WriteByte('(')
		for c := range b.cols {
			if len(b.cols[c]) != n {
				return fmt.Errorf("chdb: column %d has %d values, column 0 %d", c, len(b.cols[c]), n)
			}
			if c > 0 {
				sb.WriteString(", ")
			}
			lit, err := literal(b.cols[c][r])
			if err != nil {
				return err
			}
			sb.WriteString(lit)
		}
		sb.WriteByte(')')
	}
	if n == 0 {
		return nil
	}
	_, err := chdbRun(b.conn.db, sb.String(), "TabSeparated")
	return err
}

// chdbBatchColumn appends a whole column (a slice) to a batch.
type chdbBatchColumn struct {
	b *chdbBatch
	i int
}

func (c chdbBatchColumn) Append(v any) error {
	s := reflect.ValueOf(v)
	if s.Kind() != reflect.Slice {
		return fmt.Errorf("chdb: column append of %T, want a slice", v)
	}
	for i := range s.Len() {
		c.b.cols[c.i] = append(c.b.cols[c.i], s.Index(i).Interface())
	}
	return nil
}

func (c chdbBatchColumn) AppendRow(v any) error {
	c.b.cols[c.i] = append(c.b.cols[c.i], v)
	return nil
}

// literal is v as a SQL literal, as clickhouse-go binds it, a time in UTC
// with the time zone spelled out.
func literal(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'", nil
	case time.Time:
		return v.UTC().Format("toDateTime('2006-01-02 15:04:05', 'UTC')"), nil
	case bool:
		if v {
			return "1", nil
		}
		return "0", nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v), nil
	case float32, float64:
		return fmt.Sprint(v), nil
	}
	if s := reflect.ValueOf(v); s.Kind() == reflect.Slice {
		elems := make([]string, s.Len())
		for i := range elems {
			lit, err := literal(s.Index(i).Interface())
			if err != nil {
				return "", err
			}
			elems[i] = lit
		}
		return "[" + strings.Join(elems, ", ") + "]", nil
	}
	return "", fmt.Errorf("chdb: no literal for %T", v)
}

// bindPositional replaces each ? outside quotes with its argument's
// literal.
func bindPositional(query string, args []any) (string, error) {
	var sb strings.Builder
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		ch := query[i]
		switch {
		case quote != 0:
			if ch == '\\' && i+1 < len(query) {
				sb.WriteByte(ch)
				i++
				ch = query[i]
			} else if ch == quote {
				quote = 0
			}
		case ch == '\'' || ch == '"' || ch == '`':
			quote = ch
		case ch == '?':
			if n >= len(args) {
				return "", fmt.Errorf("chdb: more ? than the %d arguments", len(args))
			}
			lit, err := literal(args[n])
			if err != nil {
				return "", err
			}
			sb.WriteString(lit)
			n++
			continue
		}
		sb.WriteByte(ch)
	}
	if n != len(args) {
		return "", fmt.Errorf("chdb: %d arguments for %d ?", len(args), n)
	}
	return sb.String(), nil
}
