package analytics

import (
	"context"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ShadowComparison compares a shadow flow (shadow_decisions) with the live
// flow it shadows (its shadow_of) over the report's period, in one
// currency. A cart is (customer_key, cart_id); each side counts the carts
// with a decision of the period (the live side its treated decisions).
//
// The live flow's recoveries are the ones it was credited with (a
// recovered outcome naming one of its cohort decisions). The shadow
// flow's are the ones it would have been credited with: carts whose
// checkout (the first order outcome of the cart: recovered, converted or
// converted_holdout) came at or after one of its decisions and by that
// decision's attribute_until (its attribution window). Revenue is those
// orders' totals; the discount cost, as in the rest of the report, assumes
// every credited order used the decision's discount (an upper bound; for
// the shadow flow the discount of its latest credited decision).
type ShadowComparison struct {
	ShadowFlow string `json:"shadow_flow"`
	LiveFlow   string `json:"live_flow"`
	Currency   string `json:"currency"`
	// LiveCarts and ShadowCarts are the carts each reached; BothCarts
	// those reached by both.
	LiveCarts   int64 `json:"live_carts"`
	ShadowCarts int64 `json:"shadow_carts"`
	BothCarts   int64 `json:"both_carts"`
	// LiveRecovered and ShadowRecovered are the carts each is (or would
	// be) credited with; the revenue and discount cost those orders'.
	LiveRecovered           int64 `json:"live_recovered"`
	ShadowRecovered         int64 `json:"shadow_recovered"`
	LiveRevenueMinor        int64 `json:"live_revenue_minor"`
	ShadowRevenueMinor      int64 `json:"shadow_revenue_minor"`
	LiveDiscountCostMinor   int64 `json:"live_discount_cost_minor"`
	ShadowDiscountCostMinor int64 `json:"shadow_discount_cost_minor"`
}

// discountCost is the cost of a decision's discount on an order of value
// (minor units); the decision's discount columns are d_percent,
// d_amount and d_max.
func discountCost(value string) string {
	return `if(d_percent > 0, if(d_max > 0, least(intDiv(` + value + ` * d_percent, 100), d_max), intDiv(` + value + ` * d_percent, 100)), least(d_amount, ` + value + `))`
}

// shadowQuery is one row per (shadow flow, live flow, currency): the
// shadow flow's carts, those also reached by the live flow, the carts it
// would be credited with, their revenue and discount cost. Parameters:
// since, until (shadow decisions), since, until (live decisions). Each
// table is read through GROUP BY id; one ANY LEFT JOIN per SELECT.
const shadowQuery = `SELECT s_flow, s_of, s_currency,
    toInt64(count()), toInt64(sum(live)), toInt64(sum(credited)), toInt64(sum(revenue)), toInt64(sum(cost))
FROM (
    SELECT s_of, k, cart, s_flow, s_currency, credited, revenue, cost, live
    FROM (
        SELECT s_flow, s_of, s_currency, k, cart,
            max(ok) AS credited,
            max(if(ok, c_value, 0)) AS revenue,
            argMax(if(ok, d_cost, 0), if(ok, toUInt32(s_decided_at), 0)) AS cost
        FROM (
            SELECT s_flow, s_of, s_currency, k, cart, s_decided_at, c_value,
                c_at >= s_decided_at AND c_at <= s_until AS ok,
                d_cost_raw AS d_cost
            FROM (
                SELECT s_flow, s_of, s_currency, k, cart, s_decided_at, s_until, c_at, c_value,
                    ` + "DISCOUNT" + ` AS d_cost_raw
                FROM (
                    SELECT
                        id,
                        argMax(flow, inserted_at) AS s_flow,
                        argMax(shadow_of, inserted_at) AS s_of,
                        argMax(currency, inserted_at) AS s_currency,
                        argMax(customer_key, inserted_at) AS k,
                        argMax(cart_id, inserted_at) AS cart,
                        argMax(decided_at, inserted_at) AS s_decided_at,
                        argMax(attribute_until, inserted_at) AS s_until,
                        argMax(discount_percent, inserted_at) AS d_percent,
                        argMax(discount_amount_minor, inserted_at) AS d_amount,
                        argMax(discount_max_minor, inserted_at) AS d_max
                    FROM shadow_decisions
                    WHERE decided_at >= ? AND decided_at < ?
                    GROUP BY id
                ) AS d
                ANY LEFT JOIN (
                    SELECT o_k AS k, o_cart AS cart, min(o_at) AS c_at, argMin(o_value, o_at) AS c_value
                    FROM (
                        SELECT
                            id,
                            argMax(customer_key, inserted_at) AS o_k,
                            argMax(cart_id, inserted_at) AS o_cart,
                            argMax(at, inserted_at) AS o_at,
                            argMax(value_minor, inserted_at) AS o_value
                        FROM outcomes
                        WHERE kind IN ('recovered', 'converted', 'converted_holdout') AND order_id != ''
                        GROUP BY id
                    )
                    GROUP BY o_k, o_cart
                ) AS c USING (k, cart)
            )
        )
        GROUP BY s_flow, s_of, s_currency, k, cart
    ) AS s
    ANY LEFT JOIN (
        SELECT l_flow AS s_of, l_k AS k, l_cart AS cart, toUInt8(1) AS live
        FROM (
            SELECT
                id,
                argMax(flow, inserted_at) AS l_flow,
                argMax(customer_key, inserted_at) AS l_k,
                argMax(cart_id, inserted_at) AS l_cart,
                argMax(holdout, inserted_at) AS l_holdout
            FROM decisions
            WHERE decided_at >= ? AND decided_at < ?
            GROUP BY id
        )
        WHERE l_holdout = 0
        GROUP BY l_flow, l_k, l_cart
    ) AS l USING (s_of, k, cart)
)
GROUP BY s_flow, s_of, s_currency
ORDER BY s_flow, s_of, s_currency`

// shadowLiveQuery is one row per (live flow, currency): the carts of the
// flow's treated cohort decisions, those credited with a recovery, the
// revenue and the discount cost. Parameters: since, until, since.
const shadowLiveQuery = `SELECT l_flow, l_currency,
    toInt64(count()), toInt64(sum(rec)), toInt64(sum(revenue)), toInt64(sum(cost))
FROM (
    SELECT l_flow, l_currency, k, cart, max(recovered) AS rec, max(r_value) AS revenue,
        max(if(recovered = 1, ` + "DISCOUNT_R" + `, 0)) AS cost
    FROM (
        SELECT
            id AS decision_id,
            argMax(flow, inserted_at) AS l_flow,
            argMax(currency, inserted_at) AS l_currency,
            argMax(customer_key, inserted_at) AS k,
            argMax(cart_id, inserted_at) AS cart,
            argMax(holdout, inserted_at) AS l_holdout,
            argMax(discount_percent, inserted_at) AS d_percent,
            argMax(discount_amount_minor, inserted_at) AS d_amount,
            argMax(discount_max_minor, inserted_at) AS d_max
        FROM decisions
        WHERE decided_at >= ? AND decided_at < ?
        GROUP BY id
    ) AS d
    ANY LEFT JOIN (
        SELECT o_decision_id AS decision_id, toUInt8(1) AS recovered, max(o_value) AS r_value
        FROM (
            SELECT
                id,
                argMax(decision_id, inserted_at) AS o_decision_id,
                argMax(value_minor, inserted_at) AS o_value,
                argMax(kind, inserted_at) AS o_kind
            FROM outcomes
            WHERE at >= ? AND kind = 'recovered' AND decision_id != ''
            GROUP BY id
        )
        WHERE o_kind = 'recovered'
        GROUP BY o_decision_id
    ) AS o USING (decision_id)
    WHERE l_holdout = 0
    GROUP BY l_flow, l_currency, k, cart
)
GROUP BY l_flow, l_currency
ORDER BY l_flow, l_currency`

// ShadowComparisons runs the shadow queries for the report's period and
// returns one comparison per (shadow flow, live flow, currency) the
// shadow flow reached, by shadow flow, live flow and currency; empty (not
// nil) when there are no shadow decisions in the period. The report's
// Flow, when set, keeps the comparisons whose shadow or live flow it is.
func ShadowComparisons(ctx context.Context, conn driver.Conn, opt ReportOptions) ([]ShadowComparison, error) {
	since, until := ceilSecond(opt.Since), ceilSecond(opt.Until)
	type liveKey struct{ flow, currency string }
	live := map[liveKey]ShadowComparison{}
	err := query(ctx, conn, "shadow live", shadowLiveSQL, []any{since, until, since},
		func(scan func(...any) error) error {
			var k liveKey
			var c ShadowComparison
			if err := scan(&k.flow, &k.currency, &c.LiveCarts, &c.LiveRecovered, &c.LiveRevenueMinor, &c.LiveDiscountCostMinor); err != nil {
				return err
			}
			live[k] = c
			return nil
		})
	if err != nil {
		return nil, err
	}
	out := []ShadowComparison{}
	err = query(ctx, conn, "shadow", shadowSQL, []any{since, until, since, until},
		func(scan func(...any) error) error {
			var c ShadowComparison
			if err := scan(&c.ShadowFlow, &c.LiveFlow, &c.Currency, &c.ShadowCarts, &c.BothCarts,
				&c.ShadowRecovered, &c.ShadowRevenueMinor, &c.ShadowDiscountCostMinor); err != nil {
				return err
			}
			if opt.Flow != "" && opt.Flow != c.ShadowFlow && opt.Flow != c.LiveFlow {
				return nil
			}
			l := live[liveKey{c.LiveFlow, c.Currency}]
			c.LiveCarts, c.LiveRecovered, c.LiveRevenueMinor, c.LiveDiscountCostMinor =
				l.LiveCarts, l.LiveRecovered, l.LiveRevenueMinor, l.LiveDiscountCostMinor
			out = append(out, c)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// The queries with their discount expressions in.
var (
	shadowSQL     = replaceOnce(shadowQuery, "DISCOUNT", discountCost("c_value"))
	shadowLiveSQL = replaceOnce(shadowLiveQuery, "DISCOUNT_R", discountCost("r_value"))
)

func replaceOnce(s, old, new string) string {
	if strings.Count(s, old) != 1 {
		panic("analytics: " + old + " not once in a query")
	}
	return strings.Replace(s, old, new, 1)
}

// shadowGrid is the shadow flows table, the same for the terminal and the
// HTML, from one column list.
func (r *Report) shadowGrid() grid {
	return makeGrid([]tableColumn[ShadowComparison]{
		{"Shadow flow", "the shadow flow (shadow: true): evaluated, nothing sent", false, func(c ShadowComparison) string { return c.ShadowFlow }, true},
		{"Live flow", "the live flow it shadows (shadow_of)", false, func(c ShadowComparison) string { return c.LiveFlow }, true},
		{"Currency", "", false, func(c ShadowComparison) string { return c.Currency }, false},
		{"Live carts", "carts with a treated decision of the live flow", true, func(c ShadowComparison) string { return count(c.LiveCarts) }, false},
		{"Shadow carts", "carts with a decision of the shadow flow", true, func(c ShadowComparison) string { return count(c.ShadowCarts) }, false},
		{"Both", "carts reached by both", true, func(c ShadowComparison) string { return count(c.BothCarts) }, false},
		{"Live recovered", "carts the live flow was credited with", true, func(c ShadowComparison) string { return count(c.LiveRecovered) }, false},
		{"Shadow recovered", "carts checked out within the shadow flow's attribution window after its decision", true, func(c ShadowComparison) string { return count(c.ShadowRecovered) }, false},
		{"Live revenue", "", true, func(c ShadowComparison) string { return amount(c.LiveRevenueMinor, c.Currency) }, false},
		{"Shadow revenue", "", true, func(c ShadowComparison) string { return amount(c.ShadowRevenueMinor, c.Currency) }, false},
		{"Live discount", "upper bound: every credited order used the discount", true, func(c ShadowComparison) string { return amount(c.LiveDiscountCostMinor, c.Currency) }, false},
		{"Shadow discount", "upper bound: every credited order used the discount", true, func(c ShadowComparison) string { return amount(c.ShadowDiscountCostMinor, c.Currency) }, false},
	}, r.ShadowComparisons)
}
