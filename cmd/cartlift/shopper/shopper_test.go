package shopper

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// virtualClock returns the time of event i when events arrive every step.
func virtualClock(i int, step time.Duration) time.Time { return t0.Add(time.Duration(i) * step) }

// mirrorCart is the test's own model of a cart, built only from the
// decoded events.
type mirrorCart struct {
	owner  string
	items  []events.Item // in cart order
	closed string        // "checked_out", "discarded", "erased" or ""
	ref    events.CartRef
}

func (c *mirrorCart) find(sku string) int {
	return slices.IndexFunc(c.items, func(it events.Item) bool { return it.SKU == sku })
}

func (c *mirrorCart) total() int64 {
	var t int64
	for _, it := range c.items {
		t += it.Quantity * it.UnitPriceMinor
	}
	return t
}

// payload returns the typed data of a decoded event, for re-encoding.
func payload(ev *events.Event) any {
	switch {
	case ev.ItemAdded != nil:
		return ev.ItemAdded
	case ev.ItemUpdated != nil:
		return ev.ItemUpdated
	case ev.ItemRemoved != nil:
		return ev.ItemRemoved
	case ev.CartUpdated != nil:
		return ev.CartUpdated
	case ev.CartDiscarded != nil:
		return ev.CartDiscarded
	case ev.CheckoutStarted != nil:
		return ev.CheckoutStarted
	case ev.CheckoutCompleted != nil:
		return ev.CheckoutCompleted
	case ev.CustomerLoggedIn != nil:
		return ev.CustomerLoggedIn
	case ev.CustomerUpdated != nil:
		return ev.CustomerUpdated
	case ev.CustomerErased != nil:
		return ev.CustomerErased
	}
	return nil
}

// TestTrafficIsValidAndConsistent runs 200k events through the real decoder
// and an independent model of every cart, and checks the contract: every
// record decodes, its key is the event's key, the bytes are what
// events.Encode would write, cart events only touch what is in the cart,
// checkout totals match the items last sent, closed and erased carts stay
// quiet, ids are unique, and the mix looks like a shop.
func TestTrafficIsValidAndConsistent(t *testing.T) {
	const n = 200_000
	sim := New(Options{Seed: 42, Customers: 5000})
	carts := map[string]*mirrorCart{}
	ids := make(map[string]struct{}, n)
	orders := map[string]struct{}{}
	types := map[string]int{}
	erased := 0
	var totalCheckedOut, b2bCarts, guestCarts int
	fail := func(i int, rec Record, format string, args ...any) {
		t.Helper()
		t.Fatalf("event %d (%s): %s\n%s", i, rec.Type, fmt.Sprintf(format, args...), rec.Value)
	}
	for i := range n {
		now := virtualClock(i, 2*time.Millisecond) // 400 s of event time: returns happen
		rec := sim.Next(now)
		ev, err := events.Decode(rec.Value, time.Time{})
		if err != nil {
			fail(i, rec, "decode: %v", err)
		}
		if ev.Key() != rec.Key || rec.Key == "" {
			fail(i, rec, "record key %q, event key %q", rec.Key, ev.Key())
		}
		if ev.Type != rec.Type {
			fail(i, rec, "record type %q, event type %q", rec.Type, ev.Type)
		}
		if !ev.Time.Equal(now) {
			fail(i, rec, "event time %v, want %v", ev.Time, now)
		}
		if _, dup := ids[ev.ID]; dup {
			fail(i, rec, "duplicate event id %q", ev.ID)
		}
		ids[ev.ID] = struct{}{}
		want, err := events.Encode(ev.ID, ev.Source, ev.Type, ev.Time, ev.Subject, payload(ev))
		if err != nil || !bytes.Equal(want, rec.Value) {
			fail(i, rec, "differs from events.Encode (%v):\n%s", err, want)
		}
		types[ev.Type]++

		ref, isCart := ev.Cart()
		if !isCart {
			switch {
			case ev.CustomerErased != nil:
				erased++
				for _, c := range carts {
					if c.owner == ev.CustomerErased.CustomerID && c.closed == "" {
						c.closed = "erased"
					}
				}
			case ev.CustomerLoggedIn != nil:
				if a := ev.CustomerLoggedIn.AnonymousID; a != "" {
					for _, c := range carts {
						if c.owner == events.AnonPrefix+a {
							c.owner = ev.CustomerLoggedIn.CustomerID
						}
					}
				}
			}
			continue
		}
		if ev.Subject != ref.CartID {
			fail(i, rec, "subject %q is not the cart id", ev.Subject)
		}
		c := carts[ref.CartID]
		if c == nil {
			if ev.ItemAdded == nil && ev.CartUpdated == nil {
				fail(i, rec, "first event of cart %s is not an add or a snapshot", ref.CartID)
			}
			if !strings.HasPrefix(ref.CartID, "k-") {
				fail(i, rec, "cart id %q", ref.CartID)
			}
			c = &mirrorCart{ref: ref}
			carts[ref.CartID] = c
			if ref.Channel == "b2b" {
				b2bCarts++
			}
			if ref.AnonymousID != "" {
				guestCarts++
			}
		}
		if c.closed != "" {
			fail(i, rec, "event for cart %s after it was %s", ref.CartID, c.closed)
		}
		if c.owner != "" && c.owner != rec.Key {
			fail(i, rec, "cart %s moved from %s to %s without a login", ref.CartID, c.owner, rec.Key)
		}
		c.owner = rec.Key
		checkAttrs(t, i, rec, ref, c.ref)

		switch {
		case ev.ItemAdded != nil:
			it := ev.ItemAdded.Item
			if it.Name == "" || it.Category == "" || !strings.HasPrefix(it.ImageURL, "https://") || it.UnitPriceMinor <= 0 || it.Quantity <= 0 {
				fail(i, rec, "item lacks attributes")
			}
			if j := c.find(it.SKU); j >= 0 {
				c.items[j].Quantity += it.Quantity
				c.items[j].UnitPriceMinor = it.UnitPriceMinor
			} else {
				c.items = append(c.items, it)
			}
		case ev.ItemUpdated != nil:
			d := ev.ItemUpdated
			j := c.find(d.SKU)
			if j < 0 {
				fail(i, rec, "update of %s, which is not in the cart", d.SKU)
			}
			if d.Quantity == 0 {
				c.items = slices.Delete(c.items, j, j+1)
			} else {
				c.items[j].Quantity = d.Quantity
				if d.UnitPriceMinor != 0 {
					c.items[j].UnitPriceMinor = d.UnitPriceMinor
				}
			}
		case ev.ItemRemoved != nil:
			j := c.find(ev.ItemRemoved.SKU)
			if j < 0 {
				fail(i, rec, "removal of %s, which is not in the cart", ev.ItemRemoved.SKU)
			}
			c.items = slices.Delete(c.items, j, j+1)
		case ev.CartUpdated != nil:
			if len(ev.CartUpdated.Items) == 0 {
				fail(i, rec, "empty snapshot")
			}
			c.items = slices.Clone(ev.CartUpdated.Items)
		case ev.CartDiscarded != nil:
			c.closed = "discarded"
		case ev.CheckoutStarted != nil:
			if len(c.items) == 0 {
				fail(i, rec, "checkout of an empty cart")
			}
		case ev.CheckoutCompleted != nil:
			d := ev.CheckoutCompleted
			if d.TotalMinor != c.total() {
				fail(i, rec, "checkout total %d, items sum to %d", d.TotalMinor, c.total())
			}
			if _, dup := orders[d.OrderID]; dup {
				fail(i, rec, "duplicate order id %s", d.OrderID)
			}
			orders[d.OrderID] = struct{}{}
			c.closed = "checked_out"
			totalCheckedOut++
		}
	}

	for _, typ := range events.InputTypes {
		if typ == events.TypeCartAssigned {
			if types[typ] != 0 {
				t.Errorf("generated %d %s events, which only cartlift emits", types[typ], typ)
			}
			continue
		}
		if types[typ] == 0 {
			t.Errorf("no %s events in %d", typ, n)
		}
	}
	share := float64(totalCheckedOut) / float64(len(carts))
	st := sim.Stats()
	t.Logf("%d events, %d carts (%d b2b, %d opened by guests), %d checked out (%.1f%%), %d erasures", n, len(carts), b2bCarts, guestCarts, totalCheckedOut, 100*share, erased)
	t.Logf("stats: %+v", st)
	for _, typ := range events.InputTypes {
		t.Logf("  %-20s %6d  %5.2f%%", typ, types[typ], 100*float64(types[typ])/n)
	}
	if share < 0.25 || share > 0.40 {
		t.Errorf("%.1f%% of carts checked out, want 25-40%%", 100*share)
	}
	if b2bCarts == 0 || guestCarts == 0 {
		t.Errorf("want B2B and guest carts, got %d and %d", b2bCarts, guestCarts)
	}
	if st.Returned == 0 || st.GuestLogins == 0 {
		t.Errorf("want returning carts and guest logins: %+v", st)
	}
}

// checkAttrs checks a cart's attributes: consistent with its first event
// and plausible for its site and channel.
func checkAttrs(t *testing.T, i int, rec Record, ref, first events.CartRef) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("event %d (%s): %s\n%s", i, rec.Type, fmt.Sprintf(format, args...), rec.Value)
	}
	if ref.Site != first.Site || ref.Currency != first.Currency || ref.Channel != first.Channel || ref.CartType != first.CartType || ref.LegalEntity != first.LegalEntity {
		bad("cart attributes changed: %+v, first %+v", ref, first)
	}
	want := map[string]string{"eu": "EUR", "us": "USD"}[ref.Site]
	if want == "" || ref.Currency != want {
		bad("site %q with currency %q", ref.Site, ref.Currency)
	}
	switch ref.Channel {
	case "b2c":
		if ref.CartType != "shopping" || ref.LegalEntity != "" {
			bad("b2c cart type %q, legal entity %q", ref.CartType, ref.LegalEntity)
		}
	case "b2b":
		if (ref.CartType != "b2b" && ref.CartType != "quote") || ref.LegalEntity == "" || ref.CustomerID == "" {
			bad("b2b cart type %q, legal entity %q, customer %q", ref.CartType, ref.LegalEntity, ref.CustomerID)
		}
	default:
		bad("channel %q", ref.Channel)
	}
}

// TestDeterministic checks that the same seed and times give the same
// bytes, and another seed does not.
func TestDeterministic(t *testing.T) {
	run := func(seed int64) (keys []string, vals [][]byte) {
		s := New(Options{Seed: seed, Customers: 2000})
		for i := range 50_000 {
			r := s.Next(virtualClock(i, 3*time.Millisecond))
			keys = append(keys, r.Key)
			vals = append(vals, r.Value)
		}
		return
	}
	k1, v1 := run(7)
	k2, v2 := run(7)
	for i := range v1 {
		if k1[i] != k2[i] || !bytes.Equal(v1[i], v2[i]) {
			t.Fatalf("seed 7 diverged at event %d:\n%s %s\n%s %s", i, k1[i], v1[i], k2[i], v2[i])
		}
	}
	_, v3 := run(8)
	if bytes.Equal(v1[0], v3[0]) && bytes.Equal(v1[1], v3[1]) {
		t.Fatal("seeds 7 and 8 gave the same first events")
	}
}

// TestBoundedMemory runs a long simulation, with time standing still and
// with time racing ahead, and checks that sessions and parked carts stay
// within their caps.
func TestBoundedMemory(t *testing.T) {
	for _, tc := range []struct {
		name string
		step time.Duration
		o    Options
	}{
		{"frozen clock", 0, Options{Seed: 1, Customers: 10000}},
		{"fast clock", time.Second, Options{Seed: 2, Customers: 10000}},
		{"few customers", time.Millisecond, Options{Seed: 3, Customers: 7}},
		{"no guests", time.Millisecond, Options{Seed: 4, Customers: 30, GuestShare: -1, B2BShare: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.o)
			o := s.Options()
			maxActive, maxParked := 0, 0
			for i := range 300_000 {
				rec := s.Next(virtualClock(i, tc.step))
				if rec.Key == "" || len(rec.Value) == 0 {
					t.Fatalf("empty record %d", i)
				}
				if i%1000 == 0 {
					st := s.Stats()
					maxActive, maxParked = max(maxActive, st.Active), max(maxParked, st.Parked)
				}
			}
			if maxActive > o.Sessions || maxParked > 4*o.Sessions+64 {
				t.Fatalf("active %d (cap %d), parked %d (cap %d)", maxActive, o.Sessions, maxParked, 4*o.Sessions+64)
			}
			t.Logf("sessions cap %d: max active %d, max parked %d; %+v", o.Sessions, maxActive, maxParked, s.Stats())
		})
	}
}

func TestCatalogue(t *testing.T) {
	cat := catalogue()
	if len(cat) < 200 {
		t.Fatalf("%d products", len(cat))
	}
	skus, names := map[string]bool{}, map[string]bool{}
	for _, p := range cat {
		if skus[p.sku] || names[p.name] {
			t.Errorf("duplicate %s %q", p.sku, p.name)
		}
		skus[p.sku], names[p.name] = true, true
	}
	for site := range knownSites {
		si := newSite(site, cat)
		for i, pr := range si.prices {
			if pr <= 0 || pr > events.MaxUnitPriceMinor {
				t.Errorf("site %s: %s costs %d", site, cat[i].sku, pr)
			}
		}
		if !events.KnownCurrency(si.currency) {
			t.Errorf("site %s: currency %s", site, si.currency)
		}
		for _, z := range si.zones {
			if _, err := time.LoadLocation(z.zone); err != nil {
				t.Errorf("site %s: %v", site, err)
			}
		}
	}
}

// BenchmarkNext measures the generator alone (no Kafka), with a virtual
// clock advancing 1 µs per event.
func BenchmarkNext(b *testing.B) {
	s := New(Options{Seed: 1})
	bytes := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := s.Next(virtualClock(i, time.Microsecond))
		bytes += len(r.Value)
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(bytes)/float64(i), "B/event")
}

// BenchmarkEncodeStdlib measures events.Encode (encoding/json) on the same
// traffic, for comparison with the hand-written encoder in BenchmarkNext.
func BenchmarkEncodeStdlib(b *testing.B) {
	s := New(Options{Seed: 1})
	type in struct {
		ev *events.Event
		p  any
	}
	var evs []in
	for i := range 10_000 {
		ev, err := events.Decode(s.Next(virtualClock(i, time.Microsecond)).Value, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, in{ev, payload(ev)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := evs[i%len(evs)]
		if _, err := events.Encode(e.ev.ID, e.ev.Source, e.ev.Type, e.ev.Time, e.ev.Subject, e.p); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDistinctCustomersPerBatch measures what a processor batch of n
// consecutive records of one partition can save by writing each changed
// customer once: the distinct customers per record, for the load's
// traffic (1M records, 100k customers over 6 hours, 8 partitions by key
// hash). It reports a property of the traffic, not a speed.
func BenchmarkDistinctCustomersPerBatch(b *testing.B) {
	const records, partitions = 1_000_000, 8
	sim := New(Options{Seed: 42, Customers: 100_000})
	start, step := time.Now().Add(-6*time.Hour), 6*time.Hour/records
	parts := make([][]string, partitions)
	for i := range records {
		r := sim.Next(start.Add(time.Duration(i) * step))
		h := fnv.New32a()
		h.Write([]byte(r.Key))
		p := h.Sum32() % partitions
		parts[p] = append(parts[p], r.Key)
	}
	for _, n := range []int{1_000, 5_000, 20_000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			var perRecord float64
			for b.Loop() {
				total, distinct := 0, 0
				for _, keys := range parts {
					for i := 0; i < len(keys); i += n {
						seen := map[string]bool{}
						for _, k := range keys[i:min(i+n, len(keys))] {
							seen[k] = true
						}
						total, distinct = total+min(n, len(keys)-i), distinct+len(seen)
					}
				}
				perRecord = float64(distinct) / float64(total)
			}
			b.ReportMetric(perRecord, "customers/record")
		})
	}
}
