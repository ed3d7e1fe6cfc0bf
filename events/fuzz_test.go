package events_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

var knownReasons = map[string]bool{
	events.ReasonTooLarge: true, events.ReasonMalformed: true, events.ReasonEnvelope: true,
	events.ReasonData: true, events.ReasonFutureTime: true, events.ReasonUnknownType: true,
	events.ReasonNotForInput: true,
}

// FuzzDecode: Decode never panics; it returns either an event or a
// *ValidationError with a known reason; and an event it returns encodes
// again (events.Encode of its payload) into a record that decodes to an
// equal event.
func FuzzDecode(f *testing.F) {
	for _, typ := range slices.Concat(events.InputTypes, outputTypes) {
		f.Add(example(f, typ))
	}
	f.Add([]byte(`{"specversion":"1.0","id":"e","source":"s","type":"x.y","time":"2026-11-26T10:00:00Z","data":1}`))
	f.Add([]byte(`{"specversion":"1.0","id":"e","source":"s","type":"cart.updated","time":"0000-01-01T00:30:00+01:00",` +
		`"data":{"anonymous_id":"g","cart_id":"c","currency":"EUR","items":[],"metadata":{}}}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		ev, err := events.Decode(value, time.Time{})
		if err != nil {
			var ve *events.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v is not a *ValidationError", err, err)
			}
			if !knownReasons[ve.Reason] {
				t.Fatalf("unknown reason %q in %v", ve.Reason, err)
			}
			if ev != nil {
				t.Fatalf("an event and an error %v", err)
			}
			return
		}
		typ, _, n := payload(ev)
		if n != 1 || typ != ev.Type {
			t.Fatalf("%d payloads set, of type %q, for an event of type %q", n, typ, ev.Type)
		}
		if ev.Key() == "" {
			t.Fatalf("event without a key")
		}
		if ev.Time.Location() != time.UTC {
			t.Fatalf("Time %v is not in UTC", ev.Time)
		}
		b, err := reencode(ev)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		again, err := events.Decode(b, time.Time{})
		if len(b) > events.MaxRecordBytes {
			// Encode escapes <, >, &, U+2028 and U+2029 (6 bytes each),
			// so a record near the limit can outgrow it.
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Reason != events.ReasonTooLarge {
				t.Fatalf("re-encoded record of %d bytes: %v", len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, b)
		}
		normalize(ev)
		normalize(again)
		if !reflect.DeepEqual(ev, again) {
			t.Fatalf("round trip changed the event:\n got %+v\nwant %+v\nvia %s", again, ev, b)
		}
	})
}
