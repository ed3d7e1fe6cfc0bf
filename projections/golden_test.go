package projections

// Golden-file tests of the fold. Each script in testdata/golden/*.txt is a
// flows file and a list of commands; the test runs the commands through a
// miniature runtime and compares what happened (decisions, outcomes, timer
// changes, and the final states) with the .golden file next to the script.
// Rewrite the golden files after an intended change with
//
//	go test ./projections -run TestGolden -update
//
// and review the diff: it is the behaviour change.
//
// Script format:
//
//	# a comment, copied to the output
//	config idle_expire_after=48h closed_retention=24h   (optional)
//	guards:                        (a flows file, parsed with ParseFlows:
//	  ...                           guards are optional)
//	flows:
//	  - name: ...
//	---
//	event   TIME cust KEY TYPE {data JSON}   apply one event (encoded and
//	                                        decoded like a producer's record)
//	fire    TIME cust KEY cart ID            run one cart's timer at TIME
//	advance TIME                             fire every timer due at or before
//	                                        TIME, in due order (then key, cart),
//	                                        each with now = TIME, as the
//	                                        runtime's timer driver does
//	state   [KEY]                            print the carts of one or all customers
//	timers                                   print the timer index
//	deliver                                  apply the events the fold emitted so
//	                                        far (a login handed over to a guest's
//	                                        key, carts assigned to the customer),
//	                                        in order, and those they emit, as the
//	                                        runtime's outbox does
//
// `event` only applies the event: timers fire through `fire` and `advance`
// alone, so a script says exactly when time passes. Trailing "# comments"
// are allowed on every command.
//
// Besides decisions, outcomes and timer moves, the output shows the steps
// guards suppressed ("suppressed ... reason=...") and deferred ("deferred
// ... until=..."); `state` shows suppressed records, a record's due time
// when its decision was deferred or combined early, and the customer's
// recent message times for the frequency cap.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestGolden")

func TestGolden(t *testing.T) {
	scripts, err := filepath.Glob("testdata/golden/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no scripts in testdata/golden")
	}
	for _, path := range scripts {
		name := strings.TrimSuffix(filepath.Base(path), ".txt")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := runScript(t, path, src)
			goldenPath := strings.TrimSuffix(path, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output (run with -update to accept):\n%s", goldenPath, lineDiff(want, got))
			}
		})
	}
}

// runScript runs one script and returns its output. Invariant violations
// fail the test and are also written into the output.
func runScript(t *testing.T, path string, src []byte) []byte {
	t.Helper()
	header, body, ok := bytes.Cut(src, []byte("\n---\n"))
	if !ok {
		t.Fatalf("%s: no --- line between the flows and the commands", path)
	}
	cfg, err := scriptConfig(path, header)
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(cfg)
	var out bytes.Buffer
	indent := "  "
	var pending []Emit // emitted, not yet delivered
	s.observe = func(st *step) { writeStep(&out, indent, st); pending = append(pending, st.Eff.Emits...) }
	bodyLine := bytes.Count(header, []byte("\n")) + 2
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for n := bodyLine + 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			out.WriteString(line + "\n")
			continue
		}
		out.WriteString(line + "\n")
		fail := func(format string, args ...any) {
			t.Fatalf("%s:%d: %s", path, n, fmt.Sprintf(format, args...))
		}
		cmd, rest, _ := strings.Cut(trimmed, " ")
		rest = strings.TrimSpace(rest)
		var runErr error
		switch cmd {
		case "event":
			f := strings.Fields(rest)
			if len(f) < 5 || f[1] != "cust" {
				fail("want: event TIME cust KEY TYPE {json}")
			}
			at := parseScriptTime(t, path, n, f[0])
			key, typ := f[2], f[3]
			_, after, _ := strings.Cut(rest, " "+typ+" ")
			data, err := scriptJSON(after)
			if err != nil {
				fail("%v", err)
			}
			ev, err := encodeEvent(fmt.Sprintf("e-%d", n), typ, at, data)
			if err != nil {
				fmt.Fprintf(&out, "%srejected: %v\n", indent, err)
				break
			}
			if k := ev.Key(); k != key {
				fmt.Fprintf(&out, "%snote: the event's own key is %q\n", indent, k)
			}
			runErr = s.apply(key, ev)
		case "fire":
			f := strings.Fields(stripComment(rest))
			if len(f) != 5 || f[1] != "cust" || f[3] != "cart" {
				fail("want: fire TIME cust KEY cart ID")
			}
			now := parseScriptTime(t, path, n, f[0])
			due := s.timers[timerKey{f[2], f[4]}]
			if !due.IsZero() && due.After(now) {
				fmt.Fprintf(&out, "%snot due (timer at %s)\n", indent, fmtTime(due))
			}
			runErr = s.fire(f[2], f[4], due, now)
		case "advance":
			f := strings.Fields(stripComment(rest))
			if len(f) != 1 {
				fail("want: advance TIME")
			}
			at := parseScriptTime(t, path, n, f[0])
			fired := 0
			s.observe = func(st *step) {
				fired++
				fmt.Fprintf(&out, "%sfire %s/%s due %s now %s\n", indent, st.Key, st.CartID, fmtTime(st.Due), fmtTime(st.Now))
				writeStep(&out, indent+"  ", st)
			}
			runErr = s.advance(at)
			if fired == 0 && runErr == nil {
				fmt.Fprintf(&out, "%s(nothing due)\n", indent)
			}
			s.observe = func(st *step) { writeStep(&out, indent, st); pending = append(pending, st.Eff.Emits...) }
		case "run", "catchup":
			// run TIME flow NAME: one scheduled run at TIME.
			// catchup NOW flow NAME last LAST: what the runtime does when it
			// comes back at NOW after its last run at LAST: the latest due
			// run only (Schedule.Due), or nothing.
			f := strings.Fields(stripComment(rest))
			if (cmd == "run" && (len(f) != 3 || f[1] != "flow")) || (cmd == "catchup" && (len(f) != 5 || f[1] != "flow" || f[3] != "last")) {
				fail("want: run TIME flow NAME, or catchup NOW flow NAME last TIME")
			}
			at := parseScriptTime(t, path, n, f[0])
			if cmd == "catchup" {
				var sch *Schedule
				for i := range cfg.Flows {
					if cfg.Flows[i].Name == f[2] {
						sch = cfg.Flows[i].Schedule
					}
				}
				if sch == nil {
					fail("no scheduled flow %q", f[2])
				}
				at = sch.Due(parseScriptTime(t, path, n, f[4]), at)
				if at.IsZero() {
					fmt.Fprintf(&out, "%s(no run due)\n", indent)
					break
				}
				fmt.Fprintf(&out, "%sone run, at %s\n", indent, fmtTime(at))
			}
			decided := 0
			s.observe = func(st *step) {
				decided++
				fmt.Fprintf(&out, "%scart %s/%s\n", indent, st.Key, st.CartID)
				writeStep(&out, indent+"  ", st)
			}
			runErr = s.runSchedule(f[2], at)
			if decided == 0 && runErr == nil {
				fmt.Fprintf(&out, "%s(no decision: no cart in the time frame, or all decided in this run)\n", indent)
			}
			s.observe = func(st *step) { writeStep(&out, indent, st); pending = append(pending, st.Eff.Emits...) }
		case "deliver":
			if len(pending) == 0 {
				fmt.Fprintf(&out, "%s(nothing to deliver)\n", indent)
			}
			for len(pending) > 0 && runErr == nil {
				em := pending[0]
				pending = pending[1:]
				raw, err := events.Encode(em.ID, events.Source, em.Type, em.Time, "", em.Data)
				if err != nil {
					fail("emit %s: %v", em.ID, err)
				}
				ev, err := events.Decode(raw, time.Time{})
				if err != nil {
					fail("emit %s does not decode: %v", em.ID, err)
				}
				fmt.Fprintf(&out, "%sdeliver %s %s %s\n", indent, fmtTime(em.Time), em.Key, em.Type)
				if ev.CartAssigned != nil {
					for _, r := range ev.CartAssigned.Decisions {
						fmt.Fprintf(&out, "%s  with history %s/%s#%d at %s skipped=%v holdout=%v\n", indent, r.Flow, r.Step, r.StepIndex, fmtTime(r.At), r.Skipped, r.Holdout)
					}
				}
				s.observe = func(st *step) { writeStep(&out, indent+"  ", st); pending = append(pending, st.Eff.Emits...) }
				runErr = s.apply(em.Key, ev)
			}
			s.observe = func(st *step) { writeStep(&out, indent, st); pending = append(pending, st.Eff.Emits...) }
		case "state":
			f := strings.Fields(stripComment(rest))
			keys := f
			if len(keys) == 0 {
				keys = slices.Sorted(maps.Keys(s.states))
			}
			for _, k := range keys {
				writeCustomer(&out, indent, k, s.states[k])
			}
		case "timers":
			for _, e := range s.timers.sorted() {
				fmt.Fprintf(&out, "%s%s %s/%s\n", indent, fmtTime(e.Due), e.Key, e.CartID)
			}
			if len(s.timers) == 0 {
				fmt.Fprintf(&out, "%s(none)\n", indent)
			}
		default:
			fail("unknown command %q", cmd)
		}
		if runErr == nil {
			runErr = s.checkAll()
		}
		if runErr != nil {
			fmt.Fprintf(&out, "%sINVARIANT VIOLATED: %v\n", indent, runErr)
			t.Errorf("%s:%d: %v", path, n, runErr)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	out.WriteString("\n== final timers\n")
	for _, e := range s.timers.sorted() {
		fmt.Fprintf(&out, "%s %s/%s\n", fmtTime(e.Due), e.Key, e.CartID)
	}
	out.WriteString("\n== final states\n")
	for _, k := range slices.Sorted(maps.Keys(s.states)) {
		// The input window's hashes are opaque: the golden shows its size.
		st := *s.states[k]
		seen := len(st.Seen)
		st.Seen = nil
		b, err := json.MarshalIndent(&st, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
		fmt.Fprintf(&out, "\n(%s: %d input events in the repeat window)\n", k, seen)
	}
	return out.Bytes()
}

// scriptConfig parses a script's header: config lines and a flows file.
func scriptConfig(path string, header []byte) (*Config, error) {
	var yamlLines []string
	var cfg Config
	for i, line := range strings.Split(string(header), "\n") {
		rest, ok := strings.CutPrefix(line, "config ")
		if !ok {
			yamlLines = append(yamlLines, line)
			continue
		}
		yamlLines = append(yamlLines, "") // keep ParseFlows' line numbers right
		for _, kv := range strings.Fields(stripComment(rest)) {
			k, v, _ := strings.Cut(kv, "=")
			d, err := ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %v", path, i+1, k, err)
			}
			switch k {
			case "idle_expire_after":
				cfg.IdleExpireAfter = d
			case "closed_retention":
				cfg.ClosedRetention = d
			default:
				return nil, fmt.Errorf("%s:%d: unknown config %q", path, i+1, k)
			}
		}
	}
	flows, err := ParseFlows(path, []byte(strings.Join(yamlLines, "\n")))
	if err != nil {
		return nil, err
	}
	cfg.Flows = flows
	cfg = cfg.withDefaults()
	return &cfg, nil
}

func stripComment(s string) string {
	if i := strings.Index(s, "#"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// scriptJSON returns the JSON object at the start of s; what follows it
// may only be a comment.
func scriptJSON(s string) (json.RawMessage, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("event data: %v", err)
	}
	if tail := strings.TrimSpace(s[dec.InputOffset():]); tail != "" && !strings.HasPrefix(tail, "#") {
		return nil, fmt.Errorf("event data: unexpected %q after the JSON", tail)
	}
	return raw, nil
}

func parseScriptTime(t *testing.T, path string, line int, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s:%d: %v", path, line, err)
	}
	return at.UTC()
}

// writeStep writes the effects of one Apply or Fire.
func writeStep(out *bytes.Buffer, indent string, st *step) {
	e := st.Eff
	for _, d := range e.Decisions {
		writeDecision(out, indent, d)
	}
	for _, sp := range e.Suppressed {
		fmt.Fprintf(out, "%ssuppressed %s/%s#%d cart=%s reason=%s at=%s holdout=%v", indent, sp.Flow, sp.Step,
			sp.StepIndex, sp.CartID, sp.Reason, fmtTime(sp.At), sp.Holdout)
		if sp.Into != "" {
			fmt.Fprintf(out, " into=%s", sp.Into)
		}
		out.WriteString("\n")
	}
	for _, df := range e.Deferred {
		fmt.Fprintf(out, "%sdeferred %s/%s#%d cart=%s due=%s until=%s\n", indent, df.Flow, df.Step, df.StepIndex,
			df.CartID, fmtTime(df.Due), fmtTime(df.Until))
	}
	for _, o := range e.Outcomes {
		writeOutcome(out, indent, o)
	}
	for _, tc := range e.Timers {
		fmt.Fprintf(out, "%stimer %s/%s %s -> %s\n", indent, st.Key, tc.CartID, fmtTime(tc.Old), fmtTime(tc.New))
	}
	if e.OpenCartsDelta != 0 {
		fmt.Fprintf(out, "%sopen carts %+d\n", indent, e.OpenCartsDelta)
	}
	if e.State == nil && st.Before {
		fmt.Fprintf(out, "%sstate of %s deleted\n", indent, st.Key)
	}
	if len(e.Decisions) == 0 && len(e.Outcomes) == 0 && len(e.Timers) == 0 && e.OpenCartsDelta == 0 &&
		len(e.Suppressed) == 0 && len(e.Deferred) == 0 && !(e.State == nil && st.Before) {
		fmt.Fprintf(out, "%s(no effects)\n", indent)
	}
}

func writeDecision(out *bytes.Buffer, indent string, d events.Decision) {
	fmt.Fprintf(out, "%sdecision %s flow=%s step=%s#%d action=%s template=%s holdout=%v\n",
		indent, d.ID, d.Flow, d.Step, d.StepIndex, d.Action, d.Template, d.Holdout)
	fmt.Fprintf(out, "%s  decided_at=%s valid_until=%s", indent, fmtTime(d.DecidedAt), fmtTime(d.ValidUntil))
	if x := d.Discount; x != nil {
		fmt.Fprintf(out, " discount={percent=%d amount_minor=%d max_minor=%d valid_for=%ds prefix=%s}",
			x.Percent, x.AmountMinor, x.MaxMinor, x.ValidForSeconds, x.Prefix)
	}
	out.WriteString("\n")
	c := d.Cart
	fmt.Fprintf(out, "%s  cart %s v%d %s/%s/%s/%s total=%d count=%d items=[%s] created=%s modified=%s\n",
		indent, c.CartID, c.Version, c.CartType, c.Site, c.Channel, c.Currency, c.TotalMinor, c.ItemCount,
		fmtEventItems(c.Items), fmtTime(c.CreatedAt), fmtTime(c.ModifiedAt))
	p := d.Customer
	fmt.Fprintf(out, "%s  customer key=%s id=%s email=%q name=%q locale=%s tz=%s consent=%v\n",
		indent, p.Key, p.CustomerID, p.Email, p.Name, p.Locale, p.TimeZone, p.MarketingConsent)
}

func writeOutcome(out *bytes.Buffer, indent string, o events.Outcome) {
	fmt.Fprintf(out, "%soutcome %s %s cart=%s value=%d %s order=%s decisions=%d at=%s\n",
		indent, o.ID, o.Kind, o.CartID, o.ValueMinor, o.Currency, o.OrderID, o.Decisions, fmtTime(o.At))
	if o.DecisionID != "" {
		fmt.Fprintf(out, "%s  attributed to %s flow=%s step=%s holdout=%v since_decision_seconds=%d\n",
			indent, o.DecisionID, o.Flow, o.Step, o.Holdout, o.SinceDecided)
	}
}

func writeCustomer(out *bytes.Buffer, indent, key string, st *CustomerState) {
	if st == nil {
		fmt.Fprintf(out, "%s%s: no state\n", indent, key)
		return
	}
	p := st.Profile
	fmt.Fprintf(out, "%s%s: profile id=%s email=%q name=%q locale=%s tz=%s segment=%s consent=%v last_login=%s\n",
		indent, key, p.CustomerID, p.Email, p.Name, p.Locale, p.TimeZone, p.Segment, p.MarketingConsent, fmtTime(p.LastLoginAt))
	for _, c := range st.Carts {
		fmt.Fprintf(out, "%s  cart %s %s v%d %s/%s/%s/%s total=%d count=%d items=[%s]\n",
			indent, c.ID, c.Status, c.Version, c.Type, c.Site, c.Channel, c.Currency, c.TotalMinor, c.ItemCount, fmtLines(c.Items))
		fmt.Fprintf(out, "%s    created=%s last_activity=%s closed=%s wake=%s\n",
			indent, fmtTime(c.CreatedAt), fmtTime(c.LastActivity), fmtTime(c.ClosedAt), fmtTime(c.WakeAt))
		for _, r := range c.Decisions {
			what := r.ID
			switch {
			case r.Skipped:
				what = "skipped"
			case r.Suppressed == ReasonCombined:
				what = "suppressed=combined into " + r.ID
			case r.Suppressed != "":
				what = "suppressed=" + r.Suppressed
			}
			if !r.Due.IsZero() {
				what += " (due " + fmtTime(r.Due) + ")"
			}
			fmt.Fprintf(out, "%s    %s/%s#%d v%d at %s %s holdout=%v\n", indent, r.Flow, r.Step, r.StepIndex, r.Version, fmtTime(r.At), what, r.Holdout)
		}
	}
	if len(st.Sent) > 0 {
		times := make([]string, len(st.Sent))
		for i, t := range st.Sent {
			times[i] = fmtTime(t)
		}
		fmt.Fprintf(out, "%s  sent (for the frequency cap): %s\n", indent, strings.Join(times, ", "))
	}
}

func fmtEventItems(items []events.Item) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprintf("%s %dx%d", it.SKU, it.Quantity, it.UnitPriceMinor)
	}
	return strings.Join(parts, ", ")
}

func fmtLines(items []LineItem) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprintf("%s %dx%d=%d", it.SKU, it.Quantity, it.UnitPriceMinor, it.LineTotalMinor)
	}
	return strings.Join(parts, ", ")
}

// lineDiff shows where two outputs first differ, with context.
func lineDiff(want, got []byte) string {
	w := strings.Split(string(want), "\n")
	g := strings.Split(string(got), "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	from := max(0, i-3)
	fmt.Fprintf(&b, "first difference at line %d\n", i+1)
	for j := from; j < i; j++ {
		fmt.Fprintf(&b, "   %s\n", w[j])
	}
	for j := i; j < min(len(w), i+8); j++ {
		fmt.Fprintf(&b, " - %s\n", w[j])
	}
	for j := i; j < min(len(g), i+8); j++ {
		fmt.Fprintf(&b, " + %s\n", g[j])
	}
	return b.String()
}
