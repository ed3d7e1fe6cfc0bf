package projections

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// FuzzApply reads the fuzzer's bytes as a program of events and timer
// firings for a few customers and carts, runs it like the runtime does,
// and checks the fold's invariants after every step. Events go through
// events.Encode and events.Decode; ones the decoder rejects are skipped,
// as the processor dead-letters them.
//
// Each operation takes 8 bytes:
//
//	op  cust cart sku qty price dt dt
//
// op selects an event type, a timer firing or an advance; dt (int16, in
// units of 37 s, so about ±14 days) moves the program's clock, backwards
// too, which makes events late.
func FuzzApply(f *testing.F) {
	seed := func(ops ...[8]byte) []byte {
		var b []byte
		for _, op := range ops {
			b = append(b, op[:]...)
		}
		return b
	}
	at := func(d time.Duration) (byte, byte) {
		var b [2]byte
		binary.LittleEndian.PutUint16(b[:], uint16(int16(d/(37*time.Second))))
		return b[0], b[1]
	}
	lo, hi := at(15 * time.Minute)
	dlo, dhi := at(3 * time.Hour)
	blo, bhi := at(-20 * time.Minute)
	f.Add(seed([8]byte{fzAdd, 0, 0, 1, 2, 40, 0, 0}, [8]byte{fzAdvance, 0, 0, 0, 0, 0, lo, hi},
		[8]byte{fzAdvance, 0, 0, 0, 0, 0, dlo, dhi}, [8]byte{fzCheckout, 0, 0, 0, 0, 0, lo, hi}))
	f.Add(seed([8]byte{fzAdd, 1, 1, 1, 1, 90, 0, 0}, [8]byte{fzAdd, 1, 1, 2, 3, 20, 1, 0},
		[8]byte{fzUpdate, 1, 1, 1, 0, 0, 1, 0}, [8]byte{fzFire, 1, 1, 0, 0, 0, dlo, dhi},
		[8]byte{fzRemove, 1, 1, 2, 0, 0, blo, bhi}, [8]byte{fzAdvance, 0, 0, 0, 0, 0, dlo, dhi}))
	f.Add(seed([8]byte{fzProfile, 0, 0, 0, 0, 0, 0, 0}, [8]byte{fzAdd, 0, 2, 0, 1, 255, 0, 0},
		[8]byte{fzSnapshot, 0, 2, 3, 2, 7, lo, hi}, [8]byte{fzDiscard, 0, 2, 0, 0, 0, lo, hi},
		[8]byte{fzAdd, 0, 2, 1, 1, 9, dlo, dhi}, [8]byte{fzErase, 0, 0, 0, 0, 0, lo, hi},
		[8]byte{fzAdd, 0, 2, 1, 1, 9, lo, hi}, [8]byte{fzAdvance, 0, 0, 0, 0, 0, dlo, dhi}))
	f.Add(seed([8]byte{fzAdd, 2, 0, 0, 1, 50, 0, 0}, [8]byte{fzLogin, 0, 0, 0, 0, 0, 0, 0},
		[8]byte{fzAssign, 0, 0, 0, 2, 50, 0, 0}, [8]byte{fzStarted, 0, 0, 0, 0, 0, lo, hi},
		[8]byte{fzCheckout, 0, 0, 0, 0, 0, blo, bhi}, [8]byte{fzAdd, 0, 0, 0, 1, 50, blo, bhi},
		[8]byte{fzAdvance, 0, 0, 0, 0, 0, dlo, dhi}))
	cfg := replayConfig(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSim(cfg)
		s.chk.allowRederive = true
		clock := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
		for n := 0; len(data) >= 8 && n < 200; n++ {
			op := data[:8]
			data = data[8:]
			clock = clock.Add(time.Duration(int16(binary.LittleEndian.Uint16(op[6:]))) * 37 * time.Second)
			var err error
			switch kind := op[0] % fzOps; kind {
			case fzFire:
				key, cart := fuzzKey(op[1]), fmt.Sprintf("k%d", op[2]%3)
				err = s.fire(key, cart, s.timers[timerKey{key, cart}], clock)
			case fzAdvance:
				err = s.advance(clock)
			default:
				ev, key, derr := fuzzEvent(kind, op, clock, n)
				if derr != nil {
					continue
				}
				err = s.event(key, ev)
			}
			if err == nil {
				err = s.checkAll()
			}
			if err != nil {
				t.Fatalf("op %d (%v): %v", n, op, err)
			}
		}
	})
}

// Fuzz operations.
const (
	fzAdd = iota
	fzUpdate
	fzRemove
	fzSnapshot
	fzDiscard
	fzStarted
	fzCheckout
	fzLogin
	fzProfile
	fzErase
	fzAssign
	fzFire
	fzAdvance
	fzOps
)

func fuzzKey(b byte) string {
	switch b % 3 {
	case 0:
		return "c-0"
	case 1:
		return "c-1"
	}
	return "anon:g-0"
}

// fuzzEvent builds the event of one operation and runs it through the
// codec. The customer key is the event's own.
func fuzzEvent(kind byte, op []byte, at time.Time, n int) (*events.Event, string, error) {
	key := fuzzKey(op[1])
	ref := events.CartRef{CartID: fmt.Sprintf("k%d", op[2]%3)}
	if anon, ok := strings.CutPrefix(key, events.AnonPrefix); ok {
		ref.AnonymousID = anon
	} else {
		ref.CustomerID = key
	}
	full := ref
	full.CartType, full.Channel, full.Currency = "shopping", "b2c", "EUR"
	switch op[3] % 4 {
	case 1:
		full.Currency = "JPY"
	case 2:
		full.Channel = "b2b"
	case 3:
		full.CartType = "wishlist"
	}
	sku := fmt.Sprintf("S%d", op[3]%4)
	qty := int64(op[4] % 5) // 0 is invalid for an add: the decoder must reject it
	price := int64(op[5]) * 97
	item := events.Item{SKU: sku, Quantity: qty, UnitPriceMinor: price}
	var typ string
	var data any
	switch kind {
	case fzAdd:
		typ, data = events.TypeItemAdded, events.ItemAdded{CartRef: full, Item: item}
	case fzUpdate:
		typ, data = events.TypeItemUpdated, events.ItemUpdated{CartRef: ref, SKU: sku, Quantity: qty, UnitPriceMinor: price % 500}
	case fzRemove:
		typ, data = events.TypeItemRemoved, events.ItemRemoved{CartRef: ref, SKU: sku}
	case fzSnapshot:
		d := events.CartUpdated{CartRef: full}
		for i := range int(op[4] % 4) {
			d.Items = append(d.Items, events.Item{SKU: fmt.Sprintf("S%d", (int(op[3])+i)%5), Quantity: int64(1 + i), UnitPriceMinor: price})
		}
		typ, data = events.TypeCartUpdated, d
	case fzDiscard:
		typ, data = events.TypeCartDiscarded, events.CartDiscarded{CartRef: ref}
	case fzStarted:
		typ, data = events.TypeCheckoutStarted, events.CheckoutStarted{CartRef: ref}
	case fzCheckout:
		typ, data = events.TypeCheckoutCompleted, events.CheckoutCompleted{CartRef: ref, OrderID: fmt.Sprintf("o-%d", n), TotalMinor: price}
	case fzLogin, fzProfile, fzErase, fzAssign:
		if ref.CustomerID == "" {
			ref.CustomerID, full.CustomerID, full.AnonymousID, key = "c-0", "c-0", "", "c-0"
		}
		switch kind {
		case fzLogin:
			typ, data = events.TypeCustomerLoggedIn, events.CustomerLoggedIn{CustomerID: ref.CustomerID, AnonymousID: "g-0"}
		case fzProfile:
			email, consent := fmt.Sprintf("x%d@example.com", op[5]), op[4]%2 == 0
			typ, data = events.TypeCustomerUpdated, events.CustomerUpdated{CustomerID: ref.CustomerID, Email: &email, MarketingConsent: &consent}
		case fzErase:
			typ, data = events.TypeCustomerErased, events.CustomerErased{CustomerID: ref.CustomerID}
		case fzAssign:
			d := events.CartAssigned{CartRef: full, FromKey: "anon:g-0", Items: []events.Item{item},
				CreatedAt: at.Add(-time.Duration(op[5]) * time.Minute), ModifiedAt: at}
			typ, data = events.TypeCartAssigned, d
		}
	}
	ev, err := encodeEvent(fmt.Sprintf("e-%d", n), typ, at, data)
	if err != nil {
		return nil, "", err
	}
	if ev.Key() != key {
		panic(fmt.Sprintf("fuzz event for %q has key %q", key, ev.Key()))
	}
	return ev, key, nil
}

// FuzzDecodeApply feeds arbitrary record values to the decoder and every
// value it accepts to the fold, on top of a customer with open carts, then
// lets all timers run out. Nothing may panic, and the invariants hold.
func FuzzDecodeApply(f *testing.F) {
	for _, v := range []string{
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.item_added","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","cart_id":"k0","cart_type":"shopping","channel":"b2c","currency":"EUR","metadata":{"a":"b"},"item":{"sku":"A","quantity":2,"unit_price_minor":1500}}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.item_updated","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","cart_id":"k0","sku":"A","quantity":0}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.item_removed","time":"2026-11-26T09:30:00Z","data":{"customer_id":"c-0","cart_id":"k1","sku":"B"}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.updated","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","cart_id":"k1","currency":"JPY","items":[{"sku":"A","quantity":10000,"unit_price_minor":10000000000}]}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.discarded","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","cart_id":"k0"}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"checkout.started","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","cart_id":"k0"}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"checkout.completed","time":"2026-11-26T11:30:00Z","data":{"customer_id":"c-0","cart_id":"k0","order_id":"o1","total_minor":3000,"discount_codes":["X"]}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"customer.logged_in","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","anonymous_id":"g"}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"customer.updated","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","email":"a@b.c","time_zone":"Europe/Berlin","marketing_consent":true}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"customer.erased","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0"}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.assigned","time":"2026-11-26T10:30:00Z","data":{"customer_id":"c-0","cart_id":"k0","currency":"EUR","from_key":"anon:g","items":[],"created_at":"2020-01-01T00:00:00Z","modified_at":"2026-11-26T10:30:00Z"}}`,
		`{"specversion":"1.0","id":"e1","source":"s","type":"cart.item_added","time":"0001-01-01T00:00:01Z","data":{"anonymous_id":"g","cart_id":"k0","currency":"EUR","item":{"sku":"A","quantity":1,"unit_price_minor":0}}}`,
	} {
		f.Add([]byte(v))
	}
	cfg := replayConfig(f)
	prelude := []string{
		`{"specversion":"1.0","id":"p1","source":"s","type":"cart.item_added","time":"2026-11-26T10:00:00Z","data":{"customer_id":"c-0","cart_id":"k0","cart_type":"shopping","channel":"b2c","currency":"EUR","item":{"sku":"A","quantity":2,"unit_price_minor":1500}}}`,
		`{"specversion":"1.0","id":"p2","source":"s","type":"cart.item_added","time":"2026-11-26T10:01:00Z","data":{"customer_id":"c-0","cart_id":"k1","cart_type":"shopping","channel":"b2b","currency":"USD","item":{"sku":"B","quantity":1,"unit_price_minor":700}}}`,
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		ev, err := events.Decode(value, time.Time{})
		if err != nil {
			return
		}
		s := newSim(cfg)
		s.chk.allowRederive = true
		for _, p := range prelude {
			pev, err := events.Decode([]byte(p), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.event(pev.Key(), pev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.advance(time.Date(2026, 11, 26, 10, 25, 0, 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
		key := ev.Key()
		if key == "" {
			t.Fatalf("a decoded %s event has no key", ev.Type)
		}
		if err := s.event(key, ev); err != nil {
			t.Fatal(err)
		}
		if err := s.checkAll(); err != nil {
			t.Fatal(err)
		}
		if err := s.advance(ev.Time.Add(30 * 24 * time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.checkAll(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseFlows: ParseFlows never panics, and what it accepts is valid:
// steps in order and before the expiry, and a fold that runs with it.
func FuzzParseFlows(f *testing.F) {
	f.Add([]byte(testFlows))
	f.Add([]byte(replayFlows))
	f.Add([]byte("flows:\n  - name: x\n    steps: [{after: 1d12h, action: email}]\n    expire_after: 3d\n"))
	f.Add([]byte("flows: []"))
	f.Add([]byte("flows:\n  - name: a\n    steps:\n      - after: 2h\n        action: sms\n      - after: 1h\n        discount: {percent: 5, amount_minor: 1}\n"))
	f.Add([]byte("guards:\n  quiet_hours: {from: \"21:00\", to: \"08:00\"}\n  frequency_cap: {max: 1, per: 16h}\n  default_time_zone: Europe/Berlin\n" +
		"  combine_window: 10m\n  max_messages_per_cart: 2\nflows:\n  - name: a\n    match: {include_skus: [A], locales: [de], b2b: false}\n" +
		"    steps: [{after: 1h, action: email}]\n    guards: {quiet_hours: {off: true}, requires_consent: true}\n" +
		"  - name: b\n    match: {exclude_skus: [A], min_items: 2, max_items: 3}\n    steps: [{after: 1h, action: email}]\n"))
	f.Add([]byte(variantFlows))
	f.Add([]byte("flows:\n  - name: a\n    expire_after: 2d\n    steps:\n      - after: 1h\n        action: email\n        variants:\n" +
		"          - {name: a, weight: 1, after: 30h}\n          - {name: b, weight: 2, no_discount: true}\n      - after: 1d\n        action: email\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		flows, err := ParseFlows("fuzz.yaml", data)
		if err != nil {
			if _, ok := err.(FlowErrors); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			for _, fe := range err.(FlowErrors) {
				if fe.Msg == "" {
					t.Fatalf("an error without a message: %+v", fe)
				}
			}
			return
		}
		if len(flows) == 0 {
			t.Fatal("no flows and no error")
		}
		names := map[string]bool{}
		for _, fl := range flows {
			if names[fl.Name] || fl.Name == "" {
				t.Fatalf("flow name %q empty or twice", fl.Name)
			}
			names[fl.Name] = true
			if len(fl.Steps) == 0 || fl.ExpireAfter <= 0 || fl.AttributionWindow <= 0 || fl.HoldoutPercent < 0 || fl.HoldoutPercent > 100 {
				t.Fatalf("invalid flow accepted: %+v", fl)
			}
			g := fl.Guards
			if fc := g.FrequencyCap; fc != nil && (fc.Max < 1 || fc.Max > MaxSentTimes/2 || fc.Per <= 0) {
				t.Fatalf("flow %s: invalid frequency cap accepted: %+v", fl.Name, *fc)
			}
			if q := g.QuietHours; q != nil && (q.From == q.To || q.From < 0 || q.To < 0 || q.From >= 24*60 || q.To >= 24*60) {
				t.Fatalf("flow %s: invalid quiet hours accepted: %+v", fl.Name, *q)
			}
			if _, ok := location(g.DefaultTimeZone); !ok || g.MaxMessagesPerCart < 0 || g.CombineWindow < 0 {
				t.Fatalf("flow %s: invalid guards accepted: %+v", fl.Name, g)
			}
			if m := fl.Match; m.MinValueMinor < 0 || m.MinItems < 0 || (m.MaxItems > 0 && m.MaxItems < m.MinItems) {
				t.Fatalf("flow %s: invalid match accepted: %+v", fl.Name, m)
			}
			for i, st := range fl.Steps {
				if st.After <= 0 || st.After >= fl.ExpireAfter || (i > 0 && st.After <= fl.Steps[i-1].After) {
					t.Fatalf("flow %s: step %d after %s accepted (expire %s)", fl.Name, i, st.After, fl.ExpireAfter)
				}
				if st.Action != ActionEmail && st.Action != ActionWebhook {
					t.Fatalf("flow %s: action %q accepted", fl.Name, st.Action)
				}
				// Variants: 2 to MaxVariants, names unique, weights in
				// range; every customer's steps in order, before expiry.
				if n := len(st.Variants); n == 1 || n > MaxVariants {
					t.Fatalf("flow %s: step %d with %d variants accepted", fl.Name, i, n)
				}
				vnames := map[string]bool{}
				for _, v := range st.Variants {
					if vnames[v.Name] || v.Name == "" || v.Weight < 1 || v.Weight > MaxVariantWeight || v.After < 0 {
						t.Fatalf("flow %s: step %d: invalid variant accepted: %+v", fl.Name, i, v)
					}
					vnames[v.Name] = true
				}
				lo, _, hi, _ := st.span()
				if hi >= fl.ExpireAfter || (i > 0 && fl.Schedule == nil && lo <= func() time.Duration { _, _, h, _ := fl.Steps[i-1].span(); return h }()) {
					t.Fatalf("flow %s: step %d spans %s to %s, out of order or past expiry %s", fl.Name, i, lo, hi, fl.ExpireAfter)
				}
			}
		}
		s := newSim(NewConfig(flows))
		ev, err := encodeEvent("e1", events.TypeItemAdded, t0, addItem1("c-1", "k1", "A"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.event("c-1", ev); err != nil {
			t.Fatal(err)
		}
		if err := s.advance(t0.Add(400 * 24 * time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.checkAll(); err != nil {
			t.Fatal(err)
		}
	})
}
