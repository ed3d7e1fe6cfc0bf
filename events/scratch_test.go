package events

import (
	"fmt"
	"testing"
	"time"
)

func TestScratch(t *testing.T) {
	base := `{"specversion":"1.0","id":"e1","source":"s","type":"%s","time":"%s","data":%s}`
	cases := [][3]string{
		{"cart.item_updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","sku":"A"}`},
		{"cart.item_updated", "0000-01-01T00:00:00+01:00", `{"customer_id":"c","cart_id":"x","sku":"A","quantity":1}`},
		{"cart.item_updated", "9999-12-31T23:59:59-01:00", `{"customer_id":"c","cart_id":"x","sku":"A","quantity":1}`},
		{"cart.item_updated", "2026-11-26T10:00:00Z", `{"Customer_ID":"c","CART_ID":"x","sku":"A","quantity":1}`},
		{"cart.item_updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","sku":"A","quantity":1.0}`},
		{"cart.item_updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","sku":"A","quantity":"1"}`},
		{"cart.item_added", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","currency":"EUR","item":{"sku":"A","quantity":"x"}}`},
		{"cart.updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","currency":"EUR","items":[{"sku":"A","quantity":1},{"sku":"A","quantity":"x"}]}`},
		{"cart.updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","currency":"EUR","items":[{"sku":"A","quantity":1, "bogus":1}]}`},
		{"cart.updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","currency":"EUR"}`},
		{"cart.updated", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","currency":"EUR","metadata":{"a":null}}`},
		{"cart.item_added", "2026-11-26T10:00:00Z", `{"customer_id":"c","cart_id":"x","currency":"EUR","item":{"sku":"A","quantity":1}}`},
	}
	for _, c := range cases {
		ev, err := Decode([]byte(fmt.Sprintf(base, c[0], c[1], c[2])), time.Time{})
		if err != nil {
			fmt.Printf("%s %s -> %#v\n", c[1], c[2], err)
			continue
		}
		fmt.Printf("%s %s -> OK %v\n", c[1], c[2], ev.Time)
		p := any(ev.ItemUpdated)
		if ev.ItemAdded != nil { p = ev.ItemAdded }
		if ev.CartUpdated != nil { p = ev.CartUpdated }
		b, err := Encode(ev.ID, ev.Source, ev.Type, ev.Time, ev.Subject, p)
		fmt.Println("   encode:", string(b), err)
	}
}
