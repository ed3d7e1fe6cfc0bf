package analytics

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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
// lift over the holdout group, the daily recovered revenue and the time
// to recovery. The detail rows are in the JSON and HTML only.
func (r *Report) WriteTable(w io.Writer) error {
	var buf bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&buf, format, args...) }
	p("Cart recovery report\n")
	p("Period     %s\n", r.period())
	p("Flow       %s\n", r.flowLabel())
	p("Generated  %s\n", r.GeneratedAt.UTC().Format("2006-01-02 15:04:05 UTC"))
	if r.empty() {
		p("\nNo decisions in this period.\n")
	}

	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	flush := func() { _ = tw.Flush() } // into a bytes.Buffer: cannot fail

	if !r.empty() {
		f := r.Funnel
		p("\nFunnel (distinct carts, all currencies)\n")
		row("  abandoned", itoa(f.AbandonedCarts), "")
		row("  treated", itoa(f.TreatedCarts), percent(ratio(f.TreatedCarts, f.AbandonedCarts))+" of abandoned (the rest is the holdout group)")
		row("  message sent", itoa(f.SentCarts), percent(ratio(f.SentCarts, f.TreatedCarts))+" of treated")
		row("  clicked", itoa(f.ClickedCarts), percent(ratio(f.ClickedCarts, f.TreatedCarts))+" of treated")
		row("  recovered", itoa(f.RecoveredCarts), percent(ratio(f.RecoveredCarts, f.TreatedCarts))+" of treated")
		flush()
	}

	if len(r.Totals) > 0 {
		p("\nTotals by currency\n")
		row(append([]string{"CURRENCY"}, metricHeader...)...)
		for _, t := range r.Totals {
			row(append([]string{t.Currency}, metricCells(t.Metrics, t.Currency)...)...)
		}
		flush()
	}

	if len(r.Steps) > 0 {
		p("\nSteps\n")
		row(append([]string{"FLOW", "STEP", "CURRENCY"}, metricHeader...)...)
		for _, s := range r.Steps {
			row(append([]string{s.Flow, s.Step, s.Currency}, metricCells(s.Metrics, s.Currency)...)...)
		}
		flush()
	}
	if len(r.Totals) > 0 {
		p("Rates are recovered / treated carts; discount cost assumes every recovered order used its offer (an upper bound).\n")
	}

	if len(r.Lift) > 0 {
		p("\nLift over the holdout group (95%% CI, Newcombe's hybrid score method)\n")
		row("FLOW", "TREATED", "CONTROL", "LIFT", "RELATIVE", "INCREMENTAL")
		for _, l := range r.Lift {
			row(l.Flow,
				fmt.Sprintf("%d/%d (%s)", l.TreatedRecovered, l.TreatedCarts, percent(l.TreatedRate)),
				fmt.Sprintf("%d/%d (%s)", l.ControlConverted, l.ControlCarts, percent(l.ControlRate)),
				liftText(l), relativeText(l.RelativeLift),
				fmt.Sprintf("%+.1f carts", l.IncrementalCarts))
		}
		flush()
	} else if !r.empty() {
		p("\nLift: no flow has a holdout group in this period.\n")
	}

	if len(r.DailyRevenue) > 0 {
		p("\nDaily recovered revenue (by day of checkout)\n")
		row("DAY", "CURRENCY", "ORDERS", "REVENUE")
		for _, d := range r.DailyRevenue {
			row(d.Day, d.Currency, itoa(d.Recovered), money(d.RecoveredRevenueMinor, d.Currency))
		}
		flush()
	}

	if !r.empty() {
		p("\nTime to recovery (recovered decisions)\n")
		for _, b := range r.TimeToRecovery {
			row("  "+b.Label, itoa(b.Count))
		}
		flush()
	}
	_, err := w.Write(buf.Bytes())
	return err
}

var metricHeader = []string{"CARTS", "TREATED", "CONTROL", "DECISIONS", "SENT", "CLICKED", "RECOVERED", "RATE", "REVENUE", "DISCOUNT", "MEDIAN", "P90", "CONTROL RATE"}

func metricCells(m Metrics, currency string) []string {
	return []string{
		itoa(m.AbandonedCarts), itoa(m.TreatedCarts), itoa(m.ControlCarts), itoa(m.Decisions), itoa(m.Sent), itoa(m.Clicked),
		itoa(m.Recovered), percent(m.RecoveryRate),
		money(m.RecoveredRevenueMinor, currency), money(m.DiscountCostMinor, currency),
		durationPtr(m.MedianSeconds), durationPtr(m.P90Seconds), controlText(m),
	}
}

// controlText is the holdout group's conversion, "50.0% (1/2)", or "–"
// without control carts.
func controlText(m Metrics) string {
	if m.ControlCarts == 0 {
		return "–"
	}
	return fmt.Sprintf("%s (%d/%d)", percent(m.ControlRate), m.ControlConverted, m.ControlCarts)
}

// empty reports whether the period has no decision.
func (r *Report) empty() bool { return r.Funnel.AbandonedCarts == 0 }

// period is "2024-03-01 00:00 – 2024-03-03 00:00 UTC (2 days)"; a period
// that is not whole days gives its length as a duration ("3m0s" → "3m").
func (r *Report) period() string {
	span := r.Until.Sub(r.Since)
	length := duration(int64(span / time.Second))
	if span%(24*time.Hour) == 0 {
		days := int64(span / (24 * time.Hour))
		length = itoa(days) + " day"
		if days != 1 {
			length += "s"
		}
	}
	return fmt.Sprintf("%s – %s UTC (%s)", r.Since.UTC().Format("2006-01-02 15:04"), r.Until.UTC().Format("2006-01-02 15:04"), length)
}

func (r *Report) flowLabel() string {
	if r.Flow == "" {
		return "all flows"
	}
	return r.Flow
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// percent formats a rate in [0, 1] as "25.0%".
func percent(rate float64) string { return strconv.FormatFloat(rate*100, 'f', 1, 64) + "%" }

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

// signed formats v with one decimal and a sign, never "-0.0".
func signed(v float64) string {
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if s == "-0.0" {
		s = "0.0"
	}
	if !strings.HasPrefix(s, "-") {
		s = "+" + s
	}
	return s
}

// money formats minor units in the currency's minor-unit digits (ISO 4217;
// 2 for an unknown code) followed by the code: "1234.56 EUR", "1500 JPY",
// "-0.05 USD". No grouping separators.
func money(minor int64, currency string) string {
	s := events.FormatMinor(minor, currency)
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

type card struct {
	Label, Value, Sub, Tone string
}

type table struct {
	ID, Title string
	Collapsed bool
	Head      []string
	Rows      [][]cell
}

type cell struct {
	Text string
	Num  bool
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
		Generated: r.GeneratedAt.UTC().Format("2006-01-02 15:04 UTC"),
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
		"Daily revenue is dated by the checkout; the other figures by the decision (a recovery after the period still counts for its decision).",
	}
	return v
}

func (r *Report) cards() []card {
	f := r.Funnel
	cs := []card{{
		Label: "Recovery rate",
		Value: percent(ratio(f.RecoveredCarts, f.TreatedCarts)),
		Sub:   fmt.Sprintf("%d of %d treated carts recovered", f.RecoveredCarts, f.TreatedCarts),
		Tone:  "neutral",
	}}
	var rev, cost []string
	for _, t := range r.Totals {
		rev = append(rev, money(t.RecoveredRevenueMinor, t.Currency))
		cost = append(cost, money(t.DiscountCostMinor, t.Currency))
	}
	cs = append(cs, card{
		Label: "Recovered revenue",
		Value: strings.Join(rev, " · "),
		Sub:   "discount cost at most " + strings.Join(cost, " · "),
		Tone:  "neutral",
	})
	for i, l := range r.Lift {
		if i == 3 {
			break // the chart shows them all
		}
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
			Label: "Lift over holdout · " + l.Flow,
			Value: signed(l.AbsoluteLift*100) + " pp",
			Sub: fmt.Sprintf("%s vs %s, 95%% CI [%.1f, %.1f] pp, %s; ≈%s carts",
				percent(l.TreatedRate), percent(l.ControlRate), l.Low*100, l.High*100, verdict, signed(l.IncrementalCarts)),
			Tone: tone,
		})
	}
	if len(r.Lift) == 0 {
		cs = append(cs, card{Label: "Lift over holdout", Value: "–", Sub: "no holdout group in this period", Tone: "neutral"})
	}
	cs = append(cs, card{
		Label: "Reached",
		Value: percent(ratio(f.SentCarts, f.TreatedCarts)),
		Sub:   fmt.Sprintf("%d carts got a message, %d clicked", f.SentCarts, f.ClickedCarts),
		Tone:  "neutral",
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
		label := itoa(s.n)
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
	// different currencies is never drawn on one axis.
	const left, right, panelH, plotH, labelH = 90.0, 680.0, 150.0, 100.0, 24.0
	c := chart{W: right + 10, H: float64(len(currencies)) * panelH, Label: "Recovered revenue per day and currency"}
	slot := (right - left) / float64(len(days))
	barW := min(max(slot*0.7, 1), 48)  // a short period must not give a wall of a bar
	every := max(1, (len(days)+13)/14) // at most ~14 day labels
	for p, cur := range currencies {
		y0 := float64(p)*panelH + 20
		base := y0 + plotH
		var peak int64 = 1
		for _, d := range byCur[cur] {
			peak = max(peak, d.RecoveredRevenueMinor)
		}
		c.Texts = append(c.Texts,
			mark{X: 0, Y: y0 - 6, Anchor: "start", Class: "cur", Text: cur},
			mark{X: left - 6, Y: y0 + 4, Anchor: "end", Class: "axis", Text: money(peak, cur)},
			mark{X: left - 6, Y: base, Anchor: "end", Class: "axis", Text: "0"})
		c.Lines = append(c.Lines,
			mark{X: left, Y: base, X2: right, Y2: base, Class: "base"},
			mark{X: left, Y: y0, X2: right, Y2: y0, Class: "grid"})
		for _, d := range byCur[cur] {
			i, ok := index[d.Day]
			if !ok {
				continue
			}
			h := f2(plotH * float64(d.RecoveredRevenueMinor) / float64(peak))
			c.Rects = append(c.Rects, mark{
				X: f2(left + float64(i)*slot + (slot-barW)/2), Y: f2(base - h), W: f2(barW), H: max(h, 0.5), Class: "rev",
				Title: fmt.Sprintf("%s: %s from %d orders", d.Day, money(d.RecoveredRevenueMinor, cur), d.Recovered),
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
				Title: fmt.Sprintf("%s: %d recovered (%s)", b.Label, b.Count, percent(ratio(b.Count, total)))})
		}
		c.Texts = append(c.Texts,
			mark{X: x + slot/2, Y: f2(base - h - 6), Anchor: "middle", Class: "val", Text: itoa(b.Count)},
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
	const left, right, rowH, top = 150.0, 470.0, 44.0, 30.0
	x := func(v float64) float64 { return f2(left + (v-lo)/(hi-lo)*(right-left)) }
	c := chart{W: 680, H: top + rowH*float64(len(r.Lift)) + 10, Label: "Lift over the holdout group with 95% confidence intervals"}
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
			mark{X: left - 10, Y: y + 4, Anchor: "end", Class: "lab", Text: shorten(l.Flow, 20), Title: l.Flow},
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

func (r *Report) tables() []table {
	head := []string{"Carts", "Treated", "Control", "Sent", "Clicked", "Recovered", "Rate", "Revenue", "Discount ≤", "Median", "P90", "Control rate"}
	cells := func(keys []string, m Metrics, currency string) []cell {
		var cs []cell
		for _, k := range keys {
			cs = append(cs, cell{Text: k})
		}
		for _, v := range metricCells(m, currency) {
			cs = append(cs, cell{Text: v, Num: true})
		}
		return cs
	}
	totals := table{ID: "totals", Title: "Totals by currency", Head: append([]string{"Currency"}, head...)}
	for _, t := range r.Totals {
		totals.Rows = append(totals.Rows, cells([]string{t.Currency}, t.Metrics, t.Currency))
	}
	steps := table{ID: "steps", Title: "Steps", Head: append([]string{"Flow", "Step", "Currency"}, head...)}
	for _, s := range r.Steps {
		steps.Rows = append(steps.Rows, cells([]string{s.Flow, s.Step, s.Currency}, s.Metrics, s.Currency))
	}
	lift := table{ID: "lift", Title: "Lift over the holdout group", Head: []string{"Flow", "Treated", "Holdout", "Lift (95% CI)", "Relative", "Incremental carts"}}
	for _, l := range r.Lift {
		lift.Rows = append(lift.Rows, []cell{
			{Text: l.Flow},
			{Text: fmt.Sprintf("%d/%d (%s)", l.TreatedRecovered, l.TreatedCarts, percent(l.TreatedRate)), Num: true},
			{Text: fmt.Sprintf("%d/%d (%s)", l.ControlConverted, l.ControlCarts, percent(l.ControlRate)), Num: true},
			{Text: liftText(l), Num: true},
			{Text: relativeText(l.RelativeLift), Num: true},
			{Text: signed(l.IncrementalCarts), Num: true},
		})
	}
	daily := table{ID: "daily", Title: "Daily recovered revenue", Collapsed: true, Head: []string{"Day", "Currency", "Orders", "Revenue"}}
	for _, d := range r.DailyRevenue {
		daily.Rows = append(daily.Rows, []cell{{Text: d.Day}, {Text: d.Currency}, {Text: itoa(d.Recovered), Num: true}, {Text: money(d.RecoveredRevenueMinor, d.Currency), Num: true}})
	}
	detail := table{ID: "detail", Title: "Detail per day, flow, step, cart type and channel", Collapsed: true,
		Head: append([]string{"Day", "Flow", "Step", "Cart type", "Channel", "Currency"}, head...)}
	for _, d := range r.Detail {
		detail.Rows = append(detail.Rows, cells([]string{d.Day, d.Flow, d.Step, d.CartType, d.Channel, d.Currency}, d.Metrics, d.Currency))
	}
	var out []table
	for _, t := range []table{totals, steps, lift, daily, detail} {
		if len(t.Rows) > 0 {
			out = append(out, t)
		}
	}
	return out
}
