// Command reportpreview renders the recovery report's HTML and
// screenshots it with headless Chromium at the given widths, so that a
// person can look at it:
//
//	go run ./analytics/reportpreview -out build/screenshots
//
// (`make report-screenshots`). Without -json it renders a sample report
// made up to stress the layout: four currencies, six- and seven-digit
// revenue, three flows with long names, two weeks of daily revenue. With
// -json FILE it renders a saved report (`cartlift report --format json`)
// instead. It writes report.html (as cartlift writes it), then
// report-open.html (every table expanded) and report-<width>.png of the
// latter to -out.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cartlift/cartlift/analytics"
)

func main() {
	out := flag.String("out", "build/screenshots", "output directory")
	from := flag.String("json", "", "a report saved with `cartlift report --format json` (default: a sample report)")
	chromium := flag.String("chromium", "chromium", "the Chromium binary")
	widths := flag.String("widths", "1400,800", "viewport widths in CSS pixels, comma-separated")
	height := flag.Int("height", 7000, "viewport height in CSS pixels (the screenshot's height)")
	flag.Parse()
	if err := run(*out, *from, *chromium, *widths, *height); err != nil {
		fmt.Fprintln(os.Stderr, "reportpreview:", err)
		os.Exit(1)
	}
}

func run(out, from, chromium, widths string, height int) error {
	rep := sample()
	if from != "" {
		b, err := os.ReadFile(from)
		if err != nil {
			return err
		}
		rep = &analytics.Report{}
		if err := json.Unmarshal(b, rep); err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
	}
	var page bytes.Buffer
	if err := rep.WriteHTML(&page); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "report.html"), page.Bytes(), 0o644); err != nil {
		return err
	}
	open := openAll(page.String())
	openPath, err := filepath.Abs(filepath.Join(out, "report-open.html"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(openPath, []byte(open), 0o644); err != nil {
		return err
	}
	for _, ws := range strings.Split(widths, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(ws))
		if err != nil || w <= 0 {
			return fmt.Errorf("width %q", ws)
		}
		png, err := filepath.Abs(filepath.Join(out, fmt.Sprintf("report-%d.png", w)))
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
			"--no-first-run", "--force-device-scale-factor=1", fmt.Sprintf("--window-size=%d,%d", w, height),
			"--screenshot="+png, "file://"+openPath)
		msg, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", chromium, err, msg)
		}
		fmt.Println(png)
	}
	return nil
}

// openAll opens every collapsed <details> of the page, so that the
// screenshots show every table.
func openAll(page string) string {
	return strings.ReplaceAll(page, "\"><summary>", "\" open><summary>")
}

// sample is a two-week report with the widths a real shop produces.
func sample() *analytics.Report {
	since := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	until := since.AddDate(0, 0, 14)
	i64 := func(v int64) *int64 { return &v }
	type cur struct {
		code  string
		scale int64 // revenue multiplier: minor units per "unit" of sample revenue
	}
	currencies := []cur{{"EUR", 100}, {"GBP", 100}, {"JPY", 160}, {"USD", 110}}
	type step struct {
		flow, step string
		carts      int64
		rate       float64
	}
	steps := []step{
		{"b2c-reminders", "reminder", 18420, 0.071},
		{"b2c-reminders", "second-reminder", 12110, 0.032},
		{"b2c-reminders", "discount", 8035, 0.044},
		{"b2b-account-manager-follow-up", "account-manager", 1290, 0.118},
		{"winback-high-value-carts", "personal-offer", 640, 0.153},
	}
	metrics := func(carts int64, rate float64, scale int64, discount bool) analytics.Metrics {
		treated := carts * 9 / 10
		rec := int64(float64(treated) * rate)
		m := analytics.Metrics{
			AbandonedCarts: carts, TreatedCarts: treated, ControlCarts: carts - treated,
			Decisions: treated + treated/7, HoldoutDecisions: (carts - treated) + (carts-treated)/7,
			Sent: treated * 83 / 100, Clicked: treated * 9 / 100, Recovered: rec,
			RecoveryRate:          float64(rec) / float64(max(treated, 1)),
			RecoveredRevenueMinor: rec * 11873 * scale / 100,
			MedianSeconds:         i64(3*3600 + 720), P90Seconds: i64(2*86400 + 5*3600),
			ControlConverted: int64(float64(carts-treated) * rate * 0.8),
		}
		if scale >= 160 { // JPY: no minor units, prices in the thousands
			m.RecoveredRevenueMinor = rec * 16400
		}
		if discount {
			m.DiscountCostMinor = m.RecoveredRevenueMinor / 12
		}
		m.ControlRate = float64(m.ControlConverted) / float64(max(m.ControlCarts, 1))
		return m
	}
	r := &analytics.Report{Since: since, Until: until, GeneratedAt: until.Add(3*time.Hour + 17*time.Second),
		TimeToRecovery: analytics.TimeToRecoveryBuckets()}
	for ci, c := range currencies {
		share := []int64{52, 9, 6, 33}[ci]
		var total analytics.Metrics
		for _, s := range steps {
			m := metrics(s.carts*share/100, s.rate, c.scale, s.step == "discount" || s.step == "personal-offer")
			r.Steps = append(r.Steps, analytics.StepRow{Flow: s.flow, Step: s.step, Currency: c.code, Metrics: m})
			total.AbandonedCarts += m.AbandonedCarts
			total.TreatedCarts += m.TreatedCarts
			total.ControlCarts += m.ControlCarts
			total.Decisions += m.Decisions
			total.HoldoutDecisions += m.HoldoutDecisions
			total.Sent += m.Sent
			total.Clicked += m.Clicked
			total.Recovered += m.Recovered
			total.RecoveredRevenueMinor += m.RecoveredRevenueMinor
			total.DiscountCostMinor += m.DiscountCostMinor
			total.ControlConverted += m.ControlConverted
		}
		total.RecoveryRate = float64(total.Recovered) / float64(total.TreatedCarts)
		total.ControlRate = float64(total.ControlConverted) / float64(total.ControlCarts)
		total.MedianSeconds, total.P90Seconds = i64(4*3600+300), i64(2*86400+7*3600)
		r.Totals = append(r.Totals, analytics.TotalRow{Currency: c.code, Metrics: total})
		for d := range 14 {
			day := since.AddDate(0, 0, d).Format(time.DateOnly)
			n := total.Recovered / 14 * int64(80+(d*37)%45) / 100
			r.DailyRevenue = append(r.DailyRevenue, analytics.DailyRevenue{Day: day, Currency: c.code,
				Recovered: n, RecoveredRevenueMinor: total.RecoveredRevenueMinor / 14 * int64(80+(d*37)%45) / 100})
		}
		for d := range 2 {
			for _, s := range steps[:3] {
				for _, ct := range []string{"standard", "high_value"} {
					m := metrics(s.carts*share/100/14/2, s.rate, c.scale, s.step == "discount")
					r.Detail = append(r.Detail, analytics.DetailRow{Day: since.AddDate(0, 0, d).Format(time.DateOnly),
						Flow: s.flow, Step: s.step, CartType: ct, Channel: "web", Currency: c.code, Metrics: m})
				}
			}
		}
	}
	// The funnel per step and why steps were not sent: consent and the
	// caps stop some steps in the processor, the actions role drops a few
	// decisions (no address, expired).
	for i, st := range steps {
		m := metrics(st.carts, st.rate, 100, false)
		consent, capped, cart := st.carts*6/100, st.carts*int64(2+i)/100, st.carts*int64(i)/100
		noAddress, expired := m.Decisions/150, m.Decisions/400
		idx := int64(i)
		if i >= 3 {
			idx = 0 // the other flows have one step
		}
		f := analytics.StepFunnel{Flow: st.flow, Step: st.step, StepIndex: idx,
			Suppressed: consent + capped + cart + noAddress + expired, SuppressedByProcessor: consent + capped + cart,
			SuppressedBy: map[string]int64{"no_consent": consent, "frequency_cap": capped, "cart_cap": cart,
				"no_address": noAddress, "expired": expired},
			Deferred: st.carts * 4 / 100, Holdout: m.HoldoutDecisions, Decided: m.Decisions,
			Sent: m.Sent, Clicked: m.Clicked, Recovered: m.Recovered}
		f.Due = f.SuppressedByProcessor + f.Holdout + f.Decided
		r.StepFunnel = append(r.StepFunnel, f)
		for _, n := range []analytics.NotSentRow{
			{Stage: "processor", Reason: "no_consent", Steps: consent, Carts: consent * 97 / 100},
			{Stage: "processor", Reason: "frequency_cap", Steps: capped, Carts: capped},
			{Stage: "actions", Reason: "no_address", Steps: noAddress, Carts: noAddress},
		} {
			n.Flow, n.Step, n.StepIndex = st.flow, st.step, idx
			r.NotSent = append(r.NotSent, n)
		}
	}
	for _, t := range r.Totals {
		r.Funnel.AbandonedCarts += t.AbandonedCarts
		r.Funnel.TreatedCarts += t.TreatedCarts
		r.Funnel.SentCarts += t.Sent * 9 / 10
		r.Funnel.ClickedCarts += t.Clicked * 9 / 10
		r.Funnel.RecoveredCarts += t.Recovered
	}
	for _, l := range []struct {
		flow                                   string
		treated, recovered, control, converted int64
	}{
		{"b2c-reminders", 35020, 3412, 3891, 302},
		{"b2b-account-manager-follow-up", 1161, 137, 129, 12},
		{"winback-high-value-carts", 576, 88, 64, 9},
	} {
		d, lo, hi := analytics.NewcombeDiff(l.recovered, l.treated, l.converted, l.control)
		p1, p2 := float64(l.recovered)/float64(l.treated), float64(l.converted)/float64(l.control)
		rel := p1/p2 - 1
		r.Lift = append(r.Lift, analytics.Lift{Flow: l.flow, TreatedCarts: l.treated, TreatedRecovered: l.recovered,
			ControlCarts: l.control, ControlConverted: l.converted, TreatedRate: p1, ControlRate: p2,
			AbsoluteLift: d, Low: lo, High: hi, RelativeLift: &rel, IncrementalCarts: d * float64(l.treated)})
	}
	for i, n := range []int64{1210, 1480, 1033, 402, 131, 38} {
		r.TimeToRecovery[i].Count = n
	}
	// An A/B test of the second reminder: b's discount wins.
	vt := analytics.VariantTest{Flow: "b2c-reminders", Step: "second-reminder", StepIndex: 1, Winner: "b-discount"}
	for _, v := range []struct {
		name                                   string
		treated, recovered, control, converted int64
	}{{"a", 8120, 690, 902, 61}, {"b-discount", 8054, 866, 895, 57}} {
		row := analytics.VariantRow{Variant: v.name, Decisions: v.treated + 12, HoldoutDecisions: v.control,
			TreatedCarts: v.treated, Recovered: v.recovered, Rate: float64(v.recovered) / float64(v.treated),
			ControlCarts: v.control, ControlConverted: v.converted, ControlRate: float64(v.converted) / float64(v.control)}
		if len(vt.Variants) > 0 {
			b := vt.Variants[0]
			row.Diff, row.Low, row.High = analytics.NewcombeDiff(v.recovered, v.treated, b.Recovered, b.TreatedCarts)
		}
		vt.Variants = append(vt.Variants, row)
	}
	r.VariantTests = append(r.VariantTests, vt)
	return r
}
