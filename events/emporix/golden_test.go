package emporix_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/events/emporix"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

// testSecret signs the fixtures' deliveries (base64 of 24 bytes).
const testSecret = "whsec_Y2FydGxpZnQtZW1wb3JpeC10ZXN0LXNlY3JldA=="

// fixture is a file of testdata/: deliveries in the order they arrive.
type fixture struct {
	About      string `json:"about"`
	Deliveries []struct {
		ID        string          `json:"id"`
		Timestamp time.Time       `json:"timestamp"`
		TypeHint  string          `json:"type_hint"`
		RetryOf   string          `json:"retry_of"`
		Body      json.RawMessage `json:"body"`
	} `json:"deliveries"`
}

// memView is a View over the owner records the translations returned.
type memView map[string]emporix.Owner

func (m memView) Owner(id string) (emporix.Owner, bool) { o, ok := m[id]; return o, ok }

func (m memView) LatestShoppingCart(customerID string) (emporix.Owner, bool) {
	var best emporix.Owner
	found := false
	for _, o := range m {
		if o.CustomerID == customerID && o.Shopping() && (!found || o.ModifiedAt.After(best.ModifiedAt)) {
			best, found = o, true
		}
	}
	return best, found
}

// goldenEntry is the result of one delivery in a golden file.
type goldenEntry struct {
	Delivery string           `json:"delivery"`
	Type     string           `json:"type"`
	Events   []goldenEvent    `json:"events,omitempty"`
	Owner    *emporix.Owner   `json:"owner,omitempty"`
	Wait     string           `json:"wait,omitempty"`
	Ignored  string           `json:"ignored,omitempty"`
	Error    string           `json:"error,omitempty"`
	Resolved []goldenResolved `json:"resolved,omitempty"`
}

type goldenEvent struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// goldenResolved is a waiting delivery the snapshot of its cart released.
type goldenResolved struct {
	Delivery string        `json:"delivery"`
	Events   []goldenEvent `json:"events"`
}

// TestGolden signs every delivery of each fixture as Svix would, verifies
// it, translates it (item events whose cart is unknown wait and are
// translated again when an owner arrives, as the adapter does), and
// compares everything with testdata/<name>.golden.json. Every event must
// pass the processor's decoder. go test -run TestGolden -update rewrites
// the golden files.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := emporix.NewVerifier(testSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range files {
		if strings.HasSuffix(file, ".golden.json") {
			continue
		}
		n++
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			var fx fixture
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &fx); err != nil {
				t.Fatal(err)
			}
			view := memView{}
			type waiting struct {
				d emporix.Delivery
			}
			pending := map[string][]waiting{}
			var got []goldenEntry
			for _, fd := range fx.Deliveries {
				body := []byte(fd.Body)
				sig := v.Sign(fd.ID, fd.Timestamp, body)
				ts, err := v.Verify(fd.ID, itoa(fd.Timestamp), sig, body, fd.Timestamp.Add(2*time.Second))
				if err != nil {
					t.Fatalf("%s: %v", fd.ID, err)
				}
				e := goldenEntry{Delivery: fd.ID}
				typ, payload, err := emporix.ParseBody(body, fd.TypeHint)
				if err != nil {
					e.Error = err.Error()
					got = append(got, e)
					continue
				}
				e.Type = typ
				d := emporix.Delivery{ID: fd.ID, Time: ts, Type: typ, Payload: payload}
				if fd.RetryOf != "" {
					d.ID = fd.RetryOf // a redelivery: Svix keeps the message id
				}
				res, err := emporix.Translate(d, view)
				if err != nil {
					e.Error = err.Error()
					got = append(got, e)
					continue
				}
				e.Events = goldenEvents(t, res.Events)
				e.Owner, e.Wait, e.Ignored = res.Owner, res.Wait, res.Ignored
				if res.Wait != "" {
					pending[res.Wait] = append(pending[res.Wait], waiting{d})
				}
				if res.Owner != nil {
					view[res.Owner.CartID] = *res.Owner
					for _, w := range pending[res.Owner.CartID] {
						r, err := emporix.Translate(w.d, view)
						if err != nil || r.Wait != "" {
							t.Fatalf("%s: the waiting %s does not resolve: %v %+v", fd.ID, w.d.ID, err, r)
						}
						e.Resolved = append(e.Resolved, goldenResolved{Delivery: w.d.ID, Events: goldenEvents(t, r.Events)})
					}
					delete(pending, res.Owner.CartID)
				}
				got = append(got, e)
			}
			out, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, '\n')
			golden := strings.TrimSuffix(file, ".json") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("%s differs from the translation (go test -run TestGolden -update rewrites it); got:\n%s", golden, out)
			}
		})
	}
	if n < 3 {
		t.Fatalf("found %d fixtures in testdata/", n)
	}
}

func goldenEvents(t *testing.T, outs []emporix.Out) []goldenEvent {
	t.Helper()
	var evs []goldenEvent
	for _, o := range outs {
		ev, err := events.Decode(o.Value, time.Time{})
		if err != nil {
			t.Fatalf("%s: %v", o.ID, err)
		}
		if ev.Key() != o.Key || ev.ID != o.ID || ev.Type != o.Type || ev.Source != emporix.Source {
			t.Fatalf("%s: key %q id %q type %q source %q disagree with the event", o.ID, o.Key, ev.ID, ev.Type, ev.Source)
		}
		evs = append(evs, goldenEvent{Key: o.Key, Value: o.Value})
	}
	return evs
}

func itoa(t time.Time) string { return strings.TrimSpace(jsonInt(t.Unix())) }

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }
