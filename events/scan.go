package events

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// This file is the single-pass parser behind Decode. It reads the record
// once, checks its syntax as it goes, and decodes the envelope and, when the
// type precedes data (as it does in every producer's output), the payload
// into its typed struct in the same pass. It reproduces what the
// reflection-based decoder it replaced did (decode_reference_test.go keeps
// that one as the oracle of the differential tests):
//
//   - member names match a field exactly or, failing that, by case folding
//     (bytes.EqualFold, as encoding/json);
//   - of duplicate members the last one wins; a duplicate object is decoded
//     into the value the first one left, a duplicate array into the elements
//     the earlier ones left (slot by slot), a duplicate metadata object is
//     merged into the map;
//   - null leaves a value as it is, except for slices, maps and pointers,
//     which it sets to nil, and map values, which it sets to "";
//   - in data, a value of the wrong kind is recorded (the first one) and
//     skipped, and decoding goes on; an unknown member wins over any such
//     error; a syntax error anywhere wins over everything;
//   - nesting deeper than maxDepth objects and arrays is a syntax error.
//
// Strings alias the record while it is parsed and are copied into one
// allocation per event before Decode returns (see arena).

// maxDepth is the deepest nesting of objects and arrays accepted.
const maxDepth = 10000

// scanner is the state of one Decode.
type scanner struct {
	buf   []byte
	pos   int
	depth int
	// err is a syntax error (or an error of the envelope): the record is
	// malformed.
	err error

	// The outcome of decoding data into its typed struct. unknown is the
	// first member of no field; typeAt is the offset of the first value of
	// the wrong kind (kind names the Go kind it should have had), plain the
	// first other error (a time that does not parse); hasErr says whether
	// typeAt or plain is set.
	unknown    string
	hasUnknown bool
	hasErr     bool
	typeAt     int
	typeKind   string
	plain      error
	notObject  bool // data is not a JSON object

	// dataStart is the offset of the last data member's value; inline is
	// the event it was decoded into, for the type inlineType (nil when the
	// type was not known yet).
	dataStart  int
	inline     *Event
	inlineType string

	// prices has a slot per element of the items array: whether its
	// unit_price_minor was last set to a number (a null or no member
	// leaves it false).
	prices []bool
	// meta is the metadata object: metaSet says the map is non-nil, and
	// metaKV holds its entries in order, key and value alternating; the map
	// is built once they are copied (see finish).
	metaSet bool
	metaKV  []string

	key     []byte // the current member name, unescaped
	keyEsc  bool   // key is in keyBuf, not the record
	keyBuf  []byte
	scratch []byte // unescaped strings, append-only
	// strBytes is the length of the strings read, at least that of those
	// the event keeps: the size of the arena.
	strBytes int
}

func (p *scanner) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

func (p *scanner) failAt(what string) {
	if p.pos >= len(p.buf) {
		p.fail("unexpected end of JSON input")
		return
	}
	p.fail("invalid character %s %s", quoteChar(p.buf[p.pos]), what)
}

func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

func (p *scanner) ws() {
	for p.pos < len(p.buf) {
		switch p.buf[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// peek returns the byte at pos after white space, or 0 at the end.
func (p *scanner) peek() byte {
	p.ws()
	if p.pos < len(p.buf) {
		return p.buf[p.pos]
	}
	return 0
}

func (p *scanner) enter() bool {
	p.depth++
	if p.depth > maxDepth {
		p.fail("invalid character %s exceeded max depth", quoteChar(p.buf[p.pos]))
		return false
	}
	p.pos++
	return true
}

// member moves to the next member of the object whose '{' (first) or
// previous value was just read. It returns true with the name in p.key and
// pos at the value, or false at the closing '}' or on an error.
func (p *scanner) member(first bool) bool {
	if p.err != nil {
		return false
	}
	c := p.peek()
	if first {
		if c == '}' {
			p.pos++
			p.depth--
			return false
		}
	} else {
		switch c {
		case '}':
			p.pos++
			p.depth--
			return false
		case ',':
			p.pos++
			c = p.peek()
		default:
			p.failAt("after object key:value pair")
			return false
		}
	}
	return p.memberKey(c)
}

// memberKey reads the member name at pos (c is its first byte), the ':'
// and the white space after it.
func (p *scanner) memberKey(c byte) bool {
	if c != '"' {
		p.failAt("looking for beginning of object key string")
		return false
	}
	raw, esc := p.stringToken()
	if p.err != nil {
		return false
	}
	p.keyEsc = esc
	if esc {
		p.keyBuf = unescape(p.keyBuf[:0], raw)
		p.key = p.keyBuf
	} else {
		p.key = raw
	}
	if p.peek() != ':' {
		p.failAt("after object key")
		return false
	}
	p.pos++
	p.ws()
	return p.more()
}

// more fails at the end of the record, where a value must follow.
func (p *scanner) more() bool {
	if p.pos >= len(p.buf) {
		p.fail("unexpected end of JSON input")
		return false
	}
	return true
}

// end is what memberOf returns at the end of an object.
const end = -2

// memberOf is member for an object of the fields names: it returns the
// index in names of the next member's field (see field), -1 for a member
// of no field, or end. prev is the index it returned last: the next field
// is tried first, as producers write the fields in one order, and its
// name is matched in place, without reading the key first.
func (p *scanner) memberOf(first bool, names []string, prev int) int {
	if p.err != nil {
		return end
	}
	c := p.peek()
	if c == '}' {
		p.pos++
		p.depth--
		return end
	}
	if !first {
		if c != ',' {
			p.failAt("after object key:value pair")
			return end
		}
		p.pos++
		c = p.peek()
	}
	if c == '"' {
		b := p.buf[p.pos+1:]
		try := func(n string) bool {
			return len(b) > len(n) && b[len(n)] == '"' && string(b[:len(n)]) == n
		}
		i := -1
		if prev+1 < len(names) && try(names[prev+1]) {
			i = prev + 1
		} else {
			for j, n := range names {
				if try(n) {
					i = j
					break
				}
			}
		}
		if i >= 0 {
			p.key, p.keyEsc = b[:len(names[i])], false
			p.pos += len(names[i]) + 2
			if p.peek() != ':' {
				p.failAt("after object key")
				return end
			}
			p.pos++
			p.ws()
			if !p.more() {
				return end
			}
			return i
		}
	}
	// not a field's name as it is: read the key, match by folding
	if !p.memberKey(c) {
		return end
	}
	return p.field(names)
}

// elem moves to the next element of the array whose '[' (first) or
// previous element was just read: true with pos at the element, false at
// the closing ']' or on an error.
func (p *scanner) elem(first bool) bool {
	if p.err != nil {
		return false
	}
	c := p.peek()
	if c == ']' && first {
		p.pos++
		p.depth--
		return false
	}
	if !first {
		switch c {
		case ']':
			p.pos++
			p.depth--
			return false
		case ',':
			p.pos++
			p.ws()
		default:
			p.failAt("after array element")
			return false
		}
	}
	return p.more()
}

// stringToken reads the string at pos (its '"'), returning its bytes
// between the quotes and whether it has escapes. It checks that the string
// is valid UTF-8: with the syntax, which allows nothing but ASCII outside
// strings, that makes the whole record valid UTF-8 once it is read.
func (p *scanner) stringToken() (raw []byte, esc bool) {
	start := p.pos + 1
	b := p.buf
	i := start
	for {
		i = plain(b, i)
		if i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			p.pos = i + 1
			return b[start:i], esc
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				i++
				continue
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					p.pos = len(b)
					p.fail("unexpected end of JSON input")
					return nil, false
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						p.pos = i
						p.fail("invalid character %s in \\u hexadecimal character escape", quoteChar(h))
						return nil, false
					}
				}
				i += 6
			default:
				p.fail("invalid character %s in string escape code", quoteChar(b[i+1]))
				return nil, false
			}
		case c < 0x20:
			p.fail("invalid character %s in string literal", quoteChar(c))
			return nil, false
		default: // not ASCII
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				p.fail("record is not valid UTF-8")
				return nil, false
			}
			i += n
		}
	}
	p.pos = len(b)
	p.fail("unexpected end of JSON input")
	return nil, false
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain returns the index of the first byte from i on that is '"', '\\', a
// control character or not ASCII, or len(b): eight bytes at a time.
func plain(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ ('"' * ones)
		e := x ^ ('\\' * ones)
		m := ((q - ones) &^ q) | ((e - ones) &^ e) | (x - 0x20*ones) | x
		if m &= highs; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
			return i
		}
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unescape appends the string raw (checked by stringToken) unescaped to
// dst, as encoding/json does: a surrogate that is not half of a pair
// becomes U+FFFD.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := bytes.IndexByte(raw[i:], '\\')
			if j < 0 {
				return append(dst, raw[i:]...)
			}
			dst = append(dst, raw[i:i+j]...)
			i += j
			continue
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if d := utf16.DecodeRune(r, hex4(raw[i+2:])); d != unicode.ReplacementChar {
						i += 6
						dst = utf8.AppendRune(dst, d)
						continue
					}
				}
				r = unicode.ReplacementChar
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

// stringValue reads the string at pos. The result aliases the record or
// the scratch buffer: it must go through the arena before Decode returns.
func (p *scanner) stringValue() string {
	raw, esc := p.stringToken()
	if p.err != nil {
		return ""
	}
	if !esc {
		p.strBytes += len(raw)
		return unsafe.String(unsafe.SliceData(raw), len(raw))
	}
	start := len(p.scratch)
	p.scratch = unescape(p.scratch, raw)
	s := p.scratch[start:]
	p.strBytes += len(s)
	return unsafe.String(unsafe.SliceData(s), len(s))
}

// keyString returns the current member name as a string that, like
// stringValue's, must go through the arena.
func (p *scanner) keyString() string {
	p.strBytes += len(p.key)
	if !p.keyEsc {
		return unsafe.String(unsafe.SliceData(p.key), len(p.key))
	}
	start := len(p.scratch)
	p.scratch = append(p.scratch, p.key...)
	s := p.scratch[start:]
	return unsafe.String(unsafe.SliceData(s), len(s))
}

// literal reads true, false or null at pos.
func (p *scanner) literal(word string) {
	if len(p.buf)-p.pos >= len(word) && string(p.buf[p.pos:p.pos+len(word)]) == word {
		p.pos += len(word)
		return
	}
	for i := 1; i < len(word); i++ {
		if p.pos+i >= len(p.buf) {
			p.pos = len(p.buf)
			p.fail("unexpected end of JSON input")
			return
		}
		if p.buf[p.pos+i] != word[i] {
			p.pos += i
			p.failAt("in literal " + word + " (expecting " + strconv.QuoteRune(rune(word[i])) + ")")
			return
		}
	}
}

// number reads the number at pos and returns its value if it is an
// integer literal (no fraction, no exponent) within [lo, hi].
func (p *scanner) number(lo, hi int64) (n int64, ok bool) {
	b := p.buf
	i := p.pos
	neg := false
	if b[i] == '-' {
		neg = true
		i++
	}
	if i >= len(b) {
		p.pos = i
		p.fail("unexpected end of JSON input")
		return 0, false
	}
	var mag uint64
	ok = true
	switch c := b[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			d := uint64(b[i] - '0')
			if mag > (math.MaxUint64-d)/10 {
				ok = false
			} else {
				mag = mag*10 + d
			}
			i++
		}
	default:
		p.pos = i
		p.failAt("in numeric literal")
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		ok = false
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.pos = i
			p.failAt("after decimal point in numeric literal")
			return 0, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		ok = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.pos = i
			p.failAt("in exponent of numeric literal")
			return 0, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	p.pos = i
	if !ok {
		return 0, false
	}
	if neg {
		if mag > uint64(-lo) {
			return 0, false
		}
		return -int64(mag), true
	}
	if mag > uint64(hi) {
		return 0, false
	}
	return int64(mag), true
}

// skip reads the value at pos, checking its syntax.
func (p *scanner) skip() {
	if p.err != nil {
		return
	}
	if p.pos >= len(p.buf) {
		p.fail("unexpected end of JSON input")
		return
	}
	switch c := p.buf[p.pos]; c {
	case '"':
		p.stringToken()
	case '{':
		if !p.enter() {
			return
		}
		for first := true; p.member(first); first = false {
			p.skip()
		}
	case '[':
		if !p.enter() {
			return
		}
		for first := true; p.elem(first); first = false {
			p.skip()
		}
	case 't':
		p.literal("true")
	case 'f':
		p.literal("false")
	case 'n':
		p.literal("null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			p.number(0, 0)
			return
		}
		p.failAt("looking for beginning of value")
	}
}

// isValue reports whether c starts a JSON value.
func isValue(c byte) bool {
	switch c {
	case '"', '{', '[', 't', 'f', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}

// mistyped records that the value at pos is not of the Go kind kind (when
// it is the first such error) and skips it.
func (p *scanner) mistyped(kind string) {
	if p.pos < len(p.buf) && isValue(p.buf[p.pos]) && !p.hasErr {
		p.hasErr, p.typeAt, p.typeKind = true, p.pos, kind
	}
	p.skip()
}

func (p *scanner) unknownField() {
	if !p.hasUnknown {
		p.hasUnknown, p.unknown = true, string(p.key)
	}
	p.skip()
}

// field returns the index of the current member name in names: the name
// that is the same, else the first one that is the same by case folding;
// -1 for none.
func (p *scanner) field(names []string) int {
	for i, n := range names {
		if string(p.key) == n {
			return i
		}
	}
	for i, n := range names {
		if bytes.EqualFold(p.key, []byte(n)) {
			return i
		}
	}
	return -1
}

// Typed values. Each reads the value at pos into dst.

func (p *scanner) str(dst *string) {
	switch p.buf[p.pos] {
	case '"':
		*dst = p.stringValue()
	case 'n':
		p.literal("null")
	default:
		p.mistyped("string")
	}
}

func (p *scanner) optStr(dst **string, slot *string) {
	switch p.buf[p.pos] {
	case '"':
		if *dst == nil {
			*dst = slot
		}
		**dst = p.stringValue()
	case 'n':
		p.literal("null")
		*dst = nil
	default:
		p.mistyped("string")
	}
}

func (p *scanner) int64v(dst *int64) {
	p.integer(dst, "int64", math.MinInt64, math.MaxInt64)
}

func (p *scanner) intv(dst *int) {
	var n int64 = int64(*dst)
	p.integer(&n, "int", math.MinInt, math.MaxInt)
	*dst = int(n)
}

func (p *scanner) integer(dst *int64, kind string, lo, hi int64) {
	switch c := p.buf[p.pos]; {
	case c == '-' || '0' <= c && c <= '9':
		start := p.pos
		n, ok := p.number(lo, hi)
		if p.err != nil {
			return
		}
		if !ok {
			if !p.hasErr {
				p.hasErr, p.typeAt, p.typeKind = true, start, kind
			}
			return
		}
		*dst = n
	case c == 'n':
		p.literal("null")
	default:
		p.mistyped(kind)
	}
}

func (p *scanner) boolv(dst *bool) {
	switch p.buf[p.pos] {
	case 't':
		p.literal("true")
		*dst = true
	case 'f':
		p.literal("false")
		*dst = false
	case 'n':
		p.literal("null")
	default:
		p.mistyped("bool")
	}
}

func (p *scanner) optBool(dst **bool, slot *bool) {
	switch p.buf[p.pos] {
	case 't', 'f':
		if *dst == nil {
			*dst = slot
		}
		p.boolv(*dst)
	case 'n':
		p.literal("null")
		*dst = nil
	default:
		p.mistyped("bool")
	}
}

// timev decodes a time as time.Time's UnmarshalJSON does, which it calls:
// RFC 3339 in a JSON string taken as it is (escapes are not decoded).
func (p *scanner) timev(dst *time.Time) {
	switch p.buf[p.pos] {
	case '"':
		start := p.pos
		p.stringToken()
		if p.err != nil {
			return
		}
		if err := dst.UnmarshalJSON(p.buf[start:p.pos]); err != nil && !p.hasErr {
			p.hasErr, p.plain = true, err
		}
	case 'n':
		p.literal("null")
	default:
		p.mistyped("struct")
	}
}

// Field tables: the JSON names of each payload, the CartRef ones first.
var (
	cartRefFields = []string{"customer_id", "anonymous_id", "cart_id", "cart_type", "site", "channel", "currency", "legal_entity", "metadata"}

	itemAddedFields         = withCartRef("item")
	itemUpdatedFields       = withCartRef("sku", "quantity", "unit_price_minor")
	itemRemovedFields       = withCartRef("sku")
	cartUpdatedFields       = withCartRef("items")
	cartDiscardedFields     = withCartRef("reason")
	checkoutStartedFields   = withCartRef()
	checkoutCompletedFields = withCartRef("order_id", "total_minor", "discount_codes")
	cartAssignedFields      = withCartRef("from_key", "items", "created_at", "modified_at", "last_activity", "version", "decisions", "cause")

	customerLoggedInFields = []string{"customer_id", "anonymous_id"}
	customerUpdatedFields  = []string{"customer_id", "email", "name", "locale", "time_zone", "segment", "marketing_consent"}
	customerErasedFields   = []string{"customer_id"}

	itemFields     = []string{"sku", "name", "quantity", "unit_price_minor", "category", "image_url"}
	assignedFields = []string{"id", "flow", "step", "step_index", "version", "at", "due", "holdout", "skipped", "discount", "suppressed", "cause", "shadow"}
	causeFields    = []string{"event_id", "topic", "partition", "offset"}

	envelopeFields = []string{"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}
)

const nCartRef = 9

// payloadFields returns the field table of ev's payload.
func payloadFields(ev *Event) []string {
	switch {
	case ev.ItemAdded != nil:
		return itemAddedFields
	case ev.ItemUpdated != nil:
		return itemUpdatedFields
	case ev.ItemRemoved != nil:
		return itemRemovedFields
	case ev.CartUpdated != nil:
		return cartUpdatedFields
	case ev.CartDiscarded != nil:
		return cartDiscardedFields
	case ev.CheckoutStarted != nil:
		return checkoutStartedFields
	case ev.CheckoutCompleted != nil:
		return checkoutCompletedFields
	case ev.CartAssigned != nil:
		return cartAssignedFields
	case ev.CustomerLoggedIn != nil:
		return customerLoggedInFields
	case ev.CustomerUpdated != nil:
		return customerUpdatedFields
	}
	return customerErasedFields
}

func withCartRef(names ...string) []string {
	return append(append([]string(nil), cartRefFields...), names...)
}

func (p *scanner) cartRef(r *CartRef, i int) {
	switch i {
	case 0:
		p.str(&r.CustomerID)
	case 1:
		p.str(&r.AnonymousID)
	case 2:
		p.str(&r.CartID)
	case 3:
		p.str(&r.CartType)
	case 4:
		p.str(&r.Site)
	case 5:
		p.str(&r.Channel)
	case 6:
		p.str(&r.Currency)
	case 7:
		p.str(&r.LegalEntity)
	case 8:
		p.metadata()
	default:
		p.unknownField()
	}
}

// metadata reads the metadata object into p.metaKV (see finish).
func (p *scanner) metadata() {
	switch p.buf[p.pos] {
	case '{':
	case 'n':
		p.literal("null")
		p.metaSet, p.metaKV = false, p.metaKV[:0]
		return
	default:
		p.mistyped("map")
		return
	}
	if !p.enter() {
		return
	}
	p.metaSet = true
	for first := true; p.member(first); first = false {
		k := p.keyString()
		v := ""
		switch p.buf[p.pos] {
		case '"':
			v = p.stringValue()
		case 'n':
			p.literal("null")
		default:
			p.mistyped("string")
			continue
		}
		p.metaKV = append(p.metaKV, k, v)
	}
}

// item reads a line item; price, when not nil, records whether its
// unit_price_minor was last set to a number.
func (p *scanner) item(it *Item, price *bool) {
	switch p.buf[p.pos] {
	case '{':
	case 'n':
		p.literal("null")
		return
	default:
		p.mistyped("struct")
		return
	}
	if !p.enter() {
		return
	}
	for i, first := -1, true; ; first = false {
		if i = p.memberOf(first, itemFields, i); i == end {
			break
		}
		switch i {
		case 0:
			p.str(&it.SKU)
		case 1:
			p.str(&it.Name)
		case 2:
			p.int64v(&it.Quantity)
		case 3:
			if price != nil && p.pos < len(p.buf) {
				switch c := p.buf[p.pos]; {
				case c == 'n':
					*price = false
				case c == '-' || '0' <= c && c <= '9':
					*price = true
				}
			}
			p.int64v(&it.UnitPriceMinor)
		case 4:
			p.str(&it.Category)
		case 5:
			p.str(&it.ImageURL)
		default:
			p.unknownField()
		}
	}
}

// array reads a JSON array (or null, which sets *dst to nil) into the
// elements *dst already has (the ones a duplicate member left), then new
// ones, calling elem with each element's index and slot.
func array[T any](p *scanner, dst *[]T, elem func(i int, v *T)) {
	switch p.buf[p.pos] {
	case '[':
	case 'n':
		p.literal("null")
		*dst = nil
		return
	default:
		p.mistyped("slice")
		return
	}
	if !p.enter() {
		return
	}
	var zero T
	full := (*dst)[:cap(*dst)]
	n := 0
	for first := true; p.elem(first); first = false {
		if n == len(full) {
			full = append(full, zero)
			full = full[:cap(full)]
		}
		elem(n, &full[n])
		n++
	}
	if full == nil {
		full = []T{}
	}
	*dst = full[:n]
}

// items reads an array of line items (see array); prices, when not nil,
// follows the elements slot by slot, and is nil after a null array.
func (p *scanner) items(dst *[]Item, prices *[]bool) {
	isNull := p.buf[p.pos] == 'n'
	array(p, dst, func(i int, it *Item) {
		var price *bool
		if prices != nil {
			if i == len(*prices) {
				*prices = append(*prices, false)
			}
			price = &(*prices)[i]
		}
		p.item(it, price)
	})
	if isNull && prices != nil {
		*prices = nil
	}
}

func (p *scanner) strings(dst *[]string) {
	array(p, dst, func(_ int, s *string) { p.str(s) })
}

func (p *scanner) decisions(dst *[]AssignedRecord) {
	array(p, dst, func(_ int, r *AssignedRecord) { p.assignedRecord(r) })
}

func (p *scanner) assignedRecord(r *AssignedRecord) {
	switch p.buf[p.pos] {
	case '{':
	case 'n':
		p.literal("null")
		return
	default:
		p.mistyped("struct")
		return
	}
	if !p.enter() {
		return
	}
	for i, first := -1, true; ; first = false {
		if i = p.memberOf(first, assignedFields, i); i == end {
			break
		}
		switch i {
		case 0:
			p.str(&r.ID)
		case 1:
			p.str(&r.Flow)
		case 2:
			p.str(&r.Step)
		case 3:
			p.intv(&r.StepIndex)
		case 4:
			p.int64v(&r.Version)
		case 5:
			p.timev(&r.At)
		case 6:
			p.timev(&r.Due)
		case 7:
			p.boolv(&r.Holdout)
		case 8:
			p.boolv(&r.Skipped)
		case 9:
			p.boolv(&r.Discount)
		case 10:
			p.str(&r.Suppressed)
		case 11:
			p.cause(&r.Cause)
		case 12:
			p.boolv(&r.Shadow)
		default:
			p.unknownField()
		}
	}
}

// cause reads a Cause (or null) into *dst, allocating it when nil.
func (p *scanner) cause(dst **Cause) {
	switch p.buf[p.pos] {
	case '{':
	case 'n':
		p.literal("null")
		*dst = nil
		return
	default:
		p.mistyped("struct")
		return
	}
	if *dst == nil {
		*dst = &Cause{}
	}
	c := *dst
	if !p.enter() {
		return
	}
	for i, first := -1, true; ; first = false {
		if i = p.memberOf(first, causeFields, i); i == end {
			break
		}
		switch i {
		case 0:
			p.str(&c.EventID)
		case 1:
			p.str(&c.Topic)
		case 2:
			n := int64(c.Partition)
			p.integer(&n, "int32", math.MinInt32, math.MaxInt32)
			c.Partition = int32(n)
		case 3:
			p.int64v(&c.Offset)
		default:
			p.unknownField()
		}
	}
}

// payload reads data (pos at its first byte) into the payload of ev.
func (p *scanner) payload(ev *Event) {
	if p.buf[p.pos] != '{' {
		p.notObject = true
		p.skip()
		return
	}
	if !p.enter() {
		return
	}
	names := payloadFields(ev)
	for i, first := -1, true; ; first = false {
		if i = p.memberOf(first, names, i); i == end {
			break
		}
		switch {
		case ev.ItemAdded != nil:
			d := ev.ItemAdded
			switch {
			case i == nCartRef:
				p.item(&d.Item, nil)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.ItemUpdated != nil:
			d := ev.ItemUpdated
			switch i {
			case nCartRef:
				p.str(&d.SKU)
			case nCartRef + 1:
				p.int64v(&d.Quantity)
			case nCartRef + 2:
				p.int64v(&d.UnitPriceMinor)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.ItemRemoved != nil:
			d := ev.ItemRemoved
			switch i {
			case nCartRef:
				p.str(&d.SKU)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.CartUpdated != nil:
			d := ev.CartUpdated
			switch i {
			case nCartRef:
				p.items(&d.Items, &p.prices)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.CartDiscarded != nil:
			d := ev.CartDiscarded
			switch i {
			case nCartRef:
				p.str(&d.Reason)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.CheckoutStarted != nil:
			p.cartRef(&ev.CheckoutStarted.CartRef, i)
		case ev.CheckoutCompleted != nil:
			d := ev.CheckoutCompleted
			switch i {
			case nCartRef:
				p.str(&d.OrderID)
			case nCartRef + 1:
				p.int64v(&d.TotalMinor)
			case nCartRef + 2:
				p.strings(&d.DiscountCodes)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.CartAssigned != nil:
			d := ev.CartAssigned
			switch i {
			case nCartRef:
				p.str(&d.FromKey)
			case nCartRef + 1:
				p.items(&d.Items, &p.prices)
			case nCartRef + 2:
				p.timev(&d.CreatedAt)
			case nCartRef + 3:
				p.timev(&d.ModifiedAt)
			case nCartRef + 4:
				p.timev(&d.LastActivity)
			case nCartRef + 5:
				p.int64v(&d.Version)
			case nCartRef + 6:
				p.decisions(&d.Decisions)
			case nCartRef + 7:
				p.cause(&d.Cause)
			default:
				p.cartRef(&d.CartRef, i)
			}
		case ev.CustomerLoggedIn != nil:
			d := ev.CustomerLoggedIn
			switch i {
			case 0:
				p.str(&d.CustomerID)
			case 1:
				p.str(&d.AnonymousID)
			default:
				p.unknownField()
			}
		case ev.CustomerUpdated != nil:
			d := ev.CustomerUpdated
			s := customerSlots(ev)
			switch i {
			case 0:
				p.str(&d.CustomerID)
			case 1:
				p.optStr(&d.Email, &s.strs[0])
			case 2:
				p.optStr(&d.Name, &s.strs[1])
			case 3:
				p.optStr(&d.Locale, &s.strs[2])
			case 4:
				p.optStr(&d.TimeZone, &s.strs[3])
			case 5:
				p.optStr(&d.Segment, &s.strs[4])
			case 6:
				p.optBool(&d.MarketingConsent, &s.consent)
			default:
				p.unknownField()
			}
		case ev.CustomerErased != nil:
			switch i {
			case 0:
				p.str(&ev.CustomerErased.CustomerID)
			default:
				p.unknownField()
			}
		}
	}
}

// envelope reads the record: the envelope into env and, when the type is
// known by the time data is read, data into the payload of p.inline (of
// type p.inlineType; else data is read again, see Decode). Envelope errors
// are syntax errors (p.err), as they were for the reflection-based decoder.
func (p *scanner) envelope(env *Envelope) {
	switch p.peek() {
	case '{':
	case 'n':
		p.literal("null")
		p.end()
		return
	case 0:
		p.fail("unexpected end of JSON input")
		return
	default:
		if isValue(p.buf[p.pos]) {
			p.fail("json: cannot unmarshal %s into Go value of type events.Envelope", kindName(p.buf[p.pos]))
		} else {
			p.failAt("looking for beginning of value")
		}
		return
	}
	if !p.enter() {
		return
	}
	for i, first := -1, true; ; first = false {
		if i = p.memberOf(first, envelopeFields, i); i == end {
			break
		}
		c := p.buf[p.pos]
		switch i {
		case 0:
			p.envStr(&env.SpecVersion, "SpecVersion")
		case 1:
			p.envStr(&env.ID, "ID")
		case 2:
			p.envStr(&env.Source, "Source")
		case 3:
			p.envStr(&env.Type, "Type")
		case 5:
			p.envStr(&env.Subject, "Subject")
		case 6:
			p.envStr(&env.DataContentType, "DataContentType")
		case 4:
			switch c {
			case '"':
				start := p.pos
				p.stringToken()
				if p.err == nil {
					if err := env.Time.UnmarshalJSON(p.buf[start:p.pos]); err != nil {
						p.fail("%v", err)
					}
				}
			case 'n':
				p.literal("null")
			default:
				p.envMistyped("time", "Time")
			}
		case 7:
			start := p.pos
			p.dataStart = start
			p.inline, p.inlineType = nil, ""
			if e := newEvent(env.Type); e != nil {
				p.resetData()
				p.payload(e)
				p.inline, p.inlineType = e, env.Type
			} else {
				p.skip()
			}
			env.Data = p.buf[start:p.pos]
		default:
			p.skip()
		}
	}
	p.end()
}

func (p *scanner) envStr(dst *string, field string) {
	switch p.buf[p.pos] {
	case '"':
		*dst = p.stringValue()
	case 'n':
		p.literal("null")
	default:
		p.envMistyped(field, "string")
	}
}

func (p *scanner) envMistyped(field, typ string) {
	if isValue(p.buf[p.pos]) {
		p.fail("json: cannot unmarshal %s into Go struct field Envelope.%s of type %s", kindName(p.buf[p.pos]), field, typ)
		return
	}
	p.failAt("looking for beginning of value")
}

func kindName(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// end checks that nothing but white space follows the record's value.
func (p *scanner) end() {
	if p.err != nil {
		return
	}
	if p.peek(); p.pos < len(p.buf) {
		p.failAt("after top-level value")
	}
}

// resetData forgets what an earlier decoding of data found.
func (p *scanner) resetData() {
	p.unknown, p.hasUnknown, p.hasErr, p.typeAt, p.typeKind, p.plain, p.notObject = "", false, false, 0, "", nil, false
	p.prices = p.prices[:0]
	p.metaSet, p.metaKV = false, p.metaKV[:0]
}

// dataError returns the error decoding data found, if any, as the
// reflection-based decoder reported it.
func (p *scanner) dataError() *ValidationError {
	switch {
	case p.notObject:
		return invalid(ReasonData, "data", "must be a JSON object")
	case p.hasUnknown:
		return invalid(ReasonData, "data", "json: unknown field %q", p.unknown)
	case !p.hasErr:
		return nil
	case p.plain != nil:
		return invalid(ReasonData, "data", "%v", p.plain)
	}
	return invalid(ReasonData, "data."+pathTo(p.buf[p.dataStart:], p.typeAt-p.dataStart), "must be a JSON %s", p.typeKind)
}

// pathTo returns the path, as encoding/json reports it in a type error
// (names as they are written, unescaped; array indices), of the value that
// starts at offset at in data, a valid JSON object.
func pathTo(data []byte, at int) string {
	q := scanner{buf: data}
	var segs []string
	var walk func() bool
	walk = func() bool {
		if q.pos == at {
			return true
		}
		switch q.buf[q.pos] {
		case '{':
			q.enter()
			for first := true; q.member(first); first = false {
				segs = append(segs, string(q.key))
				if walk() {
					return true
				}
				segs = segs[:len(segs)-1]
			}
		case '[':
			q.enter()
			for i, first := 0, true; q.elem(first); i, first = i+1, false {
				segs = append(segs, strconv.Itoa(i))
				if walk() {
					return true
				}
				segs = segs[:len(segs)-1]
			}
		default:
			q.skip()
		}
		return false
	}
	walk()
	return strings.Join(segs, ".")
}

// arena copies the strings of an event into one allocation, of the
// length of the strings read (a string that is not kept, such as the
// specversion, or a duplicate member's, only makes it larger; were it too
// small, append would still be correct).
type arena struct {
	buf []byte
}

func (a *arena) str(s *string) {
	if len(*s) == 0 {
		return
	}
	start := len(a.buf)
	a.buf = append(a.buf, *s...)
	*s = unsafe.String(&a.buf[start], len(*s))
}

func (a *arena) optStr(s *string) {
	if s != nil {
		a.str(s)
	}
}

func (a *arena) cartRef(r *CartRef) {
	a.str(&r.CustomerID)
	a.str(&r.AnonymousID)
	a.str(&r.CartID)
	a.str(&r.CartType)
	a.str(&r.Site)
	a.str(&r.Channel)
	a.str(&r.Currency)
	a.str(&r.LegalEntity)
}

func (a *arena) cause(c *Cause) {
	if c != nil {
		a.str(&c.EventID)
		a.str(&c.Topic)
	}
}

func (a *arena) items(items []Item) {
	for i := range items[:cap(items)] {
		it := &items[:cap(items)][i]
		a.str(&it.SKU)
		a.str(&it.Name)
		a.str(&it.Category)
		a.str(&it.ImageURL)
	}
}

// event visits every string of ev and of the scanner's metadata.
func (a *arena) event(ev *Event, p *scanner) {
	a.str(&ev.ID)
	a.str(&ev.Source)
	a.str(&ev.Subject)
	for i := range p.metaKV {
		a.str(&p.metaKV[i])
	}
	switch {
	case ev.ItemAdded != nil:
		d := ev.ItemAdded
		a.cartRef(&d.CartRef)
		a.str(&d.Item.SKU)
		a.str(&d.Item.Name)
		a.str(&d.Item.Category)
		a.str(&d.Item.ImageURL)
	case ev.ItemUpdated != nil:
		a.cartRef(&ev.ItemUpdated.CartRef)
		a.str(&ev.ItemUpdated.SKU)
	case ev.ItemRemoved != nil:
		a.cartRef(&ev.ItemRemoved.CartRef)
		a.str(&ev.ItemRemoved.SKU)
	case ev.CartUpdated != nil:
		a.cartRef(&ev.CartUpdated.CartRef)
		a.items(ev.CartUpdated.Items)
	case ev.CartDiscarded != nil:
		a.cartRef(&ev.CartDiscarded.CartRef)
		a.str(&ev.CartDiscarded.Reason)
	case ev.CheckoutStarted != nil:
		a.cartRef(&ev.CheckoutStarted.CartRef)
	case ev.CheckoutCompleted != nil:
		d := ev.CheckoutCompleted
		a.cartRef(&d.CartRef)
		a.str(&d.OrderID)
		codes := d.DiscountCodes[:cap(d.DiscountCodes)]
		for i := range codes {
			a.str(&codes[i])
		}
	case ev.CartAssigned != nil:
		d := ev.CartAssigned
		a.cartRef(&d.CartRef)
		a.str(&d.FromKey)
		a.items(d.Items)
		recs := d.Decisions[:cap(d.Decisions)]
		for i := range recs {
			r := &recs[i]
			a.str(&r.ID)
			a.str(&r.Flow)
			a.str(&r.Step)
			a.str(&r.Suppressed)
			a.cause(r.Cause)
		}
		a.cause(d.Cause)
	case ev.CustomerLoggedIn != nil:
		a.str(&ev.CustomerLoggedIn.CustomerID)
		a.str(&ev.CustomerLoggedIn.AnonymousID)
	case ev.CustomerUpdated != nil:
		d := ev.CustomerUpdated
		a.str(&d.CustomerID)
		a.optStr(d.Email)
		a.optStr(d.Name)
		a.optStr(d.Locale)
		a.optStr(d.TimeZone)
		a.optStr(d.Segment)
	case ev.CustomerErased != nil:
		a.str(&ev.CustomerErased.CustomerID)
	}
}

// finish copies the strings of ev out of the record into one allocation
// and builds its metadata map.
func (p *scanner) finish(ev *Event) {
	a := arena{buf: make([]byte, 0, max(p.strBytes, 0))}
	a.event(ev, p)
	if ref := cartRefOf(ev); ref != nil && p.metaSet {
		m := make(map[string]string, len(p.metaKV)/2)
		for i := 0; i < len(p.metaKV); i += 2 {
			m[p.metaKV[i]] = p.metaKV[i+1]
		}
		ref.Metadata = m
	}
}
