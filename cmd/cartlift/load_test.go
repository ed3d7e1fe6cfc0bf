package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// TestLoadReportsRatesAndRatios runs `cartlift load` on a small backlog
// against its in-process broker and checks what it prints: the processed
// count, the bare consumer's rounds, the ratios by rate and by CPU, and
// the memory and disk figures.
func TestLoadReportsRatesAndRatios(t *testing.T) {
	chdirRoot(t)
	var out bytes.Buffer
	err := runLoad(context.Background(), []string{"-events", "3000", "-customers", "300", "-partitions", "2",
		"-state-cache-mib", "8", "-block-cache-mib", "16", "-memtable-mib", "4"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^bare consumer \(envelope only\), round 1: \d+ events/s, [\d.]+ µs of CPU per event$`),
		regexp.MustCompile(`(?m)^bare consumer \(envelope only\), round 2: `),
		regexp.MustCompile(`(?m)^processed 3000 events in `),
		regexp.MustCompile(`(?m)^ratio to the bare consumer \(mean of 2 rounds, \d+ events/s\): [\d.]+$`),
		regexp.MustCompile(`(?m)^CPU per event: [\d.]+ µs, the bare consumer [\d.]+ µs: ratio [\d.]+ `),
		regexp.MustCompile(`(?m)allocated after close \(du\) [\d.]+ MiB \(\d+ B per open cart\)$`),
		regexp.MustCompile(`(?m)^memory: live Go heap at most \d+ MiB while processing .*, peak RSS \d+ MiB `),
		regexp.MustCompile(`(?m)^store writes: write-ahead log [\d.]+ MiB \([1-9]\d* B per event\), flushes [\d.]+ MiB, compactions [\d.]+ MiB$`),
	} {
		if !want.MatchString(out.String()) {
			t.Errorf("the output lacks %s:\n%s", want, out.String())
		}
	}
	if m := regexp.MustCompile(`processed 3000 events in \S+: (\d+) events/s`).FindStringSubmatch(out.String()); m == nil || len(m[1]) > 7 {
		t.Errorf("the processor's rate is not a plausible one (under 10M events/s):\n%s", out.String())
	}
	if strings.Contains(out.String(), "allocated after close (du) 0.0 MiB") || strings.Contains(out.String(), "peak RSS 0 MiB") {
		t.Errorf("the store's allocated size is 0:\n%s", out.String())
	}
}

// TestLoadOpenCarts runs the -open-carts backlog: every event is a new
// customer's cart, so the store ends with as many open carts (and
// pending timers) as events, and no event is rejected.
func TestLoadOpenCarts(t *testing.T) {
	chdirRoot(t)
	var out bytes.Buffer
	err := runLoad(context.Background(), []string{"-events", "2000", "-open-carts", "-partitions", "2", "-baseline=false",
		"-state-cache-mib", "8", "-block-cache-mib", "16", "-memtable-mib", "4"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^producing a backlog of 2000 events \(2000 customers, 2 partitions\)`).MatchString(out.String()) ||
		!regexp.MustCompile(`rejected 0, open carts 2000, pending timers 2000,`).MatchString(out.String()) {
		t.Errorf("the backlog did not leave 2000 open carts of 2000 customers:\n%s", out.String())
	}
}

func TestLoadRefusesBadSizes(t *testing.T) {
	err := runLoad(context.Background(), []string{"-memtable-mib", "0"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "-memtable-mib") {
		t.Fatalf("got %v, want an error naming -memtable-mib", err)
	}
	err = runLoad(context.Background(), []string{"-fetch-max-mib", "2048"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "-fetch-max-mib") {
		t.Fatalf("got %v, want an error naming -fetch-max-mib", err)
	}
}
