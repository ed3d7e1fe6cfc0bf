package analytics_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"html"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/analytics"
)

const evilFlow = `<script>alert("x")</script>`

// handReport is a report made by hand (no database): two currencies, a
// flow whose name is markup, a lift that is significant and one that is
// not.
func handReport() *analytics.Report {
	d, lo, hi := analytics.NewcombeDiff(56, 70, 48, 80)
	vd, vl, vh := analytics.NewcombeDiff(400, 1000, 300, 1000)
	rel := (56.0/70)/(48.0/80) - 1
	return &analytics.Report{
		Since:       periodStart,
		Until:       periodEnd,
		GeneratedAt: time.Date(2024, 3, 3, 1, 2, 3, 0, time.UTC),
		Totals: []analytics.TotalRow{
			{Currency: "EUR", Metrics: analytics.Metrics{AbandonedCarts: 150, TreatedCarts: 70, ControlCarts: 80, Recovered: 56, RecoveryRate: 0.8, RecoveredRevenueMinor: 123456, MedianSeconds: i64(4000), P90Seconds: i64(90000)}},
			{Currency: "JPY", Metrics: analytics.Metrics{AbandonedCarts: 6, TreatedCarts: 3, ControlCarts: 3, Recovered: 1, RecoveryRate: 1.0 / 3, RecoveredRevenueMinor: 1500}},
		},
		Funnel: analytics.Funnel{AbandonedCarts: 200, TreatedCarts: 100, SentCarts: 90, ClickedCarts: 30, RecoveredCarts: 50},
		Steps: []analytics.StepRow{
			{Flow: evilFlow, Step: "first", Currency: "EUR", Metrics: analytics.Metrics{AbandonedCarts: 150, TreatedCarts: 70, Recovered: 56, RecoveryRate: 0.8}},
		},
		Detail: []analytics.DetailRow{
			{Day: "2024-03-01", Flow: evilFlow, Step: "first", CartType: "b2b", Channel: "<b>web</b>", Currency: "EUR"},
		},
		Lift: []analytics.Lift{
			{Flow: evilFlow, TreatedCarts: 70, TreatedRecovered: 56, ControlCarts: 80, ControlConverted: 48,
				TreatedRate: 0.8, ControlRate: 0.6, AbsoluteLift: d, Low: lo, High: hi, RelativeLift: &rel, IncrementalCarts: d * 70},
			{Flow: "quiet", TreatedCarts: 10, TreatedRecovered: 1, ControlCarts: 10, ControlConverted: 1,
				TreatedRate: 0.1, ControlRate: 0.1, AbsoluteLift: 0, Low: -0.2, High: 0.2},
		},
		DailyRevenue: []analytics.DailyRevenue{
			{Day: "2024-03-01", Currency: "EUR", Recovered: 2, RecoveredRevenueMinor: 100000},
			{Day: "2024-03-02", Currency: "EUR", Recovered: 1, RecoveredRevenueMinor: 23456},
			{Day: "2024-03-02", Currency: "JPY", Recovered: 1, RecoveredRevenueMinor: 1500},
		},
		StepFunnel: []analytics.StepFunnel{
			{Flow: evilFlow, Step: "first", Due: 1234, Suppressed: 40, SuppressedByProcessor: 35,
				SuppressedBy: map[string]int64{"no_consent": 30, "frequency_cap": 5, "no_address": 5}, Deferred: 7,
				Holdout: 80, Decided: 1119, Sent: 1110, Clicked: 300, Recovered: 56},
		},
		NotSent: []analytics.NotSentRow{
			{Flow: evilFlow, Step: "first", Stage: "actions", Reason: "no_address", Steps: 5, Carts: 5},
			{Flow: evilFlow, Step: "first", Stage: "processor", Reason: "frequency_cap", Steps: 5, Carts: 4},
			{Flow: evilFlow, Step: "first", Stage: "processor", Reason: "no_consent", Steps: 30, Carts: 29},
		},
		TimeToRecovery: withCounts(20, 10, 5, 0, 0, 1),
		VariantTests: []analytics.VariantTest{
			{Flow: evilFlow, Step: "first", Variants: []analytics.VariantRow{
				{Variant: "a", Decisions: 1000, TreatedCarts: 1000, Recovered: 300, Rate: 0.3, ControlCarts: 100, ControlConverted: 20, ControlRate: 0.2},
				{Variant: "<i>b</i>", Decisions: 1001, TreatedCarts: 1000, Recovered: 400, Rate: 0.4, Diff: vd, Low: vl, High: vh},
			}, Winner: "<i>b</i>"},
		},
	}
}

func withCounts(c ...int64) []analytics.Bucket {
	bs := analytics.TimeToRecoveryBuckets()
	for i := range bs {
		bs[i].Count = c[i]
	}
	return bs
}

func renderHTML(t *testing.T, r *analytics.Report) string {
	t.Helper()
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// figureOf returns the <figure id=id> element of page.
func figureOf(t *testing.T, page, id string) string {
	t.Helper()
	start := strings.Index(page, `<figure id="`+id+`"`)
	if start < 0 {
		t.Fatalf("no figure %s", id)
	}
	end := strings.Index(page[start:], "</figure>")
	if end < 0 {
		t.Fatalf("figure %s not closed", id)
	}
	return page[start : start+end]
}

// svgMarks parses the one <svg> of a figure as XML (so it is well formed)
// and returns its elements by name, each with its attributes.
func svgMarks(t *testing.T, fig string) map[string][]map[string]string {
	t.Helper()
	start, end := strings.Index(fig, "<svg"), strings.LastIndex(fig, "</svg>")
	if start < 0 || end < start {
		t.Fatalf("no <svg> in %s", fig)
	}
	dec := xml.NewDecoder(strings.NewReader(fig[start : end+len("</svg>")]))
	marks := map[string][]map[string]string{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("svg is not well formed: %v\n%s", err, fig)
		}
		if se, ok := tok.(xml.StartElement); ok {
			attrs := map[string]string{}
			for _, a := range se.Attr {
				attrs[a.Name.Local] = a.Value
			}
			marks[se.Name.Local] = append(marks[se.Name.Local], attrs)
		}
	}
	return marks
}

func attrFloat(t *testing.T, m map[string]string, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(m[name], 64)
	if err != nil {
		t.Fatalf("attribute %s=%q: %v", name, m[name], err)
	}
	return v
}

func TestHTMLSelfContainedAndEscaped(t *testing.T) {
	page := renderHTML(t, handReport())

	// Self-contained: no script, no external resource; the only URL is the
	// SVG namespace.
	for _, bad := range []string{"<script", "src=", "<link", "url(", "@import", "<iframe", "<img"} {
		if strings.Contains(strings.ToLower(page), bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	urls := regexp.MustCompile(`(?i)https?://[^\s"'<>)]*`).FindAllString(page, -1)
	for _, u := range urls {
		if u != "http://www.w3.org/2000/svg" {
			t.Errorf("external URL %q", u)
		}
	}
	if len(urls) != 4 {
		t.Errorf("%d svg namespaces, want one per chart (4)", len(urls))
	}
	// The markup in the flow name is text.
	if !strings.Contains(page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Error("flow name not escaped as text")
	}
	if strings.Contains(page, "<b>web</b>") || !strings.Contains(page, "&lt;b&gt;web&lt;/b&gt;") {
		t.Error("channel not escaped")
	}

	// Four figures, each with an svg with marks scaled to the data.
	funnel := svgMarks(t, figureOf(t, page, "chart-funnel"))
	// Five bars; the widest (200 abandoned carts) is 380 wide, the others
	// in proportion: 100 → 190, 90 → 171, 30 → 57, 50 → 95.
	if len(funnel["rect"]) != 5 {
		t.Fatalf("funnel has %d rects, want 5", len(funnel["rect"]))
	}
	for i, want := range []float64{380, 190, 171, 57, 95} {
		if got := attrFloat(t, funnel["rect"][i], "width"); math.Abs(got-want) > 0.01 {
			t.Errorf("funnel bar %d width %v, want %v", i, got, want)
		}
	}

	daily := svgMarks(t, figureOf(t, page, "chart-daily-revenue"))
	// Panels per currency with their own scale, 100 px high: EUR 100000 →
	// 100, 23456 → 23.46; JPY 1500 → 100.
	var heights []float64
	for _, r := range daily["rect"] {
		heights = append(heights, attrFloat(t, r, "height"))
	}
	if want := []float64{100, 23.46, 100}; !reflect.DeepEqual(heights, want) {
		t.Errorf("daily revenue bar heights %v, want %v", heights, want)
	}

	ttr := svgMarks(t, figureOf(t, page, "chart-time-to-recovery"))
	// Counts 20 10 5 0 0 1 over 140 px: 140, 70, 35, (no bar), (no bar), 7.
	heights = nil
	for _, r := range ttr["rect"] {
		heights = append(heights, attrFloat(t, r, "height"))
	}
	if want := []float64{140, 70, 35, 7}; !reflect.DeepEqual(heights, want) {
		t.Errorf("time to recovery bar heights %v, want %v", heights, want)
	}

	lift := svgMarks(t, figureOf(t, page, "chart-lift"))
	// One point per flow, on the same scale as the zero line and the
	// whiskers: the point lies between its whisker ends, and the zero line
	// at x(0) lies left of the first flow's interval (0.0524 > 0) and
	// inside the second's ([−0.2, 0.2]).
	if len(lift["circle"]) != 2 {
		t.Fatalf("lift has %d points, want 2", len(lift["circle"]))
	}
	var zero float64
	var whiskers [][2]float64
	for _, l := range lift["line"] {
		switch l["class"] {
		case "zero":
			zero = attrFloat(t, l, "x1")
		case "ci good", "ci", "ci bad":
			if attrFloat(t, l, "y1") == attrFloat(t, l, "y2") {
				whiskers = append(whiskers, [2]float64{attrFloat(t, l, "x1"), attrFloat(t, l, "x2")})
			}
		}
	}
	if zero == 0 || len(whiskers) != 2 {
		t.Fatalf("lift: zero line at %v, whiskers %v", zero, whiskers)
	}
	for i, c := range lift["circle"] {
		cx := attrFloat(t, c, "cx")
		if cx < whiskers[i][0] || cx > whiskers[i][1] {
			t.Errorf("lift point %d at %v outside its interval %v", i, cx, whiskers[i])
		}
	}
	if !(zero < whiskers[0][0]) || !(whiskers[1][0] < zero && zero < whiskers[1][1]) {
		t.Errorf("zero line at %v: want left of %v and inside %v", zero, whiskers[0], whiskers[1])
	}
	// x(0) is the middle of the second flow's symmetric interval.
	if mid := (whiskers[1][0] + whiskers[1][1]) / 2; math.Abs(mid-zero) > 0.02 {
		t.Errorf("zero line at %v, the symmetric interval's middle at %v", zero, mid)
	}
	if !strings.Contains(lift["circle"][0]["class"], "good") || strings.Contains(lift["circle"][1]["class"], "good") {
		t.Errorf("significance classes %q %q", lift["circle"][0]["class"], lift["circle"][1]["class"])
	}

	// Headline cards: the recovery rate (50 of 100), the revenue per
	// currency, one line each, with thousands separators, the lift.
	text := html.UnescapeString(page)
	for _, want := range []string{"50.0%", "<span>1,234.56 EUR</span><span>1,500 JPY</span>", "+20.0 pp", "[5.2, 33.4]", "significant at 95%"} {
		if !strings.Contains(text, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// htmlTable is one <table> of a page: its id (that of the enclosing
// <details>), its header cells, and per body row its cells with their
// data-label.
type htmlTable struct {
	id     string
	head   []string
	rows   [][]string
	labels [][]string
}

// htmlTables parses page as HTML (encoding/xml in its lenient HTML mode)
// and returns its tables.
func htmlTables(t *testing.T, page string) []htmlTable {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(page))
	dec.Strict, dec.AutoClose, dec.Entity = false, xml.HTMLAutoClose, xml.HTMLEntity
	var (
		tables  []htmlTable
		cur     *htmlTable
		details string
		inCell  bool
		text    strings.Builder
		inHead  bool
	)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("page does not parse: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			attr := func(name string) string {
				for _, a := range tok.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			switch tok.Name.Local {
			case "details":
				details = attr("id")
			case "table":
				tables = append(tables, htmlTable{id: details})
				cur = &tables[len(tables)-1]
			case "thead":
				inHead = true
			case "tbody":
				inHead = false
			case "tr":
				if cur != nil && !inHead {
					cur.rows = append(cur.rows, nil)
					cur.labels = append(cur.labels, nil)
				}
			case "th", "td":
				if cur == nil {
					t.Fatalf("<%s> outside a table", tok.Name.Local)
				}
				inCell = true
				text.Reset()
				if tok.Name.Local == "td" {
					if len(cur.rows) == 0 {
						t.Fatalf("table %s: <td> outside a body row", cur.id)
					}
					cur.labels[len(cur.labels)-1] = append(cur.labels[len(cur.labels)-1], attr("data-label"))
				}
			}
		case xml.CharData:
			if inCell {
				text.Write(tok)
			}
		case xml.EndElement:
			switch tok.Name.Local {
			case "th":
				cur.head = append(cur.head, text.String())
				inCell = false
			case "td":
				cur.rows[len(cur.rows)-1] = append(cur.rows[len(cur.rows)-1], text.String())
				inCell = false
			case "table":
				cur = nil
			}
		}
	}
	return tables
}

// Every table of the page has as many header cells as each of its rows
// has cells, each cell is labelled with its column's header (the narrow
// layout shows it), and the numbers sit under their headers.
func TestHTMLTablesHeadersMatchCells(t *testing.T) {
	page := renderHTML(t, handReport())
	tables := htmlTables(t, page)
	var ids []string
	byID := map[string]htmlTable{}
	for _, tb := range tables {
		ids = append(ids, tb.id)
		byID[tb.id] = tb
		if len(tb.head) == 0 || len(tb.rows) == 0 {
			t.Errorf("table %s: %d header cells, %d rows", tb.id, len(tb.head), len(tb.rows))
		}
		for i, row := range tb.rows {
			if len(row) != len(tb.head) {
				t.Errorf("table %s row %d: %d cells, %d header cells\nhead %q\nrow  %q", tb.id, i, len(row), len(tb.head), tb.head, row)
			}
			if !reflect.DeepEqual(tb.labels[i], tb.head) {
				t.Errorf("table %s row %d: labels %q, headers %q", tb.id, i, tb.labels[i], tb.head)
			}
		}
	}
	if want := []string{"table-totals", "table-steps", "table-step-funnel", "table-not-sent", "table-lift", "table-variants", "table-daily", "table-detail"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("tables %q, want %q", ids, want)
	}
	// cellUnder is the cell of row i under the header h.
	cellUnder := func(tb htmlTable, i int, h string) string {
		t.Helper()
		for j, head := range tb.head {
			if head == h && j < len(tb.rows[i]) {
				return tb.rows[i][j]
			}
		}
		t.Fatalf("table %s has no column %q: %q", tb.id, h, tb.head)
		return ""
	}
	for _, c := range []struct {
		table string
		row   int
		head  string
		want  string
	}{
		{"table-totals", 0, "Currency", "EUR"},
		{"table-totals", 0, "Carts", "150"},
		{"table-totals", 0, "Treated", "70"},
		{"table-totals", 0, "Holdout", "80"},
		{"table-totals", 0, "Decisions", "0"},
		{"table-totals", 0, "Recovered", "56"},
		{"table-totals", 0, "Rate", "80.0%"},
		{"table-totals", 0, "Revenue", "1,234.56"},
		{"table-totals", 0, "Median", "1h6m"},
		{"table-totals", 0, "P90", "1d1h"},
		{"table-totals", 1, "Revenue", "1,500"},
		{"table-steps", 0, "Flow", evilFlow},
		{"table-steps", 0, "Step", "first"},
		{"table-steps", 0, "Currency", "EUR"},
		{"table-steps", 0, "Recovered", "56"},
		{"table-steps", 0, "Rate", "80.0%"},
		{"table-step-funnel", 0, "Flow", evilFlow},
		{"table-step-funnel", 0, "Due", "1,234"},
		{"table-step-funnel", 0, "Suppressed", "40"},
		{"table-step-funnel", 0, "Why not sent", "no_consent 30, frequency_cap 5, no_address 5"},
		{"table-step-funnel", 0, "Deferred", "7"},
		{"table-step-funnel", 0, "Holdout", "80"},
		{"table-step-funnel", 0, "Decided", "1,119"},
		{"table-step-funnel", 0, "Sent", "1,110"},
		{"table-step-funnel", 0, "Clicked", "300"},
		{"table-step-funnel", 0, "Recovered", "56"},
		{"table-not-sent", 0, "Stage", "actions"},
		{"table-not-sent", 0, "Reason", "no_address"},
		{"table-not-sent", 2, "Reason", "no_consent"},
		{"table-not-sent", 2, "Steps", "30"},
		{"table-not-sent", 2, "Carts", "29"},
		{"table-lift", 0, "Treated", "56/70 (80.0%)"},
		{"table-lift", 0, "Holdout", "48/80 (60.0%)"},
		{"table-variants", 0, "Variant", "a"},
		{"table-variants", 0, "Vs first (95% CI)", "baseline"},
		{"table-variants", 0, "Holdout", "20/100 (20.0%)"},
		{"table-variants", 1, "Variant", "<i>b</i>"},
		{"table-variants", 1, "Decisions", "1,001"},
		{"table-variants", 1, "Recovered", "400/1,000"},
		{"table-variants", 1, "Rate", "40.0%"},
		{"table-variants", 1, "Vs first (95% CI)", "+10.0 pp [5.8, 14.1]"},
		{"table-variants", 1, "Holdout", "–"},
		{"table-variants", 1, "Test", "winner: <i>b</i>"},
		{"table-daily", 0, "Revenue", "1,000.00"},
		{"table-detail", 0, "Channel", "<b>web</b>"},
		{"table-detail", 0, "Holdout rate", "–"},
	} {
		if got := cellUnder(byID[c.table], c.row, c.head); got != c.want {
			t.Errorf("%s row %d under %q: %q, want %q", c.table, c.row, c.head, got, c.want)
		}
	}
}

// The header shows the period exactly as queried, to the second when it
// is not whole minutes, and when the report was generated, to the second.
func TestPeriodShownExactly(t *testing.T) {
	since := time.Date(2026, 12, 3, 9, 5, 2, 0, time.UTC)
	r := &analytics.Report{Since: since, Until: since.Add(112 * time.Second), GeneratedAt: since.Add(113 * time.Second),
		TimeToRecovery: analytics.TimeToRecoveryBuckets()}
	var tab bytes.Buffer
	if err := r.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(renderHTML(t, r))
	for _, want := range []string{"2026-12-03 09:05:02 – 2026-12-03 09:06:54 UTC (1m52s)", "2026-12-03 09:06:55 UTC"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tab.String())
		}
		if !strings.Contains(page, want) {
			t.Errorf("html lacks %q", want)
		}
	}
}

// The terminal report: no line ends in a space, numbers have thousands
// separators and are right-aligned under their headers.
func TestTableAlignedAndGrouped(t *testing.T) {
	r := handReport()
	r.Funnel.AbandonedCarts = 1234567
	r.Totals[0].Sent = 98765
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i, l := range lines {
		if strings.TrimRight(l, " \t") != l {
			t.Errorf("line %d ends in white space: %q", i+1, l)
		}
	}
	for _, want := range []string{"abandoned     1,234,567", "98,765", "1,234.56", "1,500", "1,000.00"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	// The header line of the totals and the EUR row: each number ends
	// where its header ends.
	var head, eur string
	for i, l := range lines {
		if strings.HasPrefix(l, "CURRENCY ") {
			head, eur = l, lines[i+1]
			break
		}
	}
	if !strings.HasPrefix(eur, "EUR ") {
		t.Fatalf("no totals header and EUR row in\n%s", text)
	}
	runes := func(s string) int { return len([]rune(s)) }
	for _, c := range []struct{ head, value string }{{"CARTS", "150"}, {"SENT", "98,765"}, {"RECOVERED", "56"}, {"REVENUE", "1,234.56"}} {
		h := strings.Index(head, " "+c.head+" ") + 1 + len(c.head)
		v := strings.Index(eur, " "+c.value+" ") + 1 + len(c.value)
		if h <= len(c.head) || v <= len(c.value) || runes(head[:h]) != runes(eur[:v]) {
			t.Errorf("%s ends at %d, its value %s at %d:\n%s\n%s", c.head, runes(head[:h]), c.value, runes(eur[:v]), head, eur)
		}
	}
}

func TestHTMLEmptyReport(t *testing.T) {
	r := &analytics.Report{Since: periodStart, Until: periodEnd, GeneratedAt: periodEnd, TimeToRecovery: analytics.TimeToRecoveryBuckets()}
	page := renderHTML(t, r)
	if !strings.Contains(page, "No decisions in this period") {
		t.Error("no empty-period message")
	}
	if strings.Contains(page, "<figure") || strings.Contains(page, "<svg") {
		t.Error("empty report draws charts")
	}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "No decisions in this period") {
		t.Errorf("table: %s", buf.String())
	}
}

// A report with decisions but no lift, no recovery and no revenue draws the
// funnel and says so in the other three figures.
func TestHTMLWithoutRecoveries(t *testing.T) {
	r := &analytics.Report{Since: periodStart, Until: periodEnd, GeneratedAt: periodEnd,
		Funnel:         analytics.Funnel{AbandonedCarts: 3, TreatedCarts: 3},
		TimeToRecovery: analytics.TimeToRecoveryBuckets()}
	page := renderHTML(t, r)
	if m := svgMarks(t, figureOf(t, page, "chart-funnel")); len(m["rect"]) != 5 {
		t.Errorf("funnel rects %d", len(m["rect"]))
	}
	for _, id := range []string{"chart-daily-revenue", "chart-time-to-recovery", "chart-lift"} {
		if f := figureOf(t, page, id); strings.Contains(f, "<svg") || !strings.Contains(f, `class="note"`) {
			t.Errorf("%s: %s", id, f)
		}
	}
}

// The known dataset's report as a table and as JSON carries its numbers.
func TestRenderKnownDataset(t *testing.T) {
	conn, _ := migrated(t)
	knownDataset().insert(t, conn, time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC))
	r := buildReport(t, conn, analytics.ReportOptions{Since: periodStart, Until: periodEnd})

	var tab bytes.Buffer
	if err := r.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	text := tab.String()
	line := func(prefix ...string) []string {
		t.Helper()
		for l := range strings.Lines(text) {
			f := strings.Fields(l)
			if len(f) >= len(prefix) && reflect.DeepEqual(f[:len(prefix)], prefix) {
				return f
			}
		}
		t.Fatalf("no line starting %q in\n%s", prefix, text)
		return nil
	}
	if !strings.Contains(text, "2024-03-01 00:00 – 2024-03-03 00:00 UTC (2 days)") || !strings.Contains(text, "all flows") {
		t.Errorf("header:\n%s", text)
	}
	// EUR totals: 7 carts, 5 treated, 2 control, 8 treated decisions, 5 sent, 2 clicked, 4
	// recovered, 80.0%, 373.00 (EUR, the row's currency), 20.00, median
	// 7200 s = 2h, p90 259200 s = 3d, control 50.0% (1/2).
	want := []string{"EUR", "7", "5", "2", "8", "5", "2", "4", "80.0%", "373.00", "20.00", "2h", "3d", "50.0%", "(1/2)"}
	if got := line("EUR", "7"); !reflect.DeepEqual(got, want) {
		t.Errorf("EUR totals %q, want %q", got, want)
	}
	// abandoned/reminder/EUR: 4 treated decisions, 25.0%, 48.00 EUR, no discount, 30m.
	want = []string{"abandoned", "reminder", "EUR", "6", "4", "2", "4", "2", "2", "1", "25.0%", "48.00", "0.00", "30m", "30m", "50.0%", "(1/2)"}
	if got := line("abandoned", "reminder", "EUR"); !reflect.DeepEqual(got, want) {
		t.Errorf("step row %q, want %q", got, want)
	}
	// No recovery: no quantiles.
	if got := line("abandoned", "reminder", "USD"); got[13] != "–" || got[14] != "–" {
		t.Errorf("USD reminder quantiles %q", got)
	}
	want = []string{"abandoned", "4/6", "(66.7%)", "1/3", "(33.3%)", "+33.3", "pp", "[-25.4,", "69.4]", "+100.0%", "+2.0"}
	if got := line("abandoned", "4/6"); !reflect.DeepEqual(got, want) {
		t.Errorf("lift row %q, want %q", got, want)
	}
	if got, want := line("2024-03-01", "EUR"), []string{"2024-03-01", "EUR", "3", "172.99"}; !reflect.DeepEqual(got, want) {
		t.Errorf("daily row %q, want %q", got, want)
	}
	if got := line("≥7d"); got[1] != "1" {
		t.Errorf("time to recovery row %q", got)
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back analytics.Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("json: %v\n%s", err, js.String())
	}
	if !reflect.DeepEqual(&back, r) {
		t.Errorf("json round trip differs\n got %+v\nwant %+v", back, *r)
	}
	var raw map[string]any
	if err := json.Unmarshal(js.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	lift := raw["lift"].([]any)[0].(map[string]any)
	if lift["flow"] != "abandoned" || math.Abs(lift["low"].(float64)+0.254150) > 1e-4 || math.Abs(lift["high"].(float64)-0.693693) > 1e-4 {
		t.Errorf("json lift %v", lift)
	}
	totals := raw["totals"].([]any)[0].(map[string]any)
	if totals["recovered_revenue_minor"] != 37300.0 || totals["median_seconds"] != 7200.0 || totals["recovery_rate"] != 0.8 {
		t.Errorf("json totals %v", totals)
	}
	step := raw["steps"].([]any)[1].(map[string]any)
	if _, ok := step["median_seconds"]; ok {
		t.Errorf("json step without recoveries has a median: %v", step)
	}

	page := renderHTML(t, r)
	for _, id := range []string{"chart-funnel", "chart-daily-revenue", "chart-time-to-recovery", "chart-lift"} {
		m := svgMarks(t, figureOf(t, page, id))
		if len(m["rect"])+len(m["circle"]) == 0 {
			t.Errorf("%s has no bar or point", id)
		}
	}
	pageText := html.UnescapeString(page)
	for _, want := range []string{"75.0%", "6 of 8 treated carts recovered", "<span>373.00 EUR</span><span>95.00 USD</span>", "+33.3 pp"} {
		if !strings.Contains(pageText, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
