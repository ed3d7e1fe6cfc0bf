package projections

import (
	"slices"
	"time"
)

// Input is idempotent per customer: CloudEvents names an event by its
// source and id, and a shop that re-sends on a timeout sends the same pair
// again. The fold drops a repeat of any of the customer's last
// MaxSeenEvents events whose event time is at most SeenWindow older than
// the newest of them. The window is kept in the state (CustomerState.Seen),
// so a repeat is dropped the same way live, after a restart and in a
// replay.
const (
	MaxSeenEvents = 64
	SeenWindow    = 24 * time.Hour
)

// SeenEvent is one entry of the window: a 64-bit hash of (source, id) and
// the event's time. With at most MaxSeenEvents entries per customer, the
// chance that a new event collides with one of them is about 64 / 2⁶⁴.
type SeenEvent struct {
	Hash uint64    `json:"hash"`
	At   time.Time `json:"at"`
}

// EventHash is the window's hash of an event's CloudEvents source and id.
func EventHash(source, id string) uint64 {
	// FNV-1a, inline: no allocation on the per-event path.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(source); i++ {
		h = (h ^ uint64(source[i])) * prime
	}
	h *= prime // the separator, a zero byte
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * prime
	}
	return h
}

// seen reports whether the window holds h.
func (s *CustomerState) seen(h uint64) bool {
	return slices.ContainsFunc(s.Seen, func(e SeenEvent) bool { return e.Hash == h })
}

// noteSeen adds an event to the window, in arrival order, and prunes it:
// entries more than SeenWindow older than the newest go, then the oldest
// arrivals beyond MaxSeenEvents.
func (s *CustomerState) noteSeen(h uint64, at time.Time) {
	s.Seen = append(s.Seen, SeenEvent{Hash: h, At: at})
	newest := at
	for _, e := range s.Seen {
		newest = later(newest, e.At)
	}
	cut := newest.Add(-SeenWindow)
	s.Seen = slices.DeleteFunc(s.Seen, func(e SeenEvent) bool { return e.At.Before(cut) })
	if n := len(s.Seen) - MaxSeenEvents; n > 0 {
		s.Seen = slices.Delete(s.Seen, 0, n)
	}
}
