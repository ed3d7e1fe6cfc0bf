package processor

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestTimerWindowMirrorsTheIndex applies random timer changes to a
// sorted set standing for the index and to a window over it, refilling
// the window when it runs dry the way fireDue does, and checks after every
// change that the window holds exactly the index's keys below its end.
func TestTimerWindowMirrorsTheIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	key := func() []byte {
		return timerKey(3, base.Add(time.Duration(rng.IntN(5000))*time.Second), fmt.Sprintf("c-%d", rng.IntN(300)), "cart")
	}
	var index [][]byte
	fill := func(w *timerWindow) {
		n := min(len(index), timerWindowSize+1)
		w.fill(slices.Clone(index[:n]))
	}
	var w timerWindow
	for range 4000 {
		index = append(index, key())
	}
	slices.SortFunc(index, bytes.Compare)
	index = slices.CompactFunc(index, bytes.Equal)
	fill(&w)
	for step := range 200_000 {
		if w.dry() {
			fill(&w)
		}
		switch r := rng.IntN(10); {
		case r < 3 && len(w.keys) > 0: // fire the head: remove it
			k := w.keys[0]
			i, _ := slices.BinarySearchFunc(index, k, bytes.Compare)
			index = slices.Delete(index, i, i+1)
			w.remove(k)
		case r < 7: // a new timer anywhere
			k := key()
			if i, found := slices.BinarySearchFunc(index, k, bytes.Compare); !found {
				index = slices.Insert(index, i, k)
			}
			w.set(k)
		case len(index) > 0: // a timer moved away or dropped anywhere
			i := rng.IntN(len(index))
			k := index[i]
			index = slices.Delete(index, i, i+1)
			w.remove(k)
		}
		want := index
		if w.end != nil {
			n, _ := slices.BinarySearchFunc(index, w.end, bytes.Compare)
			want = index[:n]
		}
		if !slices.EqualFunc(w.keys, want, bytes.Equal) {
			t.Fatalf("step %d: the window holds %d keys, the index %d below its end", step, len(w.keys), len(want))
		}
		if len(w.keys) > 2*timerWindowSize {
			t.Fatalf("step %d: the window grew to %d keys", step, len(w.keys))
		}
	}
}
