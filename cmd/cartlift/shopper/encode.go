package shopper

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// The simulation writes its JSON by hand. The output is byte for byte what
// events.Encode produces for the same payload (encoding/json field order,
// omitempty rules, HTML-safe string escaping, RFC 3339 nanosecond times);
// TestEncodingMatchesEventsEncode holds it to that. Writing by hand is about
// ten times faster than encoding/json, which lets one core generate well
// over a million events per second for load tests.

// jsonw appends JSON to a reusable buffer.
type jsonw struct {
	b []byte
	// the formatted form of the last event time, reused while the caller
	// keeps passing the same instant (it usually does, within a burst).
	lastNano int64
	lastTime []byte
}

func (w *jsonw) raw(s string) { w.b = append(w.b, s...) }

func (w *jsonw) str(s string) { w.b = appendString(w.b, s) }

func (w *jsonw) int(n int64) { w.b = strconv.AppendInt(w.b, n, 10) }

// field writes `,"name":"value"`; key must include the leading comma and
// the quotes, e.g. `,"cart_id":`.
func (w *jsonw) field(key, value string) {
	w.b = append(w.b, key...)
	w.b = appendString(w.b, value)
}

// optField writes the field only when value is not empty (omitempty).
func (w *jsonw) optField(key, value string) {
	if value != "" {
		w.field(key, value)
	}
}

// envelope starts a CloudEvents envelope up to and including `"data":`.
// The event id is "e-<seedtag>-<n>". source is the site's precomputed
// sourceJSON; subject, when set, must need no JSON escaping (the
// simulation's own ids).
func (w *jsonw) envelope(seedTag string, n uint64, source []byte, typ string, t time.Time, subject string) {
	w.b = append(w.b[:0], `{"specversion":"1.0","id":"e-`...)
	w.b = append(w.b, seedTag...)
	w.b = append(w.b, '-')
	w.b = strconv.AppendUint(w.b, n, 10)
	w.b = append(w.b, source...)
	w.b = append(w.b, typ...)
	w.b = append(w.b, `","time":"`...)
	w.time(t)
	w.b = append(w.b, '"')
	if subject != "" {
		w.b = append(w.b, `,"subject":"`...)
		w.b = append(w.b, subject...)
		w.b = append(w.b, '"')
	}
	w.b = append(w.b, `,"datacontenttype":"application/json","data":`...)
}

// sourceJSON is the envelope from the end of the id to the start of the
// type's value: `","source":"<source>","type":"`.
func sourceJSON(source string) []byte {
	b := append([]byte(nil), `","source":`...)
	b = appendString(b, source)
	return append(b, `,"type":"`...)
}

// safeID appends a quoted id the simulation made itself (letters,
// digits, '-', ':'), which JSON needs no escaping for.
func (w *jsonw) safeID(id string) {
	w.b = append(w.b, '"')
	w.b = append(w.b, id...)
	w.b = append(w.b, '"')
}

func (w *jsonw) time(t time.Time) {
	n := t.UnixNano()
	if w.lastTime == nil || n != w.lastNano {
		w.lastTime = t.UTC().AppendFormat(w.lastTime[:0], time.RFC3339Nano)
		w.lastNano = n
	}
	w.b = append(w.b, w.lastTime...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json does
// with HTML escaping on (its default).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// htmlSafe reports the ASCII bytes encoding/json writes unescaped.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		switch c {
		case '"', '\\', '<', '>', '&':
		default:
			t[c] = true // DEL (0x7f) included, as in encoding/json
		}
	}
	return t
}()
