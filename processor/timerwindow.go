package processor

import (
	"bytes"
	"slices"
)

// timerWindowSize is how many timer keys a worker reads ahead from its
// partition's timer index at a time.
const timerWindowSize = 512

// timerWindow is the head of a partition's timer index in memory: every
// timer key below end, in key (so due) order, the worker's uncommitted
// changes included. The worker fires timers from it and reads the index
// again only when the window has run dry, instead of opening an iterator
// for every fire round (each event that moves the clock past a due time
// is one).
//
// It holds as long as every change to the partition's timer keys goes
// through set and remove; a worker that did not start from a filled
// window (valid false) fills it before use.
type timerWindow struct {
	valid bool
	keys  [][]byte
	// end is the exclusive upper bound of what keys covers; nil when it
	// covers the rest of the index.
	end []byte
}

// fill replaces the window with keys read from the index in order, at
// most timerWindowSize+1 of them: the one past the size becomes end.
func (t *timerWindow) fill(keys [][]byte) {
	t.valid, t.end = true, nil
	if len(keys) > timerWindowSize {
		t.end = keys[timerWindowSize]
		keys = keys[:timerWindowSize]
	}
	t.keys = keys
}

// covers reports whether k falls inside the window.
func (t *timerWindow) covers(k []byte) bool {
	return t.valid && (t.end == nil || bytes.Compare(k, t.end) < 0)
}

// set records that the timer key k now exists (a key inside the window is
// copied).
func (t *timerWindow) set(k []byte) {
	if !t.covers(k) {
		return
	}
	i, found := slices.BinarySearchFunc(t.keys, k, bytes.Compare)
	if found {
		return
	}
	t.keys = slices.Insert(t.keys, i, bytes.Clone(k))
	if len(t.keys) > 2*timerWindowSize {
		// Bounded: give the tail back to the index.
		t.end = t.keys[timerWindowSize]
		clear(t.keys[timerWindowSize:])
		t.keys = t.keys[:timerWindowSize]
	}
}

// remove records that the timer key k no longer exists.
func (t *timerWindow) remove(k []byte) {
	if !t.covers(k) {
		return
	}
	switch i, found := slices.BinarySearchFunc(t.keys, k, bytes.Compare); {
	case !found:
	case i == 0: // a fired timer: the window's head
		t.keys[0] = nil
		t.keys = t.keys[1:]
	default:
		t.keys = slices.Delete(t.keys, i, i+1)
	}
}

// dry reports whether the window must be filled from the index before the
// worker can tell the next due timer.
func (t *timerWindow) dry() bool {
	return !t.valid || len(t.keys) == 0 && t.end != nil
}
