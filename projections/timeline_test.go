package projections

// Live, replay and backtest agree: the same log, with its irregular gaps
// (seconds to 40 minutes between events, late events), run three ways:
//
//   - live: a caught-up runtime whose wall clock follows the log; between
//     events its timer driver ticks (Live mode) shortly after each timer
//     comes due, as the processor's does;
//   - replay: a fresh runtime that works through the log as a backlog
//     (Catchup mode before every event), started after the log ended;
//   - backtest: projections.Backtest over the log, finished at the end.
//
// All three must produce the same decisions, suppressions and outcomes, id
// for id and byte for byte. The one exception is the documented one: the
// replay's runtime was not running when the timers it had not fired by the
// end of the log came due (the steps after the last event, and those of
// carts that late events made due earlier), so it catches those up on the
// wall clock: only the latest step due is decided, and the outcomes'
// counts of decisions can be lower. Its decisions there are a subset of
// live's, with the same contents, and its outcomes have the same ids.

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// timeline is what one run produced: each output's JSON by id, and when it
// was decided or happened.
type timeline struct {
	out map[string]string
	at  map[string]time.Time
	// dups lists ids produced twice with different contents.
	dups []string
	// tail marks the outputs of a replay's catch-up on the wall clock
	// after the log.
	tail   map[string]bool
	inTail bool
}

func newTimeline() *timeline {
	return &timeline{out: map[string]string{}, at: map[string]time.Time{}, tail: map[string]bool{}}
}

func (tl *timeline) add(t testing.TB, id string, at time.Time, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if prev, ok := tl.out[id]; ok && prev != string(b) {
		tl.dups = append(tl.dups, id)
	}
	tl.out[id] = string(b)
	tl.at[id] = at
	if tl.inTail {
		tl.tail[id] = true
	}
}

func (tl *timeline) record(t testing.TB, eff *Effects) {
	for _, d := range eff.Decisions {
		tl.add(t, d.ID, d.DecidedAt, d)
	}
	for _, sp := range eff.Suppressed {
		tl.add(t, "suppressed "+sp.DecisionID+" "+sp.Reason, sp.At, sp)
	}
	for _, o := range eff.Outcomes {
		tl.add(t, o.ID, o.At, o)
	}
}

// simRunner drives a sim like a runtime: events, and the events the fold
// emits for other keys applied right after the event that made them (as
// the backtest does), each after the runtime's clock moved.
type simRunner struct {
	t       testing.TB
	s       *sim
	pending []Emit
}

func newSimRunner(t testing.TB, cfg *Config, tl *timeline) *simRunner {
	r := &simRunner{t: t, s: newSim(cfg)}
	r.s.observe = func(st *step) {
		tl.record(t, &st.Eff)
		r.pending = append(r.pending, st.Eff.Emits...)
	}
	return r
}

// event moves the clock to just before ev (by = the runtime's rule for
// it), applies ev, then delivers what it emitted.
func (r *simRunner) event(key string, ev *events.Event, clock func(*events.Event) error) {
	r.t.Helper()
	queue := []struct {
		key string
		ev  *events.Event
	}{{key, ev}}
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		if err := clock(q.ev); err != nil {
			r.t.Fatal(err)
		}
		if err := r.s.apply(q.key, q.ev); err != nil {
			r.t.Fatal(err)
		}
		if err := r.s.checkAll(); err != nil {
			r.t.Fatal(err)
		}
		for _, e := range r.pending {
			if fed := emitEvent(e); fed != nil {
				queue = append(queue, struct {
					key string
					ev  *events.Event
				}{e.Key, fed})
			}
		}
		r.pending = r.pending[:0]
	}
}

// nextDue is the earliest time at which a timer or a scheduled run of the
// sim comes due; zero for none.
func (r *simRunner) nextDue() time.Time {
	var next time.Time
	if e, ok := r.s.timers.first(); ok {
		next = e.Due
	}
	for _, i := range r.s.cfg.ScheduledFlows() {
		if last, ok := r.s.LastRun(i); ok {
			if n := r.s.cfg.Flows[i].Schedule.Next(last); !n.IsZero() && (next.IsZero() || n.Before(next)) {
				next = n
			}
		}
	}
	return next
}

// tickUntil runs a caught-up runtime's timer driver up to the wall clock
// `until`: a tick `lag` after each due time, on the wall clock (Live).
func (r *simRunner) tickUntil(until time.Time, lag time.Duration) {
	r.t.Helper()
	for {
		d := r.nextDue()
		if d.IsZero() || d.After(until) {
			return
		}
		wall := d.Add(lag)
		if wall.After(until) {
			wall = until
		}
		if err := Advance(r.s.cfg, r.s, wall, Live); err != nil {
			r.t.Fatal(err)
		}
		if err := r.s.checkAll(); err != nil {
			r.t.Fatal(err)
		}
	}
}

func decodeLog(t testing.TB, log []logEntry) []*events.Event {
	t.Helper()
	evs := make([]*events.Event, len(log))
	for i, e := range log {
		ev, err := events.Decode(e.Value, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		evs[i] = ev
	}
	return evs
}

// runLive runs the log on a caught-up runtime: the wall clock is the newest
// event time seen, the timer driver ticks lag after each due time, and
// after the log it ticks on until end.
func runLive(t testing.TB, cfg *Config, log []logEntry, lag time.Duration, end time.Time) *timeline {
	tl := newTimeline()
	r := newSimRunner(t, cfg, tl)
	var wall time.Time
	for i, ev := range decodeLog(t, log) {
		if ev.Time.After(wall) {
			wall = ev.Time
		}
		// The ticks before the record arrives, then the clock before it:
		// just before the event, never past the wall clock.
		r.tickUntil(wall.Add(-1), lag)
		r.event(log[i].Key, ev, func(ev *events.Event) error {
			to := ev.Time.Add(-1)
			if to.After(wall) {
				to = wall
			}
			return Advance(cfg, r.s, to, Live)
		})
	}
	r.tickUntil(end, lag)
	return tl
}

// runReplay works through the log as a backlog (Catchup), then, caught up
// at end, on the wall clock.
func runReplay(t testing.TB, cfg *Config, log []logEntry, end time.Time) *timeline {
	tl := newTimeline()
	r := newSimRunner(t, cfg, tl)
	for i, ev := range decodeLog(t, log) {
		r.event(log[i].Key, ev, func(ev *events.Event) error { return Advance(cfg, r.s, ev.Time.Add(-1), Catchup) })
	}
	tl.inTail = true
	if err := Advance(cfg, r.s, end, Live); err != nil {
		t.Fatal(err)
	}
	return tl
}

func runBacktest(t testing.TB, cfg *Config, log []logEntry, end time.Time) *timeline {
	tl := newTimeline()
	b := NewBacktest(cfg)
	b.Observe = func(_ string, eff *Effects) { tl.record(t, eff) }
	for i, ev := range decodeLog(t, log) {
		b.Apply(log[i].Key, ev)
	}
	b.Finish(end)
	return tl
}

func TestLiveReplayBacktestAgree(t *testing.T) {
	cfg := replayConfig(t)
	seeds, n := []uint64{21, 22, 23}, 3000
	if testing.Short() {
		seeds, n = seeds[:1], 1000
	}
	for _, seed := range seeds {
		log := genLog(seed, n, 80, 8)
		evs := decodeLog(t, log)
		var last time.Time
		for _, ev := range evs {
			if ev.Time.After(last) {
				last = ev.Time
			}
		}
		end := last.Add(cfg.IdleExpireAfter + cfg.ClosedRetention + time.Hour)
		live := runLive(t, cfg, log, 100*time.Millisecond, end)
		replay := runReplay(t, cfg, log, end)
		bt := runBacktest(t, cfg, log, end)
		for name, tl := range map[string]*timeline{"live": live, "replay": replay, "backtest": bt} {
			if len(tl.dups) > 0 {
				t.Errorf("seed %d: %s produced %d ids twice with different contents, e.g. %s", seed, name, len(tl.dups), tl.dups[0])
			}
		}
		decisions := 0
		for id := range live.out {
			if id[:2] == "d-" {
				decisions++
			}
		}
		if decisions < 100 {
			t.Fatalf("seed %d: only %d decisions: the log exercises too little", seed, decisions)
		}
		// Backtest equals live, whole.
		for _, id := range slices.Sorted(maps.Keys(live.out)) {
			if bt.out[id] != live.out[id] {
				t.Fatalf("seed %d: %s: live and backtest differ:\nlive:     %s\nbacktest: %s", seed, id, live.out[id], bt.out[id])
			}
		}
		if len(bt.out) != len(live.out) {
			t.Fatalf("seed %d: backtest produced %d outputs, live %d", seed, len(bt.out), len(live.out))
		}
		// Replay equals live in everything it decided while it worked
		// through the log; what it caught up on the wall clock after the
		// log (its tail), the documented exception.
		tail := 0
		for _, id := range slices.Sorted(maps.Keys(live.out)) {
			want, got := live.out[id], replay.out[id]
			ok := got == want
			if !ok && replay.tail[id] || got == "" {
				tail++
				switch {
				case id[:2] == "d-" || id[:11] == "suppressed ":
					ok = got == "" || got == want // the replay decides only the latest step due
				default: // an outcome: the same id, its count of decisions may be lower
					ok = got != ""
				}
			}
			if !ok {
				t.Fatalf("seed %d: %s (at %s, last event %s): live and replay differ:\nlive:   %s\nreplay: %s",
					seed, id, fmtTime(live.at[id]), fmtTime(last), want, got)
			}
		}
		for id := range replay.out {
			if _, ok := live.out[id]; !ok {
				t.Fatalf("seed %d: %s only in the replay: %s", seed, id, replay.out[id])
			}
		}
		if tail*10 > len(live.out) {
			t.Fatalf("seed %d: %d of %d outputs differ in the replay's tail: the comparison says too little", seed, tail, len(live.out))
		}
		t.Logf("seed %d: %d outputs (%d decisions), %d after the last event", seed, len(live.out), decisions, tail)
	}
}
