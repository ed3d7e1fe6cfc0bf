package projections

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

const scheduleFlows = `
flows:
  - name: digest
    schedule: {cron: "@daily", modified_after: 7d, modified_before: 1d}
    steps:
      - {name: digest, action: email, template: digest}
    guards:
      frequency_cap: {max: 1, per: 16h}
`

// sweep is the runtime's scheduled run in miniature: every open cart in
// the run's time frame, in index order, through FireSchedule.
func sweep(r *run, fl *Flow, at time.Time) (decided []events.Decision, suppressed []Suppression) {
	r.t.Helper()
	from, to := fl.Schedule.Frame(at)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range r.states {
			if !yield(k) {
				return
			}
		}
	})
	for _, key := range keys {
		for _, c := range slices.Clone(r.states[key].Carts) {
			if !c.IsOpen() || c.ModifiedAt.Before(from) || c.ModifiedAt.After(to) {
				continue
			}
			eff := FireSchedule(r.states[key], key, c.ID, fl, at, r.cfg)
			if err := r.store(key, eff); err != nil {
				r.t.Fatal(err)
			}
			decided = append(decided, eff.Decisions...)
			suppressed = append(suppressed, eff.Suppressed...)
		}
	}
	if err := r.checkAll(); err != nil {
		r.t.Fatal(err)
	}
	return decided, suppressed
}

func consent(cust string, v bool) events.CustomerUpdated {
	return events.CustomerUpdated{CustomerID: cust, MarketingConsent: &v}
}

func carts(ds []events.Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Cart.CartID)
	}
	return out
}

func TestScheduledRunDecidesForCartsInItsFrame(t *testing.T) {
	cfg := testConfig(t, scheduleFlows)
	fl := &cfg.Flows[0]
	r := newRun(t, cfg)
	runAt := utc("2026-11-20T00:00:00Z")
	for _, c := range []struct {
		cust, cart string
		at         time.Time
	}{
		{"old", "c-old", runAt.Add(-7*24*time.Hour - time.Minute)}, // before the frame
		{"edge", "c-edge", runAt.Add(-7 * 24 * time.Hour).Add(time.Minute)},
		{"in", "c-in", runAt.Add(-3 * 24 * time.Hour)},
		{"late", "c-late", runAt.Add(-24 * time.Hour)}, // the newer bound, inclusive
		{"new", "c-new", runAt.Add(-12 * time.Hour)},   // too recent
	} {
		r.event(c.cust, events.TypeCustomerUpdated, c.at.Add(-time.Second), consent(c.cust, true))
		r.event(c.cust, events.TypeItemAdded, c.at, addItem1(c.cust, c.cart, "sku-1"))
	}
	// A checked-out cart in the frame is not swept.
	r.event("in", events.TypeItemAdded, runAt.Add(-2*24*time.Hour), addItem1("in", "c-bought", "sku-1"))
	r.event("in", events.TypeCheckoutCompleted, runAt.Add(-2*24*time.Hour+time.Hour), checkout1("in", "c-bought", "o-1"))

	got, sup := sweep(r, fl, runAt)
	if want := []string{"c-edge", "c-in", "c-late"}; !slices.Equal(carts(got), want) || len(sup) != 0 {
		t.Fatalf("decided for %v (suppressed %v), want %v", carts(got), sup, want)
	}
	for _, d := range got {
		// Valid until the next run, or the cart's expiry (7d after its
		// last activity) when that comes first.
		until := runAt.Add(24 * time.Hour)
		if d.Cart.CartID == "c-edge" {
			until = runAt.Add(time.Minute)
		}
		if !d.DecidedAt.Equal(runAt) || !d.ValidUntil.Equal(until) || d.Flow != "digest" || d.Step != "digest" {
			t.Errorf("decision %+v", d)
		}
	}
	// The same run again (a retry, a replay) decides nothing.
	if again, sup := sweep(r, fl, runAt); len(again) != 0 || len(sup) != 0 {
		t.Fatalf("re-run decided %v, suppressed %v", carts(again), sup)
	}
	// The next day's run is another run: other ids, and its own frame
	// (c-edge has left it; c-new has entered it).
	next, _ := sweep(r, fl, runAt.Add(24*time.Hour))
	if want := []string{"c-in", "c-late", "c-new"}; !slices.Equal(carts(next), want) {
		t.Fatalf("next run decided for %v, want %v", carts(next), want)
	}
	if next[0].ID == got[1].ID {
		t.Error("two runs gave the same decision id")
	}
}

func TestScheduledRunGuards(t *testing.T) {
	cfg := testConfig(t, strings.Replace(scheduleFlows, `"@daily"`, `"@hourly"`, 1))
	fl := &cfg.Flows[0]
	r := newRun(t, cfg)
	runAt := utc("2026-11-20T10:00:00Z")
	r.event("guest", events.TypeItemAdded, runAt.Add(-3*24*time.Hour), addItem1("guest", "c-guest", "sku-1"))
	r.event("yes", events.TypeCustomerUpdated, runAt.Add(-4*24*time.Hour), consent("yes", true))
	r.event("yes", events.TypeItemAdded, runAt.Add(-3*24*time.Hour), addItem1("yes", "c-yes", "sku-1"))
	r.event("no", events.TypeCustomerUpdated, runAt.Add(-4*24*time.Hour), consent("no", false))
	r.event("no", events.TypeItemAdded, runAt.Add(-3*24*time.Hour), addItem1("no", "c-no", "sku-1"))

	got, sup := sweep(r, fl, runAt)
	if !slices.Equal(carts(got), []string{"c-yes"}) {
		t.Fatalf("decided for %v", carts(got))
	}
	reasons := map[string]string{}
	for _, s := range sup {
		reasons[s.CartID] = s.Reason
	}
	if reasons["c-guest"] != ReasonNoConsent || reasons["c-no"] != ReasonNoConsent || len(reasons) != 2 {
		t.Fatalf("suppressed %v", reasons)
	}
	// Suppressed runs are recorded: the same run suppresses nothing twice.
	if again, sup := sweep(r, fl, runAt); len(again)+len(sup) != 0 {
		t.Fatalf("re-run: %v %v", again, sup)
	}
	// An hour later the frequency cap (1 per 16h) stops the next run's
	// message to the customer who got one.
	_, sup = sweep(r, fl, runAt.Add(time.Hour))
	reasons = map[string]string{}
	for _, s := range sup {
		reasons[s.CartID] = s.Reason
	}
	if reasons["c-yes"] != ReasonFrequencyCap {
		t.Fatalf("suppressed %v, want c-yes over the frequency cap", reasons)
	}
}

func TestScheduleMissedDuringDowntimeRunsOnce(t *testing.T) {
	sc, err := ParseSchedule("@hourly", "")
	if err != nil {
		t.Fatal(err)
	}
	last := utc("2026-11-20T10:00:00Z")
	if got := sc.Due(last, utc("2026-11-20T10:59:59Z")); !got.IsZero() {
		t.Errorf("due %s before the next run", got)
	}
	if got := sc.Due(last, utc("2026-11-20T15:30:00Z")); !got.Equal(utc("2026-11-20T15:00:00Z")) {
		t.Errorf("due %s, want the latest missed run only", got)
	}

	// A day of events, then nothing for four days. In event time (a
	// backlog, the backtest) every daily run happens at its own time, as
	// a processor running all along would have run them: the cart is in
	// the frame of four of the five runs.
	cfg := testConfig(t, scheduleFlows)
	b := NewBacktest(cfg)
	t0 := utc("2026-11-10T12:00:00Z")
	apply := func(key, typ string, at time.Time, data any) {
		t.Helper()
		b.Apply(key, mustEvent(t, typ, at, data))
	}
	apply("c1", events.TypeCustomerUpdated, t0, consent("c1", true))
	apply("c1", events.TypeItemAdded, t0.Add(time.Hour), addItem1("c1", "a", "sku-1"))
	apply("c2", events.TypeItemAdded, t0.Add(5*24*time.Hour), addItem1("c2", "b", "sku-1"))
	rep := b.Report()
	if rep.Flows[0].Runs != 5 || rep.Flows[0].Steps[0].Reached != 4 {
		t.Fatalf("event time: runs %d, reached %d: want every daily run, four reaching c1's cart",
			rep.Flows[0].Runs, rep.Flows[0].Steps[0].Reached)
	}
	if rep.Flows[0].Schedule != "@daily" {
		t.Errorf("schedule %q", rep.Flows[0].Schedule)
	}

	// On the wall clock, after downtime, the missed runs collapse into
	// the latest one.
	s := newSim(cfg)
	var runs []time.Time
	s.observe = func(st *step) {
		if st.Kind == "schedule" {
			runs = append(runs, st.Now)
		}
	}
	for i, ev := range []*events.Event{mustEvent(t, events.TypeCustomerUpdated, t0, consent("c1", true)),
		mustEvent(t, events.TypeItemAdded, t0.Add(time.Hour), addItem1("c1", "a", "sku-1"))} {
		if err := s.event("c1", ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if err := Advance(cfg, s, t0.Add(5*24*time.Hour), Live); err != nil {
		t.Fatal(err)
	}
	if want := utc("2026-11-15T00:00:00Z"); len(runs) != 1 || !runs[0].Equal(want) {
		t.Fatalf("wall clock after downtime: runs reaching the cart at %v, want one at %s", runs, want)
	}
}

func TestScheduleTimeZone(t *testing.T) {
	sc, err := ParseSchedule("0 9 * * 1-5", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ after, want string }{
		{"2026-03-26T12:00:00Z", "2026-03-27T08:00:00Z"}, // Friday 09:00 CET
		{"2026-03-27T12:00:00Z", "2026-03-30T07:00:00Z"}, // Monday 09:00 CEST, after the change
		{"2026-10-23T12:00:00Z", "2026-10-26T08:00:00Z"}, // Monday 09:00 CET again
	} {
		if got := sc.Next(utc(tc.after)); !got.Equal(utc(tc.want)) {
			t.Errorf("Next(%s) = %s, want %s", tc.after, got, tc.want)
		}
	}
	daily, err := ParseSchedule("@daily", "America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	if got := daily.Next(utc("2026-11-20T12:00:00Z")); !got.Equal(utc("2026-11-21T05:00:00Z")) {
		t.Errorf("@daily in New York: %s", got)
	}
}

func TestScheduleValidation(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []wantErr
	}{
		{"bad cron", `flows:
  - name: a
    schedule:
      cron: "61 * * * *"
      modified_after: 7d
    steps: [{name: s, action: webhook}]
`, []wantErr{{4, "a", "schedule.cron", "is not a cron expression"}}},
		{"never fires", `flows:
  - name: a
    schedule:
      cron: "0 0 30 2 *"
      modified_after: 7d
    steps: [{name: s, action: webhook}]
`, []wantErr{{4, "a", "schedule.cron", "never fires"}}},
		{"unknown zone", `flows:
  - name: a
    schedule:
      cron: "@daily"
      time_zone: Europe/Nowhere
      modified_after: 7d
    steps: [{name: s, action: webhook}]
`, []wantErr{{5, "a", "schedule.time_zone", "not an IANA time zone"}}},
		{"empty frame, step with after, two steps", `flows:
  - name: a
    schedule:
      cron: "@weekly"
      modified_after: 1d
      modified_before: 1d
    steps:
      - {name: s, after: 1h, action: webhook}
      - {name: t, action: webhook}
`, []wantErr{{6, "a", "schedule.modified_before", "must be shorter than modified_after"},
			{8, "a", "steps[0].after", "takes no after"},
			{9, "a", "steps", "exactly one step"}}},
		{"missing cron and frame, unknown field", `flows:
  - name: a
    schedule:
      every: day
    steps: [{name: s, action: webhook}]
`, []wantErr{{4, "", "", "unknown field every in schedule"}}},
		{"missing cron and frame", `flows:
  - name: a
    schedule: {time_zone: UTC}
    steps: [{name: s, action: webhook}]
    expire_after: 3d
`, []wantErr{{3, "a", "schedule.cron", "is required"}, {3, "a", "schedule.modified_after", "is required"}}},
		{"expires before the frame", `flows:
  - name: a
    schedule: {cron: "@daily", modified_after: 10d}
    steps: [{name: s, action: webhook}]
    expire_after: 3d
`, []wantErr{{5, "a", "expire_after", "shorter than schedule.modified_after"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFlows("f.yaml", []byte(tc.yaml))
			var fes FlowErrors
			if !errors.As(err, &fes) {
				t.Fatalf("error %v, want FlowErrors", err)
			}
			if len(fes) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(fes), len(tc.want), err)
			}
			for i, w := range tc.want {
				e := fes[i]
				if e.Line != w.line || e.Flow != w.flow || e.Field != w.field || !strings.Contains(e.Msg, w.msg) {
					t.Errorf("error %d: %v, want line %d flow %q field %q msg ~%q", i, e, w.line, w.flow, w.field, w.msg)
				}
			}
		})
	}
	// A valid one: defaults.
	flows, err := ParseFlows("f.yaml", []byte(`flows:
  - name: a
    schedule: {cron: "0 9 * * 1-5", time_zone: Europe/Berlin, modified_after: 10d}
    steps: [{name: s, action: webhook}]
`))
	if err != nil {
		t.Fatal(err)
	}
	sc := flows[0].Schedule
	if sc == nil || sc.ModifiedAfter != 10*24*time.Hour || sc.ModifiedBefore != 0 || flows[0].ExpireAfter != 10*24*time.Hour {
		t.Fatalf("schedule %+v, expire %s", sc, flows[0].ExpireAfter)
	}
}
