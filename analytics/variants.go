package analytics

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// VariantTest is the A/B test of one step: the step's variants (the flows
// file's variants, as the decisions name them) compared by recovery rate,
// all currencies together. A cart counts for a variant when it has a
// cohort decision of the step naming the variant; it is recovered when
// one of those treated decisions has a recovered outcome, and converted
// when one of those control (holdout) decisions has a converted_holdout
// outcome.
type VariantTest struct {
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int64  `json:"step_index"`
	// Variants by name; the first is the baseline the others' Diff is
	// measured against.
	Variants []VariantRow `json:"variants"`
	// Winner is the variant whose recovery rate is above every other
	// variant's with the 95% interval of the difference (NewcombeDiff)
	// above 0 for each; "" when there is none yet (some interval
	// contains 0, or a variant has no treated carts).
	Winner string `json:"winner"`
}

// VariantRow is one variant of a step's test.
type VariantRow struct {
	Variant string `json:"variant"`
	// Decisions and HoldoutDecisions count the treated and the control
	// decisions naming the variant (each id once).
	Decisions        int64 `json:"decisions"`
	HoldoutDecisions int64 `json:"holdout_decisions"`
	// TreatedCarts (n) and Recovered (x) of the treated group; Rate is
	// x/n, 0 without treated carts.
	TreatedCarts int64   `json:"treated_carts"`
	Recovered    int64   `json:"recovered"`
	Rate         float64 `json:"rate"`
	// ControlCarts and ControlConverted are the holdout customers the
	// variant was assigned to (they were sent nothing); ControlRate their
	// conversion, 0 without control carts.
	ControlCarts     int64   `json:"control_carts"`
	ControlConverted int64   `json:"control_converted"`
	ControlRate      float64 `json:"control_rate"`
	// Diff is Rate minus the baseline's (the test's first variant) and
	// [Low, High] its 95% confidence interval by NewcombeDiff; 0 and
	// [0, 0] for the baseline itself.
	Diff float64 `json:"diff"`
	Low  float64 `json:"low"`
	High float64 `json:"high"`
}

// variantFacts is one row per cohort decision naming a variant, with
// whether a recovered or converted_holdout outcome names it; parameters
// since, until, flow, flow, since (as facts). Like facts it reads every
// table through GROUP BY id, so duplicates count once, and it keeps to
// what ClickHouse 18.16 understands (one ANY LEFT JOIN, aliased, with a
// right side grouped by decision_id).
const variantFacts = `SELECT
    decision_id, v_flow, v_step, v_step_index, v_variant, v_holdout, v_customer_key, v_cart_id,
    recovered, control_converted
FROM (
    SELECT
        id AS decision_id,
        argMax(flow, inserted_at) AS v_flow,
        argMax(step, inserted_at) AS v_step,
        argMax(step_index, inserted_at) AS v_step_index,
        argMax(variant, inserted_at) AS v_variant,
        argMax(holdout, inserted_at) AS v_holdout,
        argMax(customer_key, inserted_at) AS v_customer_key,
        argMax(cart_id, inserted_at) AS v_cart_id
    FROM decisions
    WHERE decided_at >= ? AND decided_at < ? AND (? = '' OR flow = ?) AND variant != ''
    GROUP BY id
) AS d
ANY LEFT JOIN (
    SELECT
        o_decision_id AS decision_id,
        max(o_kind = 'recovered') AS recovered,
        max(o_kind = 'converted_holdout') AS control_converted
    FROM (
        SELECT
            id,
            argMax(decision_id, inserted_at) AS o_decision_id,
            argMax(kind, inserted_at) AS o_kind
        FROM outcomes
        WHERE at >= ? AND kind IN ('recovered', 'converted_holdout') AND decision_id != ''
        GROUP BY id
    )
    GROUP BY o_decision_id
) AS o USING (decision_id)`

// variantQuery counts each variant of each step over variantFacts, by
// flow, step index, step and variant.
const variantQuery = `SELECT v_flow, v_step, toInt64(min(v_step_index)) AS step_index, v_variant,
    toInt64(countIf(v_holdout = 0)),
    toInt64(countIf(v_holdout = 1)),
    toInt64(uniqExactIf(v_customer_key, v_cart_id, v_holdout = 0)),
    toInt64(uniqExactIf(v_customer_key, v_cart_id, v_holdout = 0 AND recovered = 1)),
    toInt64(uniqExactIf(v_customer_key, v_cart_id, v_holdout = 1)),
    toInt64(uniqExactIf(v_customer_key, v_cart_id, v_holdout = 1 AND control_converted = 1))
FROM (` + variantFacts + `)
GROUP BY v_flow, v_step, v_variant
ORDER BY v_flow, step_index, v_step, v_variant`

// VariantTests runs the variant query for the report's period and flow
// and returns the tests, by flow, step index and step; empty (not nil)
// when no decision of the period names a variant.
func VariantTests(ctx context.Context, conn driver.Conn, opt ReportOptions) ([]VariantTest, error) {
	since, until := ceilSecond(opt.Since), ceilSecond(opt.Until)
	tests := []VariantTest{}
	err := query(ctx, conn, "variants", variantQuery, []any{since, until, opt.Flow, opt.Flow, since},
		func(scan func(...any) error) error {
			var flow, step string
			var idx int64
			var v VariantRow
			if err := scan(&flow, &step, &idx, &v.Variant, &v.Decisions, &v.HoldoutDecisions,
				&v.TreatedCarts, &v.Recovered, &v.ControlCarts, &v.ControlConverted); err != nil {
				return err
			}
			if n := len(tests); n == 0 || tests[n-1].Flow != flow || tests[n-1].Step != step {
				tests = append(tests, VariantTest{Flow: flow, Step: step, StepIndex: idx})
			}
			t := &tests[len(tests)-1]
			t.Variants = append(t.Variants, v)
			return nil
		})
	if err != nil {
		return nil, err
	}
	for i := range tests {
		tests[i].compute()
	}
	return tests, nil
}

// compute fills the rates, the differences from the baseline and the
// winner from the counts.
func (t *VariantTest) compute() {
	vs := t.Variants
	for i := range vs {
		v := &vs[i]
		v.Rate = ratio(v.Recovered, v.TreatedCarts)
		v.ControlRate = ratio(v.ControlConverted, v.ControlCarts)
		v.Diff, v.Low, v.High = 0, 0, 0
		if i > 0 {
			b := &vs[0]
			v.Diff, v.Low, v.High = NewcombeDiff(v.Recovered, v.TreatedCarts, b.Recovered, b.TreatedCarts)
		}
	}
	t.Winner = ""
	if len(vs) < 2 {
		return
	}
	best := 0
	for i := range vs {
		if vs[i].Rate > vs[best].Rate {
			best = i
		}
	}
	for i := range vs {
		if i == best {
			continue
		}
		if vs[i].TreatedCarts == 0 || vs[best].TreatedCarts == 0 {
			return
		}
		if _, lo, _ := NewcombeDiff(vs[best].Recovered, vs[best].TreatedCarts, vs[i].Recovered, vs[i].TreatedCarts); lo <= 0 {
			return
		}
	}
	t.Winner = vs[best].Variant
}

// variantLine is one row of the variants table: a variant and its test.
type variantLine struct {
	t *VariantTest
	v *VariantRow
	i int
}

// variantGrid is the variants table, the same for the terminal and the
// HTML, from one column list.
func (r *Report) variantGrid() grid {
	var lines []variantLine
	for i := range r.VariantTests {
		t := &r.VariantTests[i]
		for j := range t.Variants {
			lines = append(lines, variantLine{t, &t.Variants[j], j})
		}
	}
	return makeGrid([]tableColumn[variantLine]{
		{"Flow", "", false, func(l variantLine) string { return l.t.Flow }, true},
		{"Step", "", false, func(l variantLine) string { return l.t.Step }, true},
		{"Variant", "the variant of the step's test, as the flows file names it", false, func(l variantLine) string { return l.v.Variant }, true},
		{"Decisions", "treated decisions naming the variant", true, func(l variantLine) string { return count(l.v.Decisions) }, false},
		{"Recovered", "recovered / treated carts of the variant", true, func(l variantLine) string {
			return fmt.Sprintf("%s/%s", count(l.v.Recovered), count(l.v.TreatedCarts))
		}, false},
		{"Rate", "recovered / treated carts", true, func(l variantLine) string { return percent(l.v.Rate) }, false},
		{"Vs first (95% CI)", "rate minus the first variant's, percentage points, with its 95% confidence interval (Newcombe)", true, func(l variantLine) string {
			if l.i == 0 {
				return "baseline"
			}
			return diffText(l.v.Diff, l.v.Low, l.v.High)
		}, false},
		{"Holdout", "converted / holdout carts assigned the variant (sent nothing)", true, func(l variantLine) string {
			if l.v.ControlCarts == 0 {
				return "–"
			}
			return fmt.Sprintf("%s/%s (%s)", count(l.v.ControlConverted), count(l.v.ControlCarts), percent(l.v.ControlRate))
		}, false},
		{"Test", "the winner: a rate above every other variant's with a 95% interval of the difference above 0", false, func(l variantLine) string {
			if l.t.Winner == "" {
				return "no winner yet"
			}
			return "winner: " + l.t.Winner
		}, true},
	}, lines)
}

// diffText formats a difference of rates as "+4.2 pp [1.1, 7.3]"
// (percentage points), like the lift.
func diffText(diff, lo, hi float64) string {
	return fmt.Sprintf("%s pp [%.1f, %.1f]", signed(diff*100), lo*100, hi*100)
}
