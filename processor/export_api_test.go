package processor

// Test-only exports for the API's tests in package processor_test.

import (
	"iter"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/projections"
)

// SeedStore writes customer states straight into the Pebble store in dir,
// as a processor that consumed every partition of an empty input topic
// (with the given partition count) and then had these states would hold
// them: each state under its key's partition, the timer of every cart with
// a WakeAt, every partition's next offset 0, its open-cart and timer
// counts. It returns the number of open carts written; for the load
// tests, which need millions of carts in seconds.
func SeedStore(dir string, partitions int, states iter.Seq[*projections.CustomerState]) (openCarts int64, err error) {
	db, err := openDB(dir, testStoreSizes)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	open := make([]int64, partitions)
	timers := make([]int64, partitions)
	b := db.NewBatch()
	var buf []byte
	for st := range states {
		p := int32(keyPartitioner.Partition(&kgo.Record{Key: []byte(st.Key)}, partitions))
		buf = appendState(buf[:0], st)
		if err := b.Set(stateKey(p, st.Key), buf, nil); err != nil {
			return 0, err
		}
		for _, c := range st.Carts {
			if !c.WakeAt.IsZero() {
				if err := b.Set(timerKey(p, c.WakeAt, st.Key, c.ID), nil, nil); err != nil {
					return 0, err
				}
				timers[p]++
			}
		}
		n := int64(st.OpenCarts())
		open[p] += n
		openCarts += n
		if b.Len() > 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return 0, err
			}
			b = db.NewBatch()
		}
	}
	for p := range partitions {
		if err := storeMeta(b, int32(p), partitionMeta{NextOffset: 0, OpenCarts: open[p], Timers: timers[p]}); err != nil {
			return 0, err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, err
	}
	// Flush and compact, as a long-running store would be: reads then hit
	// sorted tables, not a memtable being replayed from the WAL.
	if err := db.Flush(); err != nil {
		return 0, err
	}
	return openCarts, db.Compact([]byte{0}, []byte{0xff, 0xff, 0xff, 0xff, 0xff}, true)
}

// CheckpointStore copies the Pebble store in src to dst (which must not
// exist), sharing its immutable tables through hard links.
func CheckpointStore(src, dst string) error {
	db, err := openDB(src, testStoreSizes)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Checkpoint(dst)
}
