package processor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// TestStateCodecRoundTrip folds realistic traffic and checks that every
// state survives the binary codec unchanged (compared as JSON, which
// shows every field).
func TestStateCodecRoundTrip(t *testing.T) {
	// Guards on, so that every state field is exercised: sent times
	// (frequency cap), deferred (quiet hours), suppressed and combined
	// decision records.
	flows, err := projections.ParseFlows("t", []byte(`
guards:
  requires_consent: false
  quiet_hours: {from: "08:30", to: "09:00"}
  frequency_cap: {max: 2, per: 30m}
  max_messages_per_cart: 2
  combine_window: 5m
flows:
  - name: f
    steps:
      - {name: a, after: 1m, action: email}
      - {name: b, after: 5m, action: email, discount: {percent: 10}}
      - {name: c, after: 9m, action: webhook}
    expire_after: 30m
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := projections.NewConfig(flows)
	sim := shopper.New(shopper.Options{Seed: 3, Customers: 300})
	states := map[string]*projections.CustomerState{}
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	checked := 0
	var scratch projections.CustomerState // reused across states, as a restore does
	for i := range 20_000 {
		now = now.Add(200 * time.Millisecond)
		r := sim.Next(now)
		ev, err := events.Decode(r.Value, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		// Where the runtime would have read it: causes are recorded.
		ev.Pos = &events.Position{Topic: "cart-events", Partition: int32(len(r.Key) % 8), Offset: int64(1_000_000 + i)}
		eff := projections.Apply(states[r.Key], r.Key, ev, cfg)
		if i%7 == 0 && eff.State != nil {
			for _, c := range eff.State.Carts {
				if !c.WakeAt.IsZero() && !c.WakeAt.After(now) {
					eff = projections.Fire(eff.State, r.Key, c.ID, now, cfg)
					break
				}
			}
		}
		states[r.Key] = eff.State
		if eff.State == nil {
			continue
		}
		want, _ := json.Marshal(eff.State)
		got, err := decodeState(appendState(nil, eff.State))
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		gotJSON, _ := json.Marshal(got)
		if !bytes.Equal(want, gotJSON) {
			t.Fatalf("event %d: round trip differs:\nwant %s\ngot  %s", i, want, gotJSON)
		}
		if err := decodeIndex(appendState(nil, eff.State), &scratch); err != nil {
			t.Fatalf("event %d: decodeIndex: %v", i, err)
		}
		if w, g := indexOf(eff.State), indexOf(&scratch); w != g {
			t.Fatalf("event %d: decodeIndex derives other index entries:\nwant %s\ngot  %s", i, w, g)
		}
		checked++
	}
	if checked < 10_000 {
		t.Fatalf("only %d states checked", checked)
	}
	// The traffic must have reached every field the codec carries.
	var sent, due, suppressed, causes, checks, ownCause int
	for _, st := range states {
		if st == nil {
			continue
		}
		sent += len(st.Sent)
		for _, c := range st.Carts {
			for _, r := range c.Decisions {
				if !r.Due.IsZero() {
					due++
				}
				if r.Suppressed != "" {
					suppressed++
				}
				if r.Cause.Known() {
					causes++
					if r.Cause != c.Cause {
						ownCause++
					}
				}
				if r.Checks.Consent != "" {
					checks++
				}
			}
		}
	}
	if sent == 0 || due == 0 || suppressed == 0 || causes == 0 || checks == 0 || ownCause == 0 {
		t.Fatalf("traffic left fields unexercised: sent %d, deferred %d, suppressed %d, causes %d (%d not the cart's), checks %d",
			sent, due, suppressed, causes, ownCause, checks)
	}
	var bytes, carts, open int
	for _, st := range states {
		if st != nil {
			bytes += len(appendState(nil, st)) + len(st.Key) + 5 // value + key
			carts += len(st.Carts)
			open += st.OpenCarts()
		}
	}
	t.Logf("final states: %d bytes for %d carts (%d open): %d B per cart, %d B per open cart",
		bytes, carts, open, bytes/max(1, carts), bytes/max(1, open))
}

func TestStateCodecRejectsCorruptInput(t *testing.T) {
	s := &projections.CustomerState{Key: "c-1", Carts: []*projections.Cart{{ID: "k", Currency: "EUR", Status: "open",
		Items: []projections.LineItem{{SKU: "A", Quantity: 1, UnitPriceMinor: 5}}}}}
	b := appendState(nil, s)
	for i := range b {
		if _, err := decodeState(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := decodeState(append([]byte{99}, b[1:]...)); err == nil {
		t.Fatal("unknown version accepted")
	}
}

// indexOf prints the index entries and open carts the store derives from st.
func indexOf(st *projections.CustomerState) string {
	var b strings.Builder
	open := derivedIndex(3, st, func(k []byte) { fmt.Fprintf(&b, "timer %x\n", k) }, func(k []byte) { fmt.Fprintf(&b, "mod %x\n", k) })
	fmt.Fprintf(&b, "open %d", open)
	return b.String()
}

func FuzzDecodeState(f *testing.F) {
	f.Add(appendState(nil, &projections.CustomerState{Key: "c"}))
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	timed := &projections.CustomerState{Key: "c", Carts: []*projections.Cart{{ID: "k", Status: "open", CreatedAt: at,
		ModifiedAt: at.Add(1500 * time.Millisecond), WakeAt: at.Add(-7)}},
		Seen: []projections.SeenEvent{{Hash: 1, At: at}, {Hash: 2, At: time.Date(1900, 1, 1, 0, 0, 0, 3, time.UTC)}}}
	f.Add(appendState(nil, timed))
	f.Add(appendStateFormat(nil, timed, stateFormatV3))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			return
		}
		if _, err := decodeState(appendState(nil, s)); err != nil {
			t.Fatal(err)
		}
		var scratch projections.CustomerState
		if err := decodeIndex(b, &scratch); err != nil || indexOf(&scratch) != indexOf(s) {
			t.Fatalf("decodeIndex of a valid state: %v, entries %s, want %s", err, indexOf(&scratch), indexOf(s))
		}
	})
}

// The input window (CustomerState.Seen) survives the codec, and a record
// written in format V1 (before the window existed: the same bytes without
// the window's count at the end) still decodes, with an empty window.
func TestStateCodecInputWindowAndV1(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	s := &projections.CustomerState{Key: "c-1", Carts: []*projections.Cart{{ID: "k", Currency: "EUR", Status: "open",
		Items: []projections.LineItem{{SKU: "A", Quantity: 1, UnitPriceMinor: 5, LineTotalMinor: 5}}, TotalMinor: 5, ItemCount: 1}},
		Seen: []projections.SeenEvent{{Hash: projections.EventHash("shop", "e-1"), At: at}, {Hash: 1<<64 - 1, At: at.Add(time.Second)}}}
	got, err := decodeState(appendState(nil, s))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, s), mustJSON(t, got); a != b {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}

	s.Seen = nil
	v2 := appendStateFormat(nil, s, stateFormatV2)
	if v2[0] != stateFormatV2 || v2[len(v2)-1] != 0 {
		t.Fatalf("V2 layout changed: version %d, last byte %d", v2[0], v2[len(v2)-1])
	}
	v1 := append([]byte{stateFormatV1}, v2[1:len(v2)-1]...)
	old, err := decodeState(v1)
	if err != nil {
		t.Fatalf("a V1 record: %v", err)
	}
	if a, b := mustJSON(t, s), mustJSON(t, old); a != b {
		t.Fatalf("V1 decoded as\n%s\nwant\n%s", b, a)
	}
	if _, err := decodeState(append(v1, 0)); err == nil {
		t.Fatal("a V1 record with trailing bytes accepted")
	}
}

// The fields explanations need (causes, consent sources, guard checks)
// survive the codec in every form it writes them (the cart's cause, the
// previous record's, written out; the profile's consent source and zone or
// others; whole seconds or not), and a V2 record (written before them)
// still decodes, without them.
func TestStateCodecExplainFieldsAndV2(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	cartCause := projections.Cause{EventID: "e-9", Partition: 3, Offset: 1234567}
	older := projections.Cause{EventID: "e-2", Partition: 3, Offset: 17}
	s := &projections.CustomerState{Key: "c-1",
		Profile: projections.Profile{CustomerID: "c-1", TimeZone: "Europe/Berlin", MarketingConsent: true,
			ConsentEventID: "u-1", ConsentAt: at.Add(-time.Hour)},
		Carts: []*projections.Cart{{ID: "k", Currency: "EUR", Status: "open", Version: 9, Cause: cartCause,
			Items: []projections.LineItem{{SKU: "A", Quantity: 1, UnitPriceMinor: 5, LineTotalMinor: 5}}, TotalMinor: 5, ItemCount: 1,
			Decisions: []projections.DecisionRecord{
				{Flow: "f", Step: "a", Version: 2, At: at, Skipped: true, Cause: older},
				{ID: "d-1", Flow: "f", Step: "b", StepIndex: 1, Version: 2, At: at, Cause: older,
					Checks: projections.Checks{Consent: projections.ConsentGranted, ConsentEventID: "u-0", ConsentAt: at.Add(-48 * time.Hour),
						CartMax: 3, CartCount: 1, CapMax: 2, CapPer: 16 * time.Hour, CapCount: 1,
						QuietZone: "America/New_York", QuietFrom: 22 * 60, QuietTo: 8 * 60}},
				{Flow: "f", Step: "a", Version: 9, At: at.Add(time.Hour), Suppressed: projections.ReasonNoConsent, Cause: cartCause,
					Checks: projections.Checks{Consent: projections.ConsentDenied, ConsentEventID: "u-1", ConsentAt: at.Add(-time.Hour),
						CapMax: 1, CapPer: 1500 * time.Millisecond, QuietZone: "Europe/Berlin", QuietTo: 30}},
				{ID: "d-2", Flow: "w", Step: "x", Version: 9, At: at.Add(2 * time.Hour), Cause: cartCause,
					Checks: projections.Checks{Consent: projections.ConsentNotRequired}},
				{ID: "d-3", Flow: "w", Step: "y", Version: 9, At: at.Add(3 * time.Hour), Cause: cartCause, // the same settings
					Checks: projections.Checks{Consent: projections.ConsentNotRequired, CartCount: 1, CapCount: 2}},
				{Flow: "f", Step: "c", Version: 1, At: at, Skipped: true}, // from before causes
			}}, {ID: "l", Currency: "EUR", Status: "open"}},
	}
	b := appendState(nil, s)
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if a, g := mustJSON(t, s), mustJSON(t, got); a != g {
		t.Fatalf("round trip:\n%s\n%s", a, g)
	}
	var scratch projections.CustomerState
	if err := decodeIndex(b, &scratch); err != nil || indexOf(&scratch) != indexOf(s) {
		t.Fatalf("decodeIndex: %v", err)
	}
	for i := range b {
		if _, err := decodeState(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}

	// A V2 record: the same state without what V3 adds.
	v2 := appendStateFormat(nil, s, stateFormatV2)
	old, err := decodeState(v2)
	if err != nil {
		t.Fatalf("a V2 record: %v", err)
	}
	s.Profile.ConsentEventID, s.Profile.ConsentAt = "", time.Time{}
	for _, c := range s.Carts {
		c.Cause = projections.Cause{}
		for i := range c.Decisions {
			c.Decisions[i].Cause, c.Decisions[i].Checks = projections.Cause{}, projections.Checks{}
		}
	}
	if a, g := mustJSON(t, s), mustJSON(t, old); a != g {
		t.Fatalf("V2 decoded as\n%s\nwant\n%s", g, a)
	}
	t.Logf("V4 %d bytes, V2 %d bytes", len(b), len(v2))
}

// V4 writes times as distances in the unit that is exact: every kind of
// distance survives (seconds, milliseconds, nanoseconds, backwards, zero
// times between, distances too large for the tag, far past and future),
// the index decode reads the same times, every truncation fails, and a V3
// record (absolute times) of the same state decodes the same.
func TestStateCodecTimes(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	times := []time.Time{
		at, at.Add(time.Second), at.Add(-3 * time.Hour), at.Add(1500 * time.Millisecond), at.Add(7),
		{}, at.Add(-time.Nanosecond), time.Date(1900, 1, 1, 0, 0, 0, 3, time.UTC), time.Date(1700, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(2260, 12, 31, 23, 59, 59, 999, time.UTC),
		time.Unix(0, 0).UTC(), time.Unix(0, 1).UTC(), time.Unix(-1, 0).UTC(),
	}
	var seen []projections.SeenEvent
	for i, ti := range times {
		seen = append(seen, projections.SeenEvent{Hash: uint64(i), At: ti})
	}
	s := &projections.CustomerState{Key: "c-1", Profile: projections.Profile{LastLoginAt: at.Add(12 * time.Millisecond)},
		Carts: []*projections.Cart{{ID: "k", Currency: "EUR", Status: "open", CreatedAt: at, ModifiedAt: at.Add(time.Minute),
			LastActivity: at.Add(time.Minute + 3), WakeAt: at.Add(-time.Hour)}},
		Seen: seen}
	v4 := appendState(nil, s)
	if v4[0] != stateFormatV4 {
		t.Fatalf("version %d, want V4", v4[0])
	}
	got, err := decodeState(v4)
	if err != nil {
		t.Fatal(err)
	}
	for i, se := range got.Seen {
		if !se.At.Equal(times[i]) || se.At.IsZero() != times[i].IsZero() {
			t.Errorf("time %d: got %v, want %v", i, se.At, times[i])
		}
	}
	if a, b := mustJSON(t, s), mustJSON(t, got); a != b {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}
	var scratch projections.CustomerState
	if err := decodeIndex(v4, &scratch); err != nil || indexOf(&scratch) != indexOf(s) {
		t.Fatalf("decodeIndex: %v", err)
	}
	for i := range v4 {
		if _, err := decodeState(v4[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	v3 := appendStateFormat(nil, s, stateFormatV3)
	old, err := decodeState(v3)
	if err != nil {
		t.Fatalf("a V3 record: %v", err)
	}
	if a, b := mustJSON(t, s), mustJSON(t, old); a != b {
		t.Fatalf("V3 decoded as\n%s\nwant\n%s", b, a)
	}
	if len(v4) >= len(v3) {
		t.Errorf("V4 takes %d bytes, V3 %d", len(v4), len(v3))
	}
	t.Logf("V4 %d bytes, V3 %d bytes", len(v4), len(v3))
	// A zero tag with a payload other than the escape's is corrupt.
	bad := enc{b: []byte{stateFormatV4}}
	bad.str("c-1")
	for range 6 {
		bad.str("")
	}
	bad.bool(false)
	bad.b = append(bad.b, 2<<2|timeZero)
	if _, err := decodeState(bad.b); err == nil {
		t.Fatal("a zero tag with payload 2 accepted")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOutboxEntryAddress reads the topic and key of encoded entries, as
// the erasure's purge does, and refuses every truncation of one.
func TestOutboxEntryAddress(t *testing.T) {
	e := outboxEntry{Topic: "cart-decisions", Key: []byte("c-1"), Value: []byte(`{"id":"d-1"}`),
		Headers: [][2]string{{"ce_id", "d-1"}}}
	b := e.appendTo(nil)
	topic, key, ok := outboxEntryAddress(b)
	if !ok || string(topic) != e.Topic || string(key) != string(e.Key) {
		t.Fatalf("got %q %q %v, want %q %q", topic, key, ok, e.Topic, e.Key)
	}
	addressLen := 1 + len(e.Topic) + 1 + len(e.Key)
	for n := range addressLen {
		if _, _, ok := outboxEntryAddress(b[:n]); ok {
			t.Errorf("a %d-byte truncation read as an address", n)
		}
	}
}
