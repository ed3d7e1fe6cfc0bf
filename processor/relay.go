package processor

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"
)

// relayBatch bounds how many outbox entries one produce round carries.
const relayBatch = 2_000

// relay produces a partition's outbox to Kafka with the idempotent
// producer and deletes entries once the brokers acknowledged them. A crash
// between the acknowledgement and the delete re-produces the same entries,
// byte for byte, on restart; their deterministic ids let consumers drop the
// copies. The relay owns the head of the outbox; the worker appends at the
// tail.
type relay struct {
	pr     *Processor
	part   int32
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

func newRelay(pr *Processor, part int32) *relay {
	ctx, cancel := context.WithCancel(context.Background())
	return &relay{pr: pr, part: part, wake: make(chan struct{}, 1), quit: make(chan struct{}),
		done: make(chan struct{}), ctx: ctx, cancel: cancel}
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
}

func (r *relay) run() {
	defer close(r.done)
	backoff := 100 * time.Millisecond
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n, err := r.drainOnce()
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
		if n == relayBatch {
			continue
		}
		select {
		case <-r.quit:
			// Final drain: whatever the worker committed last.
			for {
				n, err := r.drainOnce()
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

// drainOnce produces up to relayBatch entries from the head of the outbox
// and handles each produce result on its own: an acknowledged entry is
// deleted; an entry the brokers refuse for good (too large, invalid) is
// replaced by its reduced dead letter (see reduced), which the next round
// produces, or, if it is one already, dropped with a metric and a log
// line; an entry that failed transiently stays for the next round. So one
// bad record is produced at most twice (as it is, then reduced) and never
// holds back the entries around it. It returns how many entries it
// produced and the first transient error.
func (r *relay) drainOnce() (int, error) {
	lower, upper := partRange(r.part, kindOutbox)
	it, err := r.pr.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	var recs []*kgo.Record
	var entries []outboxEntry
	var keys [][]byte
	for ok := it.First(); ok && len(recs) < relayBatch; ok = it.Next() {
		e, err := decodeOutboxEntry(append([]byte(nil), it.Value()...))
		if err != nil {
			it.Close()
			return 0, err
		}
		keys = append(keys, append([]byte(nil), it.Key()...))
		rec := &kgo.Record{Topic: e.Topic, Key: e.Key, Value: e.Value}
		for _, h := range e.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
		}
		recs = append(recs, rec)
		entries = append(entries, e)
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	index := make(map[*kgo.Record]int, len(recs))
	for i, rec := range recs {
		index[rec] = i
	}
	results := r.pr.out.ProduceSync(r.ctx, recs...)
	b := r.pr.db.NewBatch()
	defer b.Close()
	var transient error
	var acked []*kgo.Record
	for _, res := range results {
		i := index[res.Record]
		switch {
		case res.Err == nil:
			acked = append(acked, res.Record)
			if err := b.Delete(keys[i], nil); err != nil {
				return 0, err
			}
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
		default:
			if transient == nil {
				transient = res.Err
			}
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, err
	}
	for _, rec := range acked {
		switch rec.Topic {
		case r.pr.cfg.Topics.Decisions:
			r.pr.stats.decisionsEmitted.Add(1)
		case r.pr.cfg.Topics.Outcomes:
			r.pr.stats.outcomesEmitted.Add(1)
		case r.pr.cfg.Topics.DLQ:
			r.pr.stats.deadLettered.Add(1)
		}
	}
	return len(recs), transient
}

// isReduced reports whether e is a reduced dead letter already.
func isReduced(e *outboxEntry) bool {
	return slices.ContainsFunc(e.Headers, func(h [2]string) bool { return h[0] == HeaderProduceError })
}
