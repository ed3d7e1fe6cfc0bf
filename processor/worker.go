package processor

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// Bounds of a worker's work per Pebble batch: fetched records (a batch
// takes the fetches queued for the worker until it holds this many, or a
// sixteenth of a memtable: Pebble handles a batch of half a memtable as a
// memtable of its own, flushed at once), and timers fired.
const (
	maxRecordsPerBatch = 5_000
	maxFiresPerBatch   = 20_000
)

// cacheEntryOverhead is what a state cache entry costs beyond its key and
// encoded bytes: the map slot, the string and slice headers, the map's
// free room, and the allocator's rounding. Measured with 10-byte keys:
// 178 B per entry in a map that only grew, about 230 B after churn with
// the copies of cacheDeletes (BenchmarkStateCacheChurn: 246 B, the key's
// 16 included).
const cacheEntryOverhead = 192

// fetched is one fetch's records of a partition, handed to its worker.
type fetched struct {
	records []*kgo.Record
	// end is the partition's end offset (last stable offset) at the time
	// of the fetch.
	end int64
}

// worker owns one input partition: its goroutine is the only one that
// reads or writes the partition's state, timers, outbox tail and offset.
// It turns each fetched batch, and each round of due timers, into one
// Pebble batch.
type worker struct {
	pr   *Processor
	part int32
	log  *slog.Logger

	in   chan fetched
	quit chan struct{}
	done chan struct{}

	// pos is the position of the record being folded (events.Event.Pos).
	pos events.Position
	// folder holds the folds' memory: each fold's Effects are applied
	// before the next fold starts.
	folder projections.Folder

	// end is the newest known end offset of the partition (set by fetches
	// and by the lag poller); caughtUp is whether next >= end.
	end      atomic.Int64
	next     atomic.Int64
	caughtUp atomic.Bool
	// gauges read by Stats.
	openCarts atomic.Int64
	timers    atomic.Int64
	// clock is the committed effective time (unix nanos).
	clock atomic.Int64
	// outboxNext is the committed outbox's next sequence number.
	outboxNext atomic.Uint64

	meta  partitionMeta
	relay *relay

	// cache holds the committed states of recently seen customers,
	// encoded (compact, and nothing in them for the garbage collector to
	// trace), cacheBytes their size, bounded by cacheBudget.
	cache       map[string]cachedState
	cacheBytes  int64
	cacheBudget int64
	// cacheDeletes counts deletions from cache since it was last copied:
	// a Go map does not give back the room that deletions in bursts
	// leave (BenchmarkStateCacheChurn: 799 B per entry after 20M passed
	// through 100k in bursts of 20k, 246 B with the copies), so the cache
	// is copied into a new map when its deletions reach four times its
	// size.
	cacheDeletes int
	// toCache holds the batch's new states until the batch commits.
	toCache []cachedState
	// Per Pebble batch: the batch and the states it changes; a nil state
	// means delete. The batch is not indexed (an indexed batch costs a
	// skiplist insert per key): the timer window has its timer changes,
	// batchOutbox its outbox entries for an erasure's purge, and the rare
	// scans of committed data (a scheduled run's sweep, a window refill)
	// commit it first.
	b     *pebble.Batch
	dirty map[string]*projections.CustomerState
	// nextDue is the earliest timer due time, when nextDueKnown; it lets
	// the worker skip timer scans while nothing can be due.
	nextDue      time.Time
	nextDueKnown bool
	// scanFrom is a lower bound of every live timer's due time. Fired
	// timers leave deletion tombstones at the head of the index; scanning
	// from here instead of the start of the range skips them, which keeps
	// a long backlog linear instead of quadratic. Zero means the start.
	scanFrom time.Time
	// batchOutbox lists the batch's outbox entries, for an erasure's purge.
	batchOutbox []batchOutboxEntry
	// batchRecords and batchConsumed count the fetched and the folded
	// records of the batch, batchStart is when its first fetch arrived,
	// batchEnd the newest end offset its fetches saw.
	batchRecords, batchConsumed int
	batchStart                  time.Time
	batchEnd                    int64
	// index holds the batch's net changes to the timer and modification
	// indexes, written when the batch commits (see indexChanges).
	index indexChanges
	// win is the head of the timer index, batch included (see
	// timerWindow).
	win     timerWindow
	changed bool // the batch holds changes to commit
	// logNeeded is set when the batch changes more than the clock (an
	// offset, an output, a scheduled run), so that its changelog metadata
	// record is written even if no state changed. A clock that moves alone
	// is not logged: a restore from an older clock fires nothing twice,
	// since every timer that fired changed a state.
	logNeeded bool

	// known filters the keys the store holds a state for (nil until
	// its first build ends), so that a new customer costs no read.
	// While a build runs (building), the keys the worker writes are kept
	// in knownSince, to be added to the build when it arrives on
	// knownBuild: the build reads a snapshot taken when it started.
	known      *keyFilter
	building   bool
	knownSince []string
	knownBuild chan keyFilterBuild
	bg         sync.WaitGroup

	keyBuf     []byte
	keyScratch []byte // a key for one call that copies it (Pebble's Get and Set, the index)
	stateBuf   []byte
	sorted     []string   // scratch: the customers a commit writes, in key order
	refs       []stateRef // scratch: the values of a commit's state references
	// groupSynced is set once the group's offset follows the store's (a
	// batch was marked for commit, or the poller committed the resumed
	// offset of an idle partition).
	groupSynced atomic.Bool
}

// newWorker takes a partition over. It first fences the partition's
// previous owner (initialising the partition's transactional producer
// bumps its epoch, and aborts what the old one left open), then decides
// where the state comes from:
//   - the local store, when it has the changelog's lineage and is not
//     behind it (the same instance coming back; its outbox produces what
//     the changelog does not hold yet);
//   - the local store, when the changelog holds nothing (a store that
//     predates the changelog): the worker snapshots it into the changelog;
//   - otherwise the changelog (restore), when it holds the partition;
//   - otherwise nothing: a new partition, processed from offset 0 if the
//     input still starts there, or from the earliest offset with
//     Config.ReplayInput; without it the start fails rather than build a
//     state that silently misses deleted history.
func newWorker(pr *Processor, part int32) (*worker, error) {
	ctx := pr.runCtx
	cl, err := pr.newTxnClient(part)
	if err != nil {
		return nil, err
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("partition %d: initialising the transactional producer: %w", part, err)
	}
	w, err := takeOver(ctx, pr, part)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("partition %d: %w", part, err)
	}
	head, pending, err := firstOutboxSeq(pr.db, part)
	if err != nil {
		cl.Close()
		return nil, err
	}
	if !pending {
		head = w.meta.OutboxSeq
	}
	if pending {
		n, err := resolveStateRefs(pr.db, part, head, pr.cfg.Topics.State)
		if err != nil {
			cl.Close()
			return nil, fmt.Errorf("partition %d: resolving the outbox's state references: %w", part, err)
		}
		if n > 0 {
			w.log.Info("the outbox's changelog records take their states from the store", "records", n)
		}
	}
	w.relay = newRelay(pr, part, cl)
	w.relay.head.Store(head)
	return w, nil
}

func takeOver(ctx context.Context, pr *Processor, part int32) (*worker, error) {
	log := pr.log.With("partition", part)
	meta, err := loadMeta(pr.db, part, pr.flows)
	if err != nil {
		return nil, err
	}
	tail, logged, err := pr.changelogTail(ctx, part)
	if err != nil {
		return nil, err
	}
	snapshot := false
	// A standby copy: apply what the changelog holds past it; it is then
	// current if it ends where the changelog does.
	fromStandby := false
	if meta.Standby {
		fresh := time.Since(meta.Applied) <= standbyMaxAge
		if fresh {
			if err := pr.catchUp(ctx, part, &meta); err != nil {
				return nil, fmt.Errorf("catching the standby copy up: %w", err)
			}
		}
		fromStandby = fresh && logged && meta.Lineage == tail.Lineage && meta.NextOffset == tail.NextOffset
		if !fromStandby {
			meta.NextOffset = -1 // not the changelog's: restore
		}
	}
	source := FromLocal
	switch {
	case fromStandby:
		source = FromStandby
		log.Info("resuming partition from its standby copy", "offset", meta.NextOffset, "open_carts", meta.OpenCarts, "timers", meta.Timers)
		// A new owner starts a new lineage, as a restore does.
		meta.Lineage = newLineage()
	case meta.NextOffset >= 0 && logged && tail.Lineage == meta.Lineage && meta.NextOffset >= tail.NextOffset:
		log.Info("resuming partition from local state", "offset", meta.NextOffset, "open_carts", meta.OpenCarts, "timers", meta.Timers)
	case meta.NextOffset >= 0 && !logged:
		log.Info("local state but an empty changelog: resuming it and writing it to the changelog", "offset", meta.NextOffset)
		if meta.Lineage == 0 {
			meta.Lineage = newLineage()
		}
		snapshot = true
	case logged:
		source = FromChangelog
		if meta.NextOffset >= 0 {
			log.Info("local state is not the changelog's (another owner moved on): restoring from the changelog",
				"local_offset", meta.NextOffset, "changelog_offset", tail.NextOffset)
		}
		start := time.Now()
		pr.restoring.Add(1)
		meta, _, err = pr.restore(ctx, part, func(read, end int64) {
			log.Info("restoring partition from the changelog", "progress", fmt.Sprintf("%d%%", read*100/max(end, 1)))
		})
		pr.restoring.Add(-1)
		if err != nil {
			return nil, fmt.Errorf("restoring from the changelog: %w", err)
		}
		log.Info("restored partition from the changelog", "offset", meta.NextOffset, "open_carts", meta.OpenCarts,
			"timers", meta.Timers, "took", time.Since(start).Round(time.Millisecond))
	default: // neither a local copy nor a changelog: a new partition
		source = FromInput
		starts, err := ListStartOffsets(ctx, pr.admin, pr.cfg.Topics.Events, []int32{part})
		if err != nil {
			return nil, err
		}
		if starts[part] > 0 && !pr.cfg.ReplayInput {
			return nil, fmt.Errorf("no state in the changelog %s and the input starts at offset %d, not 0 (retention deleted records): "+
				"set CARTLIFT_REPLAY_INPUT=true to build the state from what the input still holds", pr.cfg.Topics.State, starts[part])
		}
		if starts[part] > 0 {
			log.Warn("no changelog: building the state by replaying the input from its earliest offset (CARTLIFT_REPLAY_INPUT); "+
				"history before it is lost", "earliest", starts[part])
		} else {
			log.Info("new partition: processing the input from offset 0")
		}
		meta = partitionMeta{NextOffset: starts[part], Runs: map[string]time.Time{}, Lineage: newLineage()}
		snapshot = true // the changelog gets its first metadata record
	}
	meta.Standby = false // the owner's store from now on
	pr.stats.takeovers[source].Add(1)
	w := &worker{
		pr: pr, part: part, meta: meta,
		log:   pr.log.With("partition", part),
		in:    make(chan fetched, 2),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		cache: make(map[string]cachedState), cacheBudget: pr.cfg.StateCacheBytes / int64(max(1, pr.cfg.Partitions)),
		dirty:      make(map[string]*projections.CustomerState),
		index:      newIndexChanges(),
		knownBuild: make(chan keyFilterBuild, 1),
	}
	w.next.Store(w.meta.NextOffset)
	w.end.Store(-1)
	w.openCarts.Store(meta.OpenCarts)
	w.timers.Store(meta.Timers)
	w.clock.Store(unixNanos(meta.Clock))
	w.outboxNext.Store(meta.OutboxSeq)
	// The decided metadata (and, for a store new to the changelog, every
	// state) commits now, so that adjustOffsets reads it.
	w.b = pr.db.NewBatch()
	defer func() { w.b.Close(); w.b = nil }()
	if snapshot {
		n, err := w.snapshotToChangelog()
		if err != nil {
			return nil, err
		}
		if n > 0 {
			log.Info("wrote the local state to the changelog", "customers", n)
		}
	}
	if err := storeMeta(w.b, part, w.meta); err != nil {
		return nil, err
	}
	if err := w.b.Commit(pebble.NoSync); err != nil {
		return nil, err
	}
	w.batchOutbox = nil
	w.outboxNext.Store(w.meta.OutboxSeq) // a migration added entries
	return w, nil
}

func (w *worker) start() {
	go w.relay.run()
	go w.run()
}

// stop asks the worker to finish its current batch and waits for it and
// its relay to exit.
func (w *worker) stop() {
	close(w.quit)
	<-w.done
	w.bg.Wait() // a key filter build reads the store
	w.relay.stop()
}

// keyFilterBuild is the outcome of a key filter build.
type keyFilterBuild struct {
	f   *keyFilter
	err error
}

// buildKeyFilter starts building a key filter of the store's state keys
// in the background, from a snapshot of what is committed now.
func (w *worker) buildKeyFilter() {
	snap := w.pr.db.NewSnapshot()
	w.building, w.knownSince = true, nil
	w.bg.Add(1)
	go func() {
		defer w.bg.Done()
		f, err := buildKeyFilter(snap, w.part, w.quit)
		w.knownBuild <- keyFilterBuild{f, err}
	}()
}

// useKeyFilter takes a finished build over, if one has arrived.
func (w *worker) useKeyFilter() {
	select {
	case r := <-w.knownBuild:
		w.building = false
		switch {
		case r.err != nil:
			w.log.Warn("building the filter of stored keys failed; new customers cost a read", "err", r.err)
		case r.f != nil:
			for _, k := range w.knownSince {
				r.f.add(k)
			}
			w.known = r.f
		}
		w.knownSince = nil
	default:
	}
}

// rememberKey records that the batch stores a state under key.
func (w *worker) rememberKey(key string) {
	if w.known != nil {
		w.known.add(key)
	}
	if w.building {
		w.knownSince = append(w.knownSince, key)
	}
}

func (w *worker) run() {
	defer close(w.done)
	w.buildKeyFilter()
	w.b = w.pr.db.NewBatch()
	defer func() { w.b.Close() }()
	tick := time.NewTicker(w.pr.cfg.TimerTick)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-w.quit:
			return
		case f := <-w.in:
			err = w.process(f)
			// While a backlog keeps fetches queued, they join the
			// batch, up to maxRecordsPerBatch: fewer, larger commits
			// write a customer's state once for several of its events.
			for err == nil && w.batchRecords < maxRecordsPerBatch && int64(w.b.Len()) < w.pr.cfg.MemTableBytes/16 {
				select {
				case f = <-w.in:
					err = w.process(f)
					continue
				default:
				}
				break
			}
			if err == nil {
				err = w.endBatch()
			}
		case <-tick.C:
			err = w.tick()
		}
		if err != nil {
			w.pr.fail(fmt.Errorf("partition %d: %w", w.part, err))
			return
		}
	}
}

// setEnd records a newer end offset of the partition.
func (w *worker) setEnd(end int64) {
	for {
		cur := w.end.Load()
		if end <= cur || w.end.CompareAndSwap(cur, end) {
			break
		}
	}
	w.caughtUp.Store(w.next.Load() >= w.end.Load())
}

// wallNow returns the wall clock, and whether the worker has caught up
// with the end of its partition (only then does the wall clock drive its
// timers).
func (w *worker) wallNow() (time.Time, bool) {
	return w.pr.cfg.Clock().UTC(), w.caughtUp.Load()
}

// tick moves a caught-up partition's clock to the wall clock.
func (w *worker) tick() error {
	now, live := w.wallNow()
	if !live {
		return nil
	}
	if err := projections.Advance(w.pr.flows, w, now, projections.Live); err != nil {
		return err
	}
	return w.commit()
}

// The worker is the projections.Partition its clock moves (see
// projections.Advance, which holds the effective-time rule).

// Clock returns the partition's effective time (see projections.Advance).
func (w *worker) Clock() time.Time { return w.meta.Clock }

// SetClock records the partition's effective time; it commits with the
// batch.
func (w *worker) SetClock(t time.Time) {
	if !t.Equal(w.meta.Clock) {
		w.meta.Clock = t
		w.changed = true
	}
}

// FireTimers fires the timers due by f.UpTo, committing a batch whenever
// a round reaches maxFiresPerBatch, so that a timer storm is spread over
// bounded batches.
func (w *worker) FireTimers(f projections.Firing) error {
	for {
		n, err := w.fireDue(f)
		if err != nil {
			return err
		}
		if n < maxFiresPerBatch {
			return nil
		}
		if err := w.commit(); err != nil {
			return err
		}
	}
}

// LastRun returns the scheduled flow's last run in this partition.
func (w *worker) LastRun(flow int) (time.Time, bool) {
	t, ok := w.meta.Runs[w.pr.flows.Flows[flow].Name]
	return t, ok
}

// SetLastRun records the scheduled flow's last run without a run.
func (w *worker) SetLastRun(flow int, t time.Time) {
	if w.meta.Runs == nil {
		w.meta.Runs = map[string]time.Time{}
	}
	w.meta.Runs[w.pr.flows.Flows[flow].Name] = t
	w.changed = true
	w.logNeeded = true
}

// Run runs a scheduled flow at run: it sweeps only the range of the
// modification index in the run's time frame and calls FireSchedule for
// each cart there; the new last run time goes into the same Pebble batch
// as the run's effects, so a run interrupted by a crash is repeated, and
// decides nothing twice (the decision id names the run).
func (w *worker) Run(flow int, run time.Time) error {
	flows := w.pr.flows
	fl := &flows.Flows[flow]
	from, to := fl.Schedule.Frame(run)
	lower, upper := modRange(w.part, from, to)
	if err := w.commit(); err != nil { // the sweep reads committed data
		return err
	}
	keys, err := w.committedKeys(lower, upper, math.MaxInt)
	if err != nil {
		return err
	}
	decided := 0
	for _, k := range keys {
		_, customer, cart, err := parseModKey(k)
		if err != nil {
			return err
		}
		st, err := w.state(customer)
		if err != nil {
			return err
		}
		if st == nil {
			continue
		}
		eff := w.folder.FireSchedule(st, customer, cart, fl, run, flows)
		if len(eff.Decisions) == 0 && len(eff.Shadow) == 0 && len(eff.Suppressed) == 0 && len(eff.Modified) == 0 && len(eff.Timers) == 0 {
			continue // nothing changed
		}
		decided += len(eff.Decisions)
		if err := w.apply(customer, eff); err != nil {
			return err
		}
	}
	w.SetLastRun(flow, run)
	w.log.Info("scheduled run", "flow", fl.Name, "run", run, "swept", len(keys), "decided", decided)
	return nil
}

// process folds one fetch into the batch; endBatch commits it.
func (w *worker) process(f fetched) error {
	if w.batchRecords == 0 {
		w.batchStart = time.Now()
	}
	w.batchEnd = max(w.batchEnd, f.end)
	consumed := 0
	if now, live := w.wallNow(); live {
		if err := projections.Advance(w.pr.flows, w, now, projections.Live); err != nil {
			return err
		}
	}
	for _, r := range f.records {
		if r.Offset < w.meta.NextOffset {
			continue // already in the store
		}
		if r.Attrs.IsControl() {
			// A transaction's commit or abort marker: nothing to process,
			// but the next offset moves past it.
			w.meta.NextOffset = r.Offset + 1
			w.changed = true
			continue
		}
		if err := w.processRecord(r); err != nil {
			return err
		}
		w.meta.NextOffset = r.Offset + 1
		consumed++
	}
	w.changed = w.changed || consumed > 0
	w.batchRecords += len(f.records)
	w.batchConsumed += consumed
	return nil
}

// endBatch commits the fetches folded since the last endBatch.
func (w *worker) endBatch() error {
	w.logNeeded = w.logNeeded || w.changed && w.meta.NextOffset != w.next.Load()
	if err := w.commit(); err != nil {
		return err
	}
	consumed := w.batchConsumed
	w.pr.stats.eventsConsumed.Add(int64(consumed))
	if h := w.pr.cfg.Hooks.BatchCommitted; h != nil && consumed > 0 {
		h(w.part, consumed, time.Since(w.batchStart))
	}
	w.setEnd(w.batchEnd)
	w.batchRecords, w.batchConsumed = 0, 0
	return nil
}

func (w *worker) processRecord(r *kgo.Record) error {
	ev, err := events.Decode(r.Value, w.pr.cfg.Clock())
	if err == nil && !ev.AcceptsKey(string(r.Key)) {
		err = &events.ValidationError{Reason: events.ReasonKeyMismatch, Field: "key",
			Msg: fmt.Sprintf("record key %q is not the event's customer key %q", truncate(string(r.Key), 64), ev.Key())}
	}
	if err != nil {
		var ve *events.ValidationError
		if !errors.As(err, &ve) {
			return err
		}
		if errors.Is(err, events.ErrUnknownType) {
			w.pr.stats.eventsSkipped.Add(1)
			if h := w.pr.cfg.Hooks.EventSkipped; h != nil {
				h(ve.Msg)
			}
			return nil
		}
		w.pr.stats.eventsRejected.Add(1)
		if h := w.pr.cfg.Hooks.EventRejected; h != nil {
			h(ve.Reason)
		}
		w.log.Warn("event rejected to the DLQ", "offset", r.Offset, "reason", ve.Reason, "field", ve.Field)
		return w.deadLetter(r, ve)
	}
	// The partition's clock moves to just before this event (an event
	// exactly at a due time counts as activity first), but never past the
	// wall clock: in event time while the worker lags, on the wall clock
	// once it has caught up (see projections.Advance).
	wall, live := w.wallNow()
	to, mode := ev.Time.Add(-1), projections.Catchup
	if live {
		mode = projections.Live
	}
	if to.After(wall) {
		to = wall
	}
	if err := projections.Advance(w.pr.flows, w, to, mode); err != nil {
		return err
	}
	key := string(r.Key) // ev.Key(), or a guest's key for a login handed over
	st, err := w.state(key)
	if err != nil {
		return err
	}
	// Where the event was read: the fold records it as the cause of the
	// steps the event makes due.
	// (The fold copies it and keeps no pointer: one Position per worker.)
	w.pos = events.Position{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	ev.Pos = &w.pos
	eff := w.folder.Apply(st, key, ev, w.pr.flows)
	if eff.Duplicate {
		w.pr.stats.eventsDuplicate.Add(1)
		if h := w.pr.cfg.Hooks.EventDuplicate; h != nil {
			h()
		}
		w.log.Debug("repeated event dropped", "offset", r.Offset, "source", ev.Source, "id", ev.ID)
	}
	if err := w.apply(key, eff); err != nil {
		return err
	}
	if ev.Time.After(w.meta.EventTime) {
		w.meta.EventTime = ev.Time
	}
	return nil
}

// unixNanos is t in Unix nanoseconds, 0 for the zero time.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (w *worker) deadLetter(r *kgo.Record, ve *events.ValidationError) error {
	e := outboxEntry{Topic: w.pr.cfg.Topics.DLQ, Key: r.Key, Value: r.Value}
	capDeadLetter(&e, r.Headers)
	e.Headers = append(e.Headers,
		[2]string{events.HeaderErrorReason, ve.Reason},
		[2]string{events.HeaderError, ve.Error()},
		[2]string{events.HeaderSourceTopic, r.Topic},
		[2]string{events.HeaderSourcePartition, strconv.Itoa(int(r.Partition))},
		[2]string{events.HeaderSourceOffset, strconv.FormatInt(r.Offset, 10)},
	)
	return w.enqueue(&e)
}

// state returns the customer's current state (nil for none), from the
// batch's changes, the cache or the store, in that order.
func (w *worker) state(key string) (*projections.CustomerState, error) {
	if st, ok := w.dirty[key]; ok {
		return st, nil
	}
	if c, ok := w.cache[key]; ok {
		return decodeSharedState(c.enc)
	}
	if w.building {
		w.useKeyFilter()
	}
	if w.known != nil && !w.known.mayContain(key) {
		return nil, nil // certainly not stored: a new customer
	}
	w.keyScratch = appendStateKey(w.keyScratch[:0], w.part, key)
	st, enc, err := loadStateBytesWith(w.pr.db, w.part, key, w.keyScratch)
	if st == nil || err != nil {
		return nil, err
	}
	// Committed data: it may go into the cache at once (commit evicts).
	w.uncache(key)
	w.addToCache(cachedState{key: key, enc: enc})
	return st, nil
}

// apply records the effects of one Apply or Fire in the batch.
func (w *worker) apply(key string, eff projections.Effects) error {
	if eff.Erased {
		// Before any of the erasure's effects, the outbox entries waiting
		// for the customer go; the erased outcome below, which tells
		// downstream to forget the customer, comes after the purge and
		// survives it.
		if err := w.purgeOutbox(key); err != nil {
			return err
		}
	}
	w.dirty[key] = eff.State
	w.changed = true
	for _, tc := range eff.Timers {
		w.index.moveTimer(key, tc.CartID, tc.Old, tc.New)
		if !tc.Old.IsZero() {
			w.keyScratch = appendTimerKey(w.keyScratch[:0], w.part, tc.Old, key, tc.CartID)
			w.win.remove(w.keyScratch)
			w.meta.Timers--
		}
		if !tc.New.IsZero() {
			w.keyScratch = appendTimerKey(w.keyScratch[:0], w.part, tc.New, key, tc.CartID)
			w.win.set(w.keyScratch)
			w.meta.Timers++
			if w.nextDueKnown && tc.New.Before(w.nextDue) {
				w.nextDue = tc.New
			}
			if tc.New.Before(w.scanFrom) {
				w.scanFrom = tc.New
			}
		}
	}
	for _, mc := range eff.Modified {
		w.index.moveMod(key, mc.CartID, mc.Old, mc.New)
	}
	w.meta.OpenCarts += int64(eff.OpenCartsDelta)
	for i := range eff.Decisions {
		d := &eff.Decisions[i]
		w.inputTopic(d.Cause)
		v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
		if err != nil {
			return err
		}
		if err := w.enqueue(&outboxEntry{Topic: w.pr.cfg.Topics.Decisions, Key: []byte(key), Value: v,
			Headers: [][2]string{{"ce_id", d.ID}, {"ce_type", events.TypeDecision}}}); err != nil {
			return err
		}
	}
	// Shadow flows' decisions go to their own topic, which nothing
	// actions: the same record as a decision, with shadow set.
	for i := range eff.Shadow {
		d := &eff.Shadow[i]
		w.inputTopic(d.Cause)
		v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
		if err != nil {
			return err
		}
		if err := w.enqueue(&outboxEntry{Topic: w.pr.cfg.Topics.ShadowDecisions, Key: []byte(key), Value: v,
			Headers: [][2]string{{"ce_id", d.ID}, {"ce_type", events.TypeDecision}}}); err != nil {
			return err
		}
	}
	for i := range eff.Outcomes {
		o := &eff.Outcomes[i]
		v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, o.CartID, o)
		if err != nil {
			return err
		}
		if err := w.enqueue(&outboxEntry{Topic: w.pr.cfg.Topics.Outcomes, Key: []byte(key), Value: v,
			Headers: [][2]string{{"ce_id", o.ID}, {"ce_type", events.TypeOutcome}}}); err != nil {
			return err
		}
	}
	for i := range eff.Emits {
		e := &eff.Emits[i]
		v, err := events.Encode(e.ID, events.Source, e.Type, e.Time, "", e.Data)
		if err != nil {
			return err
		}
		if err := w.enqueue(&outboxEntry{Topic: w.pr.cfg.Topics.Events, Key: []byte(e.Key), Value: v}); err != nil {
			return err
		}
	}
	// Suppressed and deferred steps leave a record on their own topic, so
	// that what consumers of decisions see is unchanged. The fold may
	// report a deferral again (same id) when the cart is rescheduled
	// inside the window; consumers de-duplicate on the id.
	for i := range eff.Suppressed {
		sp := &eff.Suppressed[i]
		w.inputTopic(sp.Cause)
		if err := w.enqueueRecord(key, sp.ID, events.TypeSuppressed, sp.At, sp.CartID, sp); err != nil {
			return err
		}
	}
	for i := range eff.Deferred {
		df := &eff.Deferred[i]
		w.inputTopic(df.Cause)
		if err := w.enqueueRecord(key, df.ID, events.TypeDeferred, df.At, df.CartID, df); err != nil {
			return err
		}
	}
	w.pr.stats.suppressed.Add(int64(len(eff.Suppressed)))
	w.pr.stats.deferred.Add(int64(len(eff.Deferred)))
	if h := w.pr.cfg.Hooks.DecisionSuppressed; h != nil {
		for _, sp := range eff.Suppressed {
			h(sp.Reason)
		}
	}
	w.pr.stats.decisionsMade.Add(int64(len(eff.Decisions)))
	w.pr.stats.outcomesMade.Add(int64(len(eff.Outcomes)))
	return nil
}

// inputTopic names the input topic in a cause the fold made (the fold
// records partitions and offsets only); a cause read from a file keeps
// none.
func (w *worker) inputTopic(c *events.Cause) {
	if c != nil && c.Topic == "" && c.Partition >= 0 {
		c.Topic = w.pr.cfg.Topics.Events
	}
}

// batchOutboxEntry is one outbox entry of the batch: its sequence number
// and record key (shared with the entry, not copied).
type batchOutboxEntry struct {
	seq        uint64
	key        []byte
	deadLetter bool
}

// resetBatchOutbox forgets the entries of a committed batch.
func (w *worker) resetBatchOutbox() {
	clear(w.batchOutbox)
	w.batchOutbox = w.batchOutbox[:0]
}

// enqueueRecord puts one record of the suppressions topic into the outbox.
func (w *worker) enqueueRecord(key, id, typ string, t time.Time, subject string, data any) error {
	v, err := events.Encode(id, events.Source, typ, t, subject, data)
	if err != nil {
		return err
	}
	return w.enqueue(&outboxEntry{Topic: w.pr.cfg.Topics.Suppressions, Key: []byte(key), Value: v,
		Headers: [][2]string{{"ce_id", id}, {"ce_type", typ}}})
}

// purgeOutbox drops the entries for a customer that wait in the outbox,
// except dead letters: the right to be forgotten reaches output not yet
// handed to the producer.
func (w *worker) purgeOutbox(key string) error {
	// The batch's own entries (the batch is not indexed: the worker
	// remembers whose they are), then the committed ones.
	for _, e := range w.batchOutbox {
		if string(e.key) == key && !e.deadLetter {
			if err := w.b.Delete(outboxKey(w.part, e.seq), nil); err != nil {
				return err
			}
		}
	}
	lower, upper := partRange(w.part, kindOutbox)
	if w.relay != nil {
		lower = outboxKey(w.part, w.relay.head.Load()) // the rest is relayed
	}
	it, err := w.pr.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	var drop [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		topic, k, ok := outboxEntryAddress(it.Value())
		if ok && string(k) == key && string(topic) != w.pr.cfg.Topics.DLQ {
			drop = append(drop, append([]byte(nil), it.Key()...))
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, k := range drop {
		if err := w.b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

func (w *worker) enqueue(e *outboxEntry) error {
	w.logNeeded = w.logNeeded || e.Topic != w.pr.cfg.Topics.State
	w.keyBuf = e.appendTo(w.keyBuf[:0])
	err := w.b.Set(outboxKey(w.part, w.meta.OutboxSeq), w.keyBuf, nil)
	w.batchOutbox = append(w.batchOutbox, batchOutboxEntry{seq: w.meta.OutboxSeq, key: e.Key, deadLetter: e.Topic == w.pr.cfg.Topics.DLQ})
	w.meta.OutboxSeq++
	w.changed = true
	return err
}

// fireDue fires the timers of the partition due by f.UpTo, in due order,
// at most maxFiresPerBatch of them, each at f.At(due) (in Live mode they
// are measured for lateness). It returns how many timers fired.
func (w *worker) fireDue(f projections.Firing) (int, error) {
	now := f.UpTo
	if w.nextDueKnown && w.nextDue.After(now) {
		return 0, nil
	}
	fired := 0
	for fired < maxFiresPerBatch {
		if w.win.dry() {
			if err := w.fillTimerWindow(); err != nil {
				return fired, err
			}
		}
		n := 0
		for n < len(w.win.keys) && fired+n < maxFiresPerBatch && !decodeDue(w.win.keys[n][5:]).After(now) {
			n++ // after the 5-byte partition prefix
		}
		if n == 0 {
			break
		}
		ready := slices.Clone(w.win.keys[:n]) // firing edits the window
		for _, k := range ready {
			due, customer, cart, err := parseTimerKey(k)
			if err != nil {
				return fired, err
			}
			st, err := w.state(customer)
			if err != nil {
				return fired, err
			}
			eff := w.folder.Fire(st, customer, cart, f.At(due), w.pr.flows)
			if !movesTimer(eff.Timers, cart, due) {
				// A stale entry (its cart moved on or is gone): drop it.
				w.win.remove(k)
				w.index.dropStale(k)
				w.meta.Timers--
			}
			if err := w.apply(customer, eff); err != nil {
				return fired, err
			}
			fired++
			if due.After(w.scanFrom) {
				// Every timer before this one has fired; new timers
				// set below it lower scanFrom again (apply).
				w.scanFrom = due
			}
			if f.Mode == projections.Live {
				if h := w.pr.cfg.Hooks.TimerFired; h != nil {
					h(now.Sub(due))
				}
			}
		}
	}
	w.pr.stats.timersFired.Add(int64(fired))
	switch {
	case fired >= maxFiresPerBatch:
		w.nextDueKnown = false // more may be due: the next call looks again
	case len(w.win.keys) > 0:
		w.nextDue, w.nextDueKnown = decodeDue(w.win.keys[0][5:]), true
	default: // the window covers the whole index, and it is empty
		w.nextDue, w.nextDueKnown = time.Unix(0, math.MaxInt64), true
	}
	return fired, nil
}

// fillTimerWindow reads the head of the partition's timer index, from
// scanFrom on, into the timer window: the committed index with the
// batch's changes to it (the batch goes on; a backlog's timers do not cut
// it into small ones).
func (w *worker) fillTimerWindow() error {
	lower, upper := w.timerLower(), partPrefix(w.part, kindTimer+1)
	keys, err := w.committedKeysWith(lower, upper, timerWindowSize+1)
	if err != nil {
		return err
	}
	w.win.fill(keys)
	return nil
}

// committedKeysWith returns the first n keys in [lower, upper) of the
// committed timer index with the batch's changes to it applied, in order.
func (w *worker) committedKeysWith(lower, upper []byte, n int) ([][]byte, error) {
	it, err := w.pr.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for ok := it.First(); ok && len(keys) < n; ok = it.Next() {
		if w.index.deletesTimer(it.Key()) {
			continue
		}
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	// The batch's new keys up to the last committed key read (or to
	// upper, when the committed ones ran out), then the first n in order.
	end := upper
	if len(keys) == n {
		end = keys[n-1]
	}
	keys = w.index.appendNewTimers(keys, w.part, lower, end, n)
	slices.SortFunc(keys, bytes.Compare)
	keys = slices.CompactFunc(keys, bytes.Equal) // a set over a committed key
	return keys[:min(n, len(keys))], nil
}

// indexChanges are a batch's net changes to the timer and modification
// indexes, per cart: its due time and modification time as committed
// (before the batch's first change) and as now. The keys are written when
// the batch commits, so a cart's timer that moves several times in one
// batch costs one delete and one set, and a move costs no key until then.
//
// The fold reports each change with the value it replaces, which is what
// the index holds (committed, or changed earlier in the batch). stale
// holds the timer keys found to belong to no cart's timer, to delete.
type indexChanges struct {
	at    map[cartRef]int // index in moves
	moves []indexMove
	stale map[string]struct{}
	// wakes finds the moves whose new timer falls in a range without
	// looking at every move: a (due, move) pair for each timer change,
	// sorted up to sorted, the later ones appended since, each pair once.
	// A pair is current while its move's newWake is still its due; the
	// others are skipped, and dropped at a sort.
	wakes, wakesSpare []wakeRef
	sorted            int
}

// wakeRef says that moves[move] set its timer at due (Unix nanoseconds).
type wakeRef struct {
	due  int64
	move int
}

// cartRef names a customer's cart.
type cartRef struct{ customer, cart string }

// indexMove is one cart's net change; wake and mod tell which of its two
// index entries the batch changed.
type indexMove struct {
	ref              cartRef
	wake, mod        bool
	oldWake, newWake time.Time
	oldMod, newMod   time.Time
}

func newIndexChanges() indexChanges {
	return indexChanges{at: map[cartRef]int{}, stale: map[string]struct{}{}}
}

// move returns the cart's move and its index in moves.
func (c *indexChanges) move(customer, cart string) (*indexMove, int) {
	ref := cartRef{customer, cart}
	i, ok := c.at[ref]
	if !ok {
		i = len(c.moves)
		c.at[ref] = i
		c.moves = append(c.moves, indexMove{ref: ref})
	}
	return &c.moves[i], i
}

// moveTimer records that the cart's timer moved from old to new (zero:
// none).
func (c *indexChanges) moveTimer(customer, cart string, old, new time.Time) {
	m, i := c.move(customer, cart)
	if !m.wake {
		m.wake, m.oldWake = true, old
	}
	m.newWake = new
	if !new.IsZero() {
		c.wakes = append(c.wakes, wakeRef{new.UnixNano(), i})
	}
}

// current reports whether the pair still names its move's new timer.
func (c *indexChanges) current(r wakeRef) bool {
	m := &c.moves[r.move]
	return m.wake && !m.newWake.IsZero() && !m.newWake.Equal(m.oldWake) && m.newWake.UnixNano() == r.due
}

// sortWakes sorts the pairs appended since the last call and merges them
// into the sorted ones. The pairs no longer current are dropped when they
// could be most of them.
func (c *indexChanges) sortWakes() {
	if c.sorted == len(c.wakes) {
		return
	}
	// By move as well as due, so that a move's repeated pairs meet.
	order := func(a, b wakeRef) int { return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.move, b.move)) }
	head, tail := c.wakes[:c.sorted], c.wakes[c.sorted:]
	slices.SortFunc(tail, order)
	prune := len(c.wakes) > 2*len(c.moves)
	merged := c.wakesSpare[:0]
	for len(head) > 0 || len(tail) > 0 {
		var r wakeRef
		if len(tail) == 0 || len(head) > 0 && order(head[0], tail[0]) <= 0 {
			r, head = head[0], head[1:]
		} else {
			r, tail = tail[0], tail[1:]
		}
		if (!prune || c.current(r)) && (len(merged) == 0 || merged[len(merged)-1] != r) {
			merged = append(merged, r)
		}
	}
	c.wakes, c.wakesSpare = merged, c.wakes[:0]
	c.sorted = len(c.wakes)
}

// moveMod records that the cart's modification index entry moved from old
// to new (zero: none).
func (c *indexChanges) moveMod(customer, cart string, old, new time.Time) {
	m, _ := c.move(customer, cart)
	if !m.mod {
		m.mod, m.oldMod = true, old
	}
	m.newMod = new
}

// dropStale records that the committed timer key k belongs to no cart's
// timer.
func (c *indexChanges) dropStale(k []byte) { c.stale[string(k)] = struct{}{} }

// deletesTimer reports whether the batch deletes the committed timer key k.
func (c *indexChanges) deletesTimer(k []byte) bool {
	if _, ok := c.stale[string(k)]; ok {
		return true
	}
	due, customer, cart, ok := timerKeyParts(k)
	if !ok {
		return false
	}
	i, ok := c.at[cartRef{customer, cart}]
	if !ok {
		return false
	}
	m := &c.moves[i]
	return m.wake && m.oldWake.Equal(due) && !m.newWake.Equal(due)
}

// appendNewTimers appends the first n timer keys in [lower, end) the
// batch sets (more when several share the n-th's due time), unordered.
// It builds no key outside that: a window refill would otherwise build
// the key of every move of the batch, and a backlog's batch has
// thousands.
func (c *indexChanges) appendNewTimers(keys [][]byte, part int32, lower, end []byte, n int) [][]byte {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if d, ok := keyDue(lower); ok {
		lo = d
	}
	if d, ok := keyDue(end); ok {
		hi = d
	}
	// Keys order by due time first, after the partition prefix.
	c.sortWakes()
	from, _ := slices.BinarySearchFunc(c.wakes, lo, func(r wakeRef, due int64) int { return cmp.Compare(r.due, due) })
	found, last := 0, int64(0)
	for _, r := range c.wakes[from:] {
		if r.due > hi || found >= n && r.due > last {
			break
		}
		if !c.current(r) {
			continue
		}
		m := &c.moves[r.move]
		k := appendTimerKey(nil, part, m.newWake, m.ref.customer, m.ref.cart)
		if bytes.Compare(k, lower) >= 0 && bytes.Compare(k, end) < 0 {
			keys = append(keys, k)
			found, last = found+1, r.due
		}
	}
	return keys
}

// writeTo writes the changes into the batch (stale keys first: a cart's
// timer may have come back to a stale key's instant), and forgets them;
// scratch is space for the keys.
func (c *indexChanges) writeTo(b *pebble.Batch, part int32, scratch *[]byte) error {
	for k := range c.stale {
		if err := b.Delete(unsafe.Slice(unsafe.StringData(k), len(k)), nil); err != nil {
			return err
		}
	}
	// write replaces one index entry of a cart: old's key by new's.
	write := func(changed bool, old, new time.Time, key func([]byte, int32, time.Time, string, string) []byte, ref cartRef) error {
		if !changed || old.Equal(new) {
			return nil
		}
		if !old.IsZero() {
			*scratch = key((*scratch)[:0], part, old, ref.customer, ref.cart)
			if err := b.Delete(*scratch, nil); err != nil {
				return err
			}
		}
		if !new.IsZero() {
			*scratch = key((*scratch)[:0], part, new, ref.customer, ref.cart)
			return b.Set(*scratch, nil, nil)
		}
		return nil
	}
	for i := range c.moves {
		m := &c.moves[i]
		if err := write(m.wake, m.oldWake, m.newWake, appendTimerKey, m.ref); err != nil {
			return err
		}
		if err := write(m.mod, m.oldMod, m.newMod, appendModKey, m.ref); err != nil {
			return err
		}
	}
	clear(c.at)
	clear(c.moves)
	c.moves = c.moves[:0]
	clear(c.stale)
	c.wakes, c.sorted = c.wakes[:0], 0
	return nil
}

// timerLower is the lower bound for timer scans: scanFrom, or the start of
// the partition's timer range.
func (w *worker) timerLower() []byte {
	if w.scanFrom.IsZero() {
		lower, _ := partRange(w.part, kindTimer)
		return lower
	}
	return encodeDue(partPrefix(w.part, kindTimer), w.scanFrom)
}

func movesTimer(tcs []projections.TimerChange, cart string, due time.Time) bool {
	for _, tc := range tcs {
		if tc.CartID == cart && tc.Old.Equal(due) {
			return true
		}
	}
	return false
}

// committedKeys returns the first n committed keys in [lower, upper),
// copied.
func (w *worker) committedKeys(lower, upper []byte, n int) ([][]byte, error) {
	it, err := w.pr.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for ok := it.First(); ok && len(keys) < n; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return keys, nil
}

// cachedState is a committed state in the worker's cache, encoded. enc is
// never modified: the states decoded from it share its memory.
type cachedState struct {
	key string
	enc []byte
}

func (c cachedState) size() int64 { return int64(len(c.key) + len(c.enc) + cacheEntryOverhead) }

func (w *worker) addToCache(c cachedState) {
	w.cache[c.key] = c
	w.cacheBytes += c.size()
}

// uncache drops key's cached state.
func (w *worker) uncache(key string) {
	if c, ok := w.cache[key]; ok {
		w.cacheBytes -= c.size()
		delete(w.cache, key)
		w.cacheDeletes++
	}
}

// evictCache evicts arbitrary entries (map order) down to the budget: a
// cache of the active customers, without the bookkeeping of an LRU.
func (w *worker) evictCache() {
	for key, c := range w.cache {
		if w.cacheBytes <= w.cacheBudget {
			break
		}
		delete(w.cache, key)
		w.cacheBytes -= c.size()
		w.cacheDeletes++
	}
}

// compactCache copies the cache into a new map once deletions have left
// the old one mostly empty room (see cacheDeletes).
func (w *worker) compactCache() {
	if w.cacheDeletes < 4*len(w.cache)+1024 {
		return
	}
	m := make(map[string]cachedState, len(w.cache))
	for k, c := range w.cache {
		m[k] = c
	}
	w.cache, w.cacheDeletes = m, 0
}

// commit writes the batch's state changes and the partition's metadata in
// one atomic Pebble batch, then lets the relay and the group know.
func (w *worker) commit() error {
	if !w.changed {
		return nil
	}
	// Each changed customer's state is encoded once, for the store and
	// for the changelog (a tombstone for a deleted one); the changelog's
	// metadata record ends the batch.
	logging := w.logNeeded || len(w.dirty) > 0
	// In key order, so that the changelog records of a batch come in an
	// order that does not depend on the map's.
	w.sorted = w.sorted[:0]
	for key := range w.dirty {
		w.sorted = append(w.sorted, key)
	}
	slices.Sort(w.sorted)
	// The changelog records refer to the states the batch writes, their
	// values handed to the relay in memory, unless the relay holds too
	// many already.
	byRef := w.relay != nil && w.relay.takesRefs()
	for _, key := range w.sorted {
		st := w.dirty[key]
		w.keyScratch = appendStateKey(w.keyScratch[:0], w.part, key)
		k := w.keyScratch
		var v []byte
		if st == nil {
			if err := w.b.Delete(k, nil); err != nil {
				return err
			}
			w.uncache(key)
		} else {
			w.stateBuf = appendStateFormat(w.stateBuf[:0], st, w.pr.cfg.StateFormat)
			if err := w.b.Set(k, w.stateBuf, nil); err != nil {
				return err
			}
			v = bytes.Clone(w.stateBuf)
			w.toCache = append(w.toCache, cachedState{key: key, enc: v})
			w.rememberKey(key)
		}
		e := outboxEntry{Topic: w.pr.cfg.Topics.State, Key: []byte(key), Value: v}
		if byRef {
			w.refs = append(w.refs, stateRef{seq: w.meta.OutboxSeq, value: v})
			e.Topic, e.Value = stateRefTopic, nil
		}
		if err := w.enqueue(&e); err != nil {
			return err
		}
	}
	if err := w.index.writeTo(w.b, w.part, &w.keyScratch); err != nil {
		return err
	}
	if logging {
		if err := w.enqueueChangelogMeta(); err != nil {
			return err
		}
		w.logNeeded = false
	}
	if err := storeMeta(w.b, w.part, w.meta); err != nil {
		return err
	}
	opts := pebble.NoSync
	if w.pr.cfg.SyncWrites {
		opts = pebble.Sync
	}
	// The relay may read the batch as soon as it commits.
	if len(w.refs) > 0 {
		w.relay.addRefs(w.refs)
		clear(w.refs)
		w.refs = w.refs[:0]
	}
	if err := w.b.Commit(opts); err != nil {
		return err
	}
	w.resetBatch()
	for _, c := range w.toCache {
		w.uncache(c.key)
		w.addToCache(c)
	}
	w.toCache = w.toCache[:0]
	w.evictCache()
	w.compactCache()
	clear(w.dirty)
	if w.known != nil && w.known.full() && !w.building {
		w.buildKeyFilter() // a larger one
	}
	w.resetBatchOutbox()
	w.changed = false
	w.next.Store(w.meta.NextOffset)
	w.openCarts.Store(w.meta.OpenCarts)
	w.timers.Store(w.meta.Timers)
	w.clock.Store(unixNanos(w.meta.Clock))
	w.outboxNext.Store(w.meta.OutboxSeq)
	w.caughtUp.Store(w.meta.NextOffset >= w.end.Load() && w.end.Load() >= 0)
	w.relay.notify()
	w.markCommit()
	return nil
}

// resetBatch empties the committed batch for the next one, keeping its
// buffer while a backlog fills it: Pebble's Reset keeps one only up to
// 1 MB, and a backlog's batches are larger, so each would allocate (and
// grow by doubling) a new one. A batch of an eighth of a memtable or more may have been committed
// as a large batch, whose buffer Pebble goes on reading from its flush
// queue: it is left to Pebble, and the next one starts at its size.
func (w *worker) resetBatch() {
	buf := w.b.Repr()
	if int64(len(buf)) >= w.pr.cfg.MemTableBytes/8 {
		w.b.Close()
		w.b = w.pr.db.NewBatchWithSize(len(buf))
		return
	}
	w.b.Reset()
	// Reset let go of a large buffer: take it back while the batches fill
	// a quarter of it (a backlog), not once they are small (caught up).
	if cap(buf) > pebbleBatchMaxRetained && len(buf) >= cap(buf)/4 {
		buf = buf[:batchHeaderLen]
		clear(buf)
		if err := w.b.SetRepr(buf); err != nil {
			panic(err) // a header of zeros is a valid empty batch
		}
	}
}

// Pebble's batch format: the size of a batch's header (sequence number
// and count), and the largest buffer its Reset keeps.
const (
	batchHeaderLen         = 12
	pebbleBatchMaxRetained = 1 << 20
)

// markCommit marks the partition's next offset for the group's periodic
// commit. The group offset is for monitoring only: the store's offset is
// the one the processor resumes from.
func (w *worker) markCommit() {
	w.groupSynced.Store(true)
	w.pr.consumer.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{
		w.pr.cfg.Topics.Events: {w.part: {Epoch: -1, Offset: w.meta.NextOffset}},
	})
}
