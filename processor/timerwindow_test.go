package processor

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
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

// TestNewTimersInRangeMatchesEveryMove moves random carts' timers
// through a batch's index changes, some several times and some back to
// where they were, and checks after every move that the new timer keys
// appendNewTimers finds in a random range are the first n of those that a
// look at every move finds.
func TestNewTimersInRangeMatchesEveryMove(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	due := func() time.Time { return base.Add(time.Duration(rng.IntN(500)) * time.Second) }
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := newIndexChanges()
	for step := range 20_000 {
		customer, cart := fmt.Sprintf("c-%d", rng.IntN(400)), "cart"
		var old time.Time
		if i, ok := c.at[cartRef{customer, cart}]; ok && c.moves[i].wake {
			old = c.moves[i].newWake
		}
		switch r := rng.IntN(10); {
		case r == 0:
			c.moveTimer(customer, cart, old, time.Time{}) // the timer is gone
		case r == 1 && !old.IsZero():
			c.moveTimer(customer, cart, old, c.moves[c.at[cartRef{customer, cart}]].oldWake) // back to the committed one
		default:
			c.moveTimer(customer, cart, old, due())
		}
		lower, end := timerKey(3, due(), "", ""), timerKey(3, due(), "", "")
		if bytes.Compare(lower, end) > 0 {
			lower, end = end, lower
		}
		if rng.IntN(4) == 0 {
			end = partPrefix(3, kindTimer+1) // no upper bound
		}
		var want [][]byte
		for _, m := range c.moves {
			if !m.wake || m.newWake.IsZero() || m.newWake.Equal(m.oldWake) {
				continue
			}
			if k := timerKey(3, m.newWake, m.ref.customer, m.ref.cart); bytes.Compare(k, lower) >= 0 && bytes.Compare(k, end) < 0 {
				want = append(want, k)
			}
		}
		n := 1 + rng.IntN(40)
		got := c.appendNewTimers(nil, 3, lower, end, n)
		for _, g := range [][][]byte{want, got} {
			slices.SortFunc(g, bytes.Compare)
		}
		got = slices.CompactFunc(got, bytes.Equal)
		want, got = want[:min(n, len(want))], got[:min(n, len(got))]
		if !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("step %d: found %d keys, every move has %d in range (first %d)", step, len(got), len(want), n)
		}
		if step%5000 == 4999 { // a commit starts the next batch's changes
			if err := c.writeTo(db.NewBatch(), 3, new([]byte)); err != nil {
				t.Fatal(err)
			}
		}
	}
}
