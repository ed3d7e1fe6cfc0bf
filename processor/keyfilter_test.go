package processor

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble"
)

// TestKeyFilterHasEveryStoredKey builds the filter from a store's
// snapshot, as a worker does, and checks that it never says "not stored"
// for a stored key of the partition, and that it says so for most keys it
// was not given (the point of it).
func TestKeyFilterHasEveryStoredKey(t *testing.T) {
	db, err := openDB(t.TempDir(), storeSizes{blockCache: 8 << 20, memTable: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const stored = 50_000
	b := db.NewBatch()
	for i := range stored {
		if err := b.Set(stateKey(3, fmt.Sprintf("c-%d", i)), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		// Another partition's keys and another kind's must stay out.
		if err := b.Set(stateKey(4, fmt.Sprintf("other-%d", i)), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	f, err := buildKeyFilter(db.NewSnapshot(), 3, make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	if f.count != stored {
		t.Fatalf("the filter has %d keys, the partition %d", f.count, stored)
	}
	for i := range stored {
		if k := fmt.Sprintf("c-%d", i); !f.mayContain(k) {
			t.Fatalf("stored key %q is missing from the filter", k)
		}
	}
	positives := 0
	const probes = 100_000
	for i := range probes {
		if f.mayContain(fmt.Sprintf("other-%d", i)) {
			positives++
		}
	}
	// Sized for twice the keys at 10 bits each: well under 1%.
	if rate := float64(positives) / probes; rate > 0.02 {
		t.Fatalf("false positive rate %.3f, want under 0.02", rate)
	}
	if f.full() {
		t.Fatal("a freshly built filter is full")
	}
	for i := range f.capacity {
		f.add(fmt.Sprintf("new-%d", i))
	}
	if !f.full() {
		t.Fatalf("a filter with %d keys past a capacity of %d is not full", f.count, f.capacity)
	}
}

// TestKeyFilterBuildStops checks that a build gives up when its worker
// stops.
func TestKeyFilterBuildStops(t *testing.T) {
	db, err := openDB(t.TempDir(), storeSizes{blockCache: 8 << 20, memTable: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewBatch()
	for i := range 10_000 {
		if err := b.Set(stateKey(0, fmt.Sprintf("c-%d", i)), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	close(stop)
	f, err := buildKeyFilter(db.NewSnapshot(), 0, stop)
	if err != nil || f != nil {
		t.Fatalf("a stopped build returned %v, %v; want nil, nil", f, err)
	}
}

// TestKeyFilterKeepsKeysWrittenDuringItsBuild checks the worker's hand-over:
// a key stored after the build's snapshot is in the filter it takes over.
func TestKeyFilterKeepsKeysWrittenDuringItsBuild(t *testing.T) {
	w := &worker{knownBuild: make(chan keyFilterBuild, 1), building: true}
	w.rememberKey("written-during-the-build")
	w.knownBuild <- keyFilterBuild{f: newKeyFilter(0)} // built from a snapshot without it
	w.useKeyFilter()
	if w.known == nil || w.building {
		t.Fatal("the worker did not take the build over")
	}
	if !w.known.mayContain("written-during-the-build") {
		t.Fatal("a key written during the build is missing from the filter")
	}
	w.rememberKey("written-after")
	if !w.known.mayContain("written-after") {
		t.Fatal("a key written after the build is missing from the filter")
	}
}
