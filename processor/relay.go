package processor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// relayBatch bounds how many outbox entries one produce round carries.
const relayBatch = 2_000

// relay produces a partition's outbox to Kafka in transactions (whole
// worker batches, see drainOnce) and deletes the entries once the
// transaction committed. A crash between the commit and the delete
// re-produces the same entries, byte for byte, on restart; their
// deterministic ids let consumers drop the
// copies. The relay owns the head of the outbox; the worker appends at the
// tail.
type relay struct {
	pr *Processor
	// cl is the partition's transactional producer (newTxnClient).
	cl     *kgo.Client
	part   int32
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	// head is the sequence number of the oldest entry not yet committed to
	// Kafka (the outbox's next sequence number when it is empty).
	head atomic.Uint64

	// refs holds the values of the state references (stateRefTopic) the
	// worker committed and the relay has not produced yet, in sequence
	// order; refsBytes is the size of their values. The worker adds a
	// batch's before it commits the batch, so that the relay finds the
	// value of every reference it reads, exactly as of its batch.
	refsMu    sync.Mutex
	refs      []stateRef
	refsBytes int64
	// maxHeld bounds refsBytes (maxHeldRefBytes; tests lower it).
	maxHeld int64
}

// stateRef is the value of the state an outbox entry at seq refers to:
// the encoded state, shared with the worker's cache and never modified;
// nil for a deleted customer (a tombstone).
type stateRef struct {
	seq   uint64
	value []byte
}

// addRefs hands the relay the values of a batch's state references.
func (r *relay) addRefs(refs []stateRef) {
	r.refsMu.Lock()
	defer r.refsMu.Unlock()
	for _, ref := range refs {
		r.refs = append(r.refs, ref)
		r.refsBytes += int64(len(ref.value))
	}
}

// takesRefs reports whether the relay takes more reference values: it
// holds fewer than maxHeld bytes of them.
func (r *relay) takesRefs() bool {
	r.refsMu.Lock()
	defer r.refsMu.Unlock()
	return r.refsBytes < r.maxHeld
}

// ref returns the value of the state reference at seq.
func (r *relay) ref(seq uint64) (stateRef, bool) {
	r.refsMu.Lock()
	defer r.refsMu.Unlock()
	i := sort.Search(len(r.refs), func(i int) bool { return r.refs[i].seq >= seq })
	if i == len(r.refs) || r.refs[i].seq != seq {
		return stateRef{}, false
	}
	return r.refs[i], true
}

// dropRefs forgets the reference values below seq: produced, or purged
// from the outbox by an erasure.
func (r *relay) dropRefs(seq uint64) {
	r.refsMu.Lock()
	defer r.refsMu.Unlock()
	n := 0
	for n < len(r.refs) && r.refs[n].seq < seq {
		r.refsBytes -= int64(len(r.refs[n].value))
		r.refs[n] = stateRef{}
		n++
	}
	r.refs = r.refs[n:]
}

func newRelay(pr *Processor, part int32, cl *kgo.Client) *relay {
	ctx, cancel := context.WithCancel(context.Background())
	return &relay{pr: pr, part: part, cl: cl, wake: make(chan struct{}, 1), quit: make(chan struct{}),
		done: make(chan struct{}), ctx: ctx, cancel: cancel, maxHeld: maxHeldRefBytes}
}

// notify tells the relay that new entries were committed. It never blocks.
func (r *relay) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// stop drains what it can within the drain timeout, then stops the relay.
func (r *relay) stop() {
	close(r.quit)
	t := time.AfterFunc(r.pr.cfg.DrainTimeout, r.cancel)
	<-r.done
	t.Stop()
	r.cancel()
	r.cl.Close()
}

func (r *relay) run() {
	defer close(r.done)
	backoff := 100 * time.Millisecond
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n, err := r.drainOnce()
		if errors.Is(err, errRetryNow) {
			continue
		}
		if errors.Is(err, errUnknownRef) {
			r.pr.log.Error("outbox relay: stopping the processor; a restart resolves the reference from the store", "partition", r.part, "err", err)
			r.pr.fail(fmt.Errorf("partition %d: %w", r.part, err))
			return
		}
		if errors.Is(err, ErrFenced) {
			r.pr.log.Error("outbox relay: fenced; another instance owns the partition", "partition", r.part, "err", err)
			r.pr.fail(fmt.Errorf("partition %d: %w", r.part, err))
			return
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.pr.log.Warn("outbox relay: produce failed, retrying", "partition", r.part, "err", err, "backoff", backoff)
			jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
			select {
			case <-time.After(backoff + jitter):
			case <-r.ctx.Done():
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if n >= relayBatch {
			continue
		}
		select {
		case <-r.quit:
			// Final drain: whatever the worker committed last.
			for {
				n, err := r.drainOnce()
				if errors.Is(err, errRetryNow) {
					continue
				}
				if err != nil || n < relayBatch {
					return
				}
			}
		default:
		}
		select {
		case <-r.wake:
		case <-tick.C:
		case <-r.quit:
		}
	}
}

// drainOnce produces the outbox's head in one Kafka transaction: whole
// worker batches (each ends with its changelog metadata record), at least
// one and about relayBatch entries. When the transaction commits, the
// entries are deleted. When a record fails, the transaction aborts, so
// nothing of it reaches read_committed consumers, and each failed entry is
// handled on its own: one the brokers refuse for good (too large,
// invalid) is replaced by its reduced dead letter (see reduced) or, if it
// is one already, dropped with a metric and a log line; a transient
// failure leaves the entries for the next round. So one bad record holds
// back its neighbours for at most two rounds. It returns how many entries
// it committed and the first transient error.
func (r *relay) drainOnce() (int, error) {
	// From the head on: below it lie the range tombstones of the entries
	// already committed, which an iterator would have to step over.
	_, upper := partRange(r.part, kindOutbox)
	it, err := r.pr.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(r.part, r.head.Load()), UpperBound: upper})
	if err != nil {
		return 0, err
	}
	var recs []*kgo.Record
	var entries []outboxEntry
	var keys [][]byte
	boundary := 0 // entries up to here are whole batches
	for ok := it.First(); ok; ok = it.Next() {
		if len(recs) >= relayBatch && (boundary == len(recs) || boundary == 0) {
			break
		}
		e, err := decodeOutboxEntry(append([]byte(nil), it.Value()...))
		if err != nil {
			it.Close()
			return 0, err
		}
		if e.Topic == stateRefTopic {
			seq := binary.BigEndian.Uint64(it.Key()[len(it.Key())-8:])
			ref, ok := r.ref(seq)
			if !ok {
				// A takeover resolves the references it finds
				// (resolveStateRefs); the worker hands the relay every
				// later one before committing it.
				it.Close()
				return 0, fmt.Errorf("outbox entry %d: %w", seq, errUnknownRef)
			}
			e.Topic, e.Value = r.pr.cfg.Topics.State, ref.value
		}
		keys = append(keys, append([]byte(nil), it.Key()...))
		rec := &kgo.Record{Topic: e.Topic, Key: e.Key, Value: e.Value}
		if e.Topic == r.pr.cfg.Topics.State {
			rec.Partition = r.part
			if len(rec.Value) == 0 {
				rec.Value = nil // a deleted customer: a tombstone, for compaction
			}
		}
		for _, h := range e.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
		}
		recs = append(recs, rec)
		entries = append(entries, e)
		if e.Topic == r.pr.cfg.Topics.State && string(e.Key) == changelogMetaKey {
			boundary = len(recs)
		}
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if boundary > 0 {
		// Entries after the last boundary cannot be: the worker commits
		// a batch with its metadata record. Keep the cut anyway.
		recs, entries, keys = recs[:boundary], entries[:boundary], keys[:boundary]
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := r.cl.BeginTransaction(); err != nil {
		return 0, r.txnErr(err)
	}
	index := make(map[*kgo.Record]int, len(recs))
	for i, rec := range recs {
		index[rec] = i
	}
	results := r.cl.ProduceSync(r.ctx, recs...)
	var failed []kgo.ProduceResult
	for _, res := range results {
		if res.Err != nil {
			failed = append(failed, res)
		}
	}
	if len(failed) == 0 {
		if err := r.cl.EndTransaction(r.ctx, kgo.TryCommit); err != nil {
			_ = r.cl.EndTransaction(r.ctx, kgo.TryAbort)
			return 0, r.txnErr(err)
		}
		// The end bound is exclusive: the last key with a 0 byte appended
		// is the smallest key after it.
		if err := r.pr.db.DeleteRange(keys[0], append(keys[len(keys)-1], 0), pebble.NoSync); err != nil {
			return 0, err
		}
		r.head.Store(binary.BigEndian.Uint64(keys[len(keys)-1][len(keys[len(keys)-1])-8:]) + 1)
		r.dropRefs(r.head.Load())
		r.count(recs)
		return len(recs), nil
	}
	if err := r.cl.EndTransaction(r.ctx, kgo.TryAbort); err != nil {
		return 0, r.txnErr(err)
	}
	b := r.pr.db.NewBatch()
	defer b.Close()
	var transient error
	for _, res := range failed {
		i := index[res.Record]
		switch {
		case permanentProduceError(res.Err) && !isReduced(&entries[i]):
			red := reduced(&entries[i], r.pr.cfg.Topics.DLQ, r.pr.messageLimit, res.Err)
			r.pr.stats.outputReduced.Add(1)
			if h := r.pr.cfg.Hooks.OutputReduced; h != nil {
				h()
			}
			r.pr.log.Warn("outbox relay: the brokers refused a record; sending a reduced dead letter instead",
				"partition", r.part, "topic", entries[i].Topic, "bytes", len(entries[i].Value), "err", res.Err)
			if err := b.Set(keys[i], red.appendTo(nil), nil); err != nil {
				return 0, err
			}
		case permanentProduceError(res.Err):
			r.pr.stats.outputDropped.Add(1)
			if h := r.pr.cfg.Hooks.OutputDropped; h != nil {
				h()
			}
			r.pr.log.Error("outbox relay: the brokers refused a reduced dead letter too; dropped",
				"partition", r.part, "topic", entries[i].Topic, "bytes", len(entries[i].Value), "err", res.Err)
			if err := b.Delete(keys[i], nil); err != nil {
				return 0, err
			}
		case transient == nil:
			transient = r.txnErr(res.Err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, err
	}
	if transient == nil {
		transient = errRetryNow
	}
	return 0, transient
}

// errUnknownRef: an outbox entry refers to a state whose value the relay
// was not handed. Retrying cannot help; a restart resolves the reference
// from the store (resolveStateRefs).
var errUnknownRef = errors.New("refers to a state the relay was not handed")

// errRetryNow: a round changed failed entries and should be retried at once.
var errRetryNow = errors.New("retry the round with the failed entries replaced")

// txnErr marks the errors that mean another instance took the partition's
// transactional id over (it fenced this one).
func (r *relay) txnErr(err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// count updates the stats for committed records.
func (r *relay) count(recs []*kgo.Record) {
	for _, rec := range recs {
		switch rec.Topic {
		case r.pr.cfg.Topics.Decisions:
			r.pr.stats.decisionsEmitted.Add(1)
		case r.pr.cfg.Topics.Outcomes:
			r.pr.stats.outcomesEmitted.Add(1)
		case r.pr.cfg.Topics.DLQ:
			r.pr.stats.deadLettered.Add(1)
		}
	}
}

// isReduced reports whether e is a reduced dead letter already.
func isReduced(e *outboxEntry) bool {
	return slices.ContainsFunc(e.Headers, func(h [2]string) bool { return h[0] == HeaderProduceError })
}
