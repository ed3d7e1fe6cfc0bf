package emporix

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMinorUnits(t *testing.T) {
	for _, c := range []struct {
		in     string
		digits int
		want   int64
		ok     bool
		err    bool
	}{
		{"350", 2, 35000, true, false},
		{"294.118", 2, 29412, true, false},
		{"9.995", 2, 1000, true, false},
		{"9.994", 2, 999, true, false},
		{"-0.005", 2, -1, true, false},
		{"0", 2, 0, true, false},
		{"1e2", 2, 10000, true, false},
		{"1.5E-1", 2, 15, true, false},
		{"1500", 0, 1500, true, false},
		{"1.2345", 3, 1235, true, false},
		{"0.0000001", 2, 0, true, false},
		{"", 2, 0, false, false},
		{"abc", 2, 0, false, true},
		{"1e400", 2, 0, false, true},
		{"99999999999999999999", 2, 0, false, true},
	} {
		got, ok, err := minorUnits(json.Number(c.in), c.digits)
		if got != c.want || ok != c.ok || (err != nil) != c.err {
			t.Errorf("minorUnits(%q, %d) = %d, %v, %v; want %d, %v, err %v", c.in, c.digits, got, ok, err, c.want, c.ok, c.err)
		}
	}
}

type noView struct{}

func (noView) Owner(string) (Owner, bool)              { return Owner{}, false }
func (noView) LatestShoppingCart(string) (Owner, bool) { return Owner{}, false }

func TestTranslateErrors(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		typ, payload, reason, says string
	}{
		{"cart.exploded", `{}`, ReasonUnknownType, "cart.exploded"},
		{"product.created", `{"id":"p"}`, ReasonUnknownType, "not an Emporix event type"},
		{"cart.updated", `{"id":"c1","customerId":"k","currency":"EURO","items":[]}`, ReasonInvalid, "ISO 4217"},
		{"cart.updated", `{"customerId":"k","currency":"EUR"}`, ReasonInvalid, "id is required"},
		{"cart.updated", `{"id":"c1","customerId":"k","currency":"EUR","items":"none"}`, ReasonMalformed, "cart.updated"},
		{"cart.updated", `{"id":"c1","customerId":"k","currency":"EUR","items":[{"id":"0","product":{"id":"p"},"quantity":1,"price":{"effectiveAmount":"ten"}}]}`, ReasonMalformed, "Number"},
		{"cart.updated", `{"id":"c 1","customerId":"k","currency":"EUR","items":[]}`, ReasonInvalid, "cart_id"},
		{"cart.item-added", `{"cartId":"c1"}`, ReasonInvalid, "itemId"},
		{"customer.updated", `{"firstName":"x"}`, ReasonInvalid, "customerNumber"},
		{"customer.logged.in", `{"sessionId":"s"}`, ReasonInvalid, "customerId"},
		{"order.created", `{"customer":{"id":"k"}}`, ReasonInvalid, "id is required"},
	} {
		_, err := Translate(Delivery{ID: "msg_1", Time: at, Type: c.typ, Payload: json.RawMessage(c.payload)}, noView{})
		var e *Error
		if !errors.As(err, &e) || e.Reason != c.reason || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s %s: %v, want %s saying %q", c.typ, c.payload, err, c.reason, c.says)
		}
	}
}

func TestParseBody(t *testing.T) {
	for _, c := range []struct {
		body, hint, typ, reason string
	}{
		{`{"type":"cart.created","data":{"id":"c"}}`, "", "cart.created", ""},
		{`{"eventType":"cart.created","payload":{"id":"c"}}`, "", "cart.created", ""},
		{`{"id":"c"}`, "cart.created", "cart.created", ""},
		{`{"type":"cart.created","data":{"id":"c"}}`, "cart.closed", "cart.created", ""},
		{`{"id":"c"}`, "", "", ReasonMalformed},
		{`{"type":"cart.created","data":[1]}`, "", "", ReasonMalformed},
		{`not json`, "cart.created", "", ReasonMalformed},
		{`[]`, "cart.created", "", ReasonMalformed},
	} {
		typ, _, err := ParseBody([]byte(c.body), c.hint)
		var e *Error
		switch {
		case c.reason == "" && (err != nil || typ != c.typ):
			t.Errorf("%s (%s): %q, %v", c.body, c.hint, typ, err)
		case c.reason != "" && (!errors.As(err, &e) || e.Reason != c.reason):
			t.Errorf("%s (%s): %v, want %s", c.body, c.hint, err, c.reason)
		}
	}
}

func TestItemOfUnknownCartWaits(t *testing.T) {
	for _, typ := range []string{TypeItemAdded, TypeItemUpdated, TypeItemDeleted} {
		res, err := Translate(Delivery{ID: "m", Time: time.Now(), Type: typ, Payload: json.RawMessage(`{"cartId":"c9","itemId":"0","quantity":1}`)}, noView{})
		if err != nil || res.Wait != "c9" || len(res.Events) != 0 {
			t.Errorf("%s: %+v %v", typ, res, err)
		}
	}
}

// A delivery translates the same way each time: same ids, same bytes.
func TestTranslateDeterministic(t *testing.T) {
	p := json.RawMessage(`{"id":"c1","customerId":"k","currency":"EUR","mixins":{"b":{"y":1,"x":[1,2]},"a":"s"},"items":[{"id":"0","product":{"id":"p"},"quantity":2,"price":{"effectiveAmount":1.25}}]}`)
	d := Delivery{ID: "msg_d", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Type: TypeCartUpdated, Payload: p}
	a, err := Translate(d, noView{})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b, _ := Translate(d, noView{})
		if string(a.Events[0].Value) != string(b.Events[0].Value) {
			t.Fatalf("not deterministic:\n%s\n%s", a.Events[0].Value, b.Events[0].Value)
		}
	}
	if !strings.Contains(string(a.Events[0].Value), `"mixins.b.x":"[1,2]"`) {
		t.Fatalf("mixins: %s", a.Events[0].Value)
	}
}
