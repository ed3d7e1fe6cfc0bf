package projections

import (
	"time"
)

// FireSchedule decides one run of a scheduled flow for one cart: the run
// at run of fl (fl.Schedule must be set) sweeps the cart when it is open,
// has items, matches the flow, was last modified within the run's time
// frame ([run-modified_after, run-modified_before], see Schedule.Frame),
// has not expired by run, and has no record of this run in its history
// yet. The runtime calls it for the carts its index of open carts by
// modification time lists in the frame; any other cart is left alone.
//
// The decision's id is deterministic per customer key, cart (and its life),
// flow, run and cart version; it is recorded in the cart's history, dated
// run, so a repeated run of the same time decides nothing twice. It is
// valid until the flow's next run, or the cart's expiry if earlier.
//
// Guards: consent, the cart cap and the frequency cap (shared with every
// other capped flow of the customer) apply as for steps, and a stopped
// decision is recorded as suppressed (Effects.Suppressed); holdout applies
// too. Quiet hours and combined decisions do not: the schedule's cron
// expression and time zone choose when a run goes out, and a run decides
// each cart on its own.
//
// FireSchedule reads no clock; ownership of state is as for Apply.
func FireSchedule(state *CustomerState, key, cartID string, fl *Flow, run time.Time, cfg *Config) Effects {
	return new(Folder).FireSchedule(state, key, cartID, fl, run, cfg)
}

// FireSchedule is the package's FireSchedule, with the Folder's memory.
func (fo *Folder) FireSchedule(state *CustomerState, key, cartID string, fl *Flow, run time.Time, cfg *Config) Effects {
	f := fo.begin(state, key, cfg)
	sc := fl.Schedule
	c := f.s.Cart(cartID)
	if sc == nil || len(fl.Steps) == 0 || c == nil || !c.IsOpen() || len(c.Items) == 0 ||
		!fl.Match.Matches(&f.s.Profile, c) || !run.Before(f.expiry(c)) {
		return f.end()
	}
	if from, to := sc.Frame(run); c.ModifiedAt.Before(from) || c.ModifiedAt.After(to) || ranRun(c, fl.Name, run) {
		return f.end()
	}
	st := &fl.Steps[0]
	holdout := fl.InHoldout(f.key)
	id := RunDecisionID(key, c, fl.Name, run)
	reason, checks := f.guard(c, fl, st, run)
	checks.QuietZone, checks.QuietFrom, checks.QuietTo = "", 0, 0 // runs are not deferred
	if reason != "" {
		f.record(c, DecisionRecord{Flow: fl.Name, Step: st.Name, Version: c.Version, At: run, Holdout: holdout, Suppressed: reason,
			Cause: c.Cause, Checks: checks})
		f.eff.Suppressed = append(f.eff.Suppressed, f.suppression(c, fl, 0, id, reason, "", run, run, holdout))
		return f.end()
	}
	validUntil := f.expiry(c)
	if next := sc.Next(run); !next.IsZero() && next.Before(validUntil) {
		validUntil = next
	}
	eff, _ := fl.StepFor(f.key, 0)
	f.record(c, DecisionRecord{ID: id, Flow: fl.Name, Step: st.Name, Version: c.Version, At: run,
		Holdout: holdout, Discount: eff.Discount != nil, Cause: c.Cause, Checks: checks})
	f.emitDecision(c, fl, 0, id, run, validUntil, holdout)
	if fl.Guards.FrequencyCap != nil && !holdout {
		f.s.noteSent(run, f.cfg.longestCap())
	}
	return f.end()
}

// RunDecisionID is the id of the decision of a scheduled flow's run at
// run for the cart (in its current life and version).
func RunDecisionID(key string, c *Cart, flow string, run time.Time) string {
	return DecisionID(key, c.ID, c.CreatedAt, flow, runStep(run), c.Version)
}

// runStep names a scheduled run in its decision id, as the step name does
// for an inactivity step.
func runStep(run time.Time) string { return "run@" + run.UTC().Format(time.RFC3339) }

// ranRun reports whether the cart's history has a record of the flow's run
// at run (decided, holdout or suppressed).
func ranRun(c *Cart, flow string, run time.Time) bool {
	for i := range c.Decisions {
		if r := &c.Decisions[i]; r.Flow == flow && r.At.Equal(run) {
			return true
		}
	}
	return false
}

// ScheduledFlows returns the indexes of the scheduled flows of the config.
func (c *Config) ScheduledFlows() []int {
	var out []int
	for i := range c.Flows {
		if c.Flows[i].Schedule != nil {
			out = append(out, i)
		}
	}
	return out
}
