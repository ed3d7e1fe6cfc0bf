package processor

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
	"unsafe"

	"github.com/cartlift/cartlift/projections"
)

// The store keeps customer states in a compact binary form: JSON encoding
// and decoding were most of the per-event cost of the processor. The format
// is private to the store; every value starts with a version byte so it can
// evolve (readers reject versions they do not know).
//
// V2 appends the customer's input window (CustomerState.Seen) at the end
// of a V1 record: a count, then per entry the hash as 8 bytes little
// endian and the time. V1 records (written before) decode with an empty
// window.
//
// V3 appends what explanations need after a V2 record (see
// appendExplain): the profile's consent source, each cart's cause and
// each decision record's cause and guard checks, compressed against what
// precedes them (a record's cause is mostly its cart's or the previous
// record's, its consent source the profile's). V1 and V2 records decode
// with none of it.
//
// V4 is V3 with every time written as its distance from the record's
// previous non-zero time (see enc.time), in 2–4 bytes where V3 took 9 or
// 10: times are most of a state's bytes after its strings, and a state is
// written once per batch in which its customer has an event.
const (
	stateFormatV1 byte = 1
	stateFormatV2 byte = 2
	stateFormatV3 byte = 3
	stateFormatV4 byte = 4
)

var errCorruptState = errors.New("corrupt state record")

// zeroTime encodes time.Time{}.
const zeroTime = math.MinInt64

type enc struct {
	b []byte
	// delta writes times as distances (V4); prev is the last non-zero
	// time written, in Unix nanoseconds.
	delta bool
	prev  int64
}

func (e *enc) str(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *enc) int(n int64) { e.b = binary.AppendVarint(e.b, n) }
func (e *enc) uint(n int)  { e.b = binary.AppendUvarint(e.b, uint64(n)) }
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

// Distance tags of V4 times: the low two bits of the uvarint, above them
// the zigzag-encoded distance in the tag's unit. timeZero with a payload
// of 1 is an escape: the absolute time follows as a varint (for a
// distance of 73 years or more in nanoseconds, which leaves no room for
// the tag).
const (
	timeZero    = 0
	timeSeconds = 1
	timeMillis  = 2
	timeNanos   = 3
	timeEscape  = 1<<2 | timeZero
)

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// time writes t: in V4 as a distance from the previous non-zero time of
// the record (the first from the Unix epoch), in whole seconds or
// milliseconds where that is exact, else in nanoseconds; before V4 as Unix
// nanoseconds, zeroTime for the zero time.
func (e *enc) time(t time.Time) {
	if e.delta {
		e.deltaTime(t)
		return
	}
	if t.IsZero() {
		e.int(zeroTime)
		return
	}
	e.int(t.UnixNano())
}

func (e *enc) deltaTime(t time.Time) {
	if t.IsZero() {
		e.b = append(e.b, timeZero)
		return
	}
	n := t.UnixNano()
	// The distance may wrap around; the decoder's sum wraps back, so it is
	// exact in any case.
	d := n - e.prev
	e.prev = n
	var u, tag uint64
	switch {
	case d%int64(time.Second) == 0:
		u, tag = zigzag(d/int64(time.Second)), timeSeconds
	case d%int64(time.Millisecond) == 0:
		u, tag = zigzag(d/int64(time.Millisecond)), timeMillis
	default:
		u, tag = zigzag(d), timeNanos
	}
	if u >= 1<<62 { // no room for the tag
		e.b = append(e.b, timeEscape)
		e.int(n)
		return
	}
	e.b = binary.AppendUvarint(e.b, u<<2|tag)
}

// appendState appends the binary form of s to dst.
func appendState(dst []byte, s *projections.CustomerState) []byte {
	return appendStateFormat(dst, s, stateFormatV4)
}

// appendStateFormat writes format V2, V3 or V4 (the tests write older
// records as older builds did).
func appendStateFormat(dst []byte, s *projections.CustomerState, version byte) []byte {
	e := enc{b: append(dst, version), delta: version >= stateFormatV4}
	e.str(s.Key)
	p := &s.Profile
	for _, v := range []string{p.CustomerID, p.Email, p.Name, p.Locale, p.TimeZone, p.Segment} {
		e.str(v)
	}
	e.bool(p.MarketingConsent)
	e.time(p.LastLoginAt)
	e.time(p.UpdatedAt)
	e.time(s.ErasedAt)
	e.uint(len(s.Sent))
	for _, t := range s.Sent {
		e.time(t)
	}
	e.uint(len(s.Carts))
	for _, c := range s.Carts {
		for _, v := range []string{c.ID, c.Type, c.Site, c.Channel, c.Currency, c.LegalEntity, c.Status, c.OrderID, c.AssignedFrom} {
			e.str(v)
		}
		e.uint(len(c.Metadata))
		for _, k := range sortedKeys(c.Metadata) {
			e.str(k)
			e.str(c.Metadata[k])
		}
		e.uint(len(c.Items))
		for i := range c.Items {
			it := &c.Items[i]
			e.str(it.SKU)
			e.str(it.Name)
			e.int(it.Quantity)
			e.int(it.UnitPriceMinor)
			e.str(it.Category)
			e.str(it.ImageURL)
		}
		e.int(c.Version)
		e.time(c.CreatedAt)
		e.time(c.ModifiedAt)
		e.time(c.LastActivity)
		e.time(c.ClosedAt)
		e.time(c.WakeAt)
		e.uint(len(c.Decisions))
		for i := range c.Decisions {
			r := &c.Decisions[i]
			e.str(r.ID)
			e.str(r.Flow)
			e.str(r.Step)
			e.int(int64(r.StepIndex))
			e.int(r.Version)
			e.time(r.At)
			e.time(r.Due)
			e.str(r.Suppressed)
			var flags byte
			if r.Holdout {
				flags |= 1
			}
			if r.Skipped {
				flags |= 2
			}
			if r.Discount {
				flags |= 4
			}
			if r.Shadow {
				flags |= 8 // a shadow flow's record (older readers would take it for a live one)
			}
			e.b = append(e.b, flags)
		}
	}
	e.uint(len(s.Seen))
	for _, se := range s.Seen {
		e.b = binary.LittleEndian.AppendUint64(e.b, se.Hash)
		e.time(se.At)
	}
	if version >= stateFormatV3 {
		appendExplain(&e, s)
	}
	return e.b
}

// The V3 section describes each decision record with one byte: the cause
// (bits 0-1, a cause* tag), the consent result (bits 2-3, an index into
// consentCodes; 0 means no checks were recorded), whether the consent
// source is written out rather than the profile's (bit 4), whether the
// guards' settings (cart cap, frequency cap, quiet hours) equal the previous
// checked record's of the cart (bit 5), and where the quiet hours' zone is
// (bits 6-7, a zone* tag).
const (
	causeNone     byte = 0 // not known
	causeCart     byte = 1 // the cart's own cause
	causePrevious byte = 2 // the previous record's cause
	causeExplicit byte = 3 // written out

	flagConsentExplicit byte = 1 << 4
	flagSameSettings    byte = 1 << 5

	zoneNone     byte = 0 // the flow had no quiet hours
	zoneProfile  byte = 1 // the profile's time zone
	zoneExplicit byte = 2 // written out
)

var consentCodes = [...]string{"", projections.ConsentGranted, projections.ConsentDenied, projections.ConsentNotRequired}

// sameSettings reports whether two checks saw the same guard settings.
func sameSettings(a, b *projections.Checks) bool {
	return a.CartMax == b.CartMax && a.CapMax == b.CapMax && a.CapPer == b.CapPer &&
		a.QuietZone == b.QuietZone && a.QuietFrom == b.QuietFrom && a.QuietTo == b.QuietTo
}

func (e *enc) cause(c projections.Cause) {
	e.str(c.EventID)
	if c.EventID != "" {
		e.int(int64(c.Partition))
		e.int(c.Offset)
	}
}

func (d *dec) cause() projections.Cause {
	c := projections.Cause{EventID: d.str()}
	if c.EventID != "" {
		c.Partition, c.Offset = int32(d.int()), d.int()
	}
	return c
}

// duration writes whole seconds compactly, anything else exactly.
func (e *enc) duration(v time.Duration) {
	if v%time.Second == 0 {
		e.int(int64(v/time.Second) * 2)
		return
	}
	e.int(int64(v)*2 + 1)
}

func (d *dec) duration() time.Duration {
	v := d.int()
	if v&1 == 0 {
		return time.Duration(v/2) * time.Second
	}
	return time.Duration((v - 1) / 2)
}

// appendExplain writes the V3 section: the profile's consent source, then
// per cart (in order) its cause and, per decision record, its byte (see
// causeNone) and what it says follows: the cause, the consent source, the
// caps' counts, and the guards' settings.
func appendExplain(e *enc, s *projections.CustomerState) {
	p := &s.Profile
	e.str(p.ConsentEventID)
	e.time(p.ConsentAt)
	for _, c := range s.Carts {
		e.cause(c.Cause)
		prev := c.Cause
		var last *projections.Checks // the previous checked record's
		for i := range c.Decisions {
			r := &c.Decisions[i]
			var tag byte
			switch {
			case !r.Cause.Known():
				tag = causeNone
			case r.Cause == c.Cause:
				tag = causeCart
			case r.Cause == prev:
				tag = causePrevious
			default:
				tag = causeExplicit
			}
			ck := &r.Checks
			code := 0
			for j, v := range consentCodes {
				if v == ck.Consent {
					code = j
				}
			}
			tag |= byte(code) << 2
			explicitConsent := code != 0 && (ck.ConsentEventID != p.ConsentEventID || !ck.ConsentAt.Equal(p.ConsentAt))
			same := code != 0 && last != nil && sameSettings(ck, last)
			zone := zoneNone
			switch {
			case code == 0 || same || ck.QuietZone == "":
			case ck.QuietZone == p.TimeZone:
				zone = zoneProfile
			default:
				zone = zoneExplicit
			}
			if explicitConsent {
				tag |= flagConsentExplicit
			}
			if same {
				tag |= flagSameSettings
			}
			tag |= zone << 6
			e.b = append(e.b, tag)
			if tag&3 == causeExplicit {
				e.cause(r.Cause)
			}
			if r.Cause.Known() {
				prev = r.Cause
			}
			if code == 0 {
				continue
			}
			if explicitConsent {
				e.str(ck.ConsentEventID)
				e.time(ck.ConsentAt)
			}
			e.uint(ck.CartCount)
			e.uint(ck.CapCount)
			if !same {
				e.uint(ck.CartMax)
				e.uint(ck.CapMax)
				e.duration(ck.CapPer)
				if zone == zoneExplicit {
					e.str(ck.QuietZone)
				}
				if zone != zoneNone {
					e.uint(ck.QuietFrom)
					e.uint(ck.QuietTo)
				}
			}
			last = ck
		}
	}
}

// decodeExplain reads the V3 section into s, whose carts and records are
// decoded already; records holds each cart's number of records. With
// d.index it reads the section and keeps none of it.
func decodeExplain(d *dec, s *projections.CustomerState, records []int) {
	p := &s.Profile
	id, at := d.str(), d.time()
	if !d.index {
		p.ConsentEventID, p.ConsentAt = id, at
	}
	var scratch projections.DecisionRecord
	for ci, m := range records {
		if d.err != nil {
			return
		}
		cc := d.cause()
		var c *projections.Cart
		if !d.index {
			c = s.Carts[ci]
			c.Cause = cc
		}
		prev := cc
		var last projections.Checks
		checked := false
		for i := range m {
			if d.err != nil {
				return
			}
			r := &scratch
			if !d.index {
				r = &c.Decisions[i]
			}
			tag := d.byte()
			switch tag & 3 {
			case causeNone:
			case causeCart:
				r.Cause = cc
			case causePrevious:
				r.Cause = prev
			case causeExplicit:
				r.Cause = d.cause()
			}
			if r.Cause.Known() {
				prev = r.Cause
			}
			code := int(tag>>2) & 3
			zone := tag >> 6
			same := tag&flagSameSettings != 0
			if code == 0 {
				if tag&^3 != 0 {
					d.err = errCorruptState
				}
				continue
			}
			if zone > zoneExplicit || same && (!checked || zone != zoneNone) {
				d.err = errCorruptState
				return
			}
			ck := &r.Checks
			ck.Consent = consentCodes[code]
			ck.ConsentEventID, ck.ConsentAt = id, at
			if tag&flagConsentExplicit != 0 {
				ck.ConsentEventID, ck.ConsentAt = d.str(), d.time()
			}
			ck.CartCount, ck.CapCount = int(d.uvarint()), int(d.uvarint())
			if same {
				ck.CartMax, ck.CapMax, ck.CapPer = last.CartMax, last.CapMax, last.CapPer
				ck.QuietZone, ck.QuietFrom, ck.QuietTo = last.QuietZone, last.QuietFrom, last.QuietTo
			} else {
				ck.CartMax, ck.CapMax, ck.CapPer = int(d.uvarint()), int(d.uvarint()), d.duration()
				switch zone {
				case zoneProfile:
					ck.QuietZone = p.TimeZone
				case zoneExplicit:
					ck.QuietZone = d.str()
				}
				if zone != zoneNone {
					ck.QuietFrom, ck.QuietTo = int(d.uvarint()), int(d.uvarint())
				}
			}
			last, checked = *ck, true
		}
	}
}

type dec struct {
	b   []byte
	err error
	// index decodes only what the store derives index entries from, into
	// reused memory, with strings that share b's memory (decodeIndex).
	index bool
	// shared decodes all of it, with strings that share b's memory
	// (decodeSharedState).
	shared bool
	// delta reads times as distances (V4, see enc.time); prev is the last
	// non-zero time read.
	delta bool
	prev  int64
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptState
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptState
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks it against what is left, so corrupt
// input cannot make the decoder allocate without bound.
func (d *dec) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errCorruptState
		return 0
	}
	return int(n)
}

func (d *dec) str() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	var s string
	if (d.index || d.shared) && n > 0 {
		s = unsafe.String(&d.b[0], n)
	} else {
		s = string(d.b[:n])
	}
	d.b = d.b[n:]
	return s
}

func (d *dec) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorruptState
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) time() time.Time {
	if d.delta {
		return d.deltaTime()
	}
	n := d.int()
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (d *dec) deltaTime() time.Time {
	v := d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	u, n := v>>2, int64(0)
	switch v & 3 {
	case timeZero:
		switch u {
		case 0:
			return time.Time{}
		case timeEscape >> 2:
			n = d.int()
		default:
			d.err = errCorruptState
			return time.Time{}
		}
	case timeSeconds:
		n = d.prev + unzigzag(u)*int64(time.Second)
	case timeMillis:
		n = d.prev + unzigzag(u)*int64(time.Millisecond)
	default:
		n = d.prev + unzigzag(u)
	}
	d.prev = n
	return time.Unix(0, n).UTC()
}

// decodeState parses the binary form written by appendState.
// decodeIndex decodes into scratch only what the store derives index
// entries from (derivedIndex: the key, and each cart's id, status,
// modification and wake times), reusing scratch's carts, without
// allocating: scratch's strings share b's memory, so b must not change
// while they are used. For a restore and a standby copy; the layout is
// decodeState's own.
func decodeIndex(b []byte, scratch *projections.CustomerState) error {
	_, err := decodeStateWith(dec{b: b, index: true}, scratch)
	return err
}

func decodeState(b []byte) (*projections.CustomerState, error) {
	return decodeStateWith(dec{b: b}, &projections.CustomerState{})
}

// decodeSharedState is decodeState without copying strings: they share b's
// memory, so b must never be modified afterwards.
func decodeSharedState(b []byte) (*projections.CustomerState, error) {
	return decodeStateWith(dec{b: b, shared: true}, &projections.CustomerState{})
}

// decodeStateWith decodes into s (all of it, or with d.index what
// decodeIndex says).
func decodeStateWith(d dec, s *projections.CustomerState) (*projections.CustomerState, error) {
	version := d.byte()
	if version < stateFormatV1 || version > stateFormatV4 {
		return nil, errCorruptState
	}
	d.delta = version >= stateFormatV4
	s.Key = d.str()
	p := &s.Profile
	p.CustomerID, p.Email, p.Name, p.Locale, p.TimeZone, p.Segment = d.str(), d.str(), d.str(), d.str(), d.str(), d.str()
	p.MarketingConsent = d.byte() == 1
	p.LastLoginAt = d.time()
	p.UpdatedAt = d.time()
	s.ErasedAt = d.time()
	if m := d.count(); m > 0 {
		if d.index {
			for range m {
				d.time()
			}
		} else {
			s.Sent = make([]time.Time, m)
			for i := range s.Sent {
				s.Sent[i] = d.time()
			}
		}
	}
	n := d.count()
	switch {
	case d.index:
		s.Carts = s.Carts[:0]
	case n > 0:
		s.Carts = make([]*projections.Cart, 0, n)
	}
	var scratchItem projections.LineItem
	var scratchDecision projections.DecisionRecord
	// records counts each cart's decision records, for the V3 section.
	var records []int
	if version >= stateFormatV3 && !d.index {
		records = make([]int, 0, n)
	}
	var recordsBuf [projections.MaxCartsPerCustomer]int
	if version >= stateFormatV3 && d.index {
		records = recordsBuf[:0]
	}
	for range n {
		if d.err != nil {
			break
		}
		var c *projections.Cart
		if d.index && len(s.Carts) < cap(s.Carts) && s.Carts[:len(s.Carts)+1][len(s.Carts)] != nil {
			c = s.Carts[:len(s.Carts)+1][len(s.Carts)]
			*c = projections.Cart{}
		} else {
			c = &projections.Cart{}
		}
		c.ID, c.Type, c.Site, c.Channel, c.Currency, c.LegalEntity, c.Status, c.OrderID, c.AssignedFrom =
			d.str(), d.str(), d.str(), d.str(), d.str(), d.str(), d.str(), d.str(), d.str()
		if m := d.count(); m > 0 {
			if !d.index {
				c.Metadata = make(map[string]string, m)
			}
			for range m {
				k, v := d.str(), d.str()
				if !d.index {
					c.Metadata[k] = v
				}
			}
		}
		if m := d.count(); m > 0 {
			if !d.index {
				c.Items = make([]projections.LineItem, m)
			}
			for i := range m {
				it := &scratchItem
				if !d.index {
					it = &c.Items[i]
				}
				it.SKU, it.Name = d.str(), d.str()
				it.Quantity, it.UnitPriceMinor = d.int(), d.int()
				it.Category, it.ImageURL = d.str(), d.str()
				it.LineTotalMinor = it.Quantity * it.UnitPriceMinor
				c.TotalMinor += it.LineTotalMinor
				c.ItemCount += it.Quantity
			}
		}
		c.Version = d.int()
		c.CreatedAt, c.ModifiedAt, c.LastActivity, c.ClosedAt, c.WakeAt = d.time(), d.time(), d.time(), d.time(), d.time()
		m := d.count()
		if version >= stateFormatV3 {
			records = append(records, m)
		}
		if m > 0 {
			if !d.index {
				c.Decisions = make([]projections.DecisionRecord, m)
			}
			for i := range m {
				r := &scratchDecision
				if !d.index {
					r = &c.Decisions[i]
				}
				r.ID, r.Flow, r.Step = d.str(), d.str(), d.str()
				r.StepIndex, r.Version = int(d.int()), d.int()
				r.At = d.time()
				r.Due = d.time()
				r.Suppressed = d.str()
				f := d.byte()
				r.Holdout, r.Skipped, r.Discount, r.Shadow = f&1 != 0, f&2 != 0, f&4 != 0, f&8 != 0
			}
		}
		s.Carts = append(s.Carts, c)
	}
	if version >= stateFormatV2 {
		if m := d.count(); m > 0 && d.err == nil {
			if !d.index {
				s.Seen = make([]projections.SeenEvent, m)
			}
			var scratch projections.SeenEvent
			for i := range m {
				if len(d.b) < 8 {
					d.err = errCorruptState
					break
				}
				se := &scratch
				if !d.index {
					se = &s.Seen[i]
				}
				se.Hash = binary.LittleEndian.Uint64(d.b)
				d.b = d.b[8:]
				se.At = d.time()
			}
		}
	}
	if version >= stateFormatV3 && d.err == nil {
		decodeExplain(&d, s, records)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptState
	}
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
