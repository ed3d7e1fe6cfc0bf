package main

import (
	"bytes"
	"strings"
	"testing"
)

// The sample fills every part of the report, and openAll expands every
// table, collapsed ones included.
func TestSampleAndOpenAll(t *testing.T) {
	r := sample()
	if len(r.Totals) != 4 || len(r.Steps) == 0 || len(r.Detail) == 0 || len(r.StepFunnel) == 0 || len(r.NotSent) == 0 ||
		len(r.Lift) != 3 || len(r.DailyRevenue) != 56 || len(r.VariantTests) != 1 {
		t.Fatalf("sample: %d totals, %d steps, %d detail rows, %d step funnel rows, %d not-sent rows, %d lifts, %d days",
			len(r.Totals), len(r.Steps), len(r.Detail), len(r.StepFunnel), len(r.NotSent), len(r.Lift), len(r.DailyRevenue))
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	details := strings.Count(page.String(), "<details ")
	if closed := details - strings.Count(page.String(), " open><summary>"); details != 8 || closed != 2 {
		t.Fatalf("%d tables, %d collapsed; want 8 and 2 (daily revenue, detail)", details, closed)
	}
	if got := strings.Count(openAll(page.String()), " open><summary>"); got != details {
		t.Errorf("openAll opened %d of %d tables", got, details)
	}
}
