package events

import (
	"bytes"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// referenceDecode is the decoder Decode replaced, kept as the oracle of
// the differential tests (decode_diff_test.go): go-json's Unmarshal of the
// envelope, a strict json.Decoder for the payload, and a third partial
// pass for the prices of items. The rules are shared with Decode
// (checkEnvelope, newEvent's absent presets, validateData): only the
// parsing differs.
func referenceDecode(value []byte, now time.Time) (*Event, error) {
	if len(value) > MaxAssignedBytes {
		return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
	}
	if !utf8.Valid(value) {
		return nil, invalid(ReasonMalformed, "", "record is not valid UTF-8")
	}
	var env Envelope
	if err := json.Unmarshal(value, &env); err != nil {
		if len(value) > MaxRecordBytes {
			return nil, invalid(ReasonTooLarge, "", "record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
		}
		return nil, invalid(ReasonMalformed, "", "%v", err)
	}
	if err := checkEnvelope(&env, len(value), now); err != nil {
		return nil, err
	}
	ev := newEvent(env.Type)
	ev.ID, ev.Source, ev.Type, ev.Time, ev.Subject = env.ID, env.Source, env.Type, env.Time.UTC(), env.Subject
	if err := referenceDecodeData(env.Data, referencePayload(ev)); err != nil {
		return nil, err
	}
	var prices []bool
	if ev.CartUpdated != nil || ev.CartAssigned != nil {
		prices = referencePrices(env.Data)
	}
	if err := validateData(ev, prices); err != nil {
		return nil, err
	}
	return ev, nil
}

// referencePayload returns the payload pointer of ev.
func referencePayload(ev *Event) any {
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
	case ev.CartAssigned != nil:
		return ev.CartAssigned
	}
	panic("no payload")
}

// referenceDecodeData decodes a payload strictly: unknown fields are an
// error, so that a misspelt field is caught instead of silently ignored.
func referenceDecodeData(raw json.RawMessage, dst any) error {
	if len(raw) == 0 || raw[0] != '{' {
		return invalid(ReasonData, "data", "must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			// encoding/json names the embedded CartRef in the path; its
			// fields are at the top of data in JSON.
			field := strings.TrimPrefix(ute.Field, "CartRef.")
			return invalid(ReasonData, "data."+field, "must be a JSON %s", ute.Type.Kind())
		}
		return invalid(ReasonData, "data", "%v", err)
	}
	return nil
}

// referencePrices says, for every item in data's "items" array, whether
// it has a unit_price_minor.
func referencePrices(data json.RawMessage) []bool {
	var p struct {
		Items []struct {
			UnitPriceMinor *int64 `json:"unit_price_minor"`
		} `json:"items"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return nil // cannot happen: data was decoded into a superset already
	}
	has := make([]bool, len(p.Items))
	for i, it := range p.Items {
		has[i] = it.UnitPriceMinor != nil
	}
	return has
}
