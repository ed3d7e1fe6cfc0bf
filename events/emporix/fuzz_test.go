package emporix_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/events/emporix"
)

// FuzzTranslate: no body, type or view makes the adapter panic, and every
// event it returns is one the processor's decoder accepts. The fixtures'
// deliveries are the seeds (go test runs them; go test -fuzz explores).
func FuzzTranslate(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, file := range files {
		if strings.HasSuffix(file, ".golden.json") {
			continue
		}
		var fx fixture
		data, _ := os.ReadFile(file)
		if json.Unmarshal(data, &fx) != nil {
			f.Fatal(file)
		}
		for _, d := range fx.Deliveries {
			f.Add([]byte(d.Body), d.TypeHint)
		}
	}
	f.Add([]byte(`{"type":"cart.updated","data":{"id":"c","currency":"EUR","items":[{"quantity":-1e9,"price":{"effectiveAmount":-99e99}}]}}`), "")
	f.Add([]byte(`{"type":"order.created","data":{"id":"o","customer":{"id":"C-1"},"totalPrice":1e17}}`), "")
	f.Fuzz(func(t *testing.T, body []byte, hint string) {
		typ, payload, err := emporix.ParseBody(body, hint)
		if err != nil {
			return
		}
		view := memView{"c": {CartID: "c", CustomerID: "C-1", Currency: "EUR", Lines: []emporix.Line{{ItemID: "0", SKU: "s", UnitPriceMinor: 100}}}}
		res, err := emporix.Translate(emporix.Delivery{ID: "msg_f", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Type: typ, Payload: payload}, view)
		if err != nil {
			return
		}
		for _, o := range res.Events {
			ev, err := events.Decode(o.Value, time.Time{})
			if err != nil || ev.Key() != o.Key {
				t.Fatalf("%s: %v (key %q)", o.Value, err, o.Key)
			}
		}
	})
}
