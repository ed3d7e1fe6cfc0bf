package projections

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

func TestParseVariantErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []wantErr
	}{
		{"one variant", `
flows:
  - name: f
    steps:
      - after: 1h
        action: email
        variants:
          - {name: a, weight: 1}
`, []wantErr{{7, "f", "steps[0].variants", "at least two variants, got 1"}}},
		{"too many variants", `
flows:
  - name: f
    steps:
      - after: 1h
        action: email
        variants: [{name: a, weight: 1}, {name: b, weight: 1}, {name: c, weight: 1}, {name: d, weight: 1},
          {name: e, weight: 1}, {name: f, weight: 1}, {name: g, weight: 1}, {name: h, weight: 1},
          {name: i, weight: 1}, {name: j, weight: 1}, {name: k, weight: 1}]
`, []wantErr{{7, "f", "steps[0].variants", "at most 10 variants, got 11"}}},
		{"names and weights", `
flows:
  - name: f
    steps:
      - after: 1h
        action: email
        variants:
          - {name: a, weight: 0}
          - {name: a, weight: 1}
          - {weight: 1}
          - {name: "b c", weight: 1}
          - {name: d}
          - {name: e, weight: -3}
`, []wantErr{
			{8, "f", "steps[0].variants[0].weight", "must be between 1 and 10000, got 0"},
			{9, "f", "steps[0].variants[1].name", `"a" is used by an earlier variant`},
			{10, "f", "steps[0].variants[2].name", "is required"},
			{11, "f", "steps[0].variants[3].name", `"b c" must be a letter or digit`},
			{12, "f", "steps[0].variants[4].weight", "is required"},
			{13, "f", "steps[0].variants[5].weight", "must be between 1 and 10000, got -3"},
		}},
		{"a delay variant that breaks the step order", `
flows:
  - name: f
    expire_after: 2d
    steps:
      - name: first
        after: 1h
        action: email
        variants:
          - {name: a, weight: 1}
          - {name: late, weight: 1, after: 30h}
      - name: second
        after: 24h
        action: email
`, []wantErr{{13, "f", "steps[1].after", `1d must be later than the previous step's 30h0m0s (variant "late")`}}},
		{"a delay variant before the previous step", `
flows:
  - name: f
    steps:
      - {name: first, after: 2h, action: email}
      - name: second
        after: 24h
        action: email
        variants:
          - {name: a, weight: 1}
          - {name: soon, weight: 1, after: 1h}
`, []wantErr{{7, "f", "steps[1].after", `1h0m0s (variant "soon") must be later than the previous step's 2h0m0s`}}},
		{"a delay variant after expiry", `
flows:
  - name: f
    expire_after: 1d
    steps:
      - name: first
        after: 1h
        action: email
        variants:
          - {name: a, weight: 1}
          - {name: b, weight: 1, after: 2d}
`, []wantErr{{9, "f", "steps[0].variants", `2d of variant "b" is not before expire_after (1d)`}}},
		{"bad after, discount and no_discount", `
flows:
  - name: f
    steps:
      - after: 1h
        action: email
        variants:
          - {name: a, weight: 1, after: soon}
          - {name: b, weight: 1, discount: {percent: 500}}
          - {name: c, weight: 1, no_discount: true}
          - {name: d, weight: 1, no_discount: true, discount: {percent: 5}}
`, []wantErr{
			{8, "f", "steps[0].variants[0].after", `"soon" is not a duration`},
			{9, "f", "steps[0].variants[1].discount.percent", "must be between 1 and 100"},
			{10, "f", "steps[0].variants[2].no_discount", "the step has no discount to drop"},
			{11, "f", "steps[0].variants[3].no_discount", "it takes no discount of its own"},
		}},
		{"a delay variant in a scheduled flow", `
flows:
  - name: f
    schedule: {cron: "@daily", modified_after: 7d}
    steps:
      - action: email
        variants:
          - {name: a, weight: 1}
          - {name: b, weight: 1, after: 1h}
`, []wantErr{{9, "f", "steps[0].variants[1].after", "a scheduled flow's step takes no after"}}},
		{"auto_switch is refused", `
flows:
  - name: f
    steps:
      - after: 1h
        action: email
        variants:
          - {name: a, weight: 1}
          - {name: b, weight: 1}
        auto_switch: {min_decisions: 1000}
`, []wantErr{{10, "f", "steps[0].auto_switch", "is not supported"}}},
		{"unknown field in a variant", `
flows:
  - name: f
    steps:
      - after: 1h
        action: email
        variants:
          - {name: a, weight: 1, action: webhook}
          - {name: b, weight: 1}
`, []wantErr{{8, "", "", "unknown field action in a variant"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows, err := ParseFlows("flows.yaml", []byte(tc.yaml))
			var fes FlowErrors
			if !errors.As(err, &fes) {
				t.Fatalf("error %v (flows %+v), want FlowErrors", err, flows)
			}
			for i := 0; i < max(len(fes), len(tc.want)); i++ {
				switch {
				case i >= len(fes):
					t.Errorf("missing error %d: %+v", i, tc.want[i])
				case i >= len(tc.want):
					t.Errorf("unexpected error %d: %+v", i, fes[i])
				default:
					got, w := fes[i], tc.want[i]
					if got.Line != w.line || got.Flow != w.flow || got.Field != w.field || !strings.Contains(got.Msg, w.msg) {
						t.Errorf("error %d:\n got  line %d flow %q field %q msg %q\n want line %d flow %q field %q msg containing %q",
							i, got.Line, got.Flow, got.Field, got.Msg, w.line, w.flow, w.field, w.msg)
					}
				}
			}
		})
	}
}

// variantFlows tests the first step with two variants: b has its own
// template, a discount and a later after; the second step has none.
const variantFlows = `
guards:
  requires_consent: false
flows:
  - name: ab
    match: {channels: [b2c]}
    holdout_percent: 20
    steps:
      - name: reminder
        after: 1h
        action: email
        template: reminder
        discount: {percent: 10}
        variants:
          - {name: a, weight: 1}
          - {name: b, weight: 1, template: reminder-b, after: 2h, discount: {amount_minor: 500}}
          - {name: c, weight: 1, no_discount: true}
      - {name: second, after: 24h, action: email}
    expire_after: 7d
`

func TestParseVariants(t *testing.T) {
	cfg := testConfig(t, variantFlows)
	st := cfg.Flows[0].Steps[0]
	want := []Variant{{Name: "a", Weight: 1}, {Name: "b", Weight: 1, Template: "reminder-b", After: 2 * time.Hour,
		Discount: &events.Discount{AmountMinor: 500}}, {Name: "c", Weight: 1, NoDiscount: true}}
	if len(st.Variants) != 3 || *st.Variants[1].Discount != *want[1].Discount {
		t.Fatalf("variants %+v, want %+v", st.Variants, want)
	}
	st.Variants[1].Discount = want[1].Discount
	if fmt.Sprint(st.Variants) != fmt.Sprint(want) {
		t.Fatalf("variants %+v, want %+v", st.Variants, want)
	}
	if len(cfg.Flows[0].Steps[1].Variants) != 0 {
		t.Fatalf("the second step has variants: %+v", cfg.Flows[0].Steps[1].Variants)
	}
}

// The assignment is a function of the flow's name, the step index, the
// weights and the customer key alone: two configs parsed separately (a
// restart) assign every customer alike, the other flows and steps of the
// file change nothing, and a step without variants has none.
func TestVariantAssignmentIsDeterministic(t *testing.T) {
	a := testConfig(t, variantFlows)
	b := testConfig(t, strings.Replace(variantFlows, "flows:\n", `flows:
  - name: other
    match: {channels: [b2b]}
    steps: [{after: 1h, action: webhook}]
`, 1))
	fa, fb := &a.Flows[0], b.flow("ab")
	moved := 0
	for i := range 2000 {
		key := fmt.Sprintf("customer-%d", i)
		va := fa.VariantOf(key, 0)
		if va < 0 || va > 2 || va != fb.VariantOf(key, 0) || va != fa.VariantOf(key, 0) {
			t.Fatalf("%s: variant %d, then %d, in the other config %d", key, va, fa.VariantOf(key, 0), fb.VariantOf(key, 0))
		}
		if fa.VariantOf(key, 1) != -1 {
			t.Fatalf("%s: a variant of a step without variants", key)
		}
		// Another flow name draws afresh.
		renamed := *fa
		renamed.Name = "ab2"
		if renamed.VariantOf(key, 0) != va {
			moved++
		}
	}
	// About two thirds move with three equal variants; deterministic keys,
	// so the count is the same in every run.
	if moved < 1100 || moved > 1560 {
		t.Errorf("%d of 2000 customers changed variant with the flow's name, want about 1333", moved)
	}
}

// The variants split the customers in proportion to their weights, in
// the holdout group and out of it alike, and the holdout share is the
// same in every variant: the two draws are independent. The keys are
// fixed, so the counts are the same in every run; the tolerances are
// more than six standard errors of a fair draw.
func TestVariantWeights(t *testing.T) {
	cfg := testConfig(t, `
flows:
  - name: w
    holdout_percent: 20
    steps:
      - after: 1h
        action: webhook
        variants:
          - {name: a, weight: 50}
          - {name: b, weight: 30}
          - {name: c, weight: 20}
`)
	fl := &cfg.Flows[0]
	const n = 60000
	var all, hold [3]int
	holdTotal := 0
	for i := range n {
		key := fmt.Sprintf("c-%d", i)
		v := fl.VariantOf(key, 0)
		all[v]++
		if fl.InHoldout(key) {
			hold[v]++
			holdTotal++
		}
	}
	weights := []float64{0.5, 0.3, 0.2}
	within := func(what string, got, total int, p float64) {
		t.Helper()
		share := float64(got) / float64(total)
		se := math.Sqrt(p * (1 - p) / float64(total))
		if math.Abs(share-p) > 6*se {
			t.Errorf("%s: share %.4f of %d, want %.2f ± %.4f", what, share, total, p, 6*se)
		}
	}
	for v, p := range weights {
		within(fmt.Sprintf("variant %d of all", v), all[v], n, p)
		within(fmt.Sprintf("variant %d of the holdout group", v), hold[v], holdTotal, p)
		within(fmt.Sprintf("holdout share of variant %d", v), hold[v], all[v], 0.2)
	}
	t.Logf("variants %v of %d; in the holdout group %v of %d", all, n, hold, holdTotal)
}

// Through the fold: every decision of a step with variants names the
// customer's variant and carries its template and discount, at its after;
// holdout decisions name the variant too; the step without variants
// names none; a state written and read back (a restart) decides alike.
func TestVariantDecisions(t *testing.T) {
	cfg := testConfig(t, variantFlows)
	fl := &cfg.Flows[0]
	decide := func(restart bool) map[string]events.Decision {
		r := newRun(t, cfg)
		for i := range 300 {
			c := fmt.Sprintf("c-%d", i)
			r.event(c, events.TypeItemAdded, t0, addItem1(c, "k", "A"))
		}
		r.advance(t0.Add(90 * time.Minute))
		if restart {
			if err := r.restore(r.marshal()); err != nil {
				t.Fatal(err)
			}
		}
		r.advance(t0.Add(3 * time.Hour))
		r.advance(t0.Add(25 * time.Hour))
		out := map[string]events.Decision{}
		for _, d := range r.decisions {
			out[d.ID] = d
		}
		return out
	}
	got := decide(false)
	seen := map[string]int{}
	holdouts := 0
	for _, d := range got {
		key := d.Customer.Key
		switch d.Step {
		case "second":
			if d.Variant != "" || d.Template != "" || d.Discount != nil {
				t.Errorf("%s: step without variants: variant %q template %q discount %+v", key, d.Variant, d.Template, d.Discount)
			}
			continue
		case "reminder":
		default:
			t.Fatalf("step %q", d.Step)
		}
		v := fl.VariantOf(key, 0)
		want := fl.Steps[0].Variants[v]
		seen[want.Name]++
		if d.Holdout {
			holdouts++
		}
		if d.Variant != want.Name {
			t.Errorf("%s: variant %q, want %q", key, d.Variant, want.Name)
		}
		wantAt, wantTemplate, wantDiscount := t0.Add(time.Hour), "reminder", &events.Discount{Percent: 10}
		switch want.Name {
		case "b":
			wantAt, wantTemplate, wantDiscount = t0.Add(2*time.Hour), "reminder-b", &events.Discount{AmountMinor: 500}
		case "c":
			wantDiscount = nil
		}
		if !d.DecidedAt.Equal(wantAt) || d.Template != wantTemplate || fmt.Sprint(d.Discount) != fmt.Sprint(wantDiscount) ||
			!d.ValidUntil.Equal(t0.Add(24*time.Hour)) {
			t.Errorf("%s (%s): decided %v template %q discount %+v valid until %v; want %v %q %+v", key, d.Variant,
				d.DecidedAt, d.Template, d.Discount, d.ValidUntil, wantAt, wantTemplate, wantDiscount)
		}
	}
	if len(got) != 600 || len(seen) != 3 || holdouts == 0 {
		t.Fatalf("%d decisions, variants %v, %d holdout", len(got), seen, holdouts)
	}
	again := decide(true)
	if len(again) != len(got) {
		t.Fatalf("after a restart %d decisions, before %d", len(again), len(got))
	}
	for id, d := range got {
		if a, ok := again[id]; !ok || a.Variant != d.Variant || !a.DecidedAt.Equal(d.DecidedAt) || a.Template != d.Template {
			t.Errorf("%s: after a restart %+v, before %+v", id, a, d)
		}
	}
}

// The backtest counts the decisions per variant, as the fold assigns
// them.
func TestBacktestCountsVariants(t *testing.T) {
	cfg := testConfig(t, variantFlows)
	fl := &cfg.Flows[0]
	bt := NewBacktest(cfg)
	want := map[string]VariantReport{}
	for i := range 200 {
		c := fmt.Sprintf("c-%d", i)
		bt.Apply(c, mustEvent(t, events.TypeItemAdded, t0.Add(time.Duration(i)*time.Second), addItem1(c, "k", "A")))
		v := fl.Steps[0].Variants[fl.VariantOf(c, 0)].Name
		w := want[v]
		if fl.InHoldout(c) {
			w.Holdout++
		} else {
			w.Reached++
		}
		if i%4 == 0 {
			bt.Apply(c, mustEvent(t, events.TypeCheckoutCompleted, t0.Add(3*time.Hour+time.Duration(i)*time.Second), checkout1(c, "k", "o-"+c)))
			if fl.InHoldout(c) {
				w.ConvertedHoldout++
			} else {
				w.Recovered++
			}
		}
		want[v] = w
	}
	bt.Apply("z", mustEvent(t, events.TypeItemAdded, t0.Add(4*time.Hour), addItem1("z", "k", "A")))
	got := bt.Report().Flows[0].Steps[0].Variants
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("backtest variants %v, want %v", got, want)
	}
	if v := bt.Report().Flows[0].Steps[1].Variants; v != nil {
		t.Fatalf("the step without variants: %v", v)
	}
}
