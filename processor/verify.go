package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"
)

// PartitionCheck is what Verify found for one partition of the local
// store.
type PartitionCheck struct {
	Partition int32
	// LocalOffset and ChangelogOffset are the next input offsets of the
	// local store and of the changelog's newest metadata (-1: none).
	LocalOffset, ChangelogOffset int64
	// SameLineage is whether the local store is a copy of the changelog's
	// history (see changelogMeta.Lineage).
	SameLineage bool
	// PendingOutbox counts entries committed locally and not yet produced:
	// while there are any, the local store is ahead of the changelog.
	PendingOutbox int
	// Customers compared, and those that differ: only local, only in the
	// changelog, or with other content.
	Customers, OnlyLocal, OnlyChangelog, Differ int
}

// OK reports whether the local store equals its changelog.
func (c PartitionCheck) OK() bool {
	return c.SameLineage && c.LocalOffset == c.ChangelogOffset && c.PendingOutbox == 0 &&
		c.OnlyLocal == 0 && c.OnlyChangelog == 0 && c.Differ == 0
}

// Verify compares every partition the local store holds with the
// changelog: offsets, lineage and each customer's state, byte for byte.
// Run it on a stopped instance's store (New, without Run).
func (p *Processor) Verify(ctx context.Context) ([]PartitionCheck, error) {
	var out []PartitionCheck
	if err := p.learnPartitions(ctx); err != nil {
		return nil, fmt.Errorf("input topic %s: %w", p.cfg.Topics.Events, err)
	}
	for part := range p.partitions.Load() {
		meta, err := loadMeta(p.db, part, nil)
		if err != nil {
			return out, err
		}
		if meta.NextOffset < 0 && !p.hasKeys(part) {
			continue // not held here
		}
		c := PartitionCheck{Partition: part, LocalOffset: meta.NextOffset, ChangelogOffset: -1}
		tail, logged, err := p.changelogTail(ctx, part)
		if err != nil {
			return out, err
		}
		if logged {
			c.ChangelogOffset = tail.NextOffset
			c.SameLineage = tail.Lineage == meta.Lineage
		}
		c.PendingOutbox = p.count(part, kindOutbox)
		var recs []stateRecord
		if err := p.readChangelog(ctx, part, 0, func(r *kgo.Record) error {
			if string(r.Key) != changelogMetaKey {
				recs = append(recs, stateRecord{key: string(r.Key), value: r.Value, offset: r.Offset})
			}
			return nil
		}); err != nil {
			return out, err
		}
		logged2 := map[string][]byte{}
		for _, r := range latest(recs) {
			logged2[r.key] = r.value
		}
		lower, upper := partRange(part, kindState)
		it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return out, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			key := string(it.Key()[5:])
			c.Customers++
			v, in := logged2[key]
			switch {
			case !in:
				c.OnlyLocal++
			case !bytes.Equal(v, it.Value()):
				c.Differ++
			}
			delete(logged2, key)
		}
		if err := it.Close(); err != nil {
			return out, err
		}
		c.OnlyChangelog = len(logged2)
		c.Customers += len(logged2)
		out = append(out, c)
	}
	return out, nil
}

// Rebuild replaces the local copy of every partition the store holds by
// the changelog's (a restore), as a new owner would. Run it on a stopped
// instance's store.
func (p *Processor) Rebuild(ctx context.Context, progress func(part int32, read, end int64)) ([]int32, error) {
	var parts []int32
	if err := p.learnPartitions(ctx); err != nil {
		return nil, fmt.Errorf("input topic %s: %w", p.cfg.Topics.Events, err)
	}
	for part := range p.partitions.Load() {
		meta, err := loadMeta(p.db, part, nil)
		if err != nil {
			return parts, err
		}
		if meta.NextOffset < 0 && !p.hasKeys(part) {
			continue
		}
		if _, logged, err := p.changelogTail(ctx, part); err != nil || !logged {
			if err == nil {
				err = errors.New("the changelog holds nothing for it; the local copy is kept")
			}
			return parts, fmt.Errorf("partition %d: %w", part, err)
		}
		m, ok, err := p.restore(ctx, part, func(read, end int64) { progress(part, read, end) })
		if err != nil {
			return parts, fmt.Errorf("partition %d: %w", part, err)
		}
		if ok {
			b := p.db.NewBatch()
			if err := storeMeta(b, part, m); err != nil {
				b.Close()
				return parts, err
			}
			if err := b.Commit(pebble.Sync); err != nil {
				return parts, err
			}
		}
		parts = append(parts, part)
	}
	return parts, nil
}

// hasKeys reports whether the store holds anything of the partition.
func (p *Processor) hasKeys(part int32) bool {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: partPrefix(part, 0), UpperBound: partPrefix(part+1, 0)})
	if err != nil {
		return false
	}
	defer it.Close()
	return it.First()
}

// count counts a partition's keys of one kind, up to a million.
func (p *Processor) count(part int32, kind byte) int {
	lower, upper := partRange(part, kind)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok && n < 1_000_000; ok = it.Next() {
		n++
	}
	return n
}
