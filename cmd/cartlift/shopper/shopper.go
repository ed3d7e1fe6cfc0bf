// Package shopper simulates the shoppers of an online shop and turns what
// they do into cartlift's v1 input events, encoded and keyed exactly as a
// shop backend would produce them to the cart-events topic.
//
// A Sim holds a fixed population of registered customers (ids c-000000,
// c-000001, ...) plus guests with anonymous ids, and keeps a bounded set of
// shopping sessions in flight. Each call to Next advances one session by
// one step and returns that step's event: shoppers log in, update their
// profile, add one to four products from a catalogue of 204, change
// quantities, remove items, and their shop sometimes sends a full cart
// snapshot. About 30% of carts are checked out; the others are abandoned,
// and some of those are resumed later or discarded. Guests sometimes log in
// and carry on as the customer; business (B2B) buyers fill "b2b" and
// "quote" carts for their company; very rarely a customer asks to be
// erased.
//
// The package does no I/O and never reads the clock: the caller passes the
// event time to Next (wall-clock time in `cartlift gen`, a virtual clock in
// tests and benchmarks). Given the same Options and the same sequence of
// times, a Sim produces the same records byte for byte.
//
// Every event is consistent with what came before it for the same cart:
// item updates and removals only name SKUs in the cart, snapshots list the
// cart's items, a checkout's total is the sum of quantity x unit price of
// the cart's items, and events of an erased customer's old carts stop.
package shopper

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Options configures a Sim. The zero value of every field but Seed
// selects its default; New fills the defaults in.
type Options struct {
	// Seed drives every random choice; 0 is a seed like any other. Two
	// Sims with the same Options and the same sequence of times given to
	// Next produce identical records. The seed also appears, in base 36 as
	// <s>, in every id the simulation makes: events e-<s>-<n>, carts
	// k-<s>-<n>, orders o-<s>-<n>, guests a-<s>-<n> (n counts from 1), so
	// runs with different seeds never share ids.
	Seed int64

	// Customers is the size of the registered population, ids c-000000 to
	// c-<Customers-1> (six digits at least). Default 10000.
	Customers int

	// Sessions caps the shopping sessions in flight at once, fresh and
	// returning. Default min(Customers, 1000); it is never more than
	// Customers. With a rate of R events/s a session receives an event
	// every Sessions/R seconds on average, so this also sets how long a
	// session lasts in event time: a session has about nine events.
	Sessions int

	// GuestShare is the share of new sessions started by guests (key
	// "anon:<id>"). Default 0.4; a negative value means no guests.
	GuestShare float64

	// LoginShare is the share of guest sessions in which the guest logs in
	// (customer.logged_in with the anonymous id) and goes on as a
	// registered customer. Default 0.35; negative means never.
	LoginShare float64

	// B2BShare is the share of registered customers who are business
	// buyers: their carts have channel "b2b", cart type "b2b" or "quote",
	// their company as legal entity, and larger quantities. Default 0.1;
	// negative means none.
	B2BShare float64

	// Sites are the shop's sites. Each customer has a home site and mostly
	// shops there; guests pick one at random. Known sites set the currency
	// and the customers' locales and time zones: eu and de (EUR), us
	// (USD), uk (GBP), ch (CHF), jp (JPY), au (AUD), ca (CAD); any other
	// name sells in EUR to European customers. The CloudEvents source is
	// "shop-<site>". Default ["eu", "us"].
	Sites []string

	// CheckoutShare is the share of first visits that end in a checkout.
	// Returning shoppers check out more often (35%), so the share of all
	// carts that are checked out ends up a few points higher, about 30%
	// with the defaults once returns have had time to happen. Default
	// 0.25; negative means never.
	CheckoutShare float64

	// ReturnShare is the share of abandoned carts whose shopper comes back
	// to them later (in event time, see ReturnAfter), adds or re-sends the
	// cart and decides again. A cart returns at most twice. Default 0.3;
	// negative means never.
	ReturnShare float64

	// DiscardShare is the share of abandoned carts that end with
	// cart.discarded, a third of them at once and the rest later. Default
	// 0.1; negative means never.
	DiscardShare float64

	// ReturnAfter is the longest time an abandoned cart stays away before
	// its return or later discard; the delay is uniform between
	// ReturnAfter/10 and ReturnAfter. The default, 2m, suits the compressed
	// demo flows (reminders after 10-30 s, 2 min attribution window), so
	// returns show up as recoveries; for traffic shaped like a real shop use
	// hours.
	ReturnAfter time.Duration

	// EraseShare is the share of sessions of registered customers that end
	// with customer.erased. Default 0.002; negative means never.
	EraseShare float64

	// Response makes shoppers answer the reminders the caller reports
	// with Sim.Remind, with a known effect; off by default (see Response).
	Response Response
}

// Defaults of Options, applied by New.
const (
	DefaultCustomers     = 10000
	DefaultMaxSessions   = 1000
	DefaultGuestShare    = 0.4
	DefaultLoginShare    = 0.35
	DefaultB2BShare      = 0.1
	DefaultCheckoutShare = 0.25
	DefaultReturnShare   = 0.3
	DefaultDiscardShare  = 0.1
	DefaultReturnAfter   = 2 * time.Minute
	DefaultEraseShare    = 0.002

	// returnCheckoutShare is the share of returning visits that check out.
	returnCheckoutShare = 0.35
	// maxReturns is how often one cart may come back.
	maxReturns = 2
)

// DefaultSites is the default of Options.Sites.
var DefaultSites = []string{"eu", "us"}

// WithDefaults returns o with every zero field set to its default and
// every share clamped to [0, 1] (negative shares become 0).
func (o Options) WithDefaults() Options {
	if o.Customers <= 0 {
		o.Customers = DefaultCustomers
	}
	if o.Sessions <= 0 {
		o.Sessions = min(o.Customers, DefaultMaxSessions)
	}
	o.Sessions = min(o.Sessions, o.Customers)
	share := func(v *float64, def float64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		case *v > 1:
			*v = 1
		}
	}
	share(&o.GuestShare, DefaultGuestShare)
	share(&o.LoginShare, DefaultLoginShare)
	share(&o.B2BShare, DefaultB2BShare)
	share(&o.CheckoutShare, DefaultCheckoutShare)
	share(&o.ReturnShare, DefaultReturnShare)
	share(&o.DiscardShare, DefaultDiscardShare)
	share(&o.EraseShare, DefaultEraseShare)
	if o.ReturnShare+o.DiscardShare > 1 {
		o.DiscardShare = 1 - o.ReturnShare
	}
	if len(o.Sites) == 0 {
		o.Sites = DefaultSites
	}
	o.Sites = slices.Clone(o.Sites)
	if o.ReturnAfter <= 0 {
		o.ReturnAfter = DefaultReturnAfter
	}
	if o.Response.On {
		o.Response = o.Response.withDefaults(o.ReturnAfter)
	}
	return o
}

// Record is one generated event.
type Record struct {
	// Key is the Kafka record key: the customer id, or "anon:<anonymous
	// id>" for a guest (events.CustomerKey); always equal to the decoded
	// event's Key().
	Key string
	// Value is the CloudEvents structured-JSON value, as events.Encode
	// would produce it. Each call to Next allocates a new slice that the
	// caller owns (it may hand it to a producer without copying).
	Value []byte
	// Type is the CloudEvents type, one of the events.Type* input types
	// (never events.TypeCartAssigned, which only cartlift emits).
	Type string
}

// Stats counts what a Sim has simulated so far.
type Stats struct {
	Events        uint64 // records returned by Next
	Carts         uint64 // carts opened (distinct cart ids)
	Sessions      uint64 // sessions started, fresh and returning
	CheckedOut    uint64 // carts checked out (checkout.completed)
	Abandoned     uint64 // visits that ended without a checkout
	Returned      uint64 // abandoned carts whose shopper came back
	Discarded     uint64 // carts discarded (cart.discarded)
	GuestLogins   uint64 // guests who logged in during a session
	Erased        uint64 // customer.erased events
	Active        int    // sessions in flight now
	Parked        int    // abandoned carts waiting to return or be discarded
	ParkedDropped uint64 // returns given up because the parked set was full

	// With Options.Response: carts whose first reminder Remind reported,
	// the shoppers it brings back to buy, and the clicks it asked for.
	Reminded  uint64
	Responses uint64
	Clicks    uint64
}

// Sim is a running shopper simulation. It is not safe for concurrent use.
//
// Memory is bounded: about 32 bytes per customer (plus the id string of
// each customer seen), at most Sessions sessions in flight and at most
// 4*Sessions+64 parked carts (when more carts wait, the newest returns
// are given up); finished sessions and carts are recycled or dropped.
type Sim struct {
	o         Options
	rng       *rand.Rand
	seedTag   string
	cat       []product
	sites     []*siteInfo
	customers []customer
	active    []*session
	parked    parkHeap
	maxParked int
	minDelay  int64
	maxDelay  int64

	nEvent, nCart, nGuest, nOrder, nPark uint64
	stats                                Stats

	freeSessions []*session // finished sessions, for reuse (at most Sessions)
	freeCarts    []*cart    // finished carts, for reuse (at most 64)
	scratch      session

	w      jsonw
	outKey string    // key of the event in w
	now    time.Time // the time given to the current Next
	nowN   int64

	// With Options.Response: abandoned carts by id, oldest first in
	// cartFIFO (see response.go); draining after Drain.
	byCart   map[string]indexed
	cartFIFO []string
	draining bool
}

type customer struct {
	id          string // built on first use
	gen         uint32 // bumped by an erasure; parked carts of older gens are dropped
	busy        bool   // a session of this customer is in flight
	profileSent bool
}

type line struct {
	p     int // index into the catalogue
	qty   int64
	price int64
}

type cart struct {
	id       string
	site     *siteInfo
	channel  string
	typ      string
	legal    string
	device   string
	utm      string
	items    []line
	ref      []byte // cartRefJSON, built with the cart's first event
	returns  int
	metaSent bool
	reminded bool   // Remind has decided this cart's fate
	fate     uint32 // bumped by Remind: parked entries of an older fate are void
}

func (c *cart) total() int64 {
	var t int64
	for _, l := range c.items {
		t += l.qty * l.price
	}
	return t
}

func (c *cart) find(p int) int {
	for i, l := range c.items {
		if l.p == p {
			return i
		}
	}
	return -1
}

const (
	phaseShop     = iota // browsing: login, profile, cart changes, then the outcome
	phaseComplete        // checkout started; next: checkout.completed
	phaseErase           // visit over; next: customer.erased
)

const (
	outAbandon           = iota // stop without checkout
	outAbandonAtCheckout        // checkout.started, then stop
	outCheckout                 // checkout.started, checkout.completed
)

type session struct {
	cust      int32  // registered customer acting, or -1 for a guest
	anon      string // guest's anonymous id
	key       string // current record key of cart events
	cart      *cart
	b2b       bool
	phase     uint8
	outcome   uint8
	needLogin bool // starts with customer.logged_in
	profile   int8 // 0 none, 1 full profile, 2 partial update
	snapshot  bool // next cart event is a cart.updated snapshot
	addFirst  bool // next cart event adds an item (reopens a returning cart)
	loginAt   int  // guests: number of cart operations before logging in; -1 never
	ops       int
	toAdd     int
	extras    int
	done      bool
	parked    bool // the cart was parked: it outlives the session
}

// newSession returns a zeroed session, reusing a finished one.
func (s *Sim) newSession() *session {
	if n := len(s.freeSessions); n > 0 {
		x := s.freeSessions[n-1]
		s.freeSessions = s.freeSessions[:n-1]
		*x = session{}
		return x
	}
	return &session{}
}

// allocCart returns a zeroed cart, reusing the buffers of a finished one.
func (s *Sim) allocCart() *cart {
	if n := len(s.freeCarts); n > 0 {
		c := s.freeCarts[n-1]
		s.freeCarts = s.freeCarts[:n-1]
		*c = cart{items: c.items[:0], ref: c.ref[:0]}
		return c
	}
	return &cart{items: make([]line, 0, 6)}
}

// freeCart recycles a cart nothing refers to any more.
func (s *Sim) freeCart(c *cart) {
	if c != nil && len(s.freeCarts) < cap(s.freeCarts) {
		s.freeCarts = append(s.freeCarts, c)
	}
}

// New returns a simulation with o's defaults filled in (see
// Options.WithDefaults). It does no I/O.
func New(o Options) *Sim {
	o = o.WithDefaults()
	s := &Sim{
		o:         o,
		rng:       rand.New(rand.NewPCG(uint64(o.Seed), 0x6a09e667f3bcc909)),
		seedTag:   strconv.FormatUint(uint64(o.Seed), 36),
		cat:       catalogue(),
		customers: make([]customer, o.Customers),
		maxParked: 4*o.Sessions + 64,
		maxDelay:  int64(o.ReturnAfter),
	}
	s.minDelay = max(s.maxDelay/10, int64(time.Millisecond))
	s.maxDelay = max(s.maxDelay, s.minDelay)
	for _, name := range o.Sites {
		s.sites = append(s.sites, newSite(name, s.cat))
	}
	s.active = make([]*session, 0, o.Sessions)
	s.freeCarts = make([]*cart, 0, 64)
	if o.Response.On {
		// Reminders refer to carts by id, and void parked entries point
		// to their cart: carts are not recycled.
		s.byCart = make(map[string]indexed)
		s.freeCarts = nil
	}
	return s
}

// Options returns the options in effect, defaults included.
func (s *Sim) Options() Options {
	o := s.o
	o.Sites = slices.Clone(o.Sites)
	return o
}

// Stats returns the counts so far.
func (s *Sim) Stats() Stats {
	st := s.stats
	st.Events = s.nEvent
	st.Active = len(s.active)
	st.Parked = len(s.parked)
	return st
}

// Next advances the simulation by one event with event time now and
// returns it. Callers should pass non-decreasing times; parked carts
// return once now reaches their due time. Next never fails.
func (s *Sim) Next(now time.Time) Record {
	s.now, s.nowN = now, now.UnixNano()
	for {
		if len(s.parked) > 0 && s.parked[0].due <= s.nowN {
			if typ, handled := s.unpark(); handled {
				if typ != "" {
					return s.record(typ)
				}
				continue
			}
		}
		var x *session
		idx := -1
		if len(s.active) < s.o.Sessions {
			x = s.startSession()
			s.active = append(s.active, x)
			idx = len(s.active) - 1
		} else {
			idx = s.rng.IntN(len(s.active))
			x = s.active[idx]
		}
		typ := s.step(x)
		if x.done {
			s.endSession(idx, x)
		}
		if typ != "" {
			return s.record(typ)
		}
	}
}

// unpark handles the parked cart due first. It returns the type of the
// event it wrote, if any, and handled=false when the cart has to wait for
// a free session slot.
func (s *Sim) unpark() (typ string, handled bool) {
	p := s.parked[0]
	switch {
	case p.cust >= 0 && s.customers[p.cust].gen != p.gen:
		heap.Pop(&s.parked) // the customer was erased meanwhile
		return "", true
	case p.fate != p.cart.fate || (s.draining && !p.respond):
		heap.Pop(&s.parked) // a reminder decided otherwise, or draining
		return "", true
	case p.discard:
		heap.Pop(&s.parked)
		s.unindexCart(p.cart)
		x := &s.scratch
		*x = session{cust: p.cust, anon: p.anon, key: ownerKey(s, p.cust, p.anon), cart: p.cart}
		s.emitDiscard(x, "cleared_by_customer")
		s.freeCart(p.cart)
		s.stats.Discarded++
		return events.TypeCartDiscarded, true
	case p.cust >= 0 && s.customers[p.cust].busy:
		heap.Pop(&s.parked) // the customer is shopping right now: a bit later
		p.due = s.nowN + s.minDelay
		heap.Push(&s.parked, p)
		return "", true
	case len(s.active) >= s.o.Sessions:
		return "", false
	}
	heap.Pop(&s.parked)
	x := s.resume(p)
	s.active = append(s.active, x)
	typ = s.step(x)
	if x.done {
		s.endSession(len(s.active)-1, x)
	}
	return typ, true
}

func ownerKey(s *Sim, cust int32, anon string) string {
	if cust >= 0 {
		return s.customerID(cust)
	}
	return events.AnonPrefix + anon
}

func (s *Sim) customerID(i int32) string {
	c := &s.customers[i]
	if c.id == "" {
		n := strconv.Itoa(int(i))
		if len(n) < 6 {
			n = "000000"[len(n):] + n
		}
		c.id = "c-" + n
	}
	return c.id
}

// isB2B reports whether customer i is a business buyer.
func (s *Sim) isB2B(i int32) bool {
	if s.o.B2BShare == 0 {
		return false
	}
	return s.traitsOf(int(i)).b2b
}

// pickCustomer returns a random customer who has no session in flight,
// or -1 when a few tries find none.
func (s *Sim) pickCustomer(allowB2B bool) int32 {
	for range 8 {
		i := int32(s.rng.IntN(len(s.customers)))
		if s.customers[i].busy {
			continue
		}
		if !allowB2B && s.isB2B(i) {
			continue
		}
		return i
	}
	return -1
}

func (s *Sim) startSession() *session {
	s.stats.Sessions++
	x := s.newSession()
	x.cust, x.loginAt = -1, -1
	guest := s.rng.Float64() < s.o.GuestShare
	if !guest {
		x.cust = s.pickCustomer(true)
	}
	var site *siteInfo
	if x.cust < 0 {
		s.nGuest++
		x.anon = "a-" + s.seedTag + "-" + strconv.FormatUint(s.nGuest, 10)
		x.key = events.AnonPrefix + x.anon
		site = s.sites[s.rng.IntN(len(s.sites))]
		if s.rng.Float64() < s.o.LoginShare {
			x.loginAt = -2 // decided below, once the visit's length is known
		}
	} else {
		c := &s.customers[x.cust]
		c.busy = true
		x.key = s.customerID(x.cust)
		tr := s.traitsOf(int(x.cust))
		site = s.sites[tr.site]
		if s.rng.IntN(100) >= 85 {
			site = s.sites[s.rng.IntN(len(s.sites))]
		}
		x.b2b = tr.b2b
		x.needLogin = s.rng.IntN(100) < 30
		switch {
		case !c.profileSent:
			x.profile = 1
		case s.rng.IntN(100) < 3:
			x.profile = 2
		}
		s.newCart(x, site, s.legalEntity(&tr))
	}
	if x.cart == nil {
		s.newCart(x, site, "")
	}
	x.toAdd = pickWeighted(s.rng, []int{35, 30, 20, 15}) + 1 // 1-4 products
	x.extras = pickWeighted(s.rng, []int{35, 30, 20, 15})    // 0-3 other changes
	x.outcome = outAbandon
	switch r := s.rng.Float64(); {
	case r < s.o.CheckoutShare:
		x.outcome = outCheckout
	case s.rng.IntN(100) < 12:
		x.outcome = outAbandonAtCheckout
	}
	if x.loginAt == -2 {
		x.loginAt = s.rng.IntN(x.toAdd + x.extras + 1)
	}
	return x
}

func (s *Sim) newCart(x *session, site *siteInfo, legal string) {
	s.nCart++
	s.stats.Carts++
	c := s.allocCart()
	c.id = "k-" + s.seedTag + "-" + strconv.FormatUint(s.nCart, 10)
	c.site, c.channel, c.typ = site, "b2c", "shopping"
	if x.b2b {
		c.channel, c.typ, c.legal = "b2b", "b2b", legal
		if s.rng.IntN(100) < 30 {
			c.typ = "quote"
		}
	}
	switch r := s.rng.IntN(100); {
	case r < 55:
		c.device = "mobile"
	case r < 85:
		c.device = "desktop"
	default:
		c.device = "app"
	}
	if s.rng.IntN(100) < 25 {
		c.utm = []string{"newsletter", "google", "instagram", "affiliate"}[s.rng.IntN(4)]
	}
	x.cart = c
}

// resume turns a parked cart into a returning session.
func (s *Sim) resume(p parked) *session {
	s.stats.Sessions++
	s.stats.Returned++
	c := p.cart
	c.returns++
	s.unindexCart(c)
	x := s.newSession()
	x.cust, x.anon, x.cart, x.loginAt, x.key = p.cust, p.anon, c, -1, ownerKey(s, p.cust, p.anon)
	if p.cust >= 0 {
		s.customers[p.cust].busy = true
		x.b2b = c.channel == "b2b"
		x.needLogin = s.rng.IntN(100) < 30
	}
	// The first cart event of a return reopens the cart even if cartlift
	// has expired it meanwhile: a snapshot from the shop, or a new item.
	if s.rng.IntN(2) == 0 {
		x.snapshot = true
	} else {
		x.addFirst = true
		x.toAdd = 1
	}
	x.toAdd += s.rng.IntN(2)
	x.extras = s.rng.IntN(3)
	x.outcome = outAbandon
	switch r := s.rng.Float64(); {
	case r < returnCheckoutShare && s.o.CheckoutShare > 0:
		x.outcome = outCheckout
	case s.rng.IntN(100) < 10:
		x.outcome = outAbandonAtCheckout
	}
	if p.cust < 0 && s.rng.Float64() < s.o.LoginShare {
		x.loginAt = s.rng.IntN(x.toAdd + x.extras + 1)
	}
	if p.respond {
		// Brought back by a reminder (Response): straight to the checkout.
		x.outcome, x.extras, x.toAdd = outCheckout, 0, min(x.toAdd, 1)
	}
	return x
}

// step advances session x by one step and returns the type of the event
// it wrote into s.w, or "" when the step ended the session silently.
func (s *Sim) step(x *session) string {
	switch x.phase {
	case phaseComplete:
		s.emitCheckoutCompleted(x)
		s.stats.CheckedOut++
		s.finishVisit(x)
		return events.TypeCheckoutCompleted
	case phaseErase:
		s.emitErased(x)
		return events.TypeCustomerErased
	}
	if x.needLogin {
		x.needLogin = false
		s.emitLogin(x, s.customerID(x.cust), "")
		return events.TypeCustomerLoggedIn
	}
	if x.profile != 0 {
		s.emitProfile(x)
		return events.TypeCustomerUpdated
	}
	if x.cust < 0 && x.loginAt >= 0 && x.ops >= x.loginAt {
		x.loginAt = -1
		if c := s.pickCustomer(false); c >= 0 {
			cu := &s.customers[c]
			cu.busy = true
			x.cust = c
			x.key = s.customerID(c)
			x.snapshot = x.snapshot || len(x.cart.items) > 0
			if !cu.profileSent {
				x.profile = 1
			}
			s.stats.GuestLogins++
			s.emitLogin(x, x.key, x.anon)
			return events.TypeCustomerLoggedIn
		}
	}
	if x.snapshot {
		x.snapshot = false
		s.emitSnapshot(x)
		return events.TypeCartUpdated
	}
	c := x.cart
	if x.toAdd > 0 && (x.addFirst || x.extras == 0 || len(c.items) == 0 || s.rng.IntN(4) != 0) {
		x.addFirst = false
		x.toAdd--
		x.ops++
		return s.addItem(x)
	}
	if x.extras > 0 && len(c.items) > 0 {
		x.extras--
		x.ops++
		return s.changeCart(x)
	}
	switch x.outcome {
	case outCheckout:
		x.phase = phaseComplete
		s.emitCheckoutStarted(x)
		return events.TypeCheckoutStarted
	case outAbandonAtCheckout:
		s.emitCheckoutStarted(x)
		s.abandon(x, false)
		return events.TypeCheckoutStarted
	}
	if s.abandon(x, true) {
		return events.TypeCartDiscarded
	}
	return ""
}

// addItem adds a product: usually a new one, sometimes more of one
// already in the cart.
func (s *Sim) addItem(x *session) string {
	c := x.cart
	p := s.pickProduct()
	for try := 0; try < 4 && c.find(p) >= 0; try++ {
		p = s.pickProduct()
	}
	qty := s.quantity(x.b2b)
	price := c.site.prices[p]
	if i := c.find(p); i >= 0 {
		c.items[i].qty += qty
		c.items[i].price = price
	} else {
		c.items = append(c.items, line{p: p, qty: qty, price: price})
	}
	s.emitItemAdded(x, p, qty, price)
	return events.TypeItemAdded
}

// changeCart makes one change other than adding a new product.
func (s *Sim) changeCart(x *session) string {
	c := x.cart
	i := s.rng.IntN(len(c.items))
	l := &c.items[i]
	wRemove, wQuote := 0, 0
	if len(c.items) > 1 {
		wRemove = 2
	}
	if c.typ == "quote" {
		wQuote = 2
	}
	switch pickWeighted(s.rng, []int{4, wRemove, 1, 2, wQuote}) {
	case 0: // change the quantity
		q := s.quantity(x.b2b)
		if q == l.qty {
			q++
		}
		l.qty = q
		var price int64
		if s.rng.IntN(100) < 30 { // some shops always send the price
			price = l.price
		}
		s.emitItemUpdated(x, l.p, q, price)
		return events.TypeItemUpdated
	case 1: // remove
		p := l.p
		c.items = slices.Delete(c.items, i, i+1)
		if s.rng.IntN(100) < 30 {
			s.emitItemUpdated(x, p, 0, 0)
			return events.TypeItemUpdated
		}
		s.emitItemRemoved(x, p)
		return events.TypeItemRemoved
	case 2: // the shop sends a snapshot
		s.emitSnapshot(x)
		return events.TypeCartUpdated
	case 3: // more of the same
		q := s.quantity(x.b2b)
		l.qty += q
		s.emitItemAdded(x, l.p, q, l.price)
		return events.TypeItemAdded
	default: // a negotiated price on a quote
		l.price = max(1, l.price*int64(90+s.rng.IntN(8))/100)
		s.emitItemUpdated(x, l.p, l.qty, l.price)
		return events.TypeItemUpdated
	}
}

// pickProduct favours the front of the catalogue (a popularity skew).
func (s *Sim) pickProduct() int {
	u := s.rng.Float64()
	return int(u * u * float64(len(s.cat)))
}

func (s *Sim) quantity(b2b bool) int64 {
	if b2b {
		return []int64{5, 10, 10, 20, 25, 50, 100}[s.rng.IntN(7)]
	}
	switch r := s.rng.IntN(100); {
	case r < 80:
		return 1
	case r < 95:
		return 2
	default:
		return 3
	}
}

// abandon ends a visit without checkout: the cart is parked to return or
// to be discarded later, discarded now (when now is set and the dice say
// so; it reports whether it wrote that cart.discarded), or left alone.
func (s *Sim) abandon(x *session, now bool) bool {
	s.stats.Abandoned++
	r := s.rng.Float64()
	emitted := false
	switch {
	case r < s.o.DiscardShare:
		if now && s.rng.IntN(3) == 0 {
			s.emitDiscard(x, "removed_all_items")
			s.stats.Discarded++
			emitted = true
		} else {
			s.park(x, true)
		}
	case r < s.o.DiscardShare+s.o.ReturnShare && x.cart.returns < maxReturns:
		s.park(x, false)
	}
	if !emitted {
		s.indexCart(x)
	}
	s.finishVisit(x)
	return emitted
}

func (s *Sim) park(x *session, discard bool) {
	if len(s.parked) >= s.maxParked {
		s.stats.ParkedDropped++
		return
	}
	s.nPark++
	p := parked{
		due:     s.nowN + s.minDelay + s.rng.Int64N(s.maxDelay-s.minDelay+1),
		seq:     s.nPark,
		cart:    x.cart,
		cust:    x.cust,
		anon:    x.anon,
		discard: discard,
		fate:    x.cart.fate,
	}
	if x.cust >= 0 {
		p.gen = s.customers[x.cust].gen
	}
	heap.Push(&s.parked, p)
	x.parked = true
}

// finishVisit ends the visit after its outcome; a registered customer may
// still ask to be erased.
func (s *Sim) finishVisit(x *session) {
	if x.cust >= 0 && s.rng.Float64() < s.o.EraseShare {
		x.phase = phaseErase
		return
	}
	x.done = true
}

func (s *Sim) endSession(idx int, x *session) {
	if x.cust >= 0 {
		s.customers[x.cust].busy = false
	}
	if !x.parked {
		s.freeCart(x.cart)
	}
	x.cart = nil
	s.freeSessions = append(s.freeSessions, x)
	last := len(s.active) - 1
	s.active[idx] = s.active[last]
	s.active[last] = nil
	s.active = s.active[:last]
}

// record finishes the event in s.w and copies it out.
func (s *Sim) record(typ string) Record {
	v := make([]byte, len(s.w.b))
	copy(v, s.w.b)
	return Record{Key: s.outKey, Value: v, Type: typ}
}

// pickWeighted returns an index into weights with probability
// proportional to its weight.
func pickWeighted(r *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

// parked is an abandoned cart waiting for its due time.
type parked struct {
	due     int64 // unix nanoseconds
	seq     uint64
	cart    *cart
	cust    int32
	anon    string
	gen     uint32
	discard bool
	respond bool   // a return a reminder caused (Response): checks out
	fate    uint32 // the cart's fate when parked
}

type parkHeap []parked

func (h parkHeap) Len() int { return len(h) }
func (h parkHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}
func (h parkHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *parkHeap) Push(v any)   { *h = append(*h, v.(parked)) }
func (h *parkHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	old[len(old)-1] = parked{}
	*h = old[:len(old)-1]
	return v
}
