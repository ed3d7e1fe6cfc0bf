package processor

import (
	"hash/maphash"
	"math/bits"

	"github.com/cockroachdb/pebble"
)

// keyFilter is a Bloom filter of the customer keys a partition's store
// holds a state for. It answers "certainly not stored" for most new keys
// (a guest's first event, a customer seen for the first time), so that the
// worker skips the Pebble read that would find nothing: such a read
// searches every memtable and, through their filters and indexes, every
// level's table, and was a tenth of the processor's CPU in a catch-up.
//
// It never answers "not stored" for a stored key: every key is added
// before its state commits, and it is built from a snapshot of the store
// with the keys written since the snapshot added (see worker.keyFilter).
// Deleted keys stay in it; they cost a read, as before.
type keyFilter struct {
	bits  []uint64
	mask  uint64 // len(bits)*64 - 1; the size is a power of two
	count int    // keys added
	// capacity is the number of keys the filter is sized for (about 1%
	// false positives); beyond it the worker builds a larger one.
	capacity int
}

// keyFilterHashes is how many bits a key sets: 7 at 10 bits per key.
const keyFilterHashes = 7

// keyFilterMinKeys is the smallest capacity a filter is built for.
const keyFilterMinKeys = 1 << 14

var keyFilterSeed = maphash.MakeSeed()

// newKeyFilter returns an empty filter sized for capacity keys at about
// 10 bits per key (rounded up to a power of two).
func newKeyFilter(capacity int) *keyFilter {
	capacity = max(capacity, keyFilterMinKeys)
	words := 1 << bits.Len(uint(capacity*10/64))
	return &keyFilter{bits: make([]uint64, words), mask: uint64(words*64 - 1), capacity: capacity}
}

// keyHash hashes a customer key; maphash.Bytes of the same bytes is equal.
func keyHash(key string) uint64 { return maphash.String(keyFilterSeed, key) }

// addHash adds a key by its keyHash.
func (f *keyFilter) addHash(h uint64) {
	h1, h2 := h, h>>32|1
	for i := range uint64(keyFilterHashes) {
		b := (h1 + i*h2) & f.mask
		f.bits[b>>6] |= 1 << (b & 63)
	}
	f.count++
}

func (f *keyFilter) add(key string) { f.addHash(keyHash(key)) }

// mayContain reports whether key may have been added; false is certain.
func (f *keyFilter) mayContain(key string) bool {
	h := keyHash(key)
	h1, h2 := h, h>>32|1
	for i := range uint64(keyFilterHashes) {
		b := (h1 + i*h2) & f.mask
		if f.bits[b>>6]&(1<<(b&63)) == 0 {
			return false
		}
	}
	return true
}

// full reports whether the filter holds more keys than it is sized for.
func (f *keyFilter) full() bool { return f.count > f.capacity }

// bytes is the filter's memory.
func (f *keyFilter) bytes() int64 { return int64(len(f.bits) * 8) }

// buildKeyFilter reads every state key of partition part from snap and
// returns a filter of them, sized for twice as many, or nil if stop closed
// first. It closes snap.
func buildKeyFilter(snap *pebble.Snapshot, part int32, stop <-chan struct{}) (*keyFilter, error) {
	defer snap.Close()
	lower, upper := partRange(part, kindState)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	var hashes []uint64
	for ok := it.First(); ok; ok = it.Next() {
		if len(hashes)%4096 == 0 {
			select {
			case <-stop:
				return nil, it.Close()
			default:
			}
		}
		hashes = append(hashes, maphash.Bytes(keyFilterSeed, it.Key()[len(lower):]))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	f := newKeyFilter(2 * len(hashes))
	for _, h := range hashes {
		f.addHash(h)
	}
	return f, nil
}
