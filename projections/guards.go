package projections

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Guards are the rules checked when a step of a flow comes due, across all
// flows and carts of the customer. The zero value is the default: email
// needs marketing consent, no caps, no quiet hours, no combination, UTC
// for customers without a time zone.
//
// A flows file sets them in its top-level `guards:` section; a flow's own
// `guards:` overrides them field by field. Flow.Guards holds the result.
//
// Holdout decisions pass the same guards as the others, so that the
// control group is comparable with the treated one, but they count toward
// no cap: nobody was messaged.
type Guards struct {
	// Consent says which actions need the customer's marketing consent:
	// ConsentEmail (the default; "" means the same), ConsentAll or
	// ConsentNone. A step without the consent it needs is suppressed with
	// ReasonNoConsent.
	Consent string
	// FrequencyCap limits the customer's messages across all flows and
	// carts; nil means the flow is not capped: its decisions are neither
	// checked against a cap nor counted toward one.
	FrequencyCap *FrequencyCap
	// QuietHours, in the customer's time zone, defer decisions to the end
	// of the window; nil means none.
	QuietHours *QuietHours
	// MaxMessagesPerCart suppresses a step (ReasonCartCap) once the cart
	// has had this many messages in its current life, from any flow; 0
	// means no cap.
	MaxMessagesPerCart int
	// CombineWindow, when positive, combines the customer's carts whose
	// steps of the flow come due within this long of a decision into one
	// decision, for the most valuable of them; the others are suppressed
	// with ReasonCombined.
	CombineWindow time.Duration
	// DefaultTimeZone is the IANA zone of customers whose profile has none
	// (or one this host's tz database does not know). "" means UTC.
	DefaultTimeZone string
}

// Consent rules.
const (
	ConsentEmail = "email" // email steps need consent, webhooks do not (the default)
	ConsentAll   = "all"   // every step needs consent
	ConsentNone  = "none"  // no step needs consent: it is checked upstream
)

// FrequencyCap allows at most Max messages (emitted, non-holdout decisions
// of capped flows) per customer in any window of length Per.
type FrequencyCap struct {
	Max int
	Per time.Duration
}

// QuietHours is a daily window of local wall-clock time, [From, To), in
// minutes after midnight. From > To is a window across midnight. From ==
// To is invalid.
type QuietHours struct {
	From int
	To   int
}

// Reasons a step is suppressed.
const (
	ReasonNoConsent    = events.SuppressedNoConsent
	ReasonFrequencyCap = events.SuppressedFrequencyCap
	ReasonCartCap      = events.SuppressedCartCap // the flow's max_messages_per_cart
	ReasonCombined     = events.SuppressedCombined
	ReasonSuperseded   = events.SuppressedSuperseded
)

// MaxSentTimes bounds CustomerState.Sent. A frequency cap's Max is at most
// half of it, so the list holds every message a cap needs to look at.
const MaxSentTimes = 32

// sentSlack is how much older than the newest message an entry of
// CustomerState.Sent may be, beyond the longest cap window, before it is
// pruned: decision times are not strictly monotonic (quiet hours defer
// some), but never by more than a day.
const sentSlack = 48 * time.Hour

// Contains reports whether t falls inside the window, on the wall clock of
// loc. Seconds are ignored: 07:59:59 is inside a window ending at 08:00.
func (q *QuietHours) Contains(t time.Time, loc *time.Location) bool {
	lt := t.In(loc)
	return q.containsMinute(lt.Hour()*60 + lt.Minute())
}

func (q *QuietHours) containsMinute(m int) bool {
	if q.From < q.To {
		return q.From <= m && m < q.To
	}
	return m >= q.From || m < q.To
}

// End returns the first instant after t at which the wall clock of loc is
// outside the window, when t is inside it; otherwise it returns t.
//
// It follows the zone's offset changes: a window ending at 08:00 ends at
// 08:00 local time on either side of a daylight-saving change, and a
// window whose end falls into a skipped hour ends when the clock jumps
// past it. On the night the clock goes back, the repeated hour is quiet or
// not by its wall-clock time, both times.
func (q *QuietHours) End(t time.Time, loc *time.Location) time.Time {
	at := t
	// Each round either finds the end within the zone offset in effect,
	// or moves to the next offset change; zones change at most a few
	// times a day.
	for range 8 {
		lt := at.In(loc)
		m := lt.Hour()*60 + lt.Minute()
		if !q.containsMinute(m) {
			return at
		}
		day := 0
		if q.From > q.To && m >= q.From {
			day = 1 // the evening part of a window across midnight
		}
		_, off := lt.Zone()
		y, mo, d := lt.Date()
		end := time.Date(y, mo, d+day, q.To/60, q.To%60, 0, 0, time.FixedZone("", off))
		_, zoneEnd := lt.ZoneBounds()
		if zoneEnd.IsZero() || end.Before(zoneEnd) {
			return end.In(time.UTC)
		}
		at = zoneEnd.In(time.UTC)
	}
	return at
}

// locations caches loaded time zones by name. It holds only names that
// loaded, so it is bounded by the tz database.
var locations sync.Map

// location returns the time zone of the given name, or false when the
// tz database does not know it. "" is UTC; "Local" (the host's zone) is
// refused, since the fold must not depend on the host.
func location(name string) (*time.Location, bool) {
	switch name {
	case "", "UTC":
		return time.UTC, true
	case "Local":
		return nil, false
	}
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), true
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, false
	}
	locations.Store(name, l)
	return l, true
}

// customerLocation is the zone quiet hours use for the customer: the
// profile's, else the default, else UTC.
func (g *Guards) customerLocation(p *Profile) *time.Location {
	if l, ok := location(p.TimeZone); ok && p.TimeZone != "" {
		return l
	}
	if l, ok := location(g.DefaultTimeZone); ok {
		return l
	}
	return time.UTC
}

// needsConsent reports whether a step with the action needs consent.
func (g *Guards) needsConsent(action string) bool {
	switch g.Consent {
	case ConsentAll:
		return true
	case ConsentNone:
		return false
	}
	return action == ActionEmail
}

// Allows reports whether one more message at t keeps every window of
// length Per that contains t at Max messages or fewer. sent must be sorted.
func (fc *FrequencyCap) Allows(sent []time.Time, t time.Time) bool {
	return fc.fullest(sent, t) <= fc.Max
}

// fullest is the number of messages, one more at t included, in the
// fullest window of length Per that contains t. sent must be sorted.
func (fc *FrequencyCap) fullest(sent []time.Time, t time.Time) int {
	// The fullest window containing t starts at a message at or before t.
	best := 0
	lo, _ := slices.BinarySearchFunc(sent, t.Add(-fc.Per), func(a, b time.Time) int { return a.Compare(b) })
	for i := lo; i < len(sent) && !sent[i].After(t); i++ {
		if !t.Before(sent[i].Add(fc.Per)) {
			continue // sent[i] is exactly Per before t: not in one window with it
		}
		n := 1 // t itself
		for _, s := range sent[i:] {
			if !s.Before(sent[i].Add(fc.Per)) {
				break
			}
			n++
		}
		best = max(best, n)
	}
	// A window starting at t itself.
	n := 1
	for _, s := range sent[lo:] {
		if s.Before(t) {
			continue
		}
		if !s.Before(t.Add(fc.Per)) {
			break
		}
		n++
	}
	return max(best, n)
}

// noteSent adds a message time to the customer's list, keeping it sorted
// and bounded: entries older than the longest cap window (plus slack)
// before the newest go, and at most MaxSentTimes stay.
func (s *CustomerState) noteSent(t time.Time, longest time.Duration) {
	i, _ := slices.BinarySearchFunc(s.Sent, t, func(a, b time.Time) int { return a.Compare(b) })
	s.Sent = slices.Insert(s.Sent, i, t)
	s.pruneSent(longest)
}

func (s *CustomerState) pruneSent(longest time.Duration) {
	if len(s.Sent) == 0 {
		return
	}
	cut := s.Sent[len(s.Sent)-1].Add(-longest - sentSlack)
	n := 0
	for n < len(s.Sent) && s.Sent[n].Before(cut) {
		n++
	}
	n = max(n, len(s.Sent)-MaxSentTimes)
	if n > 0 {
		s.Sent = slices.Delete(s.Sent, 0, n)
	}
	if len(s.Sent) == 0 {
		s.Sent = nil
	}
}

// longestCap is the longest frequency-cap window of any live flow; 0 when
// no live flow is capped. Shadow flows do not count: they must not keep
// live state longer (a shadow flow's cap sees the live messages as far
// back as the live flows' longest window).
func (c *Config) longestCap() time.Duration {
	var d time.Duration
	for i := range c.Flows {
		if fc := c.Flows[i].Guards.FrequencyCap; fc != nil && !c.Flows[i].Shadow {
			d = max(d, fc.Per)
		}
	}
	return d
}

// Suppression is a step that came due but was not sent: a guard stopped
// it. It is recorded in the cart's history and reported in Effects, and
// the runtime publishes it on the suppressions topic (cart.step.suppressed)
// as it is; nothing goes to the decisions topic. Stage is
// events.StageProcessor, ID SuppressionID(DecisionID).
type Suppression = events.Suppression

// Deferral is a step that came due inside quiet hours: it stays pending,
// and the cart's timer moves to Until, the end of the window. A step may
// be reported as deferred more than once (when activity on the cart or a
// profile change reschedules it) before it is decided; each report has
// the same ID (see DeferralID). The runtime publishes it on the
// suppressions topic (cart.step.deferred).
type Deferral = events.Deferral

// SuppressionID is the id of the suppression of the step whose decision
// would have had decisionID: "s-" instead of "d-", the same hash.
func SuppressionID(decisionID string) string { return "s-" + strings.TrimPrefix(decisionID, "d-") }

// DeferralID is the id of the deferral of a step of a flow on a cart (in
// the life that began at created) that came due at due.
func DeferralID(key, cartID string, created time.Time, flow, step string, due time.Time) string {
	return "q-" + hashID(key, cartID, idTime(created), flow, step, idTime(due))
}
