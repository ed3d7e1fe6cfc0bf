package projections

// Replay equals incremental: a random but seeded log of cart and customer
// events is folded once in one go and again in random batches with a
// "restart" between batches, where every customer state and the timer
// index go through JSON and back, as they go through the store. Both runs
// must produce the same decisions, outcomes and timer changes in the same
// order, and byte-identical final state. The harness checks the fold's
// invariants after every step.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// replayFlows are short, overlapping flows, so that a log spanning hours
// reaches every step, expiry and retention many times, with every guard
// on: consent, quiet hours (the log spans two nights; profiles are in
// Berlin or, by default, New York), a frequency cap, a cart cap and
// combined decisions.
const replayFlows = `
guards:
  quiet_hours: {from: "22:00", to: "07:00"}
  default_time_zone: America/New_York
  frequency_cap: {max: 2, per: 1h}
  max_messages_per_cart: 3
  combine_window: 5m
flows:
  - name: quick
    match: {cart_types: [shopping], channels: [b2c], min_value_minor: 500}
    steps:
      - {name: r1, after: 10m, action: email, template: r1}
      - {name: r2, after: 40m, action: email, template: r2}
      - {name: r3, after: 2h, action: email, template: r3, discount: {percent: 10, max_minor: 2000, valid_for: 1d}}
    expire_after: 4h
    attribution_window: 1h
    holdout_percent: 20
  - name: b2b
    match: {channels: [b2b]}
    steps:
      - {name: account-manager, after: 45m, action: webhook}
    expire_after: 6h
    attribution_window: 3h
    guards:
      quiet_hours: {off: true}
      frequency_cap: {off: true}
      requires_consent: true
  - name: eur
    match: {currencies: [EUR], max_value_minor: 20000}
    allow_overlap: true  # overlaps quick on purpose
    steps:
      - {name: nudge, after: 20m, action: webhook}
      - {name: last-call, after: 90m, action: email, template: last-call}
    expire_after: 3h
    attribution_window: 30m
    holdout_percent: 50
`

func replayConfig(t testing.TB) *Config {
	t.Helper()
	flows, err := ParseFlows("replay.yaml", []byte(replayFlows))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Flows: flows, IdleExpireAfter: 8 * time.Hour, ClosedRetention: 3 * time.Hour}.withDefaults()
	return &cfg
}

// logEntry is one record of the generated log: the record key and value.
type logEntry struct {
	Key   string
	Value []byte
}

type genCart struct {
	id, typ, channel, currency, site string
	skus                             []string
}

type genCustomer struct {
	key, customerID, anonymousID string
	carts                        []*genCart
	current                      *genCart
}

// logGen generates a plausible, seeded event log: customers who fill
// carts, change them, check out, abandon, come back, log in, change their
// profile, and now and then get erased; event times advance irregularly
// and some arrive late.
type logGen struct {
	rng       *rand.Rand
	custs     []*genCustomer
	guests    []*genCustomer
	cur       time.Time
	nextCart  int
	nextOrder int
	prices    map[string]int64
	// busy customers (the first ones) get 30% of the events between them.
	busy int
}

func newLogGen(seed uint64, customers, busy int) *logGen {
	g := &logGen{rng: rand.New(rand.NewPCG(seed, 0xca47)), cur: time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC),
		prices: map[string]int64{}, busy: busy}
	for i := range customers {
		c := &genCustomer{}
		if i%7 == 6 {
			c.anonymousID = fmt.Sprintf("g-%03d", i)
			g.guests = append(g.guests, c)
		} else {
			c.customerID = fmt.Sprintf("c-%03d", i)
		}
		c.key = events.CustomerKey(c.customerID, c.anonymousID)
		g.custs = append(g.custs, c)
	}
	for i := range 30 {
		g.prices[fmt.Sprintf("S%02d", i)] = 100 + g.rng.Int64N(15000)
	}
	return g
}

func (g *logGen) ms(lo, hi int64) time.Duration {
	return time.Duration(lo+g.rng.Int64N(hi-lo)) * time.Millisecond
}

func (g *logGen) chance(p float64) bool { return g.rng.Float64() < p }

func (g *logGen) ref(c *genCustomer, k *genCart) events.CartRef {
	return events.CartRef{CustomerID: c.customerID, AnonymousID: c.anonymousID, CartID: k.id, CartType: k.typ,
		Site: k.site, Channel: k.channel, Currency: k.currency}
}

func (g *logGen) newCart(c *genCustomer) *genCart {
	g.nextCart++
	k := &genCart{id: fmt.Sprintf("k%d", g.nextCart), typ: "shopping", channel: "b2c", currency: "EUR", site: "eu"}
	if g.chance(0.1) {
		k.typ = "wishlist"
	}
	if g.chance(0.2) {
		k.channel = "b2b"
	}
	switch r := g.rng.Float64(); {
	case r < 0.2:
		k.currency, k.site = "USD", "us"
	case r < 0.3:
		k.currency, k.site = "JPY", "jp"
	}
	c.carts = append(c.carts, k)
	return k
}

// cart picks the cart an event is about: mostly the current one, sometimes
// a new one, sometimes an older one (closed, dropped or erased by now, so
// that reopening and re-creating carts happen too).
func (g *logGen) cart(c *genCustomer) *genCart {
	switch r := g.rng.Float64(); {
	case c.current != nil && r < 0.6:
	case len(c.carts) > 0 && r < 0.8:
		c.current = c.carts[g.rng.IntN(len(c.carts))]
	default:
		c.current = g.newCart(c)
	}
	return c.current
}

func (g *logGen) item(k *genCart) events.Item {
	sku := fmt.Sprintf("S%02d", g.rng.IntN(30))
	price := g.prices[sku]
	if k.currency == "JPY" {
		price = price / 100 * 100
	}
	if g.chance(0.05) {
		price = price * (90 + g.rng.Int64N(20)) / 100 // a price change
	}
	return events.Item{SKU: sku, Name: "item " + sku, Quantity: 1 + g.rng.Int64N(3), UnitPriceMinor: price, Category: "c" + sku[2:]}
}

func (g *logGen) sku(k *genCart) string {
	if len(k.skus) > 0 && g.chance(0.9) {
		return k.skus[g.rng.IntN(len(k.skus))]
	}
	return fmt.Sprintf("S%02d", g.rng.IntN(30))
}

// next returns the next record of the log.
func (g *logGen) next(n int) logEntry {
	switch r := g.rng.Float64(); {
	case r < 0.80:
		g.cur = g.cur.Add(g.ms(1, 10_000))
	case r < 0.98:
		g.cur = g.cur.Add(g.ms(10_000, 180_000))
	default:
		g.cur = g.cur.Add(g.ms(180_000, 2_400_000))
	}
	at := g.cur
	if g.chance(0.07) {
		at = at.Add(-g.ms(1, 1_800_000)) // late
	}
	c := g.custs[g.rng.IntN(len(g.custs))]
	if g.busy > 0 && g.chance(0.3) {
		c = g.custs[g.rng.IntN(g.busy)]
	}
	typ, data := g.event(c, at)
	value, err := events.Encode(fmt.Sprintf("e-%d", n), "gen", typ, at, "", data)
	if err != nil {
		panic(err)
	}
	return logEntry{Key: c.key, Value: value}
}

func (g *logGen) event(c *genCustomer, at time.Time) (string, any) {
	r := g.rng.Float64() * 100
	if c.customerID == "" && r >= 78 && r < 87 {
		r = g.rng.Float64() * 36 // guests have no customer events: an add instead
	}
	switch {
	case r < 36:
		k := g.cart(c)
		it := g.item(k)
		k.skus = append(k.skus, it.SKU)
		return events.TypeItemAdded, events.ItemAdded{CartRef: g.ref(c, k), Item: it}
	case r < 48:
		k := g.cart(c)
		d := events.ItemUpdated{CartRef: events.CartRef{CustomerID: c.customerID, AnonymousID: c.anonymousID, CartID: k.id},
			SKU: g.sku(k), Quantity: g.rng.Int64N(6)}
		if g.chance(0.3) {
			d.UnitPriceMinor = 100 + g.rng.Int64N(9000)
		}
		return events.TypeItemUpdated, d
	case r < 54:
		k := g.cart(c)
		return events.TypeItemRemoved, events.ItemRemoved{CartRef: events.CartRef{CustomerID: c.customerID, AnonymousID: c.anonymousID, CartID: k.id}, SKU: g.sku(k)}
	case r < 59:
		k := g.cart(c)
		d := events.CartUpdated{CartRef: g.ref(c, k)}
		k.skus = k.skus[:0]
		for range g.rng.IntN(5) {
			it := g.item(k)
			d.Items = append(d.Items, it)
			k.skus = append(k.skus, it.SKU)
		}
		if g.chance(0.2) {
			d.Metadata = map[string]string{"source": "app", "ab": fmt.Sprint(g.rng.IntN(3))}
		}
		return events.TypeCartUpdated, d
	case r < 64:
		k := g.cart(c)
		return events.TypeCheckoutStarted, events.CheckoutStarted{CartRef: events.CartRef{CustomerID: c.customerID, AnonymousID: c.anonymousID, CartID: k.id}}
	case r < 75:
		k := g.cart(c)
		g.nextOrder++
		c.current = nil
		d := events.CheckoutCompleted{CartRef: events.CartRef{CustomerID: c.customerID, AnonymousID: c.anonymousID, CartID: k.id},
			OrderID: fmt.Sprintf("o-%d", g.nextOrder), TotalMinor: g.rng.Int64N(50000)}
		if g.chance(0.2) {
			d.DiscountCodes = []string{"BACK-" + fmt.Sprint(g.rng.IntN(1000))}
		}
		return events.TypeCheckoutCompleted, d
	case r < 78:
		k := g.cart(c)
		c.current = nil
		return events.TypeCartDiscarded, events.CartDiscarded{CartRef: events.CartRef{CustomerID: c.customerID, AnonymousID: c.anonymousID, CartID: k.id}, Reason: "gone"}
	case r < 80.5:
		d := events.CustomerLoggedIn{CustomerID: c.customerID}
		if g.chance(0.5) {
			d.AnonymousID = g.guests[g.rng.IntN(len(g.guests))].anonymousID
		}
		return events.TypeCustomerLoggedIn, d
	case r < 84:
		d := events.CustomerUpdated{CustomerID: c.customerID}
		email := fmt.Sprintf("%s+%d@example.com", c.customerID, g.rng.IntN(5))
		d.Email = &email
		if g.chance(0.5) {
			name, locale, tz := "Name "+c.customerID, "de-DE", "Europe/Berlin"
			d.Name, d.Locale, d.TimeZone = &name, &locale, &tz
		}
		consent := g.chance(0.7)
		d.MarketingConsent = &consent
		return events.TypeCustomerUpdated, d
	case r < 84.5:
		c.carts, c.current = nil, nil
		return events.TypeCustomerErased, events.CustomerErased{CustomerID: c.customerID}
	case r >= 87:
		k := g.cart(c)
		it := g.item(k)
		k.skus = append(k.skus, it.SKU)
		return events.TypeItemAdded, events.ItemAdded{CartRef: g.ref(c, k), Item: it}
	default:
		// The processor moves a guest's cart to a customer who logged in.
		from := g.guests[g.rng.IntN(len(g.guests))]
		var k *genCart
		if len(from.carts) > 0 && g.chance(0.7) {
			k = from.carts[g.rng.IntN(len(from.carts))]
		} else {
			k = g.newCart(from)
		}
		c.carts = append(c.carts, k)
		c.current = k
		d := events.CartAssigned{CartRef: g.ref(c, k), FromKey: from.key, CreatedAt: at.Add(-g.ms(1, 7_200_000)), ModifiedAt: at}
		d.CustomerID, d.AnonymousID = c.customerID, ""
		for range 1 + g.rng.IntN(3) {
			d.Items = append(d.Items, g.item(k))
		}
		return events.TypeCartAssigned, d
	}
}

// genLog generates n records for the given number of customers, of which
// busy get 30% of the records between them.
func genLog(seed uint64, n, customers, busy int) []logEntry {
	g := newLogGen(seed, customers, busy)
	log := make([]logEntry, n)
	for i := range log {
		log[i] = g.next(i)
	}
	return log
}

// replayResult is what one run of a log produced.
type replayResult struct {
	outputs []string          // one JSON line per Apply or Fire that had effects
	atEnd   []byte            // the state snapshot at the end of the log
	drained []byte            // the snapshot after every timer has run out
	hashes  map[int]string    // snapshot hashes after the given event index
	stats   map[string]int    // for the log
	ids     map[string]string // decision id -> flow/step, across the run
}

// replay folds the log, restarting (state and timers through JSON) before
// each index in restarts; it records the snapshot hash after each index in
// hashAt.
func replay(t *testing.T, cfg *Config, log []logEntry, restarts []int, hashAt map[int]bool) replayResult {
	t.Helper()
	s := newSim(cfg)
	res := replayResult{hashes: map[int]string{}, stats: map[string]int{}, ids: map[string]string{}}
	s.observe = func(st *step) {
		e := st.Eff
		if len(e.Decisions) == 0 && len(e.Outcomes) == 0 && len(e.Timers) == 0 && e.OpenCartsDelta == 0 &&
			len(e.Suppressed) == 0 && len(e.Deferred) == 0 {
			return
		}
		line := struct {
			Kind       string
			Key        string
			Cart       string            `json:",omitempty"`
			Now        time.Time         `json:",omitzero"`
			Event      string            `json:",omitempty"`
			Decisions  []events.Decision `json:",omitempty"`
			Suppressed []Suppression     `json:",omitempty"`
			Deferred   []Deferral        `json:",omitempty"`
			Outcomes   []events.Outcome  `json:",omitempty"`
			Timers     []TimerChange     `json:",omitempty"`
			Open       int
			Deleted    bool
		}{Kind: st.Kind, Key: st.Key, Cart: st.CartID, Now: st.Now, Decisions: e.Decisions, Suppressed: e.Suppressed,
			Deferred: e.Deferred, Outcomes: e.Outcomes, Timers: e.Timers, Open: e.OpenCartsDelta, Deleted: e.State == nil}
		if st.Event != nil {
			line.Event = st.Event.ID
		}
		b, err := json.Marshal(line)
		if err != nil {
			t.Fatal(err)
		}
		res.outputs = append(res.outputs, string(b))
		for _, d := range e.Decisions {
			res.stats["decision"]++
			if d.Holdout {
				res.stats["decision holdout"]++
			}
			res.ids[d.ID] = d.Flow + "/" + d.Step
		}
		for _, o := range e.Outcomes {
			res.stats["outcome "+o.Kind]++
		}
		if st.Kind == "fire" && len(e.Decisions) > 0 {
			for _, r := range s.states[st.Key].Cart(st.CartID).Decisions {
				if r.Skipped && r.Version == e.Decisions[0].Cart.Version && r.At.After(st.Due.Add(-time.Nanosecond)) {
					res.stats["skipped step"]++
				}
			}
		}
	}
	restartAt := map[int]bool{}
	for _, i := range restarts {
		restartAt[i] = true
	}
	for i, e := range log {
		if restartAt[i] {
			data := s.marshal()
			if err := s.restore(data); err != nil {
				t.Fatalf("restart before event %d: %v", i, err)
			}
			if again := s.marshal(); string(again) != string(data) {
				t.Fatalf("restart before event %d: the state does not survive JSON:\n%s\n%s", i, data, again)
			}
			res.stats["restart"]++
		}
		ev, err := events.Decode(e.Value, time.Time{})
		if err != nil {
			t.Fatalf("event %d does not decode: %v\n%s", i, err, e.Value)
		}
		res.stats["event "+ev.Type]++
		if downtimeBefore(i, ev.Time.Sub(s.eff)) {
			// The runtime was down during this idle gap and comes back on
			// the wall clock: the timers that came due meanwhile fire late
			// (Live), deciding only the latest step due.
			if err := s.advance(ev.Time.Add(-1)); err != nil {
				t.Fatalf("catch-up before event %d: %v", i, err)
			}
		}
		if err := s.event(e.Key, ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if err := s.check(); err != nil {
			t.Fatalf("after event %d (%s %s at %s): %v", i, e.Key, ev.Type, fmtTime(ev.Time), err)
		}
		if i%200 == 0 || restartAt[i+1] {
			if err := s.checkAll(); err != nil {
				t.Fatalf("after event %d: %v", i, err)
			}
		}
		if hashAt[i+1] {
			sum := sha256.Sum256(s.marshal())
			res.hashes[i+1] = hex.EncodeToString(sum[:])
		}
	}
	res.atEnd = s.marshal()
	for k, n := range s.chk.guardStats {
		res.stats[k] += n
	}
	// Let every timer run out: all carts expire and are dropped.
	if err := s.advance(s.eff.Add(cfg.IdleExpireAfter + cfg.ClosedRetention + time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.checkAll(); err != nil {
		t.Fatal(err)
	}
	for key, st := range s.states {
		if len(st.Carts) > 0 {
			t.Errorf("%s still has %d carts after every timer ran out", key, len(st.Carts))
		}
	}
	if len(s.timers) > 0 || s.open != 0 {
		t.Errorf("%d timers and %d open carts left after every timer ran out", len(s.timers), s.open)
	}
	res.drained = s.marshal()
	return res
}

// downtimeBefore says whether the replayed timeline has the runtime down
// during the idle gap before event i (one of every other gap of 25 minutes
// or more): part of the log's timeline, the same in every run of it.
func downtimeBefore(i int, gap time.Duration) bool { return gap >= 25*time.Minute && i%2 == 0 }

// batches returns random batch boundaries for a log of n events.
func batches(seed uint64, n int) []int {
	rng := rand.New(rand.NewPCG(seed, 0xba7c))
	var out []int
	for i := 1 + rng.IntN(50); i < n; i += 1 + rng.IntN(300) {
		out = append(out, i)
	}
	return out
}

func TestReplayEqualsIncremental(t *testing.T) {
	cfg := replayConfig(t)
	logSeeds, restartSeeds, n := []uint64{1, 2, 3}, []uint64{11, 12, 13, 14}, 4000
	if testing.Short() {
		logSeeds, restartSeeds, n = logSeeds[:1], restartSeeds[:2], 1500
	}
	for _, logSeed := range logSeeds {
		t.Run(fmt.Sprintf("log%d", logSeed), func(t *testing.T) {
			log := genLog(logSeed, n, 100, 10)
			plans := map[uint64][]int{}
			hashAt := map[int]bool{}
			for _, rs := range restartSeeds {
				plans[rs] = batches(rs*100+logSeed, len(log))
				for _, i := range plans[rs] {
					hashAt[i] = true
				}
			}
			want := replay(t, cfg, log, nil, hashAt)
			logStats(t, want)
			checkCoverage(t, want)
			for _, rs := range restartSeeds {
				got := replay(t, cfg, log, plans[rs], hashAt)
				if got.stats["restart"] != len(plans[rs]) {
					t.Fatalf("restart seed %d: %d restarts, planned %d", rs, got.stats["restart"], len(plans[rs]))
				}
				for _, i := range plans[rs] {
					if got.hashes[i] != want.hashes[i] {
						t.Fatalf("restart seed %d: the state after event %d differs from the run in one go", rs, i)
					}
				}
				if i, diff := firstDiff(want.outputs, got.outputs); diff != "" {
					t.Fatalf("restart seed %d (%d restarts): output %d differs from the run in one go:\n%s", rs, len(plans[rs]), i, diff)
				}
				if string(got.atEnd) != string(want.atEnd) {
					t.Fatalf("restart seed %d: the final state differs from the run in one go", rs)
				}
				if string(got.drained) != string(want.drained) {
					t.Fatalf("restart seed %d: the drained state differs from the run in one go", rs)
				}
			}
		})
	}
}

// A different log must give different output: guards against a replay
// test that compares nothing.
func TestReplayLogsDiffer(t *testing.T) {
	cfg := replayConfig(t)
	a := replay(t, cfg, genLog(1, 500, 50, 10), nil, nil)
	b := replay(t, cfg, genLog(2, 500, 50, 10), nil, nil)
	if slices.Equal(a.outputs, b.outputs) || len(a.outputs) == 0 {
		t.Fatal("two different logs gave the same output")
	}
}

func firstDiff(want, got []string) (int, string) {
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			return i, "want: " + w + "\n got: " + g
		}
	}
	return 0, ""
}

func logStats(t *testing.T, r replayResult) {
	t.Helper()
	keys := make([]string, 0, len(r.stats))
	for k := range r.stats {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, r.stats[k])
	}
	t.Logf("%s outputs=%d", b.String(), len(r.outputs))
}

// checkCoverage fails when the generated log does not reach the cases the
// replay is meant to exercise.
func checkCoverage(t *testing.T, r replayResult) {
	t.Helper()
	for _, k := range []string{"decision", "decision holdout", "skipped step", "outcome recovered", "outcome converted",
		"outcome converted_holdout", "outcome lost", "outcome discarded", "event customer.erased", "event cart.assigned",
		"suppressed " + ReasonNoConsent, "suppressed " + ReasonFrequencyCap, "suppressed " + ReasonCartCap,
		"suppressed " + ReasonCombined, "combined decision", "deferred"} {
		if r.stats[k] == 0 {
			t.Errorf("the log never produced %q", k)
		}
	}
	steps := map[string]bool{}
	for _, s := range r.ids {
		steps[s] = true
	}
	if len(steps) < 6 {
		t.Errorf("only %d of the 6 flow steps were ever decided: %v", len(steps), steps)
	}
}
