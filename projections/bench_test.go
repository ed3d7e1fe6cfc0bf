package projections

import (
	"fmt"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// BenchmarkApply folds a realistic event mix (the replay test's
// generator: adds, changes, snapshots, checkouts, discards, logins,
// profile changes, a few erasures and assignments, some late events) over
// a pool of 10k customers whose states live in a map, as in the
// processor's state cache. Decoding is not measured (see BenchmarkDecode).
func BenchmarkApply(b *testing.B) {
	cfg := replayConfig(b)
	const customers, n = 10_000, 1 << 16
	log := genLog(7, n, customers, 0)
	type rec struct {
		key string
		ev  *events.Event
	}
	recs := make([]rec, n)
	for i, e := range log {
		ev, err := events.Decode(e.Value, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = rec{e.Key, ev}
	}
	states := make(map[string]*CustomerState, customers)
	// Warm up: one pass, so that the measured events meet grown states.
	for _, r := range recs {
		if eff := Apply(states[r.key], r.key, r.ev, cfg); eff.State != nil {
			states[r.key] = eff.State
		} else {
			delete(states, r.key)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := recs[i%n]
		i++
		if eff := Apply(states[r.key], r.key, r.ev, cfg); eff.State != nil {
			states[r.key] = eff.State
		} else {
			delete(states, r.key)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkApplyCarts measures one item_added for a customer who already
// has the given number of carts (B2B buyers and bots can have many).
func BenchmarkApplyCarts(b *testing.B) {
	cfg := replayConfig(b)
	for _, carts := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("carts=%d", carts), func(b *testing.B) {
			var st *CustomerState
			for i := range carts {
				ev, err := encodeEvent("e", events.TypeItemAdded, t0, addItem1("c-1", fmt.Sprintf("k%04d", i), "A"))
				if err != nil {
					b.Fatal(err)
				}
				st = Apply(st, "c-1", ev, cfg).State
			}
			ev, err := encodeEvent("e", events.TypeItemAdded, t0.Add(time.Minute), addItem1("c-1", "k0000", "A"))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				st = Apply(st, "c-1", ev, cfg).State
			}
		})
	}
}

// BenchmarkFire runs the timer of a cart whose first step is due, on a
// fresh one-cart state each time (building the state is part of the
// measure: one Apply of an item_added).
func BenchmarkFire(b *testing.B) {
	cfg := replayConfig(b)
	ev, err := encodeEvent("e-1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		eff := Apply(nil, "c-1", ev, cfg)
		// The email step needs consent; in Berlin, 10:10 UTC is outside
		// the quiet hours (in the default New York it is not).
		eff.State.Profile.MarketingConsent, eff.State.Profile.TimeZone = true, "Europe/Berlin"
		eff = Fire(eff.State, "c-1", "k1", eff.State.Carts[0].WakeAt, cfg)
		if len(eff.Decisions) != 1 {
			b.Fatalf("%d decisions", len(eff.Decisions))
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fires/s")
}

// BenchmarkDecode decodes and validates a typical cart.item_added record.
func BenchmarkDecode(b *testing.B) {
	value := []byte(`{"specversion":"1.0","id":"e-9f1c2a","source":"shop-eu","type":"cart.item_added",` +
		`"time":"2026-11-26T10:00:00Z","subject":"cart-42","datacontenttype":"application/json",` +
		`"data":{"customer_id":"c-1001","cart_id":"cart-42","cart_type":"shopping","site":"eu","channel":"b2c","currency":"EUR",` +
		`"item":{"sku":"SKU-1","name":"Trail shoe","quantity":1,"unit_price_minor":5999,"category":"footwear",` +
		`"image_url":"https://img.example/sku-1.jpg"}}}`)
	now := time.Date(2026, 11, 26, 10, 0, 1, 0, time.UTC)
	if _, err := events.Decode(value, now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	for b.Loop() {
		if _, err := events.Decode(value, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
