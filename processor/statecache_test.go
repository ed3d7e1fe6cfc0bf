package processor

import (
	"fmt"
	"testing"
)

// TestStateCacheCopiesItselfAfterChurn churns a worker's state cache the
// way commits do (a batch's states added, then evicted down to the
// budget) and checks that it is copied into a new map once deletions
// reach four times its size, with every entry and the byte count kept.
func TestStateCacheCopiesItselfAfterChurn(t *testing.T) {
	w := &worker{cache: map[string]cachedState{}, cacheBudget: 1000 * (10 + 100 + cacheEntryOverhead)}
	copies := 0
	for batch := range 200 {
		for i := range 500 {
			key := fmt.Sprintf("c-%06d", batch*500+i)
			w.uncache(key)
			w.addToCache(cachedState{key: key, enc: make([]byte, 100)})
		}
		w.evictCache()
		want := map[string]int{}
		var bytes int64
		for k, c := range w.cache {
			want[k] = len(c.enc)
			bytes += c.size()
		}
		before := w.cacheDeletes
		w.compactCache()
		if before > 0 && w.cacheDeletes == 0 {
			copies++
		}
		if len(w.cache) != len(want) || bytes != w.cacheBytes {
			t.Fatalf("batch %d: %d entries and %d bytes after the copy, want %d and %d", batch, len(w.cache), w.cacheBytes, len(want), bytes)
		}
		for k, n := range want {
			if c, ok := w.cache[k]; !ok || len(c.enc) != n || c.key != k {
				t.Fatalf("batch %d: entry %s lost or changed by the copy", batch, k)
			}
		}
	}
	// 500 deletions per batch, a copy at 4×1000+1024 of them: one every
	// ten or eleven batches.
	if copies < 15 || copies > 25 {
		t.Fatalf("the cache was copied %d times in 200 batches, want about 18", copies)
	}
}
