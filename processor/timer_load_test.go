package processor_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// TestTimerLateness measures how late timers fire by the wall clock with
// many timers pending: a store seeded with one open cart per customer,
// each with a reminder timer. The first `due` of them come due at moments
// spread evenly over a window that starts shortly after the processor
// does; the rest are due a day later and stay pending. Every due timer
// must fire and decide once; the lateness (wall clock at firing minus due
// time) is logged, not asserted: speed is measured, not tested.
//
// By default 20k timers, all due over 5 s, as a correctness test;
// CARTLIFT_TIMER_LOAD=1 runs the measurement of the README (1M pending,
// 100k of them due over 60 s; CARTLIFT_TIMER_LOAD_TIMERS, _DUE and
// _WINDOW override):
//
//	CARTLIFT_TIMER_LOAD=1 go test -run TestTimerLateness -v -timeout 30m ./processor/
func TestTimerLateness(t *testing.T) {
	timers, due, window := 20_000, 20_000, 5*time.Second
	if os.Getenv("CARTLIFT_TIMER_LOAD") != "" {
		timers, due, window = 1_000_000, 100_000, time.Minute
	}
	for name, v := range map[string]*int{"CARTLIFT_TIMER_LOAD_TIMERS": &timers, "CARTLIFT_TIMER_LOAD_DUE": &due} {
		if s := os.Getenv(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				t.Fatalf("%s=%q", name, s)
			}
			*v = n
		}
	}
	due = min(due, timers)
	if s := os.Getenv("CARTLIFT_TIMER_LOAD_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CARTLIFT_TIMER_LOAD_WINDOW=%q", s)
		}
		window = d
	}
	flows := mustFlows(t, `flows:
  - name: nudge
    steps:
      - name: reminder
        after: 1h
        action: webhook
    expire_after: 48h
`)
	dir := t.TempDir()
	seedStart := time.Now()
	// The lead leaves time to open the store and join the group.
	lead := 3*time.Second + time.Duration(timers/100_000)*time.Second
	first := time.Now().Add(lead).Truncate(time.Millisecond)
	step := window / time.Duration(due)
	seed := func(yield func(*projections.CustomerState) bool) {
		for i := range timers {
			at := first.Add(time.Duration(i) * step)
			if i >= due {
				at = first.Add(24*time.Hour + time.Duration(i)*time.Millisecond)
			}
			active := at.Add(-time.Hour)
			key := fmt.Sprintf("t-%08d", i)
			c := &projections.Cart{ID: "k", Type: "shopping", Channel: "b2c", Currency: "EUR", Status: projections.StatusOpen,
				CreatedAt: active.Add(-time.Minute), ModifiedAt: active, LastActivity: active, WakeAt: at, Version: 1,
				Items:      []projections.LineItem{{SKU: "A", Name: "A", Quantity: 1, UnitPriceMinor: 1000, LineTotalMinor: 1000}},
				TotalMinor: 1000, ItemCount: 1}
			if !yield(&projections.CustomerState{Key: key, Carts: []*projections.Cart{c}}) {
				return
			}
		}
	}
	if _, err := processor.SeedStore(dir, testPartitions, seed); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d timers (%d due in the window) in %v; the first is due in %v", timers, due, time.Since(seedStart).Round(time.Millisecond), time.Until(first).Round(time.Millisecond))
	if time.Now().After(first) {
		t.Fatalf("seeding took longer than the lead of %v: raise it", lead)
	}

	var mu sync.Mutex
	lateness := make([]time.Duration, 0, timers)
	brokers := newCluster(t)
	r := startProcessor(t, brokers, dir, flows, func(c *processor.Config) {
		c.Hooks.TimerFired = func(d time.Duration) {
			mu.Lock()
			lateness = append(lateness, d)
			mu.Unlock()
		}
	})
	deadline := time.Now().Add(lead + window + 2*time.Minute)
	for r.p.Stats().TimersFired < int64(due) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d due timers fired", r.p.Stats().TimersFired, due)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitDrained(t, r, time.Minute)
	st := r.p.Stats()
	// One decision per due cart, whose timer then waits for its expiry;
	// the other carts' timers wait for their reminders.
	if st.DecisionsEmitted != int64(due) || st.PendingTimers != int64(timers) || st.TimersFired != int64(due) {
		t.Fatalf("%d timers, %d due: %d fired, %d decisions, %d timers pending", timers, due, st.TimersFired, st.DecisionsEmitted, st.PendingTimers)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lateness) != due {
		t.Fatalf("%d wall-clock firings recorded, want %d (timers fired by event time?)", len(lateness), due)
	}
	slices.Sort(lateness)
	q := func(p float64) time.Duration { return lateness[min(len(lateness)-1, int(p*float64(len(lateness))))] }
	t.Logf("%d timers pending, %d due over %v (%.0f/s): lateness p50 %v, p99 %v, max %v", timers, due, window,
		float64(due)/window.Seconds(), q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), lateness[len(lateness)-1].Round(time.Microsecond))
}
