package actions

import (
	"maps"
	"sync"
	"time"
)

// Channels, as counted in Stats.TransientFailures.
const (
	ChannelEmail           = "email"
	ChannelWebhook         = "webhook"
	ChannelDiscountWebhook = "discount_webhook"
)

// Stats are the counters of a Consumer (or of one Redrive), for metrics
// and logs. The maps are copies, the caller's to keep.
type Stats struct {
	// Results counts the decisions handled for good, by result kind
	// (email.sent, email.failed, webhook.delivered, expired, duplicate,
	// skipped_holdout, no_consent, no_address, skipped_action, ...).
	Results map[string]int64
	// TransientFailures counts failed attempts that will be retried, by
	// channel (email, webhook, discount_webhook).
	TransientFailures map[string]int64
	// DeadLettered counts records sent to the DLQ, by reason.
	DeadLettered map[string]int64
	// ExpiredWhileHeld counts the decisions whose valid_until passed while
	// a transient failure held them: recorded expired, not sent (they are
	// in Results["expired"] too).
	ExpiredWhileHeld int64
	// DiscountsNotAnnounced counts discount codes whose announcement to the
	// shop failed for good (the email was sent).
	DiscountsNotAnnounced int64

	// Held is true while a transient failure holds a record; HeldDecision
	// is its decision id and HeldSince the time of its first failure.
	Held         bool
	HeldDecision string
	HeldSince    time.Time
}

// stats is the mutable Stats, safe for concurrent use (the consumer
// writes, metrics read).
type stats struct {
	mu sync.Mutex
	s  Stats
}

func newStats() *stats {
	return &stats{s: Stats{Results: map[string]int64{}, TransientFailures: map[string]int64{}, DeadLettered: map[string]int64{}}}
}

func (st *stats) snapshot() Stats {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s
	s.Results = maps.Clone(st.s.Results)
	s.TransientFailures = maps.Clone(st.s.TransientFailures)
	s.DeadLettered = maps.Clone(st.s.DeadLettered)
	return s
}

func (st *stats) update(f func(s *Stats)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	f(&st.s)
}

func (st *stats) result(kind string)      { st.update(func(s *Stats) { s.Results[kind]++ }) }
func (st *stats) transient(ch string)     { st.update(func(s *Stats) { s.TransientFailures[ch]++ }) }
func (st *stats) deadLettered(why string) { st.update(func(s *Stats) { s.DeadLettered[why]++ }) }

func (st *stats) hold(decisionID string, since time.Time) {
	st.update(func(s *Stats) { s.Held, s.HeldDecision, s.HeldSince = true, decisionID, since })
}

func (st *stats) release() {
	st.update(func(s *Stats) { s.Held, s.HeldDecision, s.HeldSince = false, "", time.Time{} })
}
