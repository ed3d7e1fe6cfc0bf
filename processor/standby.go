package processor

// Standby replicas (Config.StandbyReplicas): an instance keeps warm copies
// of partitions it does not own by tailing their changelog, so that when it
// takes one over it resumes from the copy (applying the few records it is
// behind) instead of restoring the whole partition. Which instance keeps
// which copy is decided with the assignment (assign.go) and travels in
// each member's assignment; a copy is built by a restore, then follows
// the changelog record by record, read_committed, so it only ever holds
// whole committed batches.
//
// A copy lives under the partition's own keys, like an owner's store, and
// is marked as a standby copy in its metadata (partitionMeta.Standby) with
// the changelog offset it has applied up to. A copy that has not followed
// the changelog for standbyMaxAge is rebuilt rather than caught up:
// compaction may have removed tombstones it never saw (the changelog is
// created with delete.retention.ms of twice that).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/projections"
)

// standbyMaxAge bounds how long a standby copy may have been idle and still
// be caught up from where it stopped. The changelog's delete.retention.ms
// (changelogTopicConfig) is twice as long.
const standbyMaxAge = 12 * time.Hour

// changelogTopicConfig is the configuration of a changelog topic cartlift
// creates: compacted, with tombstones kept for a day, so that a standby
// copy that follows the changelog sees every deletion.
var changelogTopicConfig = map[string]string{
	"cleanup.policy":      "compact",
	"delete.retention.ms": fmt.Sprint((2 * standbyMaxAge).Milliseconds()),
}

// standbyTask keeps one partition's standby copy.
type standbyTask struct {
	pr   *Processor
	part int32
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// warm is set once the copy exists and follows the changelog; next is
	// the next changelog offset to apply, end the changelog's end offset
	// as last seen.
	warm atomic.Bool
	next atomic.Int64
	end  atomic.Int64
}

// setStandbys records the partitions the group assigned this instance
// standby copies of, and wakes the reconciler.
func (p *Processor) setStandbys(parts []int32) {
	p.mu.Lock()
	p.wantStandby = slices.Clone(parts)
	p.mu.Unlock()
	p.wakeStandbys()
}

func (p *Processor) wakeStandbys() {
	select {
	case p.standbyWake <- struct{}{}:
	default:
	}
}

// warmCopies lists the partitions this instance holds a warm standby copy
// of, for its join metadata.
func (p *Processor) warmCopies() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int32
	for part, t := range p.standbys {
		if t.warm.Load() {
			out = append(out, part)
		}
	}
	slices.Sort(out)
	return out
}

// reconcileStandbys runs until ctx ends: it starts a standby task for each
// partition the group wants a copy of here and no worker of this instance
// owns, and stops the others. On return no task runs.
//
// It also drops the local copy of a partition that has been neither owned
// nor kept as a standby here for Config.CleanupDelay: the instance would
// have to restore it anyway once the changelog moved on, and the disk is
// better spent on the partitions it has.
func (p *Processor) reconcileStandbys(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	idleSince := map[int32]time.Time{}
	for {
		p.standbyMu.Lock()
		p.mu.Lock()
		want := map[int32]bool{}
		if ctx.Err() == nil {
			for _, part := range p.wantStandby {
				want[part] = p.workers[part] == nil
			}
		}
		var stop, start []int32
		for part := range p.standbys {
			if !want[part] {
				stop = append(stop, part)
			}
		}
		for part, ok := range want {
			if ok && p.standbys[part] == nil {
				start = append(start, part)
			}
		}
		p.mu.Unlock()
		for _, part := range stop {
			p.stopStandby(part)
		}
		for _, part := range start {
			p.startStandby(part)
		}
		if ctx.Err() == nil {
			p.dropIdleCopies(idleSince)
		}
		p.standbyMu.Unlock()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-p.standbyWake:
		case <-t.C:
		}
	}
}

// dropIdleCopies deletes the local data of each partition that has been
// neither owned nor a standby here for the cleanup delay; idleSince holds
// when each was first seen idle. It counts the partitions left for
// Stats.LocalPartitions, so that Stats never reads the store (which may
// be closed by then). The caller holds standbyMu, so no worker
// or standby task starts on a partition while it is dropped.
func (p *Processor) dropIdleCopies(idleSince map[int32]time.Time) {
	local := 0
	defer func() { p.localPartitions.Store(int32(local)) }()
	for part := range p.partitions.Load() {
		p.mu.Lock()
		used := p.workers[part] != nil || p.standbys[part] != nil
		p.mu.Unlock()
		has := p.hasKeys(part)
		if has {
			local++
		}
		if used || !has {
			delete(idleSince, part)
			continue
		}
		since, ok := idleSince[part]
		if !ok {
			idleSince[part] = time.Now()
			continue
		}
		if time.Since(since) < p.cfg.CleanupDelay {
			continue
		}
		if err := p.db.DeleteRange(partPrefix(part, 0), partPrefix(part+1, 0), pebble.NoSync); err != nil {
			p.log.Warn("dropping an idle local copy", "partition", part, "err", err)
			continue
		}
		delete(idleSince, part)
		local--
		p.log.Info("dropped the local copy of a partition this instance neither owns nor keeps as a standby",
			"partition", part, "idle", p.cfg.CleanupDelay)
	}
}

// startStandby starts a standby task for part. The caller holds standbyMu.
func (p *Processor) startStandby(part int32) {
	ctx, cancel := context.WithCancel(p.runCtx)
	t := &standbyTask{pr: p, part: part, log: p.log.With("partition", part, "standby", true),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
	t.end.Store(-1)
	p.mu.Lock()
	p.standbys[part] = t
	p.mu.Unlock()
	go t.run()
}

// stopStandby stops part's standby task, if one runs, and waits for it; the
// copy stays consistent (each applied batch commits with its offset). The
// caller holds standbyMu.
func (p *Processor) stopStandby(part int32) {
	p.mu.Lock()
	t := p.standbys[part]
	delete(p.standbys, part)
	p.mu.Unlock()
	if t != nil {
		t.cancel()
		<-t.done
	}
}

func (t *standbyTask) run() {
	defer close(t.done)
	backoff := time.Second
	for {
		err := t.follow()
		if t.ctx.Err() != nil {
			return
		}
		t.log.Warn("standby copy: following the changelog failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// follow builds the copy if there is none (or it is too old), then applies
// the changelog as it grows, until the task is stopped or reading fails.
func (t *standbyTask) follow() error {
	pr := t.pr
	meta, err := loadMeta(pr.db, t.part, pr.flows)
	if err != nil {
		return err
	}
	if !meta.Standby || time.Since(meta.Applied) > standbyMaxAge {
		start := time.Now()
		meta, _, err = pr.restore(t.ctx, t.part, func(read, end int64) {
			t.log.Info("building a standby copy from the changelog", "progress", fmt.Sprintf("%d%%", read*100/max(end, 1)))
		})
		if err != nil {
			return fmt.Errorf("building the copy: %w", err)
		}
		meta.Standby, meta.Applied = true, time.Now()
		b := pr.db.NewBatch()
		defer func() { b.Close() }()
		if err := storeMeta(b, t.part, meta); err != nil {
			return err
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		t.log.Info("standby copy built", "offset", meta.NextOffset, "changelog_offset", meta.ChangelogNext,
			"open_carts", meta.OpenCarts, "took", time.Since(start).Round(time.Millisecond))
	} else {
		t.log.Info("standby copy: following the changelog", "changelog_offset", meta.ChangelogNext)
	}
	t.next.Store(meta.ChangelogNext)
	t.warm.Store(true)

	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(pr.cfg.Brokers...)}, append(pr.cfg.KafkaOpts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{pr.cfg.Topics.State: {t.part: kgo.NewOffset().At(meta.ChangelogNext)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond),
		// Fetches of the input's size: a lagging copy's decoded records
		// wait in memory as the input's do (see Config.FetchMaxBytes).
		kgo.FetchMaxBytes(pr.cfg.FetchMaxBytes), kgo.FetchMaxPartitionBytes(pr.cfg.FetchMaxBytes),
	)...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(t.ctx)
		if t.ctx.Err() != nil {
			return t.ctx.Err()
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return fmt.Errorf("reading changelog %s/%d: %w", pr.cfg.Topics.State, t.part, ferr)
		}
		var applyErr error
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			t.end.Store(ftp.LastStableOffset)
			if applyErr == nil && len(ftp.Records) > 0 {
				applyErr = pr.applyChangelog(t.part, &meta, ftp.Records)
				t.next.Store(meta.ChangelogNext)
			}
		})
		if applyErr != nil {
			return applyErr
		}
	}
}

// catchUp applies what the changelog holds past a standby copy's offset, up
// to its end.
func (p *Processor) catchUp(ctx context.Context, part int32, meta *partitionMeta) error {
	var recs []*kgo.Record
	flush := func() error {
		err := p.applyChangelog(part, meta, recs)
		recs = recs[:0]
		return err
	}
	err := p.readChangelog(ctx, part, meta.ChangelogNext, func(r *kgo.Record) error {
		recs = append(recs, r)
		if len(recs) >= 10_000 {
			return flush()
		}
		return nil
	})
	if err == nil && len(recs) > 0 {
		err = flush()
	}
	return err
}

// applyChangelog applies changelog records (of one partition, in log
// order, from meta.ChangelogNext on) to the partition's standby copy in
// one Pebble batch with the updated metadata: each state replaces the
// customer's, with its index entries; a tombstone deletes the customer;
// the metadata record sets the offset, clocks, lineage and runs.
func (p *Processor) applyChangelog(part int32, meta *partitionMeta, recs []*kgo.Record) error {
	b := p.db.NewBatch()
	defer b.Close()
	// The states this batch wrote, since a plain batch cannot be read.
	written := map[string][]byte{}
	var st projections.CustomerState
	unindex := func(v []byte) error {
		if err := decodeIndex(v, &st); err != nil {
			return err
		}
		var ierr error
		del := func(k []byte) { ierr = errors.Join(ierr, b.Delete(k, nil)) }
		meta.OpenCarts -= derivedIndex(part, &st, func(k []byte) { meta.Timers--; del(k) }, del)
		return ierr
	}
	index := func(v []byte) error {
		if err := decodeIndex(v, &st); err != nil {
			return err
		}
		var ierr error
		set := func(k []byte) { ierr = errors.Join(ierr, b.Set(k, nil, nil)) }
		meta.OpenCarts += derivedIndex(part, &st, func(k []byte) { meta.Timers++; set(k) }, set)
		return ierr
	}
	for _, r := range recs {
		if r.Offset < meta.ChangelogNext {
			continue
		}
		meta.ChangelogNext = r.Offset + 1
		if r.Attrs.IsControl() {
			continue
		}
		if string(r.Key) == changelogMetaKey {
			cm, err := decodeChangelogMeta(r.Value)
			if err != nil {
				return fmt.Errorf("changelog %s/%d offset %d: %w", p.cfg.Topics.State, part, r.Offset, err)
			}
			meta.NextOffset, meta.EventTime, meta.Clock, meta.Lineage = cm.NextOffset, cm.EventTime, cm.Clock, cm.Lineage
			for name, t := range cm.Runs {
				meta.Runs[name] = t
			}
			continue
		}
		key := string(r.Key)
		old, ok := written[key]
		if !ok {
			v, closer, err := p.db.Get(stateKey(part, key))
			switch {
			case errors.Is(err, pebble.ErrNotFound):
			case err != nil:
				return err
			default:
				old = append([]byte(nil), v...)
				closer.Close()
			}
		}
		if old != nil {
			if err := unindex(old); err != nil {
				return fmt.Errorf("standby copy of %q: %w", key, err)
			}
		}
		written[key] = r.Value
		if r.Value == nil {
			if err := b.Delete(stateKey(part, key), nil); err != nil {
				return err
			}
			continue
		}
		if err := index(r.Value); err != nil {
			return fmt.Errorf("changelog %s/%d offset %d, state %q: %w", p.cfg.Topics.State, part, r.Offset, key, err)
		}
		if err := b.Set(stateKey(part, key), r.Value, nil); err != nil {
			return err
		}
	}
	meta.Standby, meta.Applied = true, time.Now()
	if err := storeMeta(b, part, *meta); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}
