package processor

// The changelog: a compacted topic (Topics.State, default cartlift-state)
// with one partition per input partition, which holds everything a worker
// needs to take a partition over exactly where its last owner committed:
// every customer's state (the codec's binary form; a tombstone for a
// deleted one), keyed by the customer key, and the partition's metadata
// under changelogMetaKey. The timer index, the modification index and the
// gauges are derived from the states on restore.
//
// The relay produces each committed batch's outputs, changelog records
// and metadata record in one Kafka transaction, with one transactional id
// per partition: a batch is either wholly visible to read_committed
// consumers (outputs, states and the offset it resumes from) or not at
// all, and a new owner fences the old one before it reads the changelog.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/sstable"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/projections"
)

// changelogMetaKey is the key of a partition's metadata record in the
// changelog. No customer key is empty or starts with a zero byte.
const changelogMetaKey = "\x00meta"

const changelogMetaV1 byte = 1

// changelogMeta is a partition's metadata as the changelog holds it.
type changelogMeta struct {
	NextOffset int64
	EventTime  time.Time
	Clock      time.Time
	// Lineage names the history of this partition's state: it is drawn
	// when a worker starts a partition from nothing and travels through
	// restores. A local store is current only if it has the changelog's
	// lineage (and is not behind it).
	Lineage uint64
	Runs    map[string]time.Time
}

func (m *changelogMeta) appendTo(b []byte) []byte {
	e := enc{b: append(b, changelogMetaV1)}
	e.int(m.NextOffset)
	e.time(m.EventTime)
	e.time(m.Clock)
	e.b = binary.LittleEndian.AppendUint64(e.b, m.Lineage)
	e.uint(len(m.Runs))
	for name, t := range m.Runs {
		e.str(name)
		e.time(t)
	}
	return e.b
}

func decodeChangelogMeta(b []byte) (changelogMeta, error) {
	d := dec{b: b}
	if d.byte() != changelogMetaV1 {
		return changelogMeta{}, errCorruptState
	}
	var m changelogMeta
	m.NextOffset = d.int()
	m.EventTime = d.time()
	m.Clock = d.time()
	if len(d.b) < 8 {
		return changelogMeta{}, errCorruptState
	}
	m.Lineage = binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	if n := d.count(); n > 0 {
		m.Runs = make(map[string]time.Time, n)
		for range n {
			name := d.str()
			m.Runs[name] = d.time()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptState
	}
	return m, d.err
}

func newLineage() uint64 { return rand.Uint64() | 1 }

// changelogPartitioner sends changelog records to the record's own
// partition (the input partition's number) and hashes the key for every
// other topic, as Kafka's default partitioner does.
type changelogPartitioner struct {
	state string
	keyed kgo.Partitioner
}

func (c changelogPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == c.state {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return c.keyed.ForTopic(topic)
}

// newTxnClient is the transactional producer of one partition's relay.
// Its transactional id names the group and the partition, so that the
// next owner of the partition fences this one.
func (p *Processor) newTxnClient(part int32) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, append(p.cfg.KafkaOpts,
		kgo.TransactionalID(fmt.Sprintf("%s-%d", p.cfg.Group, part)),
		kgo.TransactionTimeout(p.cfg.SessionTimeout*4),
		kgo.ProducerLinger(0),
		kgo.MaxBufferedRecords(2*relayBatch),
		kgo.RecordRetries(10),
		kgo.ProducerBatchMaxBytes(int32(min(p.messageLimit, 1<<30))),
		kgo.ProducerBatchCompression(kgo.SnappyCompression(), kgo.NoCompression()),
		kgo.RecordPartitioner(changelogPartitioner{state: p.cfg.Topics.State, keyed: kgo.StickyKeyPartitioner(nil)}),
	)...)...)
}

// readChangelog reads one changelog partition, read_committed, from
// offset from up to its end at the time of the call.
func (p *Processor) readChangelog(ctx context.Context, part int32, from int64, each func(*kgo.Record) error) error {
	ends, err := ListEndOffsets(ctx, p.admin, p.cfg.Topics.State, []int32{part})
	if err != nil {
		return err
	}
	end := ends[part]
	if end <= from {
		return nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, append(p.cfg.KafkaOpts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.cfg.Topics.State: {part: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20),
	)...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("reading changelog %s/%d: %w", p.cfg.Topics.State, part, ferr)
		}
		done := false
		var eachErr error
		fs.EachRecord(func(r *kgo.Record) {
			if done || eachErr != nil {
				return
			}
			if !r.Attrs.IsControl() {
				eachErr = each(r)
			}
			done = r.Offset+1 >= end
		})
		if eachErr != nil {
			return eachErr
		}
		if done {
			return nil
		}
	}
}

// changelogTail returns the partition's newest metadata in the changelog,
// and false when the changelog holds none. A committed transaction ends
// with its metadata record and a commit marker, so the tail is in the last
// few offsets; compaction never removes the newest record of a key.
func (p *Processor) changelogTail(ctx context.Context, part int32) (changelogMeta, bool, error) {
	ends, err := ListEndOffsets(ctx, p.admin, p.cfg.Topics.State, []int32{part})
	if err != nil {
		return changelogMeta{}, false, err
	}
	var m changelogMeta
	found := false
	for back := int64(4); ; back *= 16 {
		from := max(0, ends[part]-back)
		err := p.readChangelog(ctx, part, from, func(r *kgo.Record) error {
			if string(r.Key) != changelogMetaKey {
				return nil
			}
			mm, err := decodeChangelogMeta(r.Value)
			if err != nil {
				return fmt.Errorf("changelog %s/%d offset %d: %w", p.cfg.Topics.State, part, r.Offset, err)
			}
			m, found = mm, true
			return nil
		})
		if err != nil || found || from == 0 {
			return m, found, err
		}
	}
}

// restoreProgress is called with the offsets read and the end, about every
// 10% of a restore.
type restoreProgress func(read, end int64)

// restore replaces the partition's local state by the changelog's: it
// deletes every local key of the partition, reads the changelog (the last
// record of each key wins), derives the timer and modification index
// entries and the gauges from the states, and ingests all of it into
// Pebble as sorted tables, bypassing the memtable. Records beyond
// Config.RestoreMemoryBytes are not held: the restore then reads the
// changelog a second time (ingestLast; progress reports the first pass
// only). It returns the
// metadata to resume from, with ChangelogNext the changelog offset it read
// up to, and false when the changelog holds nothing for the partition
// (the metadata then has NextOffset -1). It stores no metadata.
func (p *Processor) restore(ctx context.Context, part int32, progress restoreProgress) (partitionMeta, bool, error) {
	if err := p.db.DeleteRange(partPrefix(part, 0), partPrefix(part+1, 0), pebble.NoSync); err != nil {
		return partitionMeta{}, false, err
	}
	ends, err := ListEndOffsets(ctx, p.admin, p.cfg.Topics.State, []int32{part})
	if err != nil {
		return partitionMeta{}, false, err
	}
	end := ends[part]
	states := make([]stateRecord, 0, min(end, 1<<20))
	var held int64 // the bytes states holds
	// last is the changelog offset of each key's last record, kept
	// instead of the records once they outgrow Config.RestoreMemoryBytes.
	var last map[string]int64
	var cm changelogMeta
	found := false
	step, next := max(end/10, 1), max(end/10, 1)
	err = p.readChangelog(ctx, part, 0, func(r *kgo.Record) error {
		switch {
		case string(r.Key) == changelogMetaKey:
			m, err := decodeChangelogMeta(r.Value)
			if err != nil {
				return fmt.Errorf("changelog %s/%d offset %d: %w", p.cfg.Topics.State, part, r.Offset, err)
			}
			cm, found = m, true
		case last != nil:
			last[string(r.Key)] = r.Offset
		default:
			states = append(states, stateRecord{key: unsafe.String(unsafe.SliceData(r.Key), len(r.Key)), value: r.Value, offset: r.Offset})
			held += stateRecordBytes(r)
			if held > p.cfg.RestoreMemoryBytes {
				last = make(map[string]int64, 2*len(states))
				for _, s := range states {
					last[strings.Clone(s.key)] = s.offset
				}
				clear(states)
				states, held = states[:0], 0
			}
		}
		if r.Offset+1 >= next {
			progress(r.Offset+1, end)
			next += step
		}
		return nil
	})
	if err != nil {
		return partitionMeta{}, false, err
	}
	if !found {
		return partitionMeta{NextOffset: -1, Runs: map[string]time.Time{}, ChangelogNext: end}, false, nil
	}
	var m partitionMeta
	if last == nil {
		m, err = p.ingestStates(part, states)
	} else {
		m, err = p.ingestLast(ctx, part, last)
	}
	if err != nil {
		return partitionMeta{}, false, err
	}
	// A restore starts a new lineage: a store that still holds the old one
	// (an earlier owner's, or a fenced zombie's with output it never
	// committed) is then not mistaken for this one.
	m.NextOffset, m.EventTime, m.Clock, m.Lineage = cm.NextOffset, cm.EventTime, cm.Clock, newLineage()
	m.Runs = cm.Runs
	if m.Runs == nil {
		m.Runs = map[string]time.Time{}
	}
	m.ChangelogNext = end
	return m, true, nil
}

// stateRecordBytes is what a fetched state record holds in memory: its
// key and value and the client's record around them.
func stateRecordBytes(r *kgo.Record) int64 {
	return int64(len(r.Key)+len(r.Value)) + int64(unsafe.Sizeof(*r)) + int64(unsafe.Sizeof(stateRecord{}))
}

// ingestLast is the second pass of a restore whose records outgrew
// Config.RestoreMemoryBytes: it reads the changelog again and ingests the
// record at each key's last offset of the first pass (none for a
// tombstone), in chunks of at most that many bytes, so that it restores
// what the first pass read, however far a live owner has written the
// changelog since. Each key is ingested once, so the chunks' tables never
// disagree. It returns the gauges, summed over the chunks.
func (p *Processor) ingestLast(ctx context.Context, part int32, last map[string]int64) (partitionMeta, error) {
	var total partitionMeta
	var chunk []stateRecord
	var held int64
	ingest := func() error {
		m, err := p.ingestStates(part, chunk)
		total.OpenCarts += m.OpenCarts
		total.Timers += m.Timers
		clear(chunk)
		chunk, held = chunk[:0], 0
		return err
	}
	err := p.readChangelog(ctx, part, 0, func(r *kgo.Record) error {
		if r.Value == nil {
			return nil
		}
		if o, ok := last[string(r.Key)]; !ok || o != r.Offset {
			return nil // the meta record, or a key's earlier record
		}
		chunk = append(chunk, stateRecord{key: unsafe.String(unsafe.SliceData(r.Key), len(r.Key)), value: r.Value, offset: r.Offset})
		if held += stateRecordBytes(r); held > p.cfg.RestoreMemoryBytes {
			return ingest()
		}
		return nil
	})
	if err == nil && len(chunk) > 0 {
		err = ingest()
	}
	return total, err
}

// stateRecord is a changelog record of a customer: a state, or a
// tombstone (nil value), at its changelog offset. key may alias the
// fetched record's key, which nothing writes to.
type stateRecord struct {
	key    string
	value  []byte
	offset int64
}

// latest sorts records by key and keeps the last of each key in log order,
// dropping tombstones.
func latest(recs []stateRecord) []stateRecord {
	slices.SortFunc(recs, func(a, b stateRecord) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.offset, b.offset)
	})
	out := recs[:0]
	for i := range recs {
		if i+1 < len(recs) && recs[i+1].key == recs[i].key {
			continue // a later record of the key follows
		}
		if recs[i].value != nil {
			out = append(out, recs[i])
		}
	}
	return out
}

// ingestStates writes the states of a partition, and the timer and
// modification index entries derived from them, as three sorted tables
// and ingests them. Decoding, sorting and writing run on every core. It
// returns the gauges.
func (p *Processor) ingestStates(part int32, recs []stateRecord) (partitionMeta, error) {
	recs = latest(recs)
	p.stats.restored.Add(int64(len(recs)))
	type derived struct {
		timers, mods [][]byte
		open         int64
		err          error
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, len(recs)/10_000))
	outs := make([]derived, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			d := &outs[w]
			d.timers = make([][]byte, 0, len(recs)/workers+1)
			d.mods = make([][]byte, 0, len(recs)/workers+1)
			var st projections.CustomerState
			for i := w; i < len(recs); i += workers {
				if err := decodeIndex(recs[i].value, &st); err != nil {
					d.err = fmt.Errorf("state %q: %w", recs[i].key, err)
					return
				}
				d.open += derivedIndex(part, &st,
					func(k []byte) { d.timers = append(d.timers, k) },
					func(k []byte) { d.mods = append(d.mods, k) })
			}
		})
	}
	wg.Wait()
	var m partitionMeta
	timers := make([][]byte, 0, len(outs[0].timers)*workers)
	mods := make([][]byte, 0, len(outs[0].mods)*workers)
	for _, d := range outs {
		if d.err != nil {
			return m, d.err
		}
		timers = append(timers, d.timers...)
		mods = append(mods, d.mods...)
		m.OpenCarts += d.open
	}
	m.Timers = int64(len(timers))
	wg.Go(func() { slices.SortFunc(timers, bytes.Compare) })
	slices.SortFunc(mods, bytes.Compare)
	wg.Wait()

	dir, err := os.MkdirTemp(p.cfg.DataDir, "restore-")
	if err != nil {
		return m, err
	}
	defer os.RemoveAll(dir)
	var paths []string
	var mu sync.Mutex
	write := func(name string, n int, kv func(i int) (k, v []byte)) error {
		if n == 0 {
			return nil
		}
		path := filepath.Join(dir, name)
		defer func() { mu.Lock(); paths = append(paths, path); mu.Unlock() }()
		f, err := vfs.Default.Create(path)
		if err != nil {
			return err
		}
		w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
			TableFormat: p.db.FormatMajorVersion().MaxTableFormat(), Compression: sstable.SnappyCompression, BlockSize: 32 << 10,
			FilterPolicy: bloom.FilterPolicy(10), FilterType: sstable.TableFilter}) // as openDB's levels
		for i := range n {
			k, v := kv(i)
			if err := w.Set(k, v); err != nil {
				w.Close()
				return err
			}
		}
		return w.Close()
	}
	errs := make([]error, 3)
	wg.Go(func() {
		errs[0] = write("states.sst", len(recs), func(i int) ([]byte, []byte) { return stateKey(part, recs[i].key), recs[i].value })
	})
	wg.Go(func() {
		errs[1] = write("timers.sst", len(timers), func(i int) ([]byte, []byte) { return timers[i], nil })
	})
	errs[2] = write("mods.sst", len(mods), func(i int) ([]byte, []byte) { return mods[i], nil })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return m, err
	}
	if len(paths) == 0 {
		return m, nil
	}
	return m, p.db.Ingest(paths)
}

// derivedIndex calls timer with the timer index key and mod with the
// modification index key of each of the state's carts that has one, and
// returns the state's open carts: what the store derives from a state,
// on restore and in a standby copy.
func derivedIndex(part int32, st *projections.CustomerState, timer, mod func([]byte)) (open int64) {
	for _, c := range st.Carts {
		if !c.WakeAt.IsZero() {
			timer(timerKey(part, c.WakeAt, st.Key, c.ID))
		}
		if c.IsOpen() {
			open++
			if !c.ModifiedAt.IsZero() {
				mod(modKey(part, c.ModifiedAt, st.Key, c.ID))
			}
		}
	}
	return open
}

// enqueueChangelogMeta enqueues the partition's metadata record, which
// ends a batch's transaction (the relay cuts its rounds after one).
func (w *worker) enqueueChangelogMeta() error {
	cm := changelogMeta{NextOffset: w.meta.NextOffset, EventTime: w.meta.EventTime, Clock: w.meta.Clock,
		Lineage: w.meta.Lineage, Runs: w.meta.Runs}
	return w.enqueue(&outboxEntry{Topic: w.pr.cfg.Topics.State, Key: []byte(changelogMetaKey), Value: cm.appendTo(nil)})
}

// snapshotChunk is how many states the migration to the changelog puts
// in one Pebble batch: its memory is bounded, not the partition's size.
const snapshotChunk = 8192

// snapshotToChangelog enqueues every local state of the partition and its
// metadata: the migration of a store that predates the changelog. It
// commits the outbox entries in chunks; the caller commits the last one
// with the partition's metadata, so a crash before that repeats the whole
// migration (the entries already written are overwritten, being at the
// same outbox sequence numbers).
func (w *worker) snapshotToChangelog() (int, error) {
	lower, upper := partRange(w.part, kindState)
	it, err := w.pr.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		e := outboxEntry{Topic: w.pr.cfg.Topics.State, Key: append([]byte(nil), it.Key()[5:]...),
			Value: append([]byte(nil), it.Value()...)}
		if err := w.enqueue(&e); err != nil {
			it.Close()
			return n, err
		}
		n++
		if n%snapshotChunk == 0 {
			if err := w.b.Commit(pebble.NoSync); err != nil {
				it.Close()
				return n, err
			}
			w.b.Reset()
			w.resetBatchOutbox()
		}
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	return n, w.enqueueChangelogMeta()
}

// ErrFenced is the error Run returns when another instance took a
// partition over (it fenced this one's transactional producer).
var ErrFenced = errors.New("fenced: another instance owns the partition now")
