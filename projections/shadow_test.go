package projections

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// shadowFlows is replayFlows with a shadow of quick beside it: a discount
// on an earlier step, a cap of its own, every guard on.
const shadowFlows = replayFlows + `
  - name: quick-shadow
    shadow: true
    shadow_of: quick
    match: {cart_types: [shopping], channels: [b2c], min_value_minor: 500}
    steps:
      - {name: r1, after: 5m, action: email, template: r1-discount, discount: {percent: 5, max_minor: 1000, valid_for: 1d}}
      - {name: r2, after: 30m, action: email, template: r2}
    expire_after: 4h
    attribution_window: 1h
`

// liveOutput runs the log and returns every live output (decisions,
// suppressions, deferrals, outcomes), one JSON line per Apply or Fire that
// had any, and the shadow decisions.
func liveOutput(t *testing.T, cfg *Config, log []logEntry) ([]string, []events.Decision) {
	t.Helper()
	s := newSim(cfg)
	var out []string
	var shadow []events.Decision
	deferred := map[string]bool{}
	s.observe = func(st *step) {
		e := st.Eff
		shadow = append(shadow, e.Shadow...)
		// A deferral may be published again, with its id, when the cart
		// is looked at inside the window (a shadow flow's step can be
		// the reason): consumers de-duplicate on the id, so each counts
		// once here.
		var dfs []Deferral
		for _, df := range e.Deferred {
			if !deferred[df.ID] {
				deferred[df.ID] = true
				dfs = append(dfs, df)
			}
		}
		if len(e.Decisions)+len(e.Suppressed)+len(dfs)+len(e.Outcomes) == 0 {
			return
		}
		b, err := json.Marshal([]any{st.Key, e.Decisions, e.Suppressed, dfs, e.Outcomes})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	for i, le := range log {
		ev, err := events.Decode(le.Value, time.Time{})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if err := s.event(le.Key, ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if err := s.advance(s.clock.Add(24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	return out, shadow
}

// Adding a shadow flow changes nothing a live flow does: the same log
// gives the same live decisions, suppressions, deferrals and outcomes,
// byte for byte; the shadow flow's decisions come apart, marked, and
// none of them is among the live ones.
func TestShadowLeavesLiveUnchanged(t *testing.T) {
	live := replayConfig(t)
	flows, err := ParseFlows("shadow.yaml", []byte(shadowFlows))
	if err != nil {
		t.Fatal(err)
	}
	withShadow := &Config{Flows: flows, IdleExpireAfter: live.IdleExpireAfter, ClosedRetention: live.ClosedRetention}
	*withShadow = withShadow.withDefaults()
	for _, seed := range []uint64{1, 2} {
		log := genLog(seed, 3000, 100, 10)
		want, none := liveOutput(t, live, log)
		got, shadow := liveOutput(t, withShadow, log)
		if len(none) != 0 {
			t.Fatalf("seed %d: shadow decisions without a shadow flow: %d", seed, len(none))
		}
		// Per customer key, as a sorted list: the order of timers that
		// fire together (the catch-up at the end) follows the carts' due
		// times, which a shadow flow's steps add to.
		byKey := func(lines []string) map[string][]string {
			m := map[string][]string{}
			for _, l := range lines {
				k := l[:strings.IndexByte(l, ',')]
				m[k] = append(m[k], l)
			}
			for _, ls := range m {
				slices.Sort(ls)
			}
			return m
		}
		wk, gk := byKey(want), byKey(got)
		for k, w := range wk {
			g := gk[k]
			for i := range min(len(w), len(g)) {
				if w[i] != g[i] {
					t.Fatalf("seed %d: live output %d of %s differs with the shadow flow:\n%s\n%s", seed, i, k, g[i], w[i])
				}
			}
			if len(w) != len(g) {
				t.Fatalf("seed %d: %s: %d live outputs with the shadow flow, %d without", seed, k, len(g), len(w))
			}
		}
		if len(want) != len(got) {
			t.Fatalf("seed %d: %d live outputs with the shadow flow, %d without", seed, len(got), len(want))
		}
		if len(shadow) == 0 {
			t.Fatalf("seed %d: no shadow decisions", seed)
		}
		for _, d := range shadow {
			if !d.Shadow || d.Flow != "quick-shadow" || d.ShadowOf != "quick" || !d.AttributeUntil.Equal(d.DecidedAt.Add(time.Hour)) || d.Holdout {
				t.Fatalf("seed %d: shadow decision %+v", seed, d)
			}
		}
		for _, line := range got {
			if strings.Contains(line, "quick-shadow") {
				t.Fatalf("seed %d: the shadow flow in a live output: %s", seed, line)
			}
		}
		t.Logf("seed %d: %d live outputs, %d shadow decisions", seed, len(got), len(shadow))
	}
}

// A shadow decision never takes a live message's place under the cap,
// while live messages count toward the shadow flow's cap.
func TestShadowCaps(t *testing.T) {
	cfg := testConfig(t, `
guards:
  requires_consent: false
  frequency_cap: {max: 1, per: 16h}
flows:
  - name: live
    match: {channels: [b2c]}
    steps:
      - {name: reminder, after: 1h, action: email, template: reminder}
    expire_after: 7d
  - name: early
    shadow: true
    shadow_of: live
    match: {channels: [b2c]}
    steps:
      - {name: early, after: 30m, action: email, template: early}
      - {name: late, after: 2h, action: email, template: late}
    expire_after: 7d
`)
	r := newRun(t, cfg)
	var shadow []events.Decision
	r.observe = func(st *step) {
		r.decisions = append(r.decisions, st.Eff.Decisions...)
		r.outcomes = append(r.outcomes, st.Eff.Outcomes...)
		shadow = append(shadow, st.Eff.Shadow...)
	}
	r.event("c-1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
	r.advance(t0.Add(45 * time.Minute))
	r.advance(t0.Add(90 * time.Minute))
	r.advance(t0.Add(3 * time.Hour))
	if len(r.decisions) != 1 || r.decisions[0].Flow != "live" || r.decisions[0].Shadow {
		t.Fatalf("live decisions: %+v", r.decisions)
	}
	// The shadow's early step went first; its late step is capped by the
	// live message at 1h (and by its own early one).
	if len(shadow) != 1 || shadow[0].Step != "early" {
		t.Fatalf("shadow decisions: %+v", shadow)
	}
	c := r.states["c-1"].Cart("k1")
	var late *DecisionRecord
	for i := range c.Decisions {
		if c.Decisions[i].Step == "late" {
			late = &c.Decisions[i]
		}
	}
	if late == nil || late.Suppressed != ReasonFrequencyCap || !late.Shadow || late.Checks.CapCount != 2 {
		t.Fatalf("the shadow's late step: %+v", late)
	}
	// A checkout is attributed to the live decision, never the shadow's.
	r.event("c-1", events.TypeCheckoutCompleted, t0.Add(3*time.Hour+time.Minute), checkout1("c-1", "k1", "o-1"))
	if o := r.lastOutcome(); o.Kind != events.OutcomeRecovered || o.Flow != "live" || o.Decisions != 1 {
		t.Fatalf("outcome %+v", o)
	}
}

func TestShadowFlowsCheck(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`flows:
  - name: a
    steps: [{name: s, after: 1h, action: email}]
  - name: b
    shadow: true
    steps: [{name: s, after: 1h, action: email}]
`, `test.yaml:5: flow "b": shadow_of: is required for a shadow flow`},
		{`flows:
  - name: a
    steps: [{name: s, after: 1h, action: email}]
  - name: b
    shadow: true
    shadow_of: c
    steps: [{name: s, after: 1h, action: email}]
`, `test.yaml:6: flow "b": shadow_of: "c" is not a flow of this file`},
		{`flows:
  - name: a
    shadow_of: a
    steps: [{name: s, after: 1h, action: email}]
`, `test.yaml:3: flow "a": shadow_of: is only for a shadow flow`},
		{`flows:
  - name: a
    steps: [{name: s, after: 1h, action: email}]
  - name: b
    shadow: true
    shadow_of: a
    holdout_percent: 10
    steps: [{name: s, after: 1h, action: email}]
`, `test.yaml:7: flow "b": holdout_percent: must be 0 in a shadow flow`},
	} {
		_, err := ParseFlows("test.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	// A shadow beside its live flow, both email, same carts: no overlap error.
	if _, err := ParseFlows("test.yaml", []byte(`flows:
  - name: a
    steps: [{name: s, after: 1h, action: email}]
  - name: b
    shadow: true
    shadow_of: a
    steps: [{name: s, after: 30m, action: email}]
`)); err != nil {
		t.Fatal(err)
	}
}
