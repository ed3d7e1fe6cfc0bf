package shopper

import (
	"strconv"

	"github.com/cartlift/cartlift/events"
)

// The emit functions write one event into s.w and set s.outKey. Field
// order and omission follow the events package's structs (see encode.go).

// cartHead writes the envelope and the CartRef fields of a cart event,
// leaving the data object open.
func (s *Sim) cartHead(x *session, typ string) {
	c := x.cart
	s.nEvent++
	s.outKey = x.key
	w := &s.w
	w.envelope(s.seedTag, s.nEvent, c.site.srcJSON, typ, s.now, c.id)
	if x.cust >= 0 {
		w.raw(`{"customer_id":`)
		w.safeID(s.customerID(x.cust))
	} else {
		w.raw(`{"anonymous_id":`)
		w.safeID(x.anon)
	}
	if len(c.ref) == 0 {
		c.ref = cartRefJSON(c.ref, c)
	}
	w.b = append(w.b, c.ref...)
	if !c.metaSent {
		// The cart's first event carries its metadata; cartlift keeps it.
		c.metaSent = true
		w.raw(`,"metadata":{"device":`)
		w.safeID(c.device)
		if c.utm != "" {
			w.raw(`,"utm_source":`)
			w.safeID(c.utm)
		}
		w.raw(`}`)
	}
}

// customerHead writes the envelope of a customer event and opens its data
// object with the customer id.
func (s *Sim) customerHead(x *session, typ, customerID string) {
	s.nEvent++
	s.outKey = customerID
	s.w.envelope(s.seedTag, s.nEvent, x.cart.site.srcJSON, typ, s.now, "")
	s.w.raw(`{"customer_id":`)
	s.w.safeID(customerID)
}

func (s *Sim) item(p int, qty, price int64) {
	pr := &s.cat[p]
	w := &s.w
	w.b = append(w.b, pr.head...)
	w.b = strconv.AppendInt(w.b, qty, 10)
	w.b = append(w.b, `,"unit_price_minor":`...)
	w.b = strconv.AppendInt(w.b, price, 10)
	w.b = append(w.b, pr.tail...)
}

// cartRefJSON is the constant part of a cart's CartRef, from cart_id to
// legal_entity, written once per cart.
func cartRefJSON(buf []byte, c *cart) []byte {
	w := jsonw{b: buf[:0]}
	w.field(`,"cart_id":`, c.id)
	w.optField(`,"cart_type":`, c.typ)
	w.optField(`,"site":`, c.site.name)
	w.optField(`,"channel":`, c.channel)
	w.optField(`,"currency":`, c.site.currency)
	w.optField(`,"legal_entity":`, c.legal)
	return w.b
}

// itemJSON precomputes a product's Item JSON around quantity and price:
// head ends with `"quantity":`, tail starts after the price.
func itemJSON(pr *product) (head, tail []byte) {
	w := jsonw{}
	w.raw(`{"sku":`)
	w.str(pr.sku)
	w.optField(`,"name":`, pr.name)
	w.raw(`,"quantity":`)
	head = w.b
	w = jsonw{}
	w.optField(`,"category":`, pr.category)
	w.optField(`,"image_url":`, pr.image)
	w.raw(`}`)
	return head, w.b
}

func (s *Sim) emitItemAdded(x *session, p int, qty, price int64) {
	s.cartHead(x, events.TypeItemAdded)
	s.w.raw(`,"item":`)
	s.item(p, qty, price)
	s.w.raw(`}}`)
}

// emitItemUpdated writes cart.item_updated; price 0 leaves it out (the
// price is unchanged).
func (s *Sim) emitItemUpdated(x *session, p int, qty, price int64) {
	s.cartHead(x, events.TypeItemUpdated)
	s.w.b = append(s.w.b, s.cat[p].skuField...)
	s.w.raw(`,"quantity":`)
	s.w.int(qty)
	if price != 0 {
		s.w.raw(`,"unit_price_minor":`)
		s.w.int(price)
	}
	s.w.raw(`}}`)
}

func (s *Sim) emitItemRemoved(x *session, p int) {
	s.cartHead(x, events.TypeItemRemoved)
	s.w.b = append(s.w.b, s.cat[p].skuField...)
	s.w.raw(`}}`)
}

func (s *Sim) emitSnapshot(x *session) {
	s.cartHead(x, events.TypeCartUpdated)
	s.w.raw(`,"items":[`)
	for i, l := range x.cart.items {
		if i > 0 {
			s.w.raw(`,`)
		}
		s.item(l.p, l.qty, l.price)
	}
	s.w.raw(`]}}`)
}

func (s *Sim) emitDiscard(x *session, reason string) {
	s.cartHead(x, events.TypeCartDiscarded)
	s.w.optField(`,"reason":`, reason)
	s.w.raw(`}}`)
}

func (s *Sim) emitCheckoutStarted(x *session) {
	s.cartHead(x, events.TypeCheckoutStarted)
	s.w.raw(`}}`)
}

func (s *Sim) emitCheckoutCompleted(x *session) {
	s.cartHead(x, events.TypeCheckoutCompleted)
	s.nOrder++
	s.w.raw(`,"order_id":"o-`)
	s.w.raw(s.seedTag)
	s.w.raw(`-`)
	s.w.int(int64(s.nOrder))
	s.w.raw(`","total_minor":`)
	s.w.int(x.cart.total())
	s.w.raw(`}}`)
}

func (s *Sim) emitLogin(x *session, customerID, anonymousID string) {
	s.customerHead(x, events.TypeCustomerLoggedIn, customerID)
	s.w.optField(`,"anonymous_id":`, anonymousID)
	s.w.raw(`}}`)
}

// emitProfile writes customer.updated: the full profile the first time a
// customer is seen (x.profile == 1), a partial change otherwise.
func (s *Sim) emitProfile(x *session) {
	id := s.customerID(x.cust)
	full := x.profile == 1
	x.profile = 0
	s.customers[x.cust].profileSent = true
	t := s.traitsOf(int(x.cust))
	s.customerHead(x, events.TypeCustomerUpdated, id)
	w := &s.w
	consent := t.consent
	if full {
		lz := s.localeZone(&t)
		w.field(`,"email":`, t.email())
		w.field(`,"name":`, t.name())
		w.field(`,"locale":`, lz.locale)
		w.field(`,"time_zone":`, lz.zone)
		w.field(`,"segment":`, t.segment)
	} else {
		switch s.rng.IntN(3) {
		case 0: // the customer changed their consent
			consent = s.rng.IntN(100) < 70
		case 1: // moved
			site := s.sites[t.site]
			lz := site.zones[s.rng.IntN(len(site.zones))]
			w.field(`,"time_zone":`, lz.zone)
		default: // new e-mail address
			w.field(`,"email":`, "new."+t.email())
		}
	}
	if consent {
		w.raw(`,"marketing_consent":true}}`)
	} else {
		w.raw(`,"marketing_consent":false}}`)
	}
}

func (s *Sim) emitErased(x *session) {
	c := &s.customers[x.cust]
	c.gen++
	c.profileSent = false
	s.stats.Erased++
	x.done = true
	s.customerHead(x, events.TypeCustomerErased, s.customerID(x.cust))
	s.w.raw(`}}`)
}
