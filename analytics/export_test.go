package analytics

import (
	"context"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DecodeForTest decodes record values as the sink does and returns the
// columns per table (by column name) and the first error of each record.
func DecodeForTest(values ...[]byte) (tables map[string]map[string]any, errs []error) {
	var r rows
	for _, v := range values {
		_, err := r.add(v, nil)
		errs = append(errs, err)
	}
	tables = map[string]map[string]any{}
	for name, cols := range map[string][]column{
		"decisions":      r.decisions.columns(time.Unix(0, 0)),
		"outcomes":       r.outcomes.columns(time.Unix(0, 0)),
		"action_results": r.actions.columns(time.Unix(0, 0)),
		"suppressions":   r.suppressions.columns(time.Unix(0, 0)),
	} {
		tables[name] = map[string]any{}
		for _, c := range cols {
			tables[name][c.name] = c.values
		}
	}
	return tables, errs
}

// InsertForTest decodes record values and inserts them as one batch per
// table, as the sink's flush does; it returns the rows inserted.
func InsertForTest(ctx context.Context, conn driver.Conn, values [][]byte) (int, error) {
	var r rows
	for _, v := range values {
		_, _ = r.add(v, nil)
	}
	now := time.Now()
	for _, t := range []struct {
		name string
		n    int
		cols []column
	}{
		{"decisions", r.decisions.len(), r.decisions.columns(now)},
		{"outcomes", r.outcomes.len(), r.outcomes.columns(now)},
		{"action_results", r.actions.len(), r.actions.columns(now)},
		{"suppressions", r.suppressions.len(), r.suppressions.columns(now)},
	} {
		if t.n > 0 {
			if err := insert(ctx, conn, t.name, t.cols); err != nil {
				return 0, err
			}
		}
	}
	return r.decisions.len() + r.outcomes.len() + r.actions.len() + r.suppressions.len(), nil
}

// EraseForTest applies erasures of customer keys (key → erasure time) as
// the sink's flush does: it records them and runs the deleting mutations.
func EraseForTest(ctx context.Context, conn driver.Conn, erased map[string]time.Time) error {
	var es []erasure
	for key, at := range erased {
		es = append(es, erasure{key: key, at: at})
	}
	return erase(ctx, conn, es)
}

// ReadErasuresForTest reads the erasures table as the sink does when it
// starts: key hash → latest erasure time.
func ReadErasuresForTest(ctx context.Context, conn driver.Conn) (map[uint64]time.Time, error) {
	return readErasures(ctx, conn)
}

// ExecMigrationForTest runs one migration statement as Migrate does.
func ExecMigrationForTest(ctx context.Context, conn driver.Conn, stmt string) error {
	return execMigration(ctx, conn, stmt)
}

// ComputeVariantTestForTest fills a test's rates, differences and winner
// from its counts, as VariantTests does.
func ComputeVariantTestForTest(t *VariantTest) { t.compute() }
