package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

func TestPlural(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0 items"}, {1, "1 item"}, {2, "2 items"}, {1204, "1,204 items"}, {-1, "-1 item"}} {
		if got := plural(c.n, "item", "items"); got != c.want {
			t.Errorf("plural(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

// The demo's sample line and summary: the right plural, thousands
// separators in every count, no line ending in a space.
func TestDemoOutputWording(t *testing.T) {
	tail := newDecisionTail(nil, "", "")
	d := &events.Decision{ID: "d-5a5edf3d0123", Flow: "demo-reminders", Step: "reminder", Action: "email", Template: "reminder",
		Customer: events.CustomerSnapshot{Key: "c-000349"},
		Cart:     events.CartSnapshot{CartID: "k-1", Currency: "USD", ItemCount: 1, TotalMinor: 123456}}
	tail.latest = d
	if got, want := tail.sample(), "(1 item, 1,234.56 USD)"; !strings.HasSuffix(got, want) {
		t.Errorf("sample %q does not end in %q", got, want)
	}
	d.Cart.ItemCount = 3
	tail.latest = d
	if got := tail.sample(); !strings.Contains(got, "(3 items, ") {
		t.Errorf("sample %q", got)
	}

	tail.byStep["demo-reminders/reminder"] = 2909
	tail.byStep["demo-b2b/account-manager"] = 277
	tail.holdout, tail.dupes = 1714, 0
	tail.outcomes[events.OutcomeConverted] = 1677
	tail.recovered["EUR"] = 15216746
	var buf bytes.Buffer
	printDemoSummary(&buf, 112*time.Second, genStats{Acked: 35423, Elapsed: 90 * time.Second}, 37310, 0, 3594, 7811, tail)
	out := buf.String()
	for _, want := range []string{"2,909", "holdout 1,714", "1,677", "35,423", "152,167.46 EUR", "demo-b2b/account-manager"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for i, l := range strings.Split(out, "\n") {
		if strings.TrimRight(l, " ") != l {
			t.Errorf("summary line %d ends in a space: %q", i+1, l)
		}
	}
}
