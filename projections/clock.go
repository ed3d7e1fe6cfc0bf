package projections

import "time"

// The effective-time rule, in one place for every runtime: the processor's
// workers, the backtest and the tests' miniature runtime all move a
// partition's clock with Advance, so that a replay, a backtest and a live
// run decide the same things.
//
// A partition's clock moves in one of two modes:
//
//   - Event time (Catchup): the runtime is working through a backlog. Every
//     timer due at or before the new time fires at its own due time (Fire
//     gets now = the timer's due time; see Firing.At for late data), and
//     every scheduled run due by then happens at its own run time,
//     interleaved with the timers in time order (timers due at a run's time
//     fire before the run). The result is exactly what a processor that had
//     been running at the time would have decided, whatever the gaps
//     between events and however the backlog was batched.
//   - Wall clock (Live): the runtime is caught up and the clock is the wall
//     clock. Timers due by then fire with now = the new time, so a timer
//     that is late by more than a step's interval (the processor was down
//     while it came due) decides only the latest step due; runs missed
//     while the processor was down collapse into the latest one.
//
// The runtime chooses the new time; it is never later than the wall clock
// (a producer with a fast clock cannot fire anyone's timer early) and
// never earlier than what the partition already fired.

// Mode is how Advance moves a partition's clock.
type Mode int

const (
	// Catchup moves the clock in event time: each timer and run at its own
	// time.
	Catchup Mode = iota
	// Live moves the clock to the wall clock: late timers fire at the new
	// time, missed runs collapse.
	Live
)

// Partition is what Advance drives: one partition's clock, timer index and
// its scheduled flows' last runs. Implementations do the I/O and persist
// the clock and the last runs with the rest of the partition's state;
// Advance holds the rule.
type Partition interface {
	// Clock returns the partition's effective time: the latest time
	// Advance moved it to, zero for a new partition.
	Clock() time.Time
	// SetClock records the partition's effective time.
	SetClock(t time.Time)
	// FireTimers fires, in due order (then customer key, then cart id),
	// every timer due at or before f.UpTo, including timers that the
	// firings themselves move to a time at or before it, each with now =
	// f.At(its due time).
	FireTimers(f Firing) error
	// LastRun returns the last run time of the scheduled flow (an index
	// into Config.Flows); false when none is recorded.
	LastRun(flow int) (time.Time, bool)
	// SetLastRun records t as the flow's last run without running it.
	SetLastRun(flow int, t time.Time)
	// Run runs the scheduled flow at run (FireSchedule for each open cart
	// in the run's time frame) and records run as its last run.
	Run(flow int, run time.Time) error
}

// Firing is one round of FireTimers: the timers due by UpTo, each fired
// at At(its due time).
type Firing struct {
	UpTo time.Time
	Mode Mode
	// From is the partition's clock before the round.
	From time.Time
}

// At is the time a timer due at due fires at: in Live mode UpTo (the wall
// clock); in Catchup mode its own due time, or the partition's clock
// before the round when that is later. A timer can only be due before the
// clock when the input set it after the clock had passed its due time
// (late data: an old cart assigned on login, a late event): it fires at
// the time the partition learnt of it, as a caught-up processor would
// have fired it, not in a past the partition had already left.
func (f Firing) At(due time.Time) time.Time {
	if f.Mode == Live {
		return f.UpTo
	}
	return later(due, f.From)
}

// Advance moves the partition's clock to `to`: it fires the timers and
// runs the scheduled flows due by then, in the given mode. The clock
// never moves back: a `to` before the partition's clock means the clock
// (which still fires timers the input set meanwhile, see Firing.At).
//
// A scheduled flow without a recorded last run (the partition's first
// start with the flow) records `to` as its last run without running: a
// schedule never runs retroactively for the time before it was deployed.
func Advance(cfg *Config, p Partition, to time.Time, mode Mode) error {
	from := p.Clock()
	to = later(to, from)
	defer p.SetClock(to)
	scheduled := cfg.ScheduledFlows()
	for _, i := range scheduled {
		if _, ok := p.LastRun(i); !ok {
			p.SetLastRun(i, to)
		}
	}
	if mode == Live {
		if err := p.FireTimers(Firing{UpTo: to, Mode: Live, From: from}); err != nil {
			return err
		}
		for _, i := range scheduled {
			last, _ := p.LastRun(i)
			if run := cfg.Flows[i].Schedule.Due(last, to); !run.IsZero() {
				if err := p.Run(i, run); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for {
		// The earliest run due by `to` of any scheduled flow (ties: the
		// flow first in the file).
		flow, next := -1, time.Time{}
		for _, i := range scheduled {
			last, _ := p.LastRun(i)
			if r := cfg.Flows[i].Schedule.Next(catchUpFrom(last, to)); !r.IsZero() && !r.After(to) && (flow < 0 || r.Before(next)) {
				flow, next = i, r
			}
		}
		if flow < 0 {
			break
		}
		if err := p.FireTimers(Firing{UpTo: next, Mode: Catchup, From: from}); err != nil {
			return err
		}
		if err := p.Run(flow, next); err != nil {
			return err
		}
		from = later(from, next)
	}
	return p.FireTimers(Firing{UpTo: to, Mode: Catchup, From: from})
}

// catchUpFrom bounds how far back a catch-up looks for runs (see Due).
func catchUpFrom(last, to time.Time) time.Time {
	if to.Sub(last) > maxCatchUp {
		return to.Add(-maxCatchUp)
	}
	return last
}
