package events_test

import (
	"math"
	"testing"

	"github.com/cartlift/cartlift/events"
)

func TestFormatMinor(t *testing.T) {
	for _, c := range []struct {
		minor    int64
		currency string
		want     string
	}{
		{5999, "EUR", "59.99"},
		{-5, "EUR", "-0.05"},
		{0, "EUR", "0.00"},
		{1500, "JPY", "1500"},
		{-1500, "JPY", "-1500"},
		{1234, "KWD", "1.234"},
		{7, "XXX", "0.07"}, // unknown: 2 digits
		{math.MinInt64, "EUR", "-92233720368547758.08"},
	} {
		if got := events.FormatMinor(c.minor, c.currency); got != c.want {
			t.Errorf("FormatMinor(%d, %q) = %q, want %q", c.minor, c.currency, got, c.want)
		}
	}
}
