package processor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"

	"github.com/cartlift/cartlift/projections"
)

// Pebble layout. Every key starts with the 4-byte big-endian input
// partition, so one partition's data is one contiguous key range that can
// be dropped, restored or shipped as a unit. After the partition comes one
// byte naming the kind of record:
//
//	[p]{kindMeta}{metaX}                      partition metadata (offset, counters)
//	[p]{kindState}customerKey                 projections.CustomerState (codec.go)
//	[p]{kindTimer}due(8)customerKey 0x00 cartID   empty value; the timer index
//	[p]{kindOutbox}seq(8)                     an encoded outboxEntry
//	[p]{kindModified}modifiedAt(8)customerKey 0x00 cartID   empty value;
//	                                          open carts by last modification,
//	                                          swept by scheduled flows
//
// Customer keys and cart ids never contain 0x00 (events.Decode rejects
// control characters), so the timer and modification keys split
// unambiguously.
//
// The modification index is kept from the fold's Effects.Modified. A store
// written before it existed has no entries for carts not modified since:
// they join the index at their next modification.
const (
	kindMeta     byte = 1
	kindState    byte = 2
	kindTimer    byte = 3
	kindOutbox   byte = 4
	kindModified byte = 5
)

// Metadata records of a partition.
const (
	metaNextOffset byte = 'o' // next input offset to process
	metaOutboxSeq  byte = 's' // next outbox sequence number
	metaEventTime  byte = 't' // newest processed event time (unix nanos)
	metaClock      byte = 'k' // the partition's effective time (unix nanos; projections.Advance)
	metaOpenCarts  byte = 'c' // open carts in the partition
	metaTimers     byte = 'n' // pending timers in the partition
	metaLineage    byte = 'l' // the state's lineage (changelog.go)
	// metaStandby: 1 + the next changelog offset to apply, for a standby
	// copy (standby.go); absent or 0 for an owner's store.
	metaStandby byte = 'b'
	// metaStandbyApplied: when a standby copy last applied the changelog
	// (unix nanos, wall clock).
	metaStandbyApplied byte = 'a'
	// metaSchedule + flow name: the last run time (unix nanos) of a
	// scheduled flow in the partition.
	metaSchedule byte = 'r'
)

func scheduleKey(p int32, flow string) []byte {
	return append(metaKey(p, metaSchedule), flow...)
}

func modKey(p int32, at time.Time, customer, cart string) []byte {
	return appendModKey(nil, p, at, customer, cart)
}

// appendModKey appends modKey's key to dst.
func appendModKey(dst []byte, p int32, at time.Time, customer, cart string) []byte {
	k := encodeDue(appendPartPrefix(dst, p, kindModified), at)
	k = append(k, customer...)
	k = append(k, 0)
	return append(k, cart...)
}

// modRange returns the bounds of the index entries of partition p
// modified in [from, to].
func modRange(p int32, from, to time.Time) (lower, upper []byte) {
	lower = encodeDue(partPrefix(p, kindModified), from)
	if to.UnixNano() == math.MaxInt64 {
		return lower, partPrefix(p, kindModified+1)
	}
	return lower, encodeDue(partPrefix(p, kindModified), to.Add(1))
}

// parseModKey splits a modification index key.
func parseModKey(k []byte) (at time.Time, customer, cart string, err error) {
	if len(k) < 5+8+1 || k[4] != kindModified {
		return time.Time{}, "", "", fmt.Errorf("malformed modification key %x", k)
	}
	at = decodeDue(k[5:13])
	rest := k[13:]
	for i, c := range rest {
		if c == 0 {
			return at, string(rest[:i]), string(rest[i+1:]), nil
		}
	}
	return time.Time{}, "", "", fmt.Errorf("malformed modification key %x", k)
}

func partPrefix(p int32, kind byte) []byte {
	return appendPartPrefix(make([]byte, 0, 64), p, kind)
}

// appendPartPrefix appends partPrefix's prefix to dst.
func appendPartPrefix(dst []byte, p int32, kind byte) []byte {
	return append(binary.BigEndian.AppendUint32(dst, uint32(p)), kind)
}

// partRange returns the bounds of all keys of one kind in a partition.
func partRange(p int32, kind byte) (lower, upper []byte) {
	return partPrefix(p, kind), partPrefix(p, kind+1)
}

func metaKey(p int32, m byte) []byte { return append(partPrefix(p, kindMeta), m) }

func stateKey(p int32, customer string) []byte {
	return appendStateKey(nil, p, customer)
}

// appendStateKey appends stateKey's key to dst.
func appendStateKey(dst []byte, p int32, customer string) []byte {
	return append(appendPartPrefix(dst, p, kindState), customer...)
}

// encodeDue maps a time to 8 bytes that sort like the time.
func encodeDue(dst []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(t.UnixNano())^(1<<63))
}

func decodeDue(b []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)^(1<<63))).UTC()
}

// keyDue is the due time, in Unix nanoseconds, that a timer key or a
// bound made by encodeDue after a timer prefix starts with; ok is false
// for a shorter key (a bare prefix, or the next kind's).
func keyDue(k []byte) (nanos int64, ok bool) {
	if len(k) < 5+8 || k[4] != kindTimer {
		return 0, false
	}
	return decodeDue(k[5:13]).UnixNano(), true
}

func timerKey(p int32, due time.Time, customer, cart string) []byte {
	return appendTimerKey(nil, p, due, customer, cart)
}

// appendTimerKey appends timerKey's key to dst.
func appendTimerKey(dst []byte, p int32, due time.Time, customer, cart string) []byte {
	k := encodeDue(appendPartPrefix(dst, p, kindTimer), due)
	k = append(k, customer...)
	k = append(k, 0)
	return append(k, cart...)
}

// timerKeyParts splits a timer key without copying: customer and cart
// share k's memory, for lookups only.
func timerKeyParts(k []byte) (due time.Time, customer, cart string, ok bool) {
	if len(k) < 5+8+1 || k[4] != kindTimer {
		return time.Time{}, "", "", false
	}
	rest := k[13:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return time.Time{}, "", "", false
	}
	return decodeDue(k[5:13]), unsafe.String(unsafe.SliceData(rest), i), unsafe.String(unsafe.SliceData(rest[i+1:]), len(rest)-i-1), true
}

// parseTimerKey splits a timer key of any partition.
func parseTimerKey(k []byte) (due time.Time, customer, cart string, err error) {
	if len(k) < 5+8+1 || k[4] != kindTimer {
		return time.Time{}, "", "", fmt.Errorf("malformed timer key %x", k)
	}
	due = decodeDue(k[5:13])
	rest := k[13:]
	for i, c := range rest {
		if c == 0 {
			return due, string(rest[:i]), string(rest[i+1:]), nil
		}
	}
	return time.Time{}, "", "", fmt.Errorf("malformed timer key %x", k)
}

func outboxKey(p int32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(partPrefix(p, kindOutbox), seq)
}

// firstOutboxSeq returns the sequence number of the partition's oldest
// outbox entry, and false when its outbox is empty.
func firstOutboxSeq(r pebble.Reader, p int32) (uint64, bool, error) {
	lower, upper := partRange(p, kindOutbox)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, false, err
	}
	var seq uint64
	ok := it.First()
	if ok {
		seq = binary.BigEndian.Uint64(it.Key()[len(it.Key())-8:])
	}
	return seq, ok, it.Close()
}

// stateRefTopic is the topic of an outbox entry that refers to a
// customer's state (its key) instead of holding it: the changelog record
// of a state the same batch writes to the store, which would otherwise be
// written twice. The relay produces it to the changelog with the value
// the worker handed it in memory (relay.addRefs). A Kafka topic name
// cannot hold a NUL byte.
const stateRefTopic = "\x00state-ref"

// maxHeldRefBytes bounds the state values a partition's relay holds in
// memory for references; past it (the relay lags, say while Kafka is
// away), the worker writes changelog records into the outbox whole.
const maxHeldRefBytes = 8 << 20

// resolveStateRefs makes the outbox from head on hold whole changelog
// records again, for a takeover: the relay that held the references'
// values is gone. Each reference gets its state's value in the store
// now, which is the value as of the outbox's last batch; for the
// changelog to hold no state newer than its metadata record says, the
// metadata records from the first reference's batch on, but the last,
// are dropped, so that the relay produces those batches as one, in one
// transaction (see drainOnce). It returns how many references it
// resolved.
func resolveStateRefs(db *pebble.DB, p int32, head uint64, stateTopic string) (int, error) {
	lower, upper := outboxKey(p, head), partPrefix(p, kindOutbox+1)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	type pending struct {
		key  []byte
		e    outboxEntry
		meta bool
	}
	var entries []pending
	first := -1 // the first reference
	for ok := it.First(); ok; ok = it.Next() {
		e, err := decodeOutboxEntry(append([]byte(nil), it.Value()...))
		if err != nil {
			it.Close()
			return 0, err
		}
		if e.Topic == stateRefTopic && first < 0 {
			first = len(entries)
		}
		entries = append(entries, pending{key: append([]byte(nil), it.Key()...), e: e,
			meta: e.Topic == stateTopic && string(e.Key) == changelogMetaKey})
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if first < 0 {
		return 0, nil
	}
	last := -1 // the last metadata record
	for i := range entries {
		if entries[i].meta {
			last = i
		}
	}
	b := db.NewBatch()
	defer b.Close()
	n := 0
	for i := first; i < len(entries); i++ {
		pe := &entries[i]
		switch {
		case pe.meta && i != last:
			if err := b.Delete(pe.key, nil); err != nil {
				return 0, err
			}
		case pe.e.Topic == stateRefTopic:
			v, closer, err := db.Get(stateKey(p, string(pe.e.Key)))
			var value []byte
			switch {
			case errors.Is(err, pebble.ErrNotFound): // deleted: a tombstone
			case err != nil:
				return 0, err
			default:
				value = bytes.Clone(v)
				closer.Close()
			}
			e := outboxEntry{Topic: stateTopic, Key: pe.e.Key, Value: value}
			if err := b.Set(pe.key, e.appendTo(nil), nil); err != nil {
				return 0, err
			}
			n++
		}
	}
	return n, b.Commit(pebble.Sync)
}

// outboxEntry is one record waiting to be produced by the relay.
type outboxEntry struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers [][2]string
}

func (e *outboxEntry) appendTo(b []byte) []byte {
	b = appendBytes(b, []byte(e.Topic))
	b = appendBytes(b, e.Key)
	b = appendBytes(b, e.Value)
	b = binary.AppendUvarint(b, uint64(len(e.Headers)))
	for _, h := range e.Headers {
		b = appendBytes(b, []byte(h[0]))
		b = appendBytes(b, []byte(h[1]))
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errCorrupt = errors.New("corrupt outbox entry")

// outboxEntryAddress returns the topic and key of an encoded outbox entry
// without decoding (or copying) the rest; ok is false for a corrupt one.
func outboxEntryAddress(b []byte) (topic, key []byte, ok bool) {
	if topic, b, ok = cutBytes(b); !ok {
		return nil, nil, false
	}
	key, _, ok = cutBytes(b)
	return topic, key, ok
}

// cutBytes reads one appendBytes field off the front of b: the field and
// what follows it; ok is false for a truncated or corrupt one.
func cutBytes(b []byte) (field, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

func decodeOutboxEntry(b []byte) (outboxEntry, error) {
	var e outboxEntry
	next := func() ([]byte, error) {
		v, rest, ok := cutBytes(b)
		if !ok {
			return nil, errCorrupt
		}
		b = rest
		return v, nil
	}
	topic, err := next()
	if err != nil {
		return e, err
	}
	e.Topic = string(topic)
	if e.Key, err = next(); err != nil {
		return e, err
	}
	if e.Value, err = next(); err != nil {
		return e, err
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > 64 {
		return e, errCorrupt
	}
	b = b[w:]
	for range n {
		k, err := next()
		if err != nil {
			return e, err
		}
		v, err := next()
		if err != nil {
			return e, err
		}
		e.Headers = append(e.Headers, [2]string{string(k), string(v)})
	}
	return e, nil
}

// partitionMeta is a partition's metadata as stored.
type partitionMeta struct {
	// NextOffset is the next input offset to process; -1 when the store
	// holds nothing for the partition.
	NextOffset int64
	OutboxSeq  uint64
	EventTime  time.Time
	// Clock is the partition's effective time (projections.Partition).
	Clock     time.Time
	OpenCarts int64
	Timers    int64
	// Runs holds the last run time of each scheduled flow, by name.
	Runs map[string]time.Time
	// Lineage is the state's lineage (see changelogMeta); 0 for a store
	// that predates the changelog.
	Lineage uint64
	// Standby marks a standby copy: the changelog's records before offset
	// ChangelogNext are applied, and nothing else (no outbox, no output);
	// Applied is when it last applied the changelog. An owner's store has
	// Standby false.
	Standby       bool
	ChangelogNext int64
	Applied       time.Time
}

func getInt(r pebble.Reader, key []byte) (int64, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("meta %x: bad length %d", key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

func loadMeta(r pebble.Reader, p int32, flows *projections.Config) (partitionMeta, error) {
	m := partitionMeta{NextOffset: -1, Runs: map[string]time.Time{}}
	var err error
	read := func(k byte) int64 {
		if err != nil {
			return 0
		}
		v, ok, e := getInt(r, metaKey(p, k))
		if e != nil {
			err = e
		}
		if !ok && k == metaNextOffset {
			return -1
		}
		return v
	}
	m.NextOffset = read(metaNextOffset)
	m.OutboxSeq = uint64(read(metaOutboxSeq))
	if t := read(metaEventTime); t != 0 {
		m.EventTime = time.Unix(0, t).UTC()
	}
	if t := read(metaClock); t != 0 {
		m.Clock = time.Unix(0, t).UTC()
	}
	m.OpenCarts = read(metaOpenCarts)
	m.Timers = read(metaTimers)
	m.Lineage = uint64(read(metaLineage))
	if next := read(metaStandby); next > 0 {
		m.Standby, m.ChangelogNext = true, next-1
		if t := read(metaStandbyApplied); t != 0 {
			m.Applied = time.Unix(0, t).UTC()
		}
	}
	if flows != nil {
		for _, i := range flows.ScheduledFlows() {
			name := flows.Flows[i].Name
			v, ok, e := getInt(r, scheduleKey(p, name))
			if e != nil && err == nil {
				err = e
			}
			if ok {
				m.Runs[name] = time.Unix(0, v).UTC()
			}
		}
	}
	return m, err
}

func putInt(b *pebble.Batch, key []byte, v int64) error {
	return b.Set(key, binary.BigEndian.AppendUint64(nil, uint64(v)), nil)
}

func storeMeta(b *pebble.Batch, p int32, m partitionMeta) error {
	var et, clock, standby, applied int64
	if !m.EventTime.IsZero() {
		et = m.EventTime.UnixNano()
	}
	if !m.Clock.IsZero() {
		clock = m.Clock.UnixNano()
	}
	if m.Standby {
		standby = m.ChangelogNext + 1
		if !m.Applied.IsZero() {
			applied = m.Applied.UnixNano()
		}
	}
	for _, kv := range []struct {
		k byte
		v int64
	}{{metaNextOffset, m.NextOffset}, {metaOutboxSeq, int64(m.OutboxSeq)}, {metaEventTime, et}, {metaClock, clock},
		{metaOpenCarts, m.OpenCarts}, {metaTimers, m.Timers}, {metaLineage, int64(m.Lineage)},
		{metaStandby, standby}, {metaStandbyApplied, applied}} {
		if err := putInt(b, metaKey(p, kv.k), kv.v); err != nil {
			return err
		}
	}
	for name, t := range m.Runs {
		if err := putInt(b, scheduleKey(p, name), t.UnixNano()); err != nil {
			return err
		}
	}
	return nil
}

// loadState reads a customer's state; nil when there is none.
func loadState(r pebble.Reader, p int32, customer string) (*projections.CustomerState, error) {
	st, _, err := loadStateBytes(r, p, customer)
	return st, err
}

// loadStateBytes is loadState that also returns the state's encoded bytes,
// a copy that the state's strings share (see decodeSharedState); nil and
// no error when the customer has no state.
func loadStateBytes(r pebble.Reader, p int32, customer string) (*projections.CustomerState, []byte, error) {
	return loadStateBytesWith(r, p, customer, nil)
}

// loadStateBytesWith is loadStateBytes with scratch space for the key.
func loadStateBytesWith(r pebble.Reader, p int32, customer string, scratch []byte) (*projections.CustomerState, []byte, error) {
	v, closer, err := r.Get(appendStateKey(scratch[:0], p, customer))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	enc := bytes.Clone(v)
	closer.Close()
	s, err := decodeSharedState(enc)
	if err != nil {
		return nil, nil, fmt.Errorf("state of %q in partition %d: %w", customer, p, err)
	}
	return s, enc, nil
}

// ReadState returns the stored state of a customer in partition p, or nil.
// It reads committed data only and is safe to call from any goroutine.
func (pr *Processor) ReadState(p int32, customer string) (*projections.CustomerState, error) {
	return loadState(pr.db, p, customer)
}

// storeSizes are the memory bounds of a store (see Config).
type storeSizes struct{ blockCache, memTable int64 }

// testStoreSizes are small bounds for the tests' stores.
var testStoreSizes = storeSizes{blockCache: 16 << 20, memTable: 8 << 20}

func openDB(dir string, sz storeSizes) (*pebble.DB, error) {
	opts := &pebble.Options{
		Cache:                       pebble.NewCache(sz.blockCache),
		MemTableSize:                uint64(sz.memTable),
		MemTableStopWritesThreshold: 4,
		MaxConcurrentCompactions:    func() int { return 2 },
		Logger:                      quietLogger{},
	}
	defer opts.Cache.Unref()
	opts.Levels = make([]pebble.LevelOptions, 7)
	for i := range opts.Levels {
		// Bloom filters let a state read skip the tables that do not
		// hold the customer (most of them, in L0 during a catch-up).
		opts.Levels[i] = pebble.LevelOptions{Compression: pebble.SnappyCompression, BlockSize: 32 << 10,
			FilterPolicy: bloom.FilterPolicy(10)}
	}
	return pebble.Open(dir, opts)
}

// quietLogger keeps Pebble's informational chatter out of our logs; fatal
// errors still stop the process.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	slog.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
