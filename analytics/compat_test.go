//go:build chdb

package analytics_test

// The compatibility test: every SQL statement cartlift ships runs on two
// ClickHouse releases, the server of the other tests (ClickHouse 18.16,
// over the native protocol) and chDB (ClickHouse 26.7 in-process, see
// chdb_test.go), on identical fixtures, and the answers must be equal
// between the two and equal to the answers known from the fixtures: the
// migrations (twice), every query of the report, the README's queries, the
// dashboard's panels and the erasure mutations. make test builds it with
// -tags chdb and CHDB_LIB_PATH (deploy/clickhouse/install-chdb.sh).

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cartlift/cartlift/analytics"
)

func init() { afterTests = append(afterTests, stopChdb) }

// engine is one of the two ClickHouse releases, with a database of the
// test's own.
type engine struct {
	name string
	conn driver.Conn
}

// bothEngines returns a fresh database of the same name on the test server
// and on chDB, and checks that they are two different releases, the
// server the older: else the comparison would prove nothing.
func bothEngines(t *testing.T) []engine {
	t.Helper()
	ctx := context.Background()
	cfg := chConfig(t)
	server, err := analytics.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	chdb, err := openChdb(t.Cleanup, cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	var es []engine
	var majors []uint64
	for _, c := range []driver.Conn{server, chdb} {
		v, err := c.ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		kind := "server (native protocol)"
		if c == driver.Conn(chdb) {
			kind = "chDB (in-process)"
		}
		es = append(es, engine{fmt.Sprintf("ClickHouse %d.%d %s", v.Version.Major, v.Version.Minor, kind), c})
		majors = append(majors, v.Version.Major)
	}
	if majors[0] >= majors[1] {
		t.Fatalf("comparing %s with %s: want an older server than chDB", es[0].name, es[1].name)
	}
	return es
}

// migrateBoth migrates both engines' databases.
func migrateBoth(t *testing.T, es []engine) {
	t.Helper()
	for _, e := range es {
		if _, err := analytics.Migrate(context.Background(), e.conn); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
	}
}

// answer is a query's result as text: the column types and, per row, each
// value rendered the same way whichever engine answered.
type answer struct {
	types []string
	rows  [][]string
}

func (a answer) String() string {
	var b strings.Builder
	b.WriteString(strings.Join(a.types, " | "))
	for _, r := range a.rows {
		b.WriteString("\n" + strings.Join(r, " | "))
	}
	return b.String()
}

// queryAnswer runs a query and renders its result.
func queryAnswer(ctx context.Context, conn driver.Conn, sql string, args ...any) (answer, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return answer{}, err
	}
	defer rows.Close()
	var a answer
	cols := rows.ColumnTypes()
	for _, c := range cols {
		a.types = append(a.types, c.DatabaseTypeName())
	}
	for rows.Next() {
		dest := make([]any, len(cols))
		for i, c := range cols {
			dest[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return answer{}, err
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			row[i] = render(reflect.ValueOf(d).Elem(), a.types[i])
		}
		a.rows = append(a.rows, row)
	}
	return a, rows.Err()
}

// render is a scanned value as text: numbers in Go's shortest form, times
// in UTC, arrays in brackets, NULL for a null.
func render(v reflect.Value, typ string) string {
	if inner, ok := unwrap(typ, "Nullable("); ok {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return "NULL"
			}
			v = v.Elem()
		}
		typ = inner
	}
	if inner, ok := unwrap(typ, "Array("); ok {
		elems := make([]string, v.Len())
		for i := range elems {
			elems[i] = render(v.Index(i), inner)
		}
		return "[" + strings.Join(elems, " ") + "]"
	}
	switch x := v.Interface().(type) {
	case time.Time:
		if typ == "Date" || typ == "Date32" {
			return x.UTC().Format("2006-01-02")
		}
		return x.UTC().Format("2006-01-02 15:04:05")
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	}
	return fmt.Sprint(v.Interface())
}

// differences says how answer b differs from answer a: column types, row
// count, values; nothing when they are equal.
func differences(a, b answer) []string {
	var d []string
	if !slices.Equal(a.types, b.types) {
		d = append(d, fmt.Sprintf("column types %v ≠ %v", a.types, b.types))
	}
	if len(a.rows) != len(b.rows) {
		d = append(d, fmt.Sprintf("%d rows ≠ %d rows", len(a.rows), len(b.rows)))
	}
	for i := range min(len(a.rows), len(b.rows)) {
		if !slices.Equal(a.rows[i], b.rows[i]) {
			d = append(d, fmt.Sprintf("row %d: %v ≠ %v", i+1, a.rows[i], b.rows[i]))
		}
	}
	return d
}

// compareOnBoth runs a statement on each engine and returns the first
// engine's answer and how the second's differs from it. A statement that
// fails on either engine is an error.
func compareOnBoth(ctx context.Context, es []engine, sql string, args ...any) (answer, []string, error) {
	var as []answer
	for _, e := range es {
		a, err := queryAnswer(ctx, e.conn, sql, args...)
		if err != nil {
			return answer{}, nil, fmt.Errorf("%s: %w\n%s", e.name, err, sql)
		}
		as = append(as, a)
	}
	return as[0], differences(as[0], as[1]), nil
}

// sameOnBoth is compareOnBoth that fails the test on an error or a
// difference, naming the engines and the statement.
func sameOnBoth(t *testing.T, es []engine, sql string, args ...any) answer {
	t.Helper()
	a, diff, err := compareOnBoth(context.Background(), es, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Errorf("%s and %s answer differently:\n  %s\n%s", es[0].name, es[1].name, strings.Join(diff, "\n  "), sql)
	}
	return a
}

// wantAnswer checks the rows of an answer against the known ones, each row
// its values joined by " | ".
func wantAnswer(t *testing.T, what string, a answer, want ...string) {
	t.Helper()
	var got []string
	for _, r := range a.rows {
		got = append(got, strings.Join(r, " | "))
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// TestCompatComparisonDetectsDifference is the comparison helper's own
// test, on a statement that is not portable: round() breaks ties half away
// from zero on 18.16 and half to even on current releases, so 1/32 to four
// places is 0.0313 on one and 0.0312 on the other. The helper must report
// it (and report nothing for the same statement without round).
func TestCompatComparisonDetectsDifference(t *testing.T) {
	es := bothEngines(t)
	ctx := context.Background()
	_, diff, err := compareOnBoth(ctx, es, "SELECT round(1 / 32, 4) AS rate, round(2.5) AS half")
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) != 1 || !strings.Contains(diff[0], "[0.0313 3] ≠ [0.0312 2]") {
		t.Errorf("round's differing ties were reported as %q, want one row [0.0313 3] ≠ [0.0312 2]", diff)
	}
	// A differing column type (say Nullable where the other has none) is
	// one too, with equal values.
	diff = differences(answer{[]string{"UInt64"}, [][]string{{"0"}}}, answer{[]string{"Nullable(UInt64)"}, [][]string{{"0"}}})
	if len(diff) != 1 || !strings.Contains(diff[0], "column types [UInt64] ≠ [Nullable(UInt64)]") {
		t.Errorf("a differing column type was reported as %q", diff)
	}
	if diff := differences(answer{[]string{"UInt8"}, [][]string{{"1"}}}, answer{[]string{"UInt8"}, nil}); len(diff) != 1 {
		t.Errorf("a missing row was reported as %q", diff)
	}
	a, diff, err := compareOnBoth(ctx, es, "SELECT 1 / 32 AS rate, toInt64(2.5) AS half")
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) != 0 {
		t.Errorf("a portable statement reported as different: %q", diff)
	}
	wantAnswer(t, "1/32", a, "0.03125 | 2")
}

// Every migration, applied by Migrate and then once more statement by
// statement (every one is IF NOT EXISTS, or an ADD COLUMN that Migrate
// skips when the column exists), gives the same tables.
func TestCompatMigrations(t *testing.T) {
	es := bothEngines(t)
	ctx := context.Background()
	ms, err := analytics.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []uint32
	for _, m := range ms {
		all = append(all, m.Version)
	}
	for _, e := range es {
		for run, want := range [][]uint32{all, nil} {
			done, err := analytics.Migrate(ctx, e.conn)
			if err != nil {
				t.Fatalf("%s: migrate run %d: %v", e.name, run+1, err)
			}
			if !slices.Equal(done, want) {
				t.Errorf("%s: migrate run %d applied %v, want %v", e.name, run+1, done, want)
			}
		}
		for _, m := range ms {
			for i, stmt := range m.Statements {
				if err := analytics.ExecMigrationForTest(ctx, e.conn, stmt); err != nil {
					t.Errorf("%s: %04d_%s statement %d again: %v", e.name, m.Version, m.Name, i+1, err)
				}
			}
		}
	}
	a := sameOnBoth(t, es, "SELECT version, name FROM schema_migrations ORDER BY version")
	wantAnswer(t, "schema_migrations", a, "1 | tables", "2 | suppressions", "3 | variants", "4 | shadow_decisions")
	a = sameOnBoth(t, es, "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name")
	wantAnswer(t, "tables", a,
		"action_results | ReplacingMergeTree", "decisions | ReplacingMergeTree", "erasures | ReplacingMergeTree",
		"outcomes | ReplacingMergeTree", "schema_migrations | ReplacingMergeTree", "shadow_decisions | ReplacingMergeTree",
		"suppressions | ReplacingMergeTree")
	a = sameOnBoth(t, es, `SELECT table, type, count() FROM system.columns WHERE database = currentDatabase()
		GROUP BY table, type ORDER BY table, type`)
	wantAnswer(t, "column types", a,
		"action_results | DateTime | 2", "action_results | Int64 | 1", "action_results | String | 7", "action_results | UInt8 | 1",
		"decisions | DateTime | 5", "decisions | Int64 | 6", "decisions | String | 14", "decisions | UInt16 | 1", "decisions | UInt8 | 2",
		"erasures | DateTime | 2", "erasures | UInt64 | 1",
		"outcomes | DateTime | 2", "outcomes | Int64 | 2", "outcomes | String | 12", "outcomes | UInt16 | 1", "outcomes | UInt8 | 1",
		"schema_migrations | DateTime | 1", "schema_migrations | String | 1", "schema_migrations | UInt32 | 1",
		"shadow_decisions | DateTime | 6", "shadow_decisions | Int64 | 6", "shadow_decisions | String | 15", "shadow_decisions | UInt16 | 1", "shadow_decisions | UInt8 | 2",
		"suppressions | DateTime | 4", "suppressions | Int64 | 1", "suppressions | String | 15", "suppressions | UInt16 | 1", "suppressions | UInt8 | 1")
	// The column order is the sink's insert order's business; compare it
	// whole.
	sameOnBoth(t, es, "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() ORDER BY table, name")
}

// sameReports builds the report on each engine and checks they are equal.
func sameReports(t *testing.T, es []engine, opt analytics.ReportOptions) *analytics.Report {
	t.Helper()
	var rs []*analytics.Report
	for _, e := range es {
		r, err := analytics.BuildReport(context.Background(), e.conn, opt)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		r.GeneratedAt = time.Time{}
		rs = append(rs, r)
	}
	if !reflect.DeepEqual(rs[0], rs[1]) {
		t.Errorf("report (flow %q) differs:\n%s: %s\n%s: %s", opt.Flow, es[0].name, toJSON(rs[0]), es[1].name, toJSON(rs[1]))
	}
	return rs[0]
}

// Every query of the report, on an empty database and on the known
// dataset inserted twice (a replay), all flows and each flow.
func TestCompatReport(t *testing.T) {
	es := bothEngines(t)
	migrateBoth(t, es)
	period := analytics.ReportOptions{Since: periodStart, Until: periodEnd}
	r := sameReports(t, es, period)
	if len(r.Totals)+len(r.Steps)+len(r.Detail)+len(r.StepFunnel)+len(r.NotSent)+len(r.Lift)+len(r.DailyRevenue) != 0 || r.Funnel != (analytics.Funnel{}) ||
		!reflect.DeepEqual(bucketCounts(r.TimeToRecovery), []int64{0, 0, 0, 0, 0, 0}) {
		t.Errorf("empty database gave %s", toJSON(r))
	}
	for _, e := range es {
		ds := knownDataset()
		ds.insert(t, e.conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
		ds.insert(t, e.conn, time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC))
	}
	r = sameReports(t, es, period)
	checkKnownReport(t, r)

	browse := period
	browse.Flow = "browse"
	r = sameReports(t, es, browse)
	if want := (analytics.Funnel{AbandonedCarts: 3, TreatedCarts: 3, SentCarts: 2, RecoveredCarts: 2}); r.Funnel != want || len(r.Lift) != 0 {
		t.Errorf("browse: funnel %+v lift %s, want %+v and no lift", r.Funnel, toJSON(r.Lift), want)
	}
	if len(r.StepFunnel) != 1 || r.StepFunnel[0].Due != 4 || r.StepFunnel[0].Deferred != 1 || len(r.NotSent) != 2 {
		t.Errorf("browse: step funnel %s not sent %s, want nudge due 4, deferred 1, two reasons", toJSON(r.StepFunnel), toJSON(r.NotSent))
	}
	abandoned := period
	abandoned.Flow = "abandoned"
	r = sameReports(t, es, abandoned)
	if len(r.Lift) != 1 || r.Lift[0].TreatedCarts != 6 || r.Lift[0].ControlConverted != 1 {
		t.Errorf("abandoned: lift %s", toJSON(r.Lift))
	}
	// The period's bounds rounded up to whole seconds: D16 alone.
	r = sameReports(t, es, analytics.ReportOptions{Since: time.Date(2024, 2, 29, 23, 59, 58, 500_000_000, time.UTC), Until: periodStart})
	if r.Funnel.AbandonedCarts != 1 || len(r.Steps) != 1 || r.Steps[0].Sent != 1 {
		t.Errorf("D16 alone expected: %s", toJSON(r))
	}
	// quantileExact's rule, which the medians rely on, on both.
	a := sameOnBoth(t, es, "SELECT toInt64(quantileExact(0.5)(x)), toInt64(quantileExact(0.9)(x)) FROM (SELECT arrayJoin([40, 10, 30, 20]) AS x)")
	wantAnswer(t, "quantileExact of [10 20 30 40]", a, "30 | 40")
}

// The time-to-recovery scales of seconds and minutes, on both.
func TestCompatTimeToRecoveryWithinTheHour(t *testing.T) {
	for _, long := range []bool{false, true} {
		es := bothEngines(t)
		migrateBoth(t, es)
		for _, e := range es {
			shortRecoveries(long).insert(t, e.conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
		}
		r := sameReports(t, es, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
		want := []int64{1, 1, 1, 1, 2, 0}
		if long {
			want = []int64{6, 0, 0, 0, 1, 0}
		}
		if got := bucketCounts(r.TimeToRecovery); !reflect.DeepEqual(got, want) {
			t.Errorf("long %v: time to recovery %s, want %v", long, toJSON(r.TimeToRecovery), want)
		}
	}
}

// The README's seven queries, on the dataset of TestReadmeQueriesRun.
func TestCompatReadmeQueries(t *testing.T) {
	es := bothEngines(t)
	migrateBoth(t, es)
	qs := readmeQueries(t)
	if len(qs) != 7 {
		t.Fatalf("the README has %d queries, want 7", len(qs))
	}
	for _, e := range es {
		insertReadmeDataset(t, e.conn)
		t.Run(strings.Fields(e.name)[1], func(t *testing.T) { checkReadmeResults(t, runReadmeQueries(t, e.conn, qs)) })
	}
	for _, q := range qs {
		sameOnBoth(t, es, q)
	}
}

// The dashboard's ClickHouse panels, with Grafana's time macro filled in,
// on the dataset of TestReadmeQueriesRun.
func TestCompatDashboard(t *testing.T) {
	es := bothEngines(t)
	migrateBoth(t, es)
	for _, e := range es {
		insertReadmeDataset(t, e.conn)
	}
	// The four recoveries happened an hour after the decisions, two days
	// ago (see insertReadmeDataset): the day of that hour.
	day := time.Now().UTC().Add(-47 * time.Hour).Truncate(24 * time.Hour).Format("2006-01-02 15:04:05")
	// The suppressions are dated at the decisions' time: three no_consent
	// and a frequency_cap of the processor, a no_address of the actions
	// role; the deferral is not a suppression.
	supDay := time.Now().UTC().Add(-48 * time.Hour).Truncate(24 * time.Hour).Format("2006-01-02 15:04:05")
	want := map[string][]string{
		"Steps not sent per day, by stage and reason": {supDay + " | actions/no_address | 1", supDay + " | processor/frequency_cap | 1",
			supDay + " | processor/no_consent | 3"},
		"Recovery rate and revenue by flow and step": {"reminders | first | EUR | 10 | 4 | 0.4 | 10000"},
		"Recovered revenue per day (minor units)":    {day + " | EUR | 10000"},
		"Treated against holdout, by flow":           {"reminders | 10 | 4 | 4 | 1 | 0.15000000000000002"}, // 0.4 - 0.25 in Float64
	}
	n := 0
	for _, p := range dashboardPanels(t) {
		for _, tg := range p.Targets {
			if tg.Datasource.Type != "grafana-clickhouse-datasource" {
				continue
			}
			n++
			a := sameOnBoth(t, es, panelSQL(tg.RawSQL))
			rows, ok := want[p.Title]
			if !ok {
				t.Errorf("panel %q: no known answer in this test; add one", p.Title)
				continue
			}
			wantAnswer(t, p.Title, a, rows...)
		}
	}
	if n != len(want) {
		t.Errorf("%d ClickHouse panels, want %d", n, len(want))
	}
}

// The erasure: the sink's statements (record, find the decisions, three
// DELETE mutations) on the known dataset, then again (a replay).
func TestCompatErasure(t *testing.T) {
	es := bothEngines(t)
	migrateBoth(t, es)
	ctx := context.Background()
	// c1 up to 03-02 00:00 (D1, D15 and D1's action results; D2 and its
	// recovery O1 are later); c3 whenever (D4, D5, A7, A8, O3).
	erased := map[string]time.Time{"c1": ts(3, 2, 0, 0, 0), "c3": ts(3, 9, 0, 0, 0)}
	for _, e := range es {
		knownDataset().insert(t, e.conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	}
	for run := range 2 {
		for _, e := range es {
			if err := analytics.EraseForTest(ctx, e.conn, erased); err != nil {
				t.Fatalf("%s: erase (run %d): %v", e.name, run+1, err)
			}
			waitMutations(t, e)
		}
		a := sameOnBoth(t, es, "SELECT id FROM decisions ORDER BY id")
		wantAnswer(t, "decisions left", a, "D10", "D11", "D12", "D13", "D14", "D16", "D17", "D18", "D2", "D3", "D6", "D7", "D8", "D9")
		a = sameOnBoth(t, es, "SELECT id FROM action_results ORDER BY id")
		wantAnswer(t, "action results left", a, "A10", "A11", "A12", "A13", "A14", "A15", "A19", "A3", "A4", "A5", "A6", "A9")
		a = sameOnBoth(t, es, "SELECT id FROM outcomes ORDER BY id")
		wantAnswer(t, "outcomes left", a, "O1", "O10", "O11", "O2", "O4", "O5", "O6", "O7", "O8", "O9")
		// S4 is c1's before 03-02, S7 c3's.
		a = sameOnBoth(t, es, "SELECT DISTINCT id FROM suppressions ORDER BY id")
		wantAnswer(t, "suppressions left", a, "Q1", "S1", "S2", "S3", "S5", "S6")
		a = sameOnBoth(t, es, "SELECT key_hash, max(erased_at), count() FROM erasures GROUP BY key_hash ORDER BY key_hash")
		keys := []string{"c1", "c3"}
		slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(analytics.KeyHash(a), analytics.KeyHash(b)) })
		var wantRows []string
		for _, k := range keys {
			wantRows = append(wantRows, fmt.Sprintf("%d | %s | %d", analytics.KeyHash(k), erased[k].Format("2006-01-02 15:04:05"), run+1))
		}
		wantAnswer(t, "erasures", a, wantRows...)
	}
	for _, e := range es {
		got, err := analytics.ReadErasuresForTest(ctx, e.conn)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		want := map[uint64]time.Time{analytics.KeyHash("c1"): erased["c1"], analytics.KeyHash("c3"): erased["c3"]}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the sink reads the erasures as %v, want %v", e.name, got, want)
		}
	}
	sameReports(t, es, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
}

// waitMutations waits until the engine has applied its database's
// mutations (ClickHouse runs them in the background).
func waitMutations(t *testing.T, e engine) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending uint64
		err := e.conn.QueryRow(context.Background(),
			"SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0").Scan(&pending)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d mutations still pending after 30s", e.name, pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The report's variant query, on the variants dataset inserted twice (a
// replay): the same tests on both engines, equal to the known ones, for
// all flows and for one.
func TestCompatVariants(t *testing.T) {
	es := bothEngines(t)
	migrateBoth(t, es)
	for _, e := range es {
		insertVariantDataset(t, e.conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
		insertVariantDataset(t, e.conn, time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC))
	}
	r := sameReports(t, es, analytics.ReportOptions{Since: periodStart, Until: periodEnd})
	if want := wantVariantTests(); !reflect.DeepEqual(r.VariantTests, want) {
		t.Errorf("variant tests\n got  %+v\n want %+v", r.VariantTests, want)
	}
	r = sameReports(t, es, analytics.ReportOptions{Since: periodStart, Until: periodEnd, Flow: "ab"})
	if want := wantVariantTests()[:1]; !reflect.DeepEqual(r.VariantTests, want) {
		t.Errorf("flow ab: variant tests %+v, want %+v", r.VariantTests, want)
	}
	// The variant column as the sink reads it back.
	a := sameOnBoth(t, es, "SELECT variant, toInt64(uniqExact(id)) FROM decisions GROUP BY variant ORDER BY variant")
	wantAnswer(t, "variants", a, " | 1", "a | 6", "b | 4", "x1 | 1", "x2 | 1")
}

// The report's shadow comparison, on the shadow dataset inserted twice:
// the same on both engines, equal to the count of the raw rows.
func TestCompatShadow(t *testing.T) {
	es := bothEngines(t)
	migrateBoth(t, es)
	ds := newShadowDataset(5)
	for _, e := range es {
		ds.insert(t, e.conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
		ds.insert(t, e.conn, time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC))
	}
	r := sameReports(t, es, analytics.ReportOptions{Since: periodStart, Until: periodEnd, CompareShadow: true})
	if want := ds.want(periodStart, periodEnd); !reflect.DeepEqual(r.ShadowComparisons, want) {
		t.Errorf("shadow comparisons\n got  %+v\n want %+v", r.ShadowComparisons, want)
	}
}
