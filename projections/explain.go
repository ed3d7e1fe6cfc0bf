package projections

import (
	"fmt"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Explanation answers "why did this customer get this email?" for one
// cart: its decision history, step by step, with the cause of each step
// and what the guards found, and the steps still pending. Explain builds
// it from the state alone, so the live API and a backtest over the same
// input give the same JSON.
type Explanation struct {
	CustomerKey string `json:"customer_key"`
	CartID      string `json:"cart_id"`
	Status      string `json:"status"`
	Version     int64  `json:"version"`
	// LastActivity is the cart's last activity, from which its inactivity
	// steps count, and Cause the input event of it (absent when not known).
	LastActivity time.Time     `json:"last_activity"`
	Cause        *events.Cause `json:"cause,omitempty"`
	// WakeAt is when the cart's timer runs next (absent for none).
	WakeAt time.Time `json:"wake_at,omitzero"`
	// Steps is the cart's decision history, oldest first (at most
	// MaxDecisionHistory records; a new life of the cart starts a new
	// history).
	Steps []ExplainedStep `json:"steps"`
	// Pending lists the next step of each inactivity flow that matches
	// the cart, not yet due or deferred.
	Pending []PendingStep `json:"pending"`
}

// Results of an ExplainedStep.
const (
	ResultDecided    = "decided"
	ResultSuppressed = "suppressed"
	ResultSkipped    = "skipped"
)

// ExplainedStep is one step that came due: when and why, what the guards
// found, and what became of it.
type ExplainedStep struct {
	Flow      string `json:"flow"`
	Step      string `json:"step"`
	StepIndex int    `json:"step_index"`
	// Version is the cart's version when the step came due.
	Version int64 `json:"version"`
	// Result is ResultDecided (a decision went out, holdout included),
	// ResultSuppressed (a guard stopped it, or it was combined into
	// another cart's decision: Reason says which) or ResultSkipped (it
	// came due together with a later step of the flow, which was decided
	// instead).
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	// DecisionID is the decision's id (decided), or the one a combined
	// step went out with (Into); SuppressionID the suppression record's
	// on the suppressions topic.
	DecisionID    string `json:"decision_id,omitempty"`
	SuppressionID string `json:"suppression_id,omitempty"`
	Into          string `json:"into,omitempty"`
	Holdout       bool   `json:"holdout"`
	// DueAt is when the step came due, DecidedAt when it was decided or
	// suppressed (later after a quiet-hours deferral, earlier for a
	// combined decision); Run the scheduled run that swept the cart.
	DueAt     time.Time `json:"due_at"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Scheduled bool      `json:"scheduled,omitempty"`
	// Deferred is set when quiet hours held the step back.
	Deferred *ExplainedDeferral `json:"deferred,omitempty"`
	// Cause is the activity the step's inactivity period counted from: the
	// input event that set the cart's timer.
	Cause *events.Cause `json:"cause,omitempty"`
	// Guards is what the guards found; absent for skipped steps and for
	// records from before guards were recorded.
	Guards *ExplainedGuards `json:"guards,omitempty"`
}

// ExplainedDeferral is a quiet-hours deferral of a step.
type ExplainedDeferral struct {
	Reason string    `json:"reason"` // events.DeferredQuietHours
	Until  time.Time `json:"until"`
}

// ExplainedGuards is what each guard of the flow found when the step came
// due. A guard the flow does not have is absent.
type ExplainedGuards struct {
	Consent      ConsentCheck     `json:"consent"`
	CartCap      *CapCheck        `json:"cart_cap,omitempty"`
	FrequencyCap *CapCheck        `json:"frequency_cap,omitempty"`
	QuietHours   *QuietHoursCheck `json:"quiet_hours,omitempty"`
	Holdout      bool             `json:"holdout"`
}

// ConsentCheck is the consent guard's result: ConsentGranted,
// ConsentDenied or ConsentNotRequired, and the customer.updated event the
// consent was read from (absent when the profile never said).
type ConsentCheck struct {
	Result  string    `json:"result"`
	EventID string    `json:"event_id,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// CapCheck is a cap's result: at most Max messages (per Window, for the
// frequency cap), Counted already sent (in the fullest window containing
// the decision time, for the frequency cap); Passed when one more message
// stayed within Max.
type CapCheck struct {
	Max     int    `json:"max"`
	Window  string `json:"window,omitempty"`
	Counted int    `json:"counted"`
	Passed  bool   `json:"passed"`
}

// QuietHoursCheck is the quiet-hours window ("22:00" to "08:00") in the
// time zone it was read in.
type QuietHoursCheck struct {
	From     string `json:"from"`
	To       string `json:"to"`
	TimeZone string `json:"time_zone"`
}

// PendingStep is the next step of a flow for the cart: due at DueAt
// (counted from the cart's last activity, Cause) unless activity comes
// first.
type PendingStep struct {
	Flow      string        `json:"flow"`
	Step      string        `json:"step"`
	StepIndex int           `json:"step_index"`
	DueAt     time.Time     `json:"due_at"`
	Cause     *events.Cause `json:"cause,omitempty"`
}

// Explain explains the cart of the state, or returns false when the state
// has no cart of that id. topic is the input topic the causes were read
// from (the state records partitions and offsets only). It is pure: the
// same state and config give the same explanation.
func Explain(st *CustomerState, cartID string, cfg *Config, topic string) (*Explanation, bool) {
	if st == nil {
		return nil, false
	}
	c := st.Cart(cartID)
	if c == nil {
		return nil, false
	}
	x := &Explanation{CustomerKey: st.Key, CartID: c.ID, Status: c.Status, Version: c.Version,
		LastActivity: c.LastActivity, Cause: c.Cause.Event(topic), WakeAt: c.WakeAt,
		Steps: make([]ExplainedStep, 0, len(c.Decisions)), Pending: []PendingStep{}}
	for i := range c.Decisions {
		x.Steps = append(x.Steps, explainRecord(st.Key, c, &c.Decisions[i], cfg, topic))
	}
	if c.IsOpen() && len(c.Items) > 0 {
		for i := range cfg.Flows {
			fl := &cfg.Flows[i]
			if fl.Schedule != nil || !fl.Match.Matches(&st.Profile, c) {
				continue
			}
			if j := nextStep(st.Key, c, fl); j >= 0 {
				x.Pending = append(x.Pending, PendingStep{Flow: fl.Name, Step: fl.Steps[j].Name, StepIndex: j,
					DueAt: c.LastActivity.Add(fl.afterFor(st.Key, j)), Cause: c.Cause.Event(topic)})
			}
		}
	}
	return x, true
}

func explainRecord(key string, c *Cart, r *DecisionRecord, cfg *Config, topic string) ExplainedStep {
	fl := cfg.flow(r.Flow)
	scheduled := fl != nil && fl.Schedule != nil
	e := ExplainedStep{Flow: r.Flow, Step: r.Step, StepIndex: r.StepIndex, Version: r.Version, Holdout: r.Holdout,
		DueAt: r.DueAt(), Scheduled: scheduled, Cause: r.Cause.Event(topic)}
	switch {
	case r.Skipped:
		e.Result = ResultSkipped
		return e
	case r.Suppressed != "":
		e.Result, e.Reason, e.DecidedAt = ResultSuppressed, r.Suppressed, r.At
		would := DecisionID(key, c.ID, c.CreatedAt, r.Flow, r.Step, r.Version)
		if scheduled {
			would = DecisionID(key, c.ID, c.CreatedAt, r.Flow, runStep(r.At), r.Version)
		}
		e.SuppressionID = SuppressionID(would)
		if r.Suppressed == ReasonCombined {
			e.Into = r.ID
		}
	default:
		e.Result, e.DecisionID, e.DecidedAt = ResultDecided, r.ID, r.At
	}
	ck := &r.Checks
	if ck.QuietZone != "" && r.At.After(r.DueAt()) {
		e.Deferred = &ExplainedDeferral{Reason: events.DeferredQuietHours, Until: r.At}
	}
	if ck.Consent == "" {
		return e
	}
	g := &ExplainedGuards{Consent: ConsentCheck{Result: ck.Consent, EventID: ck.ConsentEventID, At: ck.ConsentAt},
		Holdout: r.Holdout}
	if ck.CartMax > 0 {
		g.CartCap = &CapCheck{Max: ck.CartMax, Counted: ck.CartCount, Passed: ck.CartCount < ck.CartMax}
	}
	if ck.CapMax > 0 {
		g.FrequencyCap = &CapCheck{Max: ck.CapMax, Window: ck.CapPer.String(), Counted: ck.CapCount,
			Passed: ck.CapCount < ck.CapMax}
	}
	if ck.QuietZone != "" {
		g.QuietHours = &QuietHoursCheck{From: clockTime(ck.QuietFrom), To: clockTime(ck.QuietTo), TimeZone: ck.QuietZone}
	}
	e.Guards = g
	return e
}

// clockTime formats minutes after midnight as "hh:mm".
func clockTime(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }
