package projections

import (
	"math/rand/v2"
	"testing"
	"time"
)

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	l, ok := location(name)
	if !ok {
		t.Fatalf("zone %s does not load", name)
	}
	return l
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// TestQuietHoursEnd pins the end of quiet windows across midnight and
// across daylight-saving changes, where adding durations to the start
// would be an hour off.
func TestQuietHoursEnd(t *testing.T) {
	night := &QuietHours{From: 21 * 60, To: 8 * 60}
	for _, tc := range []struct {
		name string
		q    *QuietHours
		zone string
		at   string
		want string // "" = not inside
	}{
		{"evening, across midnight", night, "UTC", "2026-11-26T22:00:00Z", "2026-11-27T08:00:00Z"},
		{"at the start", night, "UTC", "2026-11-26T21:00:00Z", "2026-11-27T08:00:00Z"},
		{"after midnight", night, "UTC", "2026-11-27T03:00:00Z", "2026-11-27T08:00:00Z"},
		{"a second before the end", night, "UTC", "2026-11-27T07:59:59Z", "2026-11-27T08:00:00Z"},
		{"at the end", night, "UTC", "2026-11-27T08:00:00Z", ""},
		{"a second before the start", night, "UTC", "2026-11-26T20:59:59Z", ""},
		{"midday", night, "UTC", "2026-11-26T12:00:00Z", ""},
		{"in Berlin, winter", night, "Europe/Berlin", "2026-11-26T20:30:00Z", "2026-11-27T07:00:00Z"},
		{"in Berlin, summer", night, "Europe/Berlin", "2026-07-01T20:30:00Z", "2026-07-02T06:00:00Z"},
		// 2026-10-25 03:00 CEST -> 02:00 CET: the night is 12 hours long.
		{"Berlin, the night the clocks go back", night, "Europe/Berlin", "2026-10-24T20:00:00Z", "2026-10-25T07:00:00Z"},
		{"Berlin, inside the repeated hour", night, "Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-25T07:00:00Z"},
		{"Berlin, the repeated hour again", night, "Europe/Berlin", "2026-10-25T01:30:00Z", "2026-10-25T07:00:00Z"},
		// 2026-03-29 02:00 CET -> 03:00 CEST: the night is 10 hours long.
		{"Berlin, the night the clocks go forward", night, "Europe/Berlin", "2026-03-28T20:00:00Z", "2026-03-29T06:00:00Z"},
		{"Berlin, just before the jump", night, "Europe/Berlin", "2026-03-29T00:59:00Z", "2026-03-29T06:00:00Z"},
		{"Berlin, just after the jump", night, "Europe/Berlin", "2026-03-29T01:00:00Z", "2026-03-29T06:00:00Z"},
		// A window ending in the skipped hour ends when the clock jumps.
		{"end in the skipped hour", &QuietHours{From: 23 * 60, To: 2*60 + 30}, "Europe/Berlin", "2026-03-28T23:30:00Z", "2026-03-29T01:00:00Z"},
		// A window inside the repeated hour happens twice.
		{"window in the repeated hour, first", &QuietHours{From: 2*60 + 15, To: 2*60 + 45}, "Europe/Berlin", "2026-10-25T00:20:00Z", "2026-10-25T00:45:00Z"},
		{"window in the repeated hour, second", &QuietHours{From: 2*60 + 15, To: 2*60 + 45}, "Europe/Berlin", "2026-10-25T01:20:00Z", "2026-10-25T01:45:00Z"},
		{"same-day window", &QuietHours{From: 12 * 60, To: 14 * 60}, "UTC", "2026-11-26T13:00:00Z", "2026-11-26T14:00:00Z"},
		{"same-day window, outside", &QuietHours{From: 12 * 60, To: 14 * 60}, "UTC", "2026-11-26T23:00:00Z", ""},
		{"half-hour zone", night, "Asia/Kolkata", "2026-11-26T16:00:00Z", "2026-11-27T02:30:00Z"},
		{"southern summer time", night, "Australia/Sydney", "2026-11-26T11:00:00Z", "2026-11-26T21:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loc := mustZone(t, tc.zone)
			at := utc(tc.at)
			in := tc.q.Contains(at, loc)
			got := tc.q.End(at, loc)
			if tc.want == "" {
				if in || !got.Equal(at) {
					t.Fatalf("%s in %s: inside=%v end=%s, want outside", tc.at, tc.zone, in, fmtTime(got))
				}
				return
			}
			if !in || !got.Equal(utc(tc.want)) {
				t.Fatalf("%s in %s: inside=%v end=%s, want inside until %s", tc.at, tc.zone, in, fmtTime(got), tc.want)
			}
		})
	}
}

// TestQuietHoursEndProperties checks End against Contains, minute by
// minute, for random windows, zones and times over a year that spans
// daylight-saving changes: End is after t exactly when t is inside, every
// minute before End is inside, and End itself is not.
func TestQuietHoursEndProperties(t *testing.T) {
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe",
		"Asia/Kolkata", "Pacific/Chatham", "Europe/London", "America/St_Johns"}
	rng := rand.New(rand.NewPCG(4, 4))
	start := utc("2026-01-01T00:00:00Z")
	n := 3000
	if testing.Short() {
		n = 500
	}
	for range n {
		q := &QuietHours{From: rng.IntN(24 * 60), To: rng.IntN(24 * 60)}
		if q.From == q.To {
			continue
		}
		name := zones[rng.IntN(len(zones))]
		loc := mustZone(t, name)
		at := start.Add(time.Duration(rng.Int64N(int64(366 * 24 * time.Hour))))
		end := q.End(at, loc)
		if q.Contains(at, loc) != end.After(at) {
			t.Fatalf("%+v %s at %s: inside=%v end=%s", q, name, fmtTime(at), q.Contains(at, loc), fmtTime(end))
		}
		if q.Contains(end, loc) {
			t.Fatalf("%+v %s at %s: end %s is inside", q, name, fmtTime(at), fmtTime(end))
		}
		if end.Sub(at) > 25*time.Hour {
			t.Fatalf("%+v %s at %s: end %s more than a day later", q, name, fmtTime(at), fmtTime(end))
		}
		for m := at.Truncate(time.Minute).Add(time.Minute); m.Before(end); m = m.Add(time.Minute) {
			if !q.Contains(m, loc) {
				t.Fatalf("%+v %s at %s: %s is outside, before the end %s", q, name, fmtTime(at), fmtTime(m), fmtTime(end))
			}
		}
	}
}

func TestFrequencyCapAllows(t *testing.T) {
	h := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Hour))) }
	for _, tc := range []struct {
		name string
		cap  FrequencyCap
		sent []time.Time
		at   time.Time
		want bool
	}{
		{"none sent", FrequencyCap{1, 16 * time.Hour}, nil, h(0), true},
		{"one within the window", FrequencyCap{1, 16 * time.Hour}, []time.Time{h(0)}, h(15.9), false},
		{"exactly the window apart", FrequencyCap{1, 16 * time.Hour}, []time.Time{h(0)}, h(16), true},
		{"one later within the window", FrequencyCap{1, 16 * time.Hour}, []time.Time{h(10)}, h(0), false},
		{"two of two", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0)}, h(1), true},
		{"three of two", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0), h(1)}, h(2), false},
		{"sliding: a window holds 0h and 10h, another 10h and 20h", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0), h(10)}, h(20), true},
		{"sliding: 0h 10h 14h", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0), h(10)}, h(14), false},
		{"in between, each window holds two", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0), h(20)}, h(10), true},
		{"in between, a window holds three", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0), h(5), h(20)}, h(10), false},
		{"in between, the later window holds three", FrequencyCap{2, 16 * time.Hour}, []time.Time{h(0), h(20), h(25)}, h(10), false},
		{"same instant", FrequencyCap{1, time.Hour}, []time.Time{h(5)}, h(5), false},
	} {
		if got := tc.cap.Allows(tc.sent, tc.at); got != tc.want {
			t.Errorf("%s: Allows = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSentBounded(t *testing.T) {
	var s CustomerState
	for i := range 100 {
		s.noteSent(t0.Add(time.Duration(i)*time.Minute), time.Hour)
	}
	if len(s.Sent) != MaxSentTimes {
		t.Fatalf("%d entries, want %d", len(s.Sent), MaxSentTimes)
	}
	s.noteSent(t0.Add(10*24*time.Hour), time.Hour)
	if len(s.Sent) != 1 {
		t.Fatalf("old entries not pruned: %d left", len(s.Sent))
	}
}

func TestMatchCriteria(t *testing.T) {
	yes, no := true, false
	cart := &Cart{Type: "shopping", Channel: "b2b", Currency: "EUR", LegalEntity: "acme-gmbh", TotalMinor: 5000, ItemCount: 3,
		Items: []LineItem{{SKU: "A", Category: "shoes", Quantity: 2}, {SKU: "B", Category: "socks", Quantity: 1}}}
	prof := &Profile{Locale: "de-DE", Segment: "vip"}
	for _, tc := range []struct {
		name string
		m    Match
		p    *Profile
		want bool
	}{
		{"empty", Match{}, prof, true},
		{"include sku", Match{IncludeSKUs: []string{"X", "B"}}, prof, true},
		{"include sku missing", Match{IncludeSKUs: []string{"X"}}, prof, false},
		{"exclude sku", Match{ExcludeSKUs: []string{"A"}}, prof, false},
		{"exclude sku absent", Match{ExcludeSKUs: []string{"X"}}, prof, true},
		{"include category", Match{IncludeCategories: []string{"socks"}}, prof, true},
		{"exclude category", Match{ExcludeCategories: []string{"shoes"}}, prof, false},
		{"min items", Match{MinItems: 3}, prof, true},
		{"min items over", Match{MinItems: 4}, prof, false},
		{"max items", Match{MaxItems: 2}, prof, false},
		{"locale prefix", Match{Locales: []string{"de"}}, prof, true},
		{"locale exact, other spelling", Match{Locales: []string{"DE_de"}}, prof, true},
		{"locale other", Match{Locales: []string{"fr", "de-AT"}}, prof, false},
		{"locale of a guest", Match{Locales: []string{"de"}}, &Profile{}, false},
		{"segment", Match{Segments: []string{"vip"}}, prof, true},
		{"segment other", Match{Segments: []string{"new"}}, prof, false},
		{"legal entity", Match{LegalEntities: []string{"acme-gmbh"}}, prof, true},
		{"legal entity other", Match{LegalEntities: []string{"acme-ltd"}}, prof, false},
		{"b2b", Match{B2B: &yes}, prof, true},
		{"not b2b", Match{B2B: &no}, prof, false},
	} {
		if got := tc.m.Matches(tc.p, cart); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}
