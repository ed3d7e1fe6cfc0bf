package analytics

import (
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cartlift/cartlift/events"
)

// WriteJSON writes the report as indented JSON (snake_case keys, times in
// RFC 3339, money in minor units with its currency code beside it). Every
// float is finite: rates over nothing are 0, an undefined relative lift is
// absent.
func (r *Report) WriteJSON(w io.Writer) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("report json: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// WriteTable writes the report as aligned plain text for a terminal: the
// period and flow, the funnel, the totals per currency, the steps, the
// lift over the holdout group, the variants of steps with an A/B test,
// the daily recovered revenue and the time to recovery. The tables are those of the HTML report, from the same
// column lists; numbers are right-aligned, with thousands separators, and
// no line ends in a space. The detail rows are in the JSON and HTML only.
func (r *Report) WriteTable(w io.Writer) error {
	var buf bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&buf, format, args...) }
	p("Cart recovery report\n")
	p("Period     %s\n", r.period())
	p("Flow       %s\n", r.flowLabel())
	p("Generated  %s\n", r.generated())
	if r.empty() {
		p("\nNo decisions in this period.\n")
	}

	if r.Funnel.AbandonedCarts > 0 {
		f := r.Funnel
		p("\nFunnel (distinct carts, all currencies)\n")
		writeText(&buf, "  ", nil, []bool{false, true, false}, [][]string{
			{"abandoned", count(f.AbandonedCarts), ""},
			{"treated", count(f.TreatedCarts), percent(ratio(f.TreatedCarts, f.AbandonedCarts)) + " of abandoned (the rest is the holdout group)"},
			{"message sent", count(f.SentCarts), percent(ratio(f.SentCarts, f.TreatedCarts)) + " of treated"},
			{"clicked", count(f.ClickedCarts), percent(ratio(f.ClickedCarts, f.TreatedCarts)) + " of treated"},
			{"recovered", count(f.RecoveredCarts), percent(ratio(f.RecoveredCarts, f.TreatedCarts)) + " of treated"},
		})
	}

	tables := r.tableSet()
	if len(r.Totals) > 0 {
		p("\nTotals by currency (amounts in the row's currency)\n")
		tables.totals.writeText(&buf)
	}
	if len(r.Steps) > 0 {
		p("\nSteps\n")
		tables.steps.writeText(&buf)
	}
	if len(r.StepFunnel) > 0 {
		p("\nFunnel per step (steps due, all currencies; due = suppressed by a guard + holdout + decided)\n")
		tables.stepFunnel.writeText(&buf)
	}
	if len(r.NotSent) > 0 {
		p("\nNot sent, by reason (processor: a guard, no decision; actions: the decision was dropped)\n")
		tables.notSent.writeText(&buf)
	}
	if len(r.Totals) > 0 {
		p("Rates are recovered / treated carts; discount cost assumes every recovered order used its offer (an upper bound).\n")
	}

	if len(r.Lift) > 0 {
		p("\nLift over the holdout group (95%% CI, Newcombe's hybrid score method)\n")
		tables.lift.writeText(&buf)
	} else if !r.empty() {
		p("\nLift: no flow has a holdout group in this period.\n")
	}

	if len(r.VariantTests) > 0 {
		p("\nVariants (A/B tests of steps; 95%% CI of the difference from the first variant, Newcombe)\n")
		r.variantGrid().writeText(&buf)
	}
	if len(r.ShadowComparisons) > 0 {
		p("\nShadow flows (nothing sent; would-be recoveries: a checkout within the shadow flow's attribution window after its decision)\n")
		r.shadowGrid().writeText(&buf)
	}

	if len(r.DailyRevenue) > 0 {
		p("\nDaily recovered revenue (by day of checkout)\n")
		tables.daily.writeText(&buf)
	}

	if !r.empty() {
		p("\nTime to recovery (recovered decisions)\n")
		var rows [][]string
		for _, b := range r.TimeToRecovery {
			rows = append(rows, []string{b.Label, count(b.Count)})
		}
		writeText(&buf, "  ", nil, []bool{false, true}, rows)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// writeText writes head (when not nil) and rows as columns two spaces
// apart after indent: num columns right-aligned, the others left-aligned,
// widths in runes, no trailing spaces.
func writeText(buf *bytes.Buffer, indent string, head []string, num []bool, rows [][]string) {
	all := rows
	if head != nil {
		all = append([][]string{head}, rows...)
	}
	var width []int
	for _, row := range all {
		for i, c := range row {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range all {
		var line strings.Builder
		line.WriteString(indent)
		for i, c := range row {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i < len(num) && num[i] {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
		}
		buf.WriteString(strings.TrimRight(line.String(), " "))
		buf.WriteByte('\n')
	}
}

// tableColumn is one column of a report table, the same for the terminal and
// the HTML: its header, what the header means (the HTML's tooltip),
// whether it holds numbers (right-aligned) and its cell for a row.
type tableColumn[R any] struct {
	head, title string
	num         bool
	cell        func(R) string
	// wrap lets a text column's cells break between words and after
	// hyphens (flow and step names); numbers, days and codes never break.
	wrap bool
}

// grid is a table built from one column list: a header per column and, in
// every row, one cell per column, so that a header and its cells cannot
// drift apart.
type grid struct {
	Head []headCell
	Rows [][]cell
}

type headCell struct {
	Text, Title string
	Num         bool
}

type cell struct {
	Text  string
	Label string // the column's header, for the narrow layout
	Num   bool
	Wrap  bool
}

func makeGrid[R any](cols []tableColumn[R], rows []R) grid {
	var g grid
	for _, c := range cols {
		g.Head = append(g.Head, headCell{Text: c.head, Title: c.title, Num: c.num})
	}
	for _, r := range rows {
		cells := make([]cell, len(cols))
		for i, c := range cols {
			cells[i] = cell{Text: c.cell(r), Label: c.head, Num: c.num, Wrap: c.wrap}
		}
		g.Rows = append(g.Rows, cells)
	}
	return g
}

// width estimates the CSS pixels the grid needs as a table of 13 px text
// (the report's CSS): about 7.2 px a character, 7.8 in the bold headers,
// 14 px of padding a column, wrapping columns at 12 characters, plus 5%.
// Narrower than that, the page shows its rows as blocks instead.
func (g grid) width() int {
	var w float64
	for i, h := range g.Head {
		cw := 7.8 * float64(utf8.RuneCountInString(h.Text))
		for _, r := range g.Rows {
			n := utf8.RuneCountInString(r[i].Text)
			if r[i].Wrap {
				n = min(n, 12)
			}
			cw = max(cw, 7.2*float64(n))
		}
		w += cw + 14
	}
	return int(math.Ceil(w * 1.05))
}

// writeText writes the grid for a terminal, headers upper-cased.
func (g grid) writeText(buf *bytes.Buffer) {
	head := make([]string, len(g.Head))
	num := make([]bool, len(g.Head))
	for i, h := range g.Head {
		head[i], num[i] = strings.ToUpper(h.Text), h.Num
	}
	rows := make([][]string, len(g.Rows))
	for i, r := range g.Rows {
		rows[i] = make([]string, len(r))
		for j, c := range r {
			rows[i][j] = c.Text
		}
	}
	writeText(buf, "", head, num, rows)
}

// metricRow is a row of Totals, Steps or Detail: its grouping values, its
// currency and its Metrics.
type metricRow struct {
	keys     []string
	currency string
	m        Metrics
}

// keyColumns are text columns showing a metricRow's keys, one per name;
// all but Day and Currency may wrap.
func keyColumns(names ...string) []tableColumn[metricRow] {
	cols := make([]tableColumn[metricRow], len(names))
	for i, n := range names {
		cols[i] = tableColumn[metricRow]{head: n, cell: func(r metricRow) string { return r.keys[i] },
			wrap: n != "Day" && n != "Currency"}
	}
	return cols
}

// metricColumnList is the Metrics part of the Totals, Steps and Detail
// tables. Amounts are in the row's currency (its Currency column), with
// that currency's minor digits.
var metricColumnList = []tableColumn[metricRow]{
	{"Carts", "distinct carts with a decision, treated or holdout", true, func(r metricRow) string { return count(r.m.AbandonedCarts) }, false},
	{"Treated", "carts with a treated (not holdout) decision", true, func(r metricRow) string { return count(r.m.TreatedCarts) }, false},
	{"Holdout", "carts in the holdout group (never contacted)", true, func(r metricRow) string { return count(r.m.ControlCarts) }, false},
	{"Decisions", "treated decisions", true, func(r metricRow) string { return count(r.m.Decisions) }, false},
	{"Sent", "treated decisions whose email was sent or webhook delivered", true, func(r metricRow) string { return count(r.m.Sent) }, false},
	{"Clicked", "treated decisions whose link was clicked", true, func(r metricRow) string { return count(r.m.Clicked) }, false},
	{"Recovered", "treated decisions followed by the cart's checkout", true, func(r metricRow) string { return count(r.m.Recovered) }, false},
	{"Rate", "recovered / treated carts", true, func(r metricRow) string { return percent(r.m.RecoveryRate) }, false},
	{"Revenue", "recovered revenue, in the row's currency", true, func(r metricRow) string { return amount(r.m.RecoveredRevenueMinor, r.currency) }, false},
	{"Discount ≤", "discount cost if every recovered order used its offer (an upper bound)", true, func(r metricRow) string {
		return amount(r.m.DiscountCostMinor, r.currency)
	}, false},
	{"Median", "median time from the decision to the checkout", true, func(r metricRow) string { return durationPtr(r.m.MedianSeconds) }, false},
	{"P90", "90th percentile of the time from the decision to the checkout", true, func(r metricRow) string { return durationPtr(r.m.P90Seconds) }, false},
	{"Holdout rate", "conversion of the holdout group: converted / holdout carts", true, func(r metricRow) string { return controlText(r.m) }, false},
}

// tableSet is the report's tables, built from their column lists.
type tableSet struct {
	totals, steps, stepFunnel, notSent, lift, daily, detail grid
}

// reasonsText is a step's suppressions by reason, most first (then by
// reason): "no_consent 3, frequency_cap 1", or "–" for none.
func reasonsText(by map[string]int64) string {
	reasons := slices.Collect(maps.Keys(by))
	slices.SortFunc(reasons, func(a, b string) int { return cmp.Or(cmp.Compare(by[b], by[a]), cmp.Compare(a, b)) })
	var parts []string
	for _, r := range reasons {
		if by[r] > 0 {
			parts = append(parts, r+" "+count(by[r]))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

func (r *Report) tableSet() tableSet {
	metric := func(keys ...string) []tableColumn[metricRow] {
		return append(keyColumns(keys...), metricColumnList...)
	}
	var ts tableSet
	var rows []metricRow
	for _, t := range r.Totals {
		rows = append(rows, metricRow{[]string{t.Currency}, t.Currency, t.Metrics})
	}
	ts.totals = makeGrid(metric("Currency"), rows)
	rows = nil
	for _, s := range r.Steps {
		rows = append(rows, metricRow{[]string{s.Flow, s.Step, s.Currency}, s.Currency, s.Metrics})
	}
	ts.steps = makeGrid(metric("Flow", "Step", "Currency"), rows)
	rows = nil
	for _, d := range r.Detail {
		rows = append(rows, metricRow{[]string{d.Day, d.Flow, d.Step, d.CartType, d.Channel, d.Currency}, d.Currency, d.Metrics})
	}
	ts.detail = makeGrid(metric("Day", "Flow", "Step", "Cart type", "Channel", "Currency"), rows)

	ts.stepFunnel = makeGrid([]tableColumn[StepFunnel]{
		{"Flow", "", false, func(f StepFunnel) string { return f.Flow }, true},
		{"Step", "", false, func(f StepFunnel) string { return f.Step }, true},
		{"Due", "steps that came due: suppressed by a guard + holdout + decided", true, func(f StepFunnel) string { return count(f.Due) }, false},
		{"Suppressed", "steps not sent for a reason: stopped by a guard, or decided and dropped by the actions role", true, func(f StepFunnel) string {
			return count(f.Suppressed)
		}, false},
		{"Why not sent", "suppressed steps by reason", false, func(f StepFunnel) string { return reasonsText(f.SuppressedBy) }, true},
		{"Deferred", "steps deferred by quiet hours (then decided or suppressed: counted there too)", true, func(f StepFunnel) string { return count(f.Deferred) }, false},
		{"Holdout", "holdout decisions: the control group, nothing sent by design", true, func(f StepFunnel) string { return count(f.Holdout) }, false},
		{"Decided", "treated decisions", true, func(f StepFunnel) string { return count(f.Decided) }, false},
		{"Sent", "treated decisions whose email was sent or webhook delivered", true, func(f StepFunnel) string { return count(f.Sent) }, false},
		{"Clicked", "treated decisions whose link was clicked", true, func(f StepFunnel) string { return count(f.Clicked) }, false},
		{"Recovered", "treated decisions followed by the cart's checkout", true, func(f StepFunnel) string { return count(f.Recovered) }, false},
	}, r.StepFunnel)

	ts.notSent = makeGrid([]tableColumn[NotSentRow]{
		{"Flow", "", false, func(n NotSentRow) string { return n.Flow }, true},
		{"Step", "", false, func(n NotSentRow) string { return n.Step }, true},
		{"Stage", "processor: a guard stopped the step, no decision; actions: the decision was dropped", false, func(n NotSentRow) string { return n.Stage }, false},
		{"Reason", "", false, func(n NotSentRow) string { return n.Reason }, false},
		{"Steps", "suppressed steps", true, func(n NotSentRow) string { return count(n.Steps) }, false},
		{"Carts", "distinct carts among them", true, func(n NotSentRow) string { return count(n.Carts) }, false},
	}, r.NotSent)

	ts.lift = makeGrid([]tableColumn[Lift]{
		{"Flow", "", false, func(l Lift) string { return l.Flow }, true},
		{"Treated", "recovered / treated carts", true, func(l Lift) string {
			return fmt.Sprintf("%s/%s (%s)", count(l.TreatedRecovered), count(l.TreatedCarts), percent(l.TreatedRate))
		}, false},
		{"Holdout", "converted / holdout carts", true, func(l Lift) string {
			return fmt.Sprintf("%s/%s (%s)", count(l.ControlConverted), count(l.ControlCarts), percent(l.ControlRate))
		}, false},
		{"Lift (95% CI)", "treated rate minus holdout rate, percentage points, with its 95% confidence interval", true, liftText, false},
		{"Relative", "treated rate / holdout rate − 1", true, func(l Lift) string { return relativeText(l.RelativeLift) }, false},
		{"Incremental carts", "recovered carts over what the holdout rate predicts", true, func(l Lift) string { return signed(l.IncrementalCarts) }, false},
	}, r.Lift)

	ts.daily = makeGrid([]tableColumn[DailyRevenue]{
		{"Day", "UTC day of the checkout", false, func(d DailyRevenue) string { return d.Day }, false},
		{"Currency", "", false, func(d DailyRevenue) string { return d.Currency }, false},
		{"Orders", "recovered checkouts", true, func(d DailyRevenue) string { return count(d.Recovered) }, false},
		{"Revenue", "recovered revenue, in the row's currency", true, func(d DailyRevenue) string { return amount(d.RecoveredRevenueMinor, d.Currency) }, false},
	}, r.DailyRevenue)
	return ts
}

// controlText is the holdout group's conversion, "50.0% (1/2)", or "–"
// without control carts.
func controlText(m Metrics) string {
	if m.ControlCarts == 0 {
		return "–"
	}
	return fmt.Sprintf("%s (%s/%s)", percent(m.ControlRate), count(m.ControlConverted), count(m.ControlCarts))
}

// empty reports whether the period has no decision and no suppressed or
// deferred step.
func (r *Report) empty() bool { return r.Funnel.AbandonedCarts == 0 && len(r.StepFunnel) == 0 }

// period is the period exactly as queried, "2024-03-01 00:00 – 2024-03-03
// 00:00 UTC (2 days)", with seconds when a bound is not a whole minute
// ("2026-12-03 09:05:02 – 2026-12-03 09:06:54 UTC (1m52s)"); a period that
// is not whole days gives its length as a duration.
func (r *Report) period() string {
	span := r.Until.Sub(r.Since)
	length := duration(int64(span / time.Second))
	if span%(24*time.Hour) == 0 {
		days := int64(span / (24 * time.Hour))
		length = count(days) + " day"
		if days != 1 {
			length += "s"
		}
	}
	layout := "2006-01-02 15:04"
	if r.Since.Second() != 0 || r.Until.Second() != 0 {
		layout += ":05"
	}
	return fmt.Sprintf("%s – %s UTC (%s)", r.Since.UTC().Format(layout), r.Until.UTC().Format(layout), length)
}

// generated is when the report was built, to the second.
func (r *Report) generated() string { return r.GeneratedAt.UTC().Format("2006-01-02 15:04:05 UTC") }

func (r *Report) flowLabel() string {
	if r.Flow == "" {
		return "all flows"
	}
	return r.Flow
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// count formats an integer with thousands separators: "1,234,567".
func count(v int64) string { return group(itoa(v)) }

// group puts thousands separators into the integer part of a decimal
// number "-1234567.89" → "-1,234,567.89".
func group(s string) string {
	sign := ""
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		sign, s = s[:1], s[1:]
	}
	whole, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		return sign + b.String() + "." + frac
	}
	return sign + b.String()
}

// percent formats a rate in [0, 1] as "25.0%".
func percent(rate float64) string { return group(strconv.FormatFloat(rate*100, 'f', 1, 64)) + "%" }

// liftText formats a lift as "+4.2 pp [1.1, 7.3]" (percentage points).
func liftText(l Lift) string {
	return fmt.Sprintf("%s pp [%.1f, %.1f]", signed(l.AbsoluteLift*100), l.Low*100, l.High*100)
}

func relativeText(rel *float64) string {
	if rel == nil {
		return "–"
	}
	return signed(*rel*100) + "%"
}

// signed formats v with one decimal, a sign and thousands separators,
// never "-0.0".
func signed(v float64) string {
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if s == "-0.0" {
		s = "0.0"
	}
	if !strings.HasPrefix(s, "-") {
		s = "+" + s
	}
	return group(s)
}

// amount formats minor units in the currency's minor-unit digits (ISO
// 4217; 2 for an unknown code) with thousands separators: "1,234.56" for
// EUR, "1,500" for JPY, "1,234.567" for KWD, "-0.05" for USD.
func amount(minor int64, currency string) string { return group(events.FormatMinor(minor, currency)) }

// money is amount followed by the code: "1,234.56 EUR", "1,500 JPY".
func money(minor int64, currency string) string {
	s := amount(minor, currency)
	if currency != "" {
		s += " " + currency
	}
	return s
}

// duration formats seconds with at most its two largest units: "45s",
// "12m30s", "3h12m", "2h", "3d4h".
func duration(sec int64) string {
	if sec < 0 {
		return "-" + duration(-sec)
	}
	const m, h, d = 60, 3600, 86400
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return itoa(a) + ua
		}
		return itoa(a) + ua + itoa(b) + ub
	}
	switch {
	case sec < m:
		return itoa(sec) + "s"
	case sec < h:
		return two(sec/m, "m", sec%m, "s")
	case sec < d:
		return two(sec/h, "h", sec%h/m, "m")
	default:
		return two(sec/d, "d", sec%d/h, "h")
	}
}

func durationPtr(sec *int64) string {
	if sec == nil {
		return "–"
	}
	return duration(*sec)
}

//go:embed templates/report.html.tmpl
var templateFiles embed.FS

var reportTemplate = template.Must(template.New("report.html.tmpl").ParseFS(templateFiles, "templates/report.html.tmpl"))

// WriteHTML writes the report as one self-contained HTML page: inline CSS
// and inline SVG charts (funnel, daily recovered revenue, time to
// recovery, lift with its confidence interval), no script, no external
// font, image or stylesheet. Every string from the data (flows, steps,
// cart types, channels, currencies) goes through html/template's
// escaping. A period without decisions renders a page saying so instead
// of charts.
func (r *Report) WriteHTML(w io.Writer) error {
	var buf bytes.Buffer
	if err := reportTemplate.Execute(&buf, r.htmlView()); err != nil {
		return fmt.Errorf("report html: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// htmlView is what the template shows, formatted; charts are computed
// geometry, their labels still plain strings for the template to escape.
type htmlView struct {
	Period, Flow, Generated  string
	Empty                    bool
	Cards                    []card
	Funnel, Daily, TTR, Lift chart
	Tables                   []table
	Notes                    []string
}

// card is a headline figure: Values are its lines (one per currency for
// money), Sub the explanation below it, followed by SubValues (amounts,
// each kept on one line).
type card struct {
	Label     string
	Values    []string
	Sub       string
	SubValues []string
	Tone      string
}

// Size is the class of the card's figures: "" for one short value,
// "lines" for several, "long" when one has more than 14 characters (a
// smaller font, so that it fits the narrowest card).
func (c card) Size() string {
	for _, v := range c.Values {
		if utf8.RuneCountInString(v) > 14 {
			return "long"
		}
	}
	if len(c.Values) > 1 {
		return "lines"
	}
	return ""
}

// table is a grid with its place on the page. Where the page is narrower
// than StackBelow CSS pixels (the grid's estimated width), its rows
// become blocks of label and value pairs, so that no column is cut off.
type table struct {
	ID, Title  string
	Collapsed  bool
	StackBelow int
	grid
}

type chart struct {
	W, H    float64
	Label   string // aria-label of the svg
	Rects   []mark
	Lines   []mark
	Circles []mark
	Texts   []mark
	// Note replaces the svg when there is nothing to draw.
	Note string
}

// mark is one SVG element: a rect (X, Y, W, H), a line (X, Y to X2, Y2), a
// circle (X, Y, R) or a text at (X, Y) with Anchor; Title is its tooltip.
type mark struct {
	X, Y, W, H, X2, Y2, R float64
	Class, Anchor         string
	Text, Title           string
}

func (r *Report) htmlView() htmlView {
	v := htmlView{
		Period:    r.period(),
		Flow:      r.flowLabel(),
		Generated: r.generated(),
		Empty:     r.empty(),
	}
	if v.Empty {
		return v
	}
	v.Cards = r.cards()
	v.Funnel = r.funnelChart()
	v.Daily = r.dailyChart()
	v.TTR = r.ttrChart()
	v.Lift = r.liftChart()
	v.Tables = r.tables()
	v.Notes = []string{
		"Recovery rate: treated carts whose last reminder was followed by a checkout within the attribution window, over treated carts. Each decision, outcome and action result counts once however often it was delivered.",
		"Lift: recovery rate of treated carts minus the conversion rate of the holdout group (never contacted), per flow, with a 95% confidence interval by Newcombe's hybrid score method. An interval that contains 0 means the difference could be chance.",
		"Discount cost assumes every recovered order used the offered discount: an upper bound.",
		"Amounts in the tables are in the row's currency, with its minor digits; amounts in different currencies are never added up.",
		"Daily revenue is dated by the checkout; the other figures by the decision (a recovery after the period still counts for its decision).",
		"Funnel per step: every step that came due is counted once, as suppressed by a guard (no consent, a cap, combined into another cart's message), a holdout decision (the control group, not a suppression) or a decided one; decided steps the actions role dropped (no address, expired, no channel) are suppressed too. A deferral by quiet hours delays a step; the step is then counted where it ended.",
	}
	if len(r.VariantTests) > 0 {
		v.Notes = append(v.Notes, "Variants: each customer gets one variant of a step with variants (the same one every time); a variant's rate is its recovered over treated carts, compared with the step's first variant (by name) with a 95% interval (Newcombe). A winner is declared only when its interval against every other variant lies above 0; otherwise there is no winner yet.")
	}
	return v
}

func (r *Report) cards() []card {
	f := r.Funnel
	cs := []card{{
		Label:  "Recovery rate",
		Values: []string{percent(ratio(f.RecoveredCarts, f.TreatedCarts))},
		Sub:    fmt.Sprintf("%s of %s treated carts recovered", count(f.RecoveredCarts), count(f.TreatedCarts)),
		Tone:   "neutral",
	}}
	// One line per currency: amounts in different currencies are never
	// added up, and each line stays on one line.
	rev := card{Label: "Recovered revenue", Tone: "neutral"}
	var cost []string
	for _, t := range r.Totals {
		rev.Values = append(rev.Values, money(t.RecoveredRevenueMinor, t.Currency))
		cost = append(cost, money(t.DiscountCostMinor, t.Currency))
	}
	if len(rev.Values) == 0 {
		rev.Values = []string{"–"}
	} else {
		rev.Sub, rev.SubValues = "discount cost at most", cost
	}
	cs = append(cs, rev)
	// A card for each of the two flows with the most treated carts; the
	// chart and the table show them all.
	lifts := slices.Clone(r.Lift)
	slices.SortStableFunc(lifts, func(a, b Lift) int { return cmp.Compare(b.TreatedCarts, a.TreatedCarts) })
	for _, l := range lifts[:min(2, len(lifts))] {
		tone, verdict := "neutral", "not significant at 95%"
		switch {
		case l.TreatedCarts == 0:
			verdict = "no treated carts"
		case l.Low > 0:
			tone, verdict = "good", "significant at 95%"
		case l.High < 0:
			tone, verdict = "bad", "significantly negative at 95%"
		}
		cs = append(cs, card{
			Label:  "Lift over holdout · " + l.Flow,
			Values: []string{signed(l.AbsoluteLift*100) + " pp"},
			Sub: fmt.Sprintf("%s vs %s, 95%% CI [%.1f, %.1f] pp, %s; ≈%s carts",
				percent(l.TreatedRate), percent(l.ControlRate), l.Low*100, l.High*100, verdict, signed(l.IncrementalCarts)+" incremental"),
			Tone: tone,
		})
	}
	if len(r.Lift) == 0 {
		cs = append(cs, card{Label: "Lift over holdout", Values: []string{"–"}, Sub: "no holdout group in this period", Tone: "neutral"})
	}
	cs = append(cs, card{
		Label:  "Reached",
		Values: []string{percent(ratio(f.SentCarts, f.TreatedCarts))},
		Sub:    fmt.Sprintf("%s carts got a message, %s clicked", count(f.SentCarts), count(f.ClickedCarts)),
		Tone:   "neutral",
	})
	var due, suppressed int64
	by := map[string]int64{}
	for _, s := range r.StepFunnel {
		due, suppressed = due+s.Due, suppressed+s.Suppressed
		for reason, n := range s.SuppressedBy {
			by[reason] += n
		}
	}
	cs = append(cs, card{
		Label:  "Not sent",
		Values: []string{count(suppressed)},
		Sub:    fmt.Sprintf("of %s steps due were suppressed: %s", count(due), reasonsText(by)),
		Tone:   "neutral",
	})
	return cs
}

// f2 rounds to two decimals: coordinates in the page.
func f2(v float64) float64 { return math.Round(v*100) / 100 }

func (r *Report) funnelChart() chart {
	f := r.Funnel
	stages := []struct {
		name string
		n    int64
		of   string
	}{
		{"Abandoned", f.AbandonedCarts, ""},
		{"Treated", f.TreatedCarts, percent(ratio(f.TreatedCarts, f.AbandonedCarts)) + " of abandoned"},
		{"Message sent", f.SentCarts, percent(ratio(f.SentCarts, f.TreatedCarts)) + " of treated"},
		{"Clicked", f.ClickedCarts, percent(ratio(f.ClickedCarts, f.TreatedCarts)) + " of treated"},
		{"Recovered", f.RecoveredCarts, percent(ratio(f.RecoveredCarts, f.TreatedCarts)) + " of treated"},
	}
	const left, width, barH, gap, top = 120.0, 380.0, 26.0, 12.0, 8.0
	c := chart{W: 680, H: top*2 + float64(len(stages))*(barH+gap) - gap, Label: "Funnel of carts"}
	var peak int64 = 1
	for _, s := range stages {
		peak = max(peak, s.n)
	}
	for i, s := range stages {
		y := top + float64(i)*(barH+gap)
		w := f2(width * float64(s.n) / float64(peak))
		label := count(s.n)
		if s.of != "" {
			label += " · " + s.of
		}
		c.Texts = append(c.Texts, mark{X: left - 8, Y: f2(y + barH/2 + 4), Anchor: "end", Class: "lab", Text: s.name})
		c.Rects = append(c.Rects, mark{X: left, Y: y, W: max(w, 1), H: barH, Class: "f" + strconv.Itoa(i), Title: s.name + ": " + label})
		c.Texts = append(c.Texts, mark{X: f2(left + max(w, 1) + 6), Y: f2(y + barH/2 + 4), Anchor: "start", Class: "val", Text: label})
	}
	return c
}

func (r *Report) dailyChart() chart {
	if len(r.DailyRevenue) == 0 {
		return chart{Note: "No recovered checkout in this period."}
	}
	// The days of the axis: every day of the period when it is short, else
	// only the days with revenue.
	var days []string
	if r.Until.Sub(r.Since) <= 93*24*time.Hour {
		for d := r.Since.UTC().Truncate(24 * time.Hour); d.Before(r.Until); d = d.Add(24 * time.Hour) {
			days = append(days, d.Format("2006-01-02"))
		}
	} else {
		seen := map[string]bool{}
		for _, d := range r.DailyRevenue {
			if !seen[d.Day] {
				seen[d.Day] = true
				days = append(days, d.Day)
			}
		}
	}
	index := map[string]int{}
	for i, d := range days {
		index[d] = i
	}
	var currencies []string
	byCur := map[string][]DailyRevenue{}
	for _, d := range r.DailyRevenue {
		if _, ok := byCur[d.Currency]; !ok {
			currencies = append(currencies, d.Currency)
		}
		byCur[d.Currency] = append(byCur[d.Currency], d)
	}
	// One panel per currency, each with its own scale: revenue in
	// different currencies is never drawn on one axis. The y axis has
	// round ticks in whole units of the currency, the panel's currency
	// above it, and room on the left for the longest tick label.
	type axis struct {
		top   int64 // minor units at the top of the plot
		ticks []int64
	}
	axes := map[string]axis{}
	widest := 1
	for _, cur := range currencies {
		var peak int64 = 1
		for _, d := range byCur[cur] {
			peak = max(peak, d.RecoveredRevenueMinor)
		}
		top, ticks := moneyTicks(peak, cur)
		axes[cur] = axis{top, ticks}
		for _, t := range ticks {
			widest = max(widest, utf8.RuneCountInString(tickAmount(t, cur)))
		}
	}
	const right, panelH, plotH, labelH = 680.0, 160.0, 100.0, 24.0
	left := f2(max(40, 7*float64(widest)+14)) // 11 px digits are about 6.5 px wide
	c := chart{W: right + 10, H: float64(len(currencies)) * panelH, Label: "Recovered revenue per day and currency"}
	slot := (right - left) / float64(len(days))
	barW := min(max(slot*0.7, 1), 48)  // a short period must not give a wall of a bar
	every := max(1, (len(days)+13)/14) // at most ~14 day labels
	for p, cur := range currencies {
		y0 := float64(p)*panelH + 30
		base := y0 + plotH
		ax := axes[cur]
		c.Texts = append(c.Texts, mark{X: left, Y: y0 - 14, Anchor: "start", Class: "cur", Text: cur})
		c.Lines = append(c.Lines, mark{X: left, Y: base, X2: right, Y2: base, Class: "base"})
		for _, t := range ax.ticks {
			y := f2(base - plotH*float64(t)/float64(ax.top))
			if t > 0 {
				c.Lines = append(c.Lines, mark{X: left, Y: y, X2: right, Y2: y, Class: "grid"})
			}
			c.Texts = append(c.Texts, mark{X: left - 6, Y: f2(y + 4), Anchor: "end", Class: "axis", Text: tickAmount(t, cur)})
		}
		for _, d := range byCur[cur] {
			i, ok := index[d.Day]
			if !ok {
				continue
			}
			h := f2(plotH * float64(d.RecoveredRevenueMinor) / float64(ax.top))
			c.Rects = append(c.Rects, mark{
				X: f2(left + float64(i)*slot + (slot-barW)/2), Y: f2(base - h), W: f2(barW), H: max(h, 0.5), Class: "rev",
				Title: fmt.Sprintf("%s: %s from %s orders", d.Day, money(d.RecoveredRevenueMinor, cur), count(d.Recovered)),
			})
		}
		for i, d := range days {
			if i%every == 0 {
				c.Texts = append(c.Texts, mark{X: f2(left + (float64(i)+0.5)*slot), Y: base + labelH - 8, Anchor: "middle", Class: "axis", Text: d[5:]})
			}
		}
	}
	return c
}

// moneyTicks returns the y axis for amounts up to peak minor units of
// currency: ticks from 0 in steps of 1, 2, 2.5 or 5 × 10ⁿ whole units (at
// most five steps), and the top tick, at or above peak.
func moneyTicks(peak int64, currency string) (top int64, ticks []int64) {
	digits, ok := events.CurrencyDigits(currency)
	if !ok {
		digits = 2
	}
	unit := int64(1)
	for range digits {
		unit *= 10
	}
	peak = max(peak, 1)
	steps := func(s int64) int64 { return peak/s + min(1, peak%s) } // ⌈peak/s⌉
	step := peak/5 + 1                                              // beyond any round step
search:
	for mag := unit; mag <= math.MaxInt64/50; mag *= 10 {
		for _, m := range []int64{10, 20, 25, 50} {
			if s := mag * m / 10; steps(s) <= 5 {
				step = s
				break search
			}
		}
	}
	n := steps(step)
	for i := range n + 1 {
		ticks = append(ticks, i*step)
	}
	return n * step, ticks
}

// tickAmount is an axis label: whole units of the currency with thousands
// separators, "150,000".
func tickAmount(minor int64, currency string) string {
	s := amount(minor, currency)
	if whole, _, ok := strings.Cut(s, "."); ok {
		return whole
	}
	return s
}

func (r *Report) ttrChart() chart {
	var total int64
	for _, b := range r.TimeToRecovery {
		total += b.Count
	}
	if total == 0 {
		return chart{Note: "No recovered cart yet for the decisions of this period."}
	}
	const left, top, plotH, slot = 20.0, 24.0, 140.0, 100.0
	c := chart{W: left*2 + slot*float64(len(r.TimeToRecovery)), H: top + plotH + 30, Label: "Time from decision to recovery"}
	var peak int64 = 1
	for _, b := range r.TimeToRecovery {
		peak = max(peak, b.Count)
	}
	base := top + plotH
	c.Lines = append(c.Lines, mark{X: left, Y: base, X2: c.W - left, Y2: base, Class: "base"})
	for i, b := range r.TimeToRecovery {
		x := left + float64(i)*slot
		h := f2(plotH * float64(b.Count) / float64(peak))
		if b.Count > 0 {
			c.Rects = append(c.Rects, mark{X: x + 14, Y: f2(base - h), W: slot - 28, H: h, Class: "ttr",
				Title: fmt.Sprintf("%s: %s recovered (%s)", b.Label, count(b.Count), percent(ratio(b.Count, total)))})
		}
		c.Texts = append(c.Texts,
			mark{X: x + slot/2, Y: f2(base - h - 6), Anchor: "middle", Class: "val", Text: count(b.Count)},
			mark{X: x + slot/2, Y: base + 18, Anchor: "middle", Class: "axis", Text: b.Label})
	}
	return c
}

func (r *Report) liftChart() chart {
	if len(r.Lift) == 0 {
		return chart{Note: "No flow has a holdout group in this period: lift needs control carts."}
	}
	lo, hi := -0.05, 0.05
	for _, l := range r.Lift {
		lo, hi = min(lo, l.Low), max(hi, l.High)
	}
	step := niceStep(hi - lo)
	lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	// Room on the left for the longest flow name (bold 12 px: about 7.5 px
	// a character), at most 26 characters of it.
	const maxName, rowH, top = 26, 44.0, 30.0
	longest := 8
	for _, l := range r.Lift {
		longest = max(longest, min(maxName, utf8.RuneCountInString(l.Flow)))
	}
	left := f2(7.5*float64(longest) + 18)
	right := left + 320
	x := func(v float64) float64 { return f2(left + (v-lo)/(hi-lo)*(right-left)) }
	c := chart{W: right + 170, H: top + rowH*float64(len(r.Lift)) + 10, Label: "Lift over the holdout group with 95% confidence intervals"}
	bottom := c.H - 10
	for t := lo; t <= hi+step/2; t += step {
		tx := x(t)
		c.Lines = append(c.Lines, mark{X: tx, Y: top - 6, X2: tx, Y2: bottom, Class: "grid"})
		c.Texts = append(c.Texts, mark{X: tx, Y: top - 12, Anchor: "middle", Class: "axis", Text: tick(t*100) + " pp"})
	}
	c.Lines = append(c.Lines, mark{X: x(0), Y: top - 6, X2: x(0), Y2: bottom, Class: "zero"})
	for i, l := range r.Lift {
		y := top + rowH*float64(i) + rowH/2
		class := "ci"
		switch {
		case l.Low > 0:
			class = "ci good"
		case l.High < 0:
			class = "ci bad"
		}
		c.Texts = append(c.Texts,
			mark{X: left - 10, Y: y + 4, Anchor: "end", Class: "lab", Text: shorten(l.Flow, maxName), Title: l.Flow},
			mark{X: right + 12, Y: y + 4, Anchor: "start", Class: "val", Text: liftText(l)})
		c.Lines = append(c.Lines,
			mark{X: x(l.Low), Y: y, X2: x(l.High), Y2: y, Class: class},
			mark{X: x(l.Low), Y: y - 7, X2: x(l.Low), Y2: y + 7, Class: class},
			mark{X: x(l.High), Y: y - 7, X2: x(l.High), Y2: y + 7, Class: class})
		c.Circles = append(c.Circles, mark{X: x(l.AbsoluteLift), Y: y, R: 6, Class: "pt " + class,
			Title: fmt.Sprintf("%s: treated %d/%d (%s), holdout %d/%d (%s), lift %s", l.Flow,
				l.TreatedRecovered, l.TreatedCarts, percent(l.TreatedRate), l.ControlConverted, l.ControlCarts, percent(l.ControlRate), liftText(l))})
	}
	return c
}

// tick formats a tick in percentage points: "−10", "0", "+25".
func tick(pp float64) string {
	v := math.Round(pp)
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%+.0f", v)
}

// shorten cuts s to n runes, marking the cut with "…".
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// niceStep returns a tick step for a range of proportions: about four to
// eight ticks.
func niceStep(span float64) float64 {
	for _, s := range []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5} {
		if span/s <= 8 {
			return s
		}
	}
	return 1
}

// tables are the HTML report's tables, those with rows, from tableSet.
func (r *Report) tables() []table {
	g := r.tableSet()
	var out []table
	for _, t := range []table{
		{ID: "totals", Title: "Totals by currency", grid: g.totals},
		{ID: "steps", Title: "Steps", grid: g.steps},
		{ID: "step-funnel", Title: "Funnel per step: due, suppressed, sent", grid: g.stepFunnel},
		{ID: "not-sent", Title: "Not sent, by reason", grid: g.notSent},
		{ID: "lift", Title: "Lift over the holdout group", grid: g.lift},
		{ID: "variants", Title: "Variants: A/B tests of steps", grid: r.variantGrid()},
		{ID: "shadow", Title: "Shadow flows against their live flows", grid: r.shadowGrid()},
		{ID: "daily", Title: "Daily recovered revenue", Collapsed: true, grid: g.daily},
		{ID: "detail", Title: "Detail per day, flow, step, cart type and channel", Collapsed: true, grid: g.detail},
	} {
		if len(t.Rows) > 0 {
			t.StackBelow = t.width()
			out = append(out, t)
		}
	}
	return out
}
