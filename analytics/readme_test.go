package analytics_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/events"
)

// readmeQueries are the SQL blocks of the README's "Seven queries".
func readmeQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "### Seven queries")
	if start < 0 {
		t.Fatal("README has no \"### Seven queries\" section")
	}
	s = s[start:]
	if end := strings.Index(s, "\n## "); end > 0 {
		s = s[:end]
	}
	var qs []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(s, -1) {
		qs = append(qs, m[1])
	}
	return qs
}

// TestReadmeQueriesRun runs the README's queries for data teams against a
// real ClickHouse holding a small dataset inserted twice (as a replay
// would), and checks queries 1, 2, 3, 5, 6 and 7 against the dataset and
// 4 for its medians.
func TestReadmeQueriesRun(t *testing.T) {
	qs := readmeQueries(t)
	if len(qs) != 7 {
		t.Fatalf("the README has %d queries, want 7", len(qs))
	}
	conn, _ := migrated(t)
	insertReadmeDataset(t, conn)
	checkReadmeResults(t, runReadmeQueries(t, conn, qs))
}

// insertReadmeDataset inserts, twice (as a replay would), ten treated carts
// (four recovered, 25 EUR each) and four control carts (one converted),
// the even ones of variant a, the odd ones of b,
// decided two days ago, and the steps not sent at the same time: three
// without consent and one over the frequency cap (processor), one without
// an address (actions), one deferral (not a suppression).
func insertReadmeDataset(t *testing.T, conn driver.Conn) {
	t.Helper()
	ctx := context.Background()
	at := time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Second)
	enc := func(id, typ string, data any) []byte {
		v, err := events.Encode(id, events.Source, typ, at, "", data)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var values [][]byte
	for i := range 14 {
		holdout := i >= 10
		d := events.Decision{ID: fmt.Sprintf("d%d", i), Flow: "reminders", Step: "first", Action: "email", Template: "reminder",
			Variant: []string{"a", "b"}[i%2], Holdout: holdout, Cart: events.CartSnapshot{CartID: "k", Currency: "EUR", TotalMinor: 2500},
			Customer: events.CustomerSnapshot{Key: fmt.Sprintf("c%d", i)}, DecidedAt: at}
		values = append(values, enc(d.ID, events.TypeDecision, d))
		o := events.Outcome{DecisionID: d.ID, CustomerKey: d.Customer.Key, CartID: "k", Currency: "EUR", Flow: d.Flow,
			Step: d.Step, Holdout: holdout, At: at.Add(time.Hour), SinceDecided: 3600, ValueMinor: 2500}
		if !holdout {
			o.ID, o.Kind = "s"+d.ID, "email.sent"
			values = append(values, enc(o.ID, events.TypeOutcome, o))
		}
		switch {
		case !holdout && i < 4:
			o.ID, o.Kind = "r"+d.ID, events.OutcomeRecovered
			values = append(values, enc(o.ID, events.TypeOutcome, o))
		case holdout && i == 10:
			o.ID, o.Kind = "h"+d.ID, events.OutcomeConvertedHoldout
			values = append(values, enc(o.ID, events.TypeOutcome, o))
		}
	}
	for i, reason := range []string{events.SuppressedNoConsent, events.SuppressedNoConsent, events.SuppressedNoConsent,
		events.SuppressedFrequencyCap, events.SuppressedNoAddress} {
		s := events.Suppression{ID: fmt.Sprintf("s%d", i), DecisionID: fmt.Sprintf("x%d", i), Reason: reason,
			Stage: events.StageProcessor, Flow: "reminders", Step: "first", CustomerKey: fmt.Sprintf("n%d", i), CartID: "k",
			Currency: "EUR", Due: at, At: at}
		if reason == events.SuppressedNoAddress {
			s.Stage = events.StageActions
		}
		values = append(values, enc(s.ID, events.TypeSuppressed, s))
	}
	q := events.Deferral{ID: "q0", DecisionID: "x9", Reason: events.DeferredQuietHours, Flow: "reminders", Step: "first",
		CustomerKey: "n9", CartID: "k", Currency: "EUR", Due: at, At: at, Until: at.Add(time.Hour)}
	values = append(values, enc(q.ID, events.TypeDeferred, q))
	for range 2 {
		if _, err := analytics.InsertForTest(ctx, conn, values); err != nil {
			t.Fatal(err)
		}
	}
}

// runReadmeQueries runs each query and returns its rows, one line per row
// of the values printed with %v, each followed by a space.
func runReadmeQueries(t *testing.T, conn driver.Conn, qs []string) []string {
	t.Helper()
	ctx := context.Background()
	results := make([]string, len(qs))
	for i, q := range qs {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("query %d: %v\n%s", i+1, err, q)
		}
		cols := rows.ColumnTypes()
		n := 0
		var sb strings.Builder
		for rows.Next() {
			dest := make([]any, len(cols))
			for j, c := range cols {
				dest[j] = newOf(c.ScanType())
			}
			if err := rows.Scan(dest...); err != nil {
				t.Fatalf("query %d: %v", i+1, err)
			}
			for _, d := range dest {
				fmt.Fprintf(&sb, "%v ", deref(d))
			}
			sb.WriteString("\n")
			n++
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("query %d: %v", i+1, err)
		}
		rows.Close()
		if n == 0 {
			t.Fatalf("query %d returned no rows", i+1)
		}
		results[i] = sb.String()
	}
	return results
}

// checkReadmeResults checks the five queries' results on the dataset of
// insertReadmeDataset.
func checkReadmeResults(t *testing.T, results []string) {
	t.Helper()
	// 1: 10 treated carts, 4 recovered, 0.4, 10000 minor units.
	if want := "reminders first EUR 10 4 0.4 10000 \n"; results[0] != want {
		t.Errorf("query 1 gave %q, want %q", results[0], want)
	}
	// 2: four orders of 25 EUR, counted once despite the double insert.
	if !strings.Contains(results[1], " EUR 4 10000 \n") {
		t.Errorf("query 2 gave %q", results[1])
	}
	// 3: 10 treated, 4 recovered; 4 control, 1 converted; 0.4 - 0.25 in
	// Float64, unrounded (round's ties differ between releases).
	if want := "reminders 10 4 4 1 0.15000000000000002 \n"; results[2] != want {
		t.Errorf("query 3 gave %q, want %q", results[2], want)
	}
	// 4: four recoveries, each an hour after its decision.
	if want := "reminders first 4 [3600 3600] \n"; results[3] != want {
		t.Errorf("query 4 gave %q, want %q", results[3], want)
	}
	// 5: 10 treated decisions, all sent, 4 recovered.
	if want := "reminder 10 10 0 4 0.4 \n"; results[4] != want {
		t.Errorf("query 5 gave %q, want %q", results[4], want)
	}
	// 6: the suppressed steps by reason, most first, each once despite the
	// double insert; the deferral is not among them.
	day := time.Now().UTC().Add(-48 * time.Hour).Truncate(24 * time.Hour).Format("2006-01-02 15:04:05 -0700 MST")
	if want := day + " reminders first processor no_consent 3 3 \n" +
		day + " reminders first processor frequency_cap 1 1 \n" +
		day + " reminders first actions no_address 1 1 \n"; results[5] != want {
		t.Errorf("query 6 gave %q, want %q", results[5], want)
	}
	// 7: per variant, 5 treated carts (a: 0 2 4 6 8, b: 1 3 5 7 9), 2
	// recovered each (0 2, 1 3); 2 control carts each (a: 10 12, b: 11 13),
	// 10 converted.
	if want := "reminders first a 5 2 0.4 2 1 \nreminders first b 5 2 0.4 2 0 \n"; results[6] != want {
		t.Errorf("query 7 gave %q, want %q", results[6], want)
	}
}

func newOf(t reflect.Type) any { return reflect.New(t).Interface() }

func deref(p any) any { return reflect.ValueOf(p).Elem().Interface() }
