package analytics

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ReportOptions selects what a report measures.
type ReportOptions struct {
	// Since and Until bound the period, [Since, Until): the cohort is the
	// decisions decided in it, and the daily revenue the recoveries that
	// happened in it. Both are required and Since must be before Until.
	// They are taken in UTC and rounded up to whole seconds (the tables
	// hold whole seconds, so the selected rows are the same).
	Since, Until time.Time
	// Flow restricts the report to one flow; empty means all flows. It
	// reaches ClickHouse as a bound parameter, never as SQL text.
	Flow string
	// CompareShadow adds ShadowComparisons: each shadow flow against the
	// live flow it shadows (cartlift report --compare-shadow).
	CompareShadow bool
}

// Report measures recovery over a period: how many abandoned carts were
// treated, reached and recovered, for how much revenue at what discount
// cost, how fast, and how much more often than the holdout (control) group.
//
// The cohort is the decisions (each id counted once) decided in
// [Since, Until), of Flow when set. A cart is (customer_key, cart_id).
// Per decision of the cohort:
//   - sent: an action result email.sent or webhook.delivered carries its id;
//   - clicked: an action result link.clicked carries its id;
//   - recovered: an outcome "recovered" carries its id (the checkout within
//     the attribution window after this, the cart's last treated
//     decision), with its value_minor and since_decision_seconds, whenever
//     the checkout happened (also after Until);
//   - control_converted: an outcome "converted_holdout" carries its id.
//
// Every table is read through a GROUP BY id subquery (argMax by
// inserted_at), so the at-least-once sink's duplicates, merged or not,
// count once.
type Report struct {
	// Since and Until are the period as queried: UTC, whole seconds.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Flow is the flow filter, "" for all flows.
	Flow string `json:"flow"`
	// GeneratedAt is when BuildReport ran, UTC, rounded up to whole
	// seconds like the period: a period that ends "now" never ends after
	// it.
	GeneratedAt time.Time `json:"generated_at"`
	// Totals has one row per currency, by currency code.
	Totals []TotalRow `json:"totals"`
	// Funnel counts carts over all currencies.
	Funnel Funnel `json:"funnel"`
	// Steps has one row per (flow, step, currency), by flow, step index,
	// step and currency.
	Steps []StepRow `json:"steps"`
	// Detail has one row per (day, flow, step, cart type, channel,
	// currency), by day, flow, step index, step, cart type, channel and
	// currency. The day is the UTC day of the decision.
	Detail []DetailRow `json:"detail"`
	// StepFunnel has one row per (flow, step) with a step due in the
	// period, all currencies together, by flow, step index and step: due
	// → suppressed (by reason) → deferred → holdout → decided → sent →
	// clicked → recovered.
	StepFunnel []StepFunnel `json:"step_funnel"`
	// NotSent has one row per (flow, step, stage, reason) of the
	// suppressed steps of the period, by flow, step index, step, stage and
	// reason: why abandoned carts were not messaged.
	NotSent []NotSentRow `json:"not_sent"`
	// Lift has one row per flow with control carts, by flow.
	Lift []Lift `json:"lift"`
	// DailyRevenue is by day and currency.
	DailyRevenue []DailyRevenue `json:"daily_revenue"`
	// TimeToRecovery has six buckets, in order, empty ones included: the
	// scale of TimeToRecoveryBucketsFor the longest time to recovery
	// (hours and days, TimeToRecoveryBuckets, unless every recovery took
	// less than an hour).
	TimeToRecovery []Bucket `json:"time_to_recovery"`
	// VariantTests has one test per (flow, step) with decisions naming a
	// variant, by flow, step index and step (see VariantTests).
	VariantTests []VariantTest `json:"variant_tests"`
	// ShadowComparisons, with ReportOptions.CompareShadow, has one row
	// per (shadow flow, live flow, currency) (see ShadowComparisons);
	// absent without it.
	ShadowComparisons []ShadowComparison `json:"shadow_comparisons,omitempty"`
}

// Metrics are the measures of one row of Totals, Steps or Detail, over the
// cohort decisions of the row's grain.
type Metrics struct {
	// AbandonedCarts counts the distinct carts with a decision, treated or
	// control; TreatedCarts those with a treated (holdout=0) decision,
	// ControlCarts those with a control (holdout=1) decision.
	AbandonedCarts int64 `json:"abandoned_carts"`
	TreatedCarts   int64 `json:"treated_carts"`
	ControlCarts   int64 `json:"control_carts"`
	// Decisions counts the treated decisions, HoldoutDecisions the
	// control ones.
	Decisions        int64 `json:"decisions"`
	HoldoutDecisions int64 `json:"holdout_decisions"`
	// Sent and Clicked count the treated decisions with a message sent
	// (email.sent or webhook.delivered) and with a link.clicked.
	Sent    int64 `json:"sent"`
	Clicked int64 `json:"clicked"`
	// Recovered counts the treated decisions with a recovered outcome: the
	// outcome names the cart's last decision, so there is one per
	// recovered cart.
	Recovered int64 `json:"recovered"`
	// RecoveryRate is Recovered / TreatedCarts, 0 without treated carts.
	RecoveryRate float64 `json:"recovery_rate"`
	// RecoveredRevenueMinor sums the recovered outcomes' values, in minor
	// units of the row's currency.
	RecoveredRevenueMinor int64 `json:"recovered_revenue_minor"`
	// DiscountCostMinor sums, over recovered decisions with a discount,
	// min(value·percent/100 (integer division), max_minor when > 0) for a
	// percentage and min(amount_minor, value) for an amount. It assumes
	// every recovered order used the offered discount: an upper bound.
	DiscountCostMinor int64 `json:"discount_cost_minor"`
	// MedianSeconds and P90Seconds are quantileExact(0.5) and (0.9) of
	// since_decision_seconds over the recovered decisions; absent when
	// none. quantileExact does not interpolate: of the n values sorted
	// ascending it returns the one at 0-based index floor(level·n), so
	// the median of an even count is the upper of the two middle values
	// ([10 20 30 40] → 30) and the p90 of fewer than ten values is the
	// largest.
	MedianSeconds *int64 `json:"median_seconds,omitempty"`
	P90Seconds    *int64 `json:"p90_seconds,omitempty"`
	// ControlConverted counts the control decisions with a
	// converted_holdout outcome; ControlRate is ControlConverted /
	// ControlCarts, 0 without control carts.
	ControlConverted int64   `json:"control_converted"`
	ControlRate      float64 `json:"control_rate"`
}

// TotalRow is the Metrics of one currency. Revenue in different currencies
// is never summed.
type TotalRow struct {
	Currency string `json:"currency"`
	Metrics
}

// StepRow is the Metrics of one step of a flow in one currency. StepIndex
// is the smallest step_index of the step's decisions.
type StepRow struct {
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int64  `json:"step_index"`
	Currency  string `json:"currency"`
	Metrics
}

// DetailRow is the Metrics per flow, step, cart type, channel and day (the
// UTC day of the decision, YYYY-MM-DD), in one currency.
type DetailRow struct {
	Day       string `json:"day"`
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int64  `json:"step_index"`
	CartType  string `json:"cart_type"`
	Channel   string `json:"channel"`
	Currency  string `json:"currency"`
	Metrics
}

// Funnel counts distinct carts of the cohort, all currencies together:
// with a decision, with a treated decision, with a treated decision whose
// message was sent, clicked, recovered.
type Funnel struct {
	AbandonedCarts int64 `json:"abandoned_carts"`
	TreatedCarts   int64 `json:"treated_carts"`
	SentCarts      int64 `json:"sent_carts"`
	ClickedCarts   int64 `json:"clicked_carts"`
	RecoveredCarts int64 `json:"recovered_carts"`
}

// StepFunnel follows the steps of one flow step that came due in the
// period, each counted once (by its id), all currencies together. A step
// that comes due ends in exactly one of: suppressed by a guard of the
// processor (no decision), a holdout decision (the control group: nothing
// is sent by design, so it is not a suppression), or a treated decision;
// so Due = processor suppressions + Holdout + Decided. A treated decision
// that the actions role dropped (no address, expired, ...) is in Decided
// and in Suppressed. Suppressions and deferrals are dated by their at
// (the decision time the step had or would have had), decisions by
// decided_at.
type StepFunnel struct {
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int64  `json:"step_index"`
	// Due counts the steps that came due and were decided or suppressed
	// by the processor.
	Due int64 `json:"due"`
	// Suppressed counts the steps not sent for a reason (either stage);
	// SuppressedBy the same by reason (processor and actions together),
	// and SuppressedByProcessor those of the processor's guards.
	Suppressed            int64            `json:"suppressed"`
	SuppressedByProcessor int64            `json:"suppressed_by_processor"`
	SuppressedBy          map[string]int64 `json:"suppressed_by"`
	// Deferred counts the distinct steps deferred by quiet hours; each is
	// also in the other columns once it was decided (a deferral does not
	// drop a step).
	Deferred int64 `json:"deferred"`
	// Holdout counts the holdout decisions, Decided the treated ones;
	// Sent, Clicked and Recovered the treated decisions with a message
	// sent, a click, a recovery.
	Holdout   int64 `json:"holdout"`
	Decided   int64 `json:"decided"`
	Sent      int64 `json:"sent"`
	Clicked   int64 `json:"clicked"`
	Recovered int64 `json:"recovered"`
}

// NotSentRow counts the suppressed steps of one flow step, stage
// (processor, actions) and reason: Steps each id once, Carts the distinct
// carts among them.
type NotSentRow struct {
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int64  `json:"step_index"`
	Stage     string `json:"stage"`
	Reason    string `json:"reason"`
	Steps     int64  `json:"steps"`
	Carts     int64  `json:"carts"`
}

// Lift compares a flow's treated carts with its control (holdout) carts,
// all currencies together. A cart is recovered when one of its treated
// cohort decisions of the flow has a recovered outcome, and converted when
// one of its control decisions has a converted_holdout outcome.
type Lift struct {
	Flow string `json:"flow"`
	// TreatedCarts (n1) and TreatedRecovered (x1); ControlCarts (n2) and
	// ControlConverted (x2).
	TreatedCarts     int64 `json:"treated_carts"`
	TreatedRecovered int64 `json:"treated_recovered"`
	ControlCarts     int64 `json:"control_carts"`
	ControlConverted int64 `json:"control_converted"`
	// TreatedRate is p1 = x1/n1, ControlRate p2 = x2/n2 (0 when n is 0).
	TreatedRate float64 `json:"treated_rate"`
	ControlRate float64 `json:"control_rate"`
	// AbsoluteLift is p1 − p2 and [Low, High] its 95% confidence interval
	// by NewcombeDiff (diff 0 and [−1, 1] when the flow has no treated
	// carts).
	AbsoluteLift float64 `json:"absolute_lift"`
	Low          float64 `json:"low"`
	High         float64 `json:"high"`
	// RelativeLift is p1/p2 − 1, absent when p2 is 0 or n1 is 0.
	RelativeLift *float64 `json:"relative_lift,omitempty"`
	// IncrementalCarts is (p1 − p2)·n1: the recovered carts the flow
	// added over what the holdout rate predicts.
	IncrementalCarts float64 `json:"incremental_carts"`
}

// DailyRevenue sums the recovered outcomes (each id once) that happened on
// one UTC day of [Since, Until), in one currency, restricted by Flow on the
// outcome's flow. Unlike the cohort measures, it is dated by the checkout,
// not by the decision.
type DailyRevenue struct {
	Day                   string `json:"day"`
	Currency              string `json:"currency"`
	Recovered             int64  `json:"recovered"`
	RecoveredRevenueMinor int64  `json:"recovered_revenue_minor"`
}

// Bucket counts the recovered treated decisions of the cohort whose
// since_decision_seconds is in [MinSeconds, MaxSeconds); MaxSeconds 0 means
// no upper bound.
type Bucket struct {
	Label      string `json:"label"`
	MinSeconds int64  `json:"min_seconds"`
	MaxSeconds int64  `json:"max_seconds,omitempty"`
	Count      int64  `json:"count"`
}

// ttrEdge is a bound of the time-to-recovery buckets, with its label as
// a lower and as an upper bound ("1–3d" but "6–24h").
type ttrEdge struct {
	seconds      int64
	lower, upper string
}

// ttrEdges are the bounds every time-to-recovery scale takes its five
// from: a scale is five consecutive edges, so six buckets (below the
// first, between each two, from the last on). The last five are the
// hours-and-days scale.
var ttrEdges = []ttrEdge{
	{1, "1s", "1s"}, {2, "2s", "2s"}, {5, "5s", "5s"}, {10, "10s", "10s"}, {30, "30s", "30s"},
	{60, "1m", "1m"}, {120, "2m", "2m"}, {300, "5m", "5m"}, {900, "15m", "15m"}, {1800, "30m", "30m"},
	{3600, "1h", "1h"}, {21600, "6h", "6h"}, {86400, "1d", "24h"}, {259200, "3d", "3d"}, {604800, "7d", "7d"},
}

// hoursScale is the index in ttrEdges of the hours-and-days scale's
// first edge (1h).
var hoursScale = len(ttrEdges) - 5

// TimeToRecoveryBuckets returns the hours-and-days buckets, with zero
// counts: <1h, 1–6h, 6–24h, 1–3d, 3–7d, ≥7d. The report uses them when
// a recovery took an hour or more, and when there is none.
func TimeToRecoveryBuckets() []Bucket { return ttrScale(hoursScale) }

// TimeToRecoveryBucketsFor returns the six buckets, with zero counts, that
// the report uses when its longest time to recovery is longest seconds:
// the hours-and-days scale (TimeToRecoveryBuckets) when longest is an hour
// or more, otherwise the finest scale whose last bound is above longest,
// so that the recoveries of the first hour are not all in "<1h" (a demo
// whose answers come in seconds: <1s, 1–2s, 2–5s, 5–10s, 10–30s, ≥30s;
// recoveries within 25 minutes: <1m, 1–2m, 2–5m, 5–15m, 15–30m, ≥30m).
func TimeToRecoveryBucketsFor(longest int64) []Bucket {
	for i := 0; i < hoursScale && longest < ttrEdges[hoursScale].seconds; i++ {
		if ttrEdges[i+4].seconds > longest {
			return ttrScale(i)
		}
	}
	return ttrScale(hoursScale)
}

// ttrScale returns the six buckets of the five edges from ttrEdges[i].
func ttrScale(i int) []Bucket {
	e := ttrEdges[i : i+5]
	bs := []Bucket{{Label: "<" + e[0].upper, MinSeconds: 0, MaxSeconds: e[0].seconds}}
	for j := 0; j+1 < len(e); j++ {
		lo, hi := e[j].lower, e[j+1].upper
		if unit := func(s string) string { return strings.TrimLeft(s, "0123456789") }; unit(lo) == unit(hi) {
			lo = strings.TrimSuffix(lo, unit(lo))
		}
		bs = append(bs, Bucket{Label: lo + "–" + hi, MinSeconds: e[j].seconds, MaxSeconds: e[j+1].seconds})
	}
	return append(bs, Bucket{Label: "≥" + e[4].lower, MinSeconds: e[4].seconds})
}

// ttrQuery counts the cohort's recovered treated decisions between each
// two of ttrEdges (below the first, from the last on) and finds the
// longest time to recovery; its parameters are facts'.
func ttrQuery() string {
	var b strings.Builder
	b.WriteString("SELECT toInt64(max(since_seconds))")
	lo := int64(-1)
	for _, e := range append(slices.Clone(ttrEdges), ttrEdge{seconds: -1}) {
		cond := make([]string, 0, 2)
		if lo >= 0 {
			cond = append(cond, fmt.Sprintf("since_seconds >= %d", lo))
		}
		if e.seconds >= 0 {
			cond = append(cond, fmt.Sprintf("since_seconds < %d", e.seconds))
		}
		fmt.Fprintf(&b, ",\n\t\t\ttoInt64(countIf(%s))", strings.Join(cond, " AND "))
		lo = e.seconds
	}
	b.WriteString("\n\t\tFROM (" + facts + ")\n\t\tWHERE d_holdout = 0 AND recovered = 1")
	return b.String()
}

// ttrFill picks the scale of longest and adds up counts (one per bucket
// of ttrEdges, as ttrQuery counts them) into its six buckets; without a
// recovery, the hours-and-days scale.
func ttrFill(longest int64, counts []int64) []Bucket {
	var total int64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return TimeToRecoveryBuckets()
	}
	bs := TimeToRecoveryBucketsFor(longest)
	for i, n := range counts {
		lo := int64(0)
		if i > 0 {
			lo = ttrEdges[i-1].seconds
		}
		for j := range bs {
			if lo >= bs[j].MinSeconds && (bs[j].MaxSeconds == 0 || lo < bs[j].MaxSeconds) {
				bs[j].Count += n
				break
			}
		}
	}
	return bs
}

// facts is one row per cohort decision with what followed it. Its
// parameters are since, until, flow, flow, since, since.
//
// The decisions are selected on the raw columns before the GROUP BY id:
// the copies of one id are the same event inserted again (only
// inserted_at differs), so a filter keeps all of an id's copies or none.
// Action results and outcomes of a cohort decision happen after it, hence
// at >= since; they are not bounded by until (a recovery after the period
// still counts for its decision). A decision has at most one recovered
// outcome (the order ends the cart); were there several, their values add
// up and the shortest time to recovery is kept.
//
// ClickHouse 18.16: one ANY LEFT JOIN per SELECT level, so the two joins
// nest; aliases never repeat a column name inside an aggregation (d_, r_,
// o_ prefixes). Both right sides are grouped by decision_id, so ANY and
// ALL strictness agree, on every release. A decision without a match gets
// the column defaults (0), not NULL (join_use_nulls is off by default).
const facts = `SELECT
    decision_id, d_at, d_flow, d_step, d_step_index, d_holdout,
    d_customer_key, d_cart_id, d_cart_type, d_channel, d_currency,
    sent, clicked, recovered, recovered_value, since_seconds, control_converted,
    if(d_discount_percent > 0,
        if(d_discount_max_minor > 0,
            least(intDiv(recovered_value * d_discount_percent, 100), d_discount_max_minor),
            intDiv(recovered_value * d_discount_percent, 100)),
        least(d_discount_amount_minor, recovered_value)) AS discount_cost
FROM (
    SELECT
        decision_id, d_at, d_flow, d_step, d_step_index, d_holdout,
        d_customer_key, d_cart_id, d_cart_type, d_channel, d_currency,
        d_discount_percent, d_discount_amount_minor, d_discount_max_minor,
        sent, clicked
    FROM (
        SELECT
            id AS decision_id,
            argMax(decided_at, inserted_at) AS d_at,
            argMax(flow, inserted_at) AS d_flow,
            argMax(step, inserted_at) AS d_step,
            argMax(step_index, inserted_at) AS d_step_index,
            argMax(holdout, inserted_at) AS d_holdout,
            argMax(customer_key, inserted_at) AS d_customer_key,
            argMax(cart_id, inserted_at) AS d_cart_id,
            argMax(cart_type, inserted_at) AS d_cart_type,
            argMax(channel, inserted_at) AS d_channel,
            argMax(currency, inserted_at) AS d_currency,
            argMax(discount_percent, inserted_at) AS d_discount_percent,
            argMax(discount_amount_minor, inserted_at) AS d_discount_amount_minor,
            argMax(discount_max_minor, inserted_at) AS d_discount_max_minor
        FROM decisions
        WHERE decided_at >= ? AND decided_at < ? AND (? = '' OR flow = ?)
        GROUP BY id
    ) AS d
    ANY LEFT JOIN (
        SELECT
            r_decision_id AS decision_id,
            max(r_kind IN ('email.sent', 'webhook.delivered')) AS sent,
            max(r_kind = 'link.clicked') AS clicked
        FROM (
            SELECT
                id,
                argMax(decision_id, inserted_at) AS r_decision_id,
                argMax(kind, inserted_at) AS r_kind
            FROM action_results
            WHERE at >= ? AND kind IN ('email.sent', 'webhook.delivered', 'link.clicked')
            GROUP BY id
        )
        GROUP BY r_decision_id
    ) AS r USING (decision_id)
) AS dr
ANY LEFT JOIN (
    SELECT
        o_decision_id AS decision_id,
        max(o_kind = 'recovered') AS recovered,
        sumIf(o_value, o_kind = 'recovered') AS recovered_value,
        minIf(o_since, o_kind = 'recovered') AS since_seconds,
        max(o_kind = 'converted_holdout') AS control_converted
    FROM (
        SELECT
            id,
            argMax(decision_id, inserted_at) AS o_decision_id,
            argMax(kind, inserted_at) AS o_kind,
            argMax(value_minor, inserted_at) AS o_value,
            argMax(since_decision_seconds, inserted_at) AS o_since
        FROM outcomes
        WHERE at >= ? AND kind IN ('recovered', 'converted_holdout') AND decision_id != ''
        GROUP BY id
    )
    GROUP BY o_decision_id
) AS o USING (decision_id)`

// metricColumns are the Metrics of a grain over facts, in scanMetrics'
// order; quantileExact is 0 over no rows, so the quantiles are read only
// when recovered > 0.
const metricColumns = `toInt64(uniqExact(d_customer_key, d_cart_id)),
    toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0)),
    toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 1)),
    toInt64(countIf(d_holdout = 0)),
    toInt64(countIf(d_holdout = 1)),
    toInt64(countIf(d_holdout = 0 AND sent = 1)),
    toInt64(countIf(d_holdout = 0 AND clicked = 1)),
    toInt64(countIf(d_holdout = 0 AND recovered = 1)),
    toInt64(sumIf(recovered_value, d_holdout = 0 AND recovered = 1)),
    toInt64(sumIf(discount_cost, d_holdout = 0 AND recovered = 1)),
    toInt64(quantileExactIf(0.5)(since_seconds, d_holdout = 0 AND recovered = 1)),
    toInt64(quantileExactIf(0.9)(since_seconds, d_holdout = 0 AND recovered = 1)),
    toInt64(countIf(d_holdout = 1 AND control_converted = 1))`

// metricDest returns the scan destinations of metricColumns and a func that
// finishes m after the scan (rates, absent quantiles).
func metricDest(m *Metrics) ([]any, func()) {
	var median, p90 int64
	dest := []any{
		&m.AbandonedCarts, &m.TreatedCarts, &m.ControlCarts,
		&m.Decisions, &m.HoldoutDecisions, &m.Sent, &m.Clicked, &m.Recovered,
		&m.RecoveredRevenueMinor, &m.DiscountCostMinor, &median, &p90, &m.ControlConverted,
	}
	return dest, func() {
		m.RecoveryRate = ratio(m.Recovered, m.TreatedCarts)
		m.ControlRate = ratio(m.ControlConverted, m.ControlCarts)
		if m.Recovered > 0 {
			m.MedianSeconds, m.P90Seconds = &median, &p90
		}
	}
}

// BuildReport runs the report's queries against the analytics tables of
// conn and returns the report. The queries run on ClickHouse 18.16 and on
// current releases.
func BuildReport(ctx context.Context, conn driver.Conn, opt ReportOptions) (*Report, error) {
	if opt.Since.IsZero() || opt.Until.IsZero() {
		return nil, errors.New("report: since and until are required")
	}
	since, until := ceilSecond(opt.Since), ceilSecond(opt.Until)
	if !since.Before(until) {
		return nil, fmt.Errorf("report: since %s is not before until %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	r := &Report{
		Since: since, Until: until, Flow: opt.Flow,
		GeneratedAt:    ceilSecond(time.Now()),
		Totals:         []TotalRow{},
		Steps:          []StepRow{},
		Detail:         []DetailRow{},
		StepFunnel:     []StepFunnel{},
		NotSent:        []NotSentRow{},
		Lift:           []Lift{},
		DailyRevenue:   []DailyRevenue{},
		TimeToRecovery: TimeToRecoveryBuckets(),
		VariantTests:   []VariantTest{},
	}
	factArgs := []any{since, until, opt.Flow, opt.Flow, since, since}

	err := metricRows(ctx, conn, "totals",
		"SELECT d_currency, "+metricColumns+" FROM ("+facts+") GROUP BY d_currency ORDER BY d_currency",
		factArgs, &r.Totals, func(row *TotalRow) ([]any, *Metrics) { return []any{&row.Currency}, &row.Metrics })
	if err != nil {
		return nil, err
	}

	err = metricRows(ctx, conn, "steps",
		"SELECT d_flow, d_step, toInt64(min(d_step_index)) AS step_index, d_currency, "+metricColumns+
			" FROM ("+facts+") GROUP BY d_flow, d_step, d_currency ORDER BY d_flow, step_index, d_step, d_currency",
		factArgs, &r.Steps, func(row *StepRow) ([]any, *Metrics) {
			return []any{&row.Flow, &row.Step, &row.StepIndex, &row.Currency}, &row.Metrics
		})
	if err != nil {
		return nil, err
	}

	err = metricRows(ctx, conn, "detail",
		"SELECT toString(toDate(d_at, 'UTC')) AS day, d_flow, d_step, toInt64(min(d_step_index)) AS step_index, d_cart_type, d_channel, d_currency, "+metricColumns+
			" FROM ("+facts+") GROUP BY day, d_flow, d_step, d_cart_type, d_channel, d_currency"+
			" ORDER BY day, d_flow, step_index, d_step, d_cart_type, d_channel, d_currency",
		factArgs, &r.Detail, func(row *DetailRow) ([]any, *Metrics) {
			return []any{&row.Day, &row.Flow, &row.Step, &row.StepIndex, &row.CartType, &row.Channel, &row.Currency}, &row.Metrics
		})
	if err != nil {
		return nil, err
	}

	err = query(ctx, conn, "funnel",
		`SELECT toInt64(uniqExact(d_customer_key, d_cart_id)),
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0)),
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0 AND sent = 1)),
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0 AND clicked = 1)),
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0 AND recovered = 1))
		FROM (`+facts+`)`,
		factArgs, func(scan func(...any) error) error {
			f := &r.Funnel
			return scan(&f.AbandonedCarts, &f.TreatedCarts, &f.SentCarts, &f.ClickedCarts, &f.RecoveredCarts)
		})
	if err != nil {
		return nil, err
	}

	if err := r.stepFunnel(ctx, conn, factArgs, []any{since, until, opt.Flow, opt.Flow}); err != nil {
		return nil, err
	}

	err = query(ctx, conn, "lift",
		`SELECT d_flow,
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0)),
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 0 AND recovered = 1)),
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 1)) AS control_carts,
			toInt64(uniqExactIf(d_customer_key, d_cart_id, d_holdout = 1 AND control_converted = 1))
		FROM (`+facts+`)
		GROUP BY d_flow HAVING control_carts > 0 ORDER BY d_flow`,
		factArgs, func(scan func(...any) error) error {
			var l Lift
			if err := scan(&l.Flow, &l.TreatedCarts, &l.TreatedRecovered, &l.ControlCarts, &l.ControlConverted); err != nil {
				return err
			}
			l.compute()
			r.Lift = append(r.Lift, l)
			return nil
		})
	if err != nil {
		return nil, err
	}

	// One count per bucket of ttrEdges and the longest time, which
	// chooses the scale the counts are added up into.
	err = query(ctx, conn, "time to recovery", ttrQuery(), factArgs, func(scan func(...any) error) error {
		var longest int64
		counts := make([]int64, len(ttrEdges)+1)
		dest := []any{&longest}
		for i := range counts {
			dest = append(dest, &counts[i])
		}
		if err := scan(dest...); err != nil {
			return err
		}
		r.TimeToRecovery = ttrFill(longest, counts)
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Outcome ids are deterministic per (cart, kind, cart version): the
	// copies of one id share at and kind, so filtering them before the
	// GROUP BY keeps all copies or none.
	err = query(ctx, conn, "daily revenue",
		`SELECT toString(toDate(o_at, 'UTC')) AS day, o_currency,
			toInt64(count()), toInt64(sum(o_value))
		FROM (
			SELECT
				id,
				argMax(at, inserted_at) AS o_at,
				argMax(flow, inserted_at) AS o_flow,
				argMax(currency, inserted_at) AS o_currency,
				argMax(value_minor, inserted_at) AS o_value
			FROM outcomes
			WHERE at >= ? AND at < ? AND kind = 'recovered'
			GROUP BY id
		)
		WHERE ? = '' OR o_flow = ?
		GROUP BY day, o_currency ORDER BY day, o_currency`,
		[]any{since, until, opt.Flow, opt.Flow}, func(scan func(...any) error) error {
			var d DailyRevenue
			if err := scan(&d.Day, &d.Currency, &d.Recovered, &d.RecoveredRevenueMinor); err != nil {
				return err
			}
			r.DailyRevenue = append(r.DailyRevenue, d)
			return nil
		})
	if err != nil {
		return nil, err
	}
	if r.VariantTests, err = VariantTests(ctx, conn, opt); err != nil {
		return nil, err
	}
	if opt.CompareShadow {
		if r.ShadowComparisons, err = ShadowComparisons(ctx, conn, opt); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// suppressionFacts is one row per suppression or deferral (each id once)
// dated in [since, until), of the flow when set; parameters since, until,
// flow, flow. The copies of an id are the same record (deterministic
// content), so filtering before the GROUP BY keeps all of them or none.
const suppressionFacts = `SELECT
        id,
        argMax(kind, inserted_at) AS s_kind,
        argMax(stage, inserted_at) AS s_stage,
        argMax(reason, inserted_at) AS s_reason,
        argMax(flow, inserted_at) AS s_flow,
        argMax(step, inserted_at) AS s_step,
        argMax(step_index, inserted_at) AS s_step_index,
        argMax(customer_key, inserted_at) AS s_customer_key,
        argMax(cart_id, inserted_at) AS s_cart_id
    FROM suppressions
    WHERE at >= ? AND at < ? AND (? = '' OR flow = ?)
    GROUP BY id`

// stepFunnel fills StepFunnel and NotSent: the suppressions and deferrals
// by flow, step, kind, stage and reason, and the decisions by flow and
// step, merged by flow and step.
func (r *Report) stepFunnel(ctx context.Context, conn driver.Conn, factArgs, supArgs []any) error {
	type key struct{ flow, step string }
	rows := map[key]*StepFunnel{}
	row := func(flow, step string, idx int64) *StepFunnel {
		k := key{flow, step}
		f := rows[k]
		if f == nil {
			f = &StepFunnel{Flow: flow, Step: step, StepIndex: idx, SuppressedBy: map[string]int64{}}
			rows[k] = f
		}
		f.StepIndex = min(f.StepIndex, idx)
		return f
	}
	err := query(ctx, conn, "not sent",
		`SELECT s_flow, s_step, toInt64(min(s_step_index)) AS step_index, s_kind, s_stage, s_reason,
			toInt64(count()), toInt64(uniqExact(s_customer_key, s_cart_id))
		FROM (`+suppressionFacts+`)
		GROUP BY s_flow, s_step, s_kind, s_stage, s_reason
		ORDER BY s_flow, step_index, s_step, s_kind, s_stage, s_reason`,
		supArgs, func(scan func(...any) error) error {
			var n NotSentRow
			var kind string
			if err := scan(&n.Flow, &n.Step, &n.StepIndex, &kind, &n.Stage, &n.Reason, &n.Steps, &n.Carts); err != nil {
				return err
			}
			f := row(n.Flow, n.Step, n.StepIndex)
			if kind == KindDeferred {
				f.Deferred += n.Steps
				return nil
			}
			f.Suppressed += n.Steps
			f.SuppressedBy[n.Reason] += n.Steps
			if n.Stage != "actions" {
				f.SuppressedByProcessor += n.Steps
			}
			r.NotSent = append(r.NotSent, n)
			return nil
		})
	if err != nil {
		return err
	}
	err = query(ctx, conn, "step funnel",
		`SELECT d_flow, d_step, toInt64(min(d_step_index)),
			toInt64(countIf(d_holdout = 1)), toInt64(countIf(d_holdout = 0)),
			toInt64(countIf(d_holdout = 0 AND sent = 1)), toInt64(countIf(d_holdout = 0 AND clicked = 1)),
			toInt64(countIf(d_holdout = 0 AND recovered = 1))
		FROM (`+facts+`)
		GROUP BY d_flow, d_step`,
		factArgs, func(scan func(...any) error) error {
			var flow, step string
			var idx, holdout, decided, sent, clicked, recovered int64
			if err := scan(&flow, &step, &idx, &holdout, &decided, &sent, &clicked, &recovered); err != nil {
				return err
			}
			f := row(flow, step, idx)
			f.Holdout, f.Decided, f.Sent, f.Clicked, f.Recovered = holdout, decided, sent, clicked, recovered
			return nil
		})
	if err != nil {
		return err
	}
	for _, f := range rows {
		f.Due = f.SuppressedByProcessor + f.Holdout + f.Decided
		r.StepFunnel = append(r.StepFunnel, *f)
	}
	slices.SortFunc(r.StepFunnel, func(a, b StepFunnel) int {
		return cmp.Or(cmp.Compare(a.Flow, b.Flow), cmp.Compare(a.StepIndex, b.StepIndex), cmp.Compare(a.Step, b.Step))
	})
	return nil
}

// metricRows runs a query that selects a row's grouping columns, then
// metricColumns, and appends one row per result to out; fields gives the
// scan destinations of a row's grouping columns and its Metrics.
func metricRows[R any](ctx context.Context, conn driver.Conn, name, sql string, args []any, out *[]R,
	fields func(*R) ([]any, *Metrics)) error {
	return query(ctx, conn, name, sql, args, func(scan func(...any) error) error {
		var row R
		keys, m := fields(&row)
		dest, finish := metricDest(m)
		if err := scan(append(keys, dest...)...); err != nil {
			return err
		}
		finish()
		*out = append(*out, row)
		return nil
	})
}

// compute fills the rates and the lift from the four counts.
func (l *Lift) compute() {
	l.TreatedRate = ratio(l.TreatedRecovered, l.TreatedCarts)
	l.ControlRate = ratio(l.ControlConverted, l.ControlCarts)
	l.AbsoluteLift, l.Low, l.High = NewcombeDiff(l.TreatedRecovered, l.TreatedCarts, l.ControlConverted, l.ControlCarts)
	l.RelativeLift = nil
	if l.TreatedCarts > 0 && l.ControlRate > 0 {
		rel := l.TreatedRate/l.ControlRate - 1
		l.RelativeLift = &rel
	}
	l.IncrementalCarts = l.AbsoluteLift * float64(l.TreatedCarts)
}

// query runs one of the report's queries and calls row for each result
// row; name goes into errors.
func query(ctx context.Context, conn driver.Conn, name, sql string, args []any, row func(scan func(...any) error) error) error {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("report %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return fmt.Errorf("report %s: %w", name, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("report %s: %w", name, err)
	}
	return nil
}

// ceilSecond returns t in UTC rounded up to a whole second: DateTime
// columns hold whole seconds, so d >= t ⇔ d >= ceil(t) and d < t ⇔
// d < ceil(t).
func ceilSecond(t time.Time) time.Time {
	t = t.UTC()
	if s := t.Truncate(time.Second); !s.Equal(t) {
		return s.Add(time.Second)
	}
	return t
}
