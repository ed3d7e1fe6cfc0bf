package processor

import (
	"fmt"
	"runtime"
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

// BenchmarkStateCacheChurn measures what the state cache's map costs per
// entry, beyond the entries' keys and states, after churn in bursts as
// commits make it: 100k entries kept, 20M passed through in bursts of
// 20k, without the copy and with it (the figures behind
// cacheEntryOverhead and cacheDeletes). It reports the live heap per
// entry after a collection.
func BenchmarkStateCacheChurn(b *testing.B) {
	const live, total, burst = 100_000, 20_000_000, 20_000
	for _, copying := range []bool{false, true} {
		b.Run(fmt.Sprintf("copy=%v", copying), func(b *testing.B) {
			for b.Loop() {
				w := &worker{cache: map[string]cachedState{}, cacheBudget: live * (10 + cacheEntryOverhead)}
				for i := range total {
					key := fmt.Sprintf("c-%07d", i) // 10 bytes, as the load's
					w.addToCache(cachedState{key: key})
					if i%burst == burst-1 {
						w.evictCache()
						if copying {
							w.compactCache()
						}
					}
				}
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(ms.HeapAlloc)/float64(len(w.cache)), "heap-B/entry")
				runtime.KeepAlive(w)
			}
		})
	}
}
