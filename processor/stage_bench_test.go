package processor

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// benchStates folds synthetic shopper traffic under the default flows and
// returns the resulting customer states: the states the codec and the
// cache see in a catch-up.
func benchStates(b *testing.B) []*projections.CustomerState {
	b.Helper()
	data, err := os.ReadFile("../deploy/flows/default.yaml")
	if err != nil {
		b.Fatal(err)
	}
	flows, err := projections.ParseFlows("default.yaml", data)
	if err != nil {
		b.Fatal(err)
	}
	cfg := projections.NewConfig(flows)
	sim := shopper.New(shopper.Options{Seed: 5, Customers: 2000})
	states := map[string]*projections.CustomerState{}
	now := time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC)
	for range 20_000 {
		now = now.Add(time.Second)
		r := sim.Next(now)
		ev, err := events.Decode(r.Value, time.Time{})
		if err != nil {
			continue
		}
		if eff := projections.Apply(states[r.Key], r.Key, ev, cfg); eff.State != nil {
			states[r.Key] = eff.State
		}
	}
	out := make([]*projections.CustomerState, 0, len(states))
	for _, st := range states {
		out = append(out, st)
	}
	return out
}

// BenchmarkStateCodec measures the binary state codec per state: encoding
// (every dirty state at commit) and the shared decode (every cache hit).
func BenchmarkStateCodec(b *testing.B) {
	states := benchStates(b)
	encoded := make([][]byte, len(states))
	size := 0
	for i, st := range states {
		encoded[i] = appendState(nil, st)
		size += len(encoded[i])
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 4096)
		for i := 0; b.Loop(); i++ {
			buf = appendState(buf[:0], states[i%len(states)])
		}
		b.ReportMetric(float64(size)/float64(len(states)), "B/state")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := decodeSharedState(encoded[i%len(encoded)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTimerWindow measures the in-memory head of the timer index per
// change: a timer set and another removed in a full window, as an event
// that moves a cart's timer does.
func BenchmarkTimerWindow(b *testing.B) {
	base := time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC)
	key := func(i int) []byte {
		return timerKey(3, base.Add(time.Duration(i)*time.Second), fmt.Sprintf("c-%06d", i%100_000), "cart-1")
	}
	var keys [][]byte
	for i := range timerWindowSize + 1 {
		keys = append(keys, key(2*i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	changes := make([][]byte, 4096)
	for i := range changes {
		changes[i] = key(rng.IntN(2 * timerWindowSize))
	}
	var w timerWindow
	w.fill(keys)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.set(changes[i%len(changes)])
		w.remove(changes[(i+len(changes)/2)%len(changes)])
	}
}
