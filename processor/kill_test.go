package processor_test

// The hard-kill test: the real binary, SIGKILLed twice while it works
// through a backlog, must end up with exactly the decisions and outcomes
// of an undisturbed run: none lost, none extra, and copies of one id
// byte-identical.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
)

const (
	killPartitions = 8
	killEvents     = 40_000
	// killWindow bounds how long the test may take from the moment its
	// backlog is generated to its last wall-clock timer. The backlog has
	// no activity whose due times (activity + any step or expiry delay of
	// killFlows) fall in (T0, T0+killWindow], so both runs fire the same
	// timers by the wall clock whenever, in that window, they catch up.
	killWindow = 150 * time.Second
)

// killFlows has steps of minutes: during the backlog, most fire in event
// time; those due in the backlog's last minutes fire by the wall clock
// once the processor catches up, where only the latest due step is sent.
const killFlows = `
# Test customers have no profile: consent is not what these tests are about.
guards:
  requires_consent: false
` + remindFlows

// remindFlows are the flows (without guards) of killFlows and scaleFlows.
const remindFlows = `
flows:
  - name: remind
    match:
      channels: [b2c]
    steps:
      - name: nudge
        after: 1m
        action: email
        template: reminder
      - name: discount
        after: 8m
        action: email
        template: discount
        discount:
          percent: 10
          max_minor: 2500
          valid_for: 48h
          prefix: BACK
    expire_after: 30m
    attribution_window: 20m
    holdout_percent: 10
  - name: b2b
    match:
      channels: [b2b]
    steps:
      - name: account-manager
        after: 4m
        action: webhook
    expire_after: 30m
    attribution_window: 1h
`

// killDelays are the delays of remindFlows: every step and expire_after.
var killDelays = []time.Duration{time.Minute, 4 * time.Minute, 8 * time.Minute, 30 * time.Minute}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// cartliftBinary builds ./cmd/cartlift once per test binary run.
func cartliftBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out, err := exec.Command(goBin, "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %v", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		buildDir, err = os.MkdirTemp("", "cartlift-kill-test-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(buildDir, "cartlift")
		cmd := exec.Command(goBin, "build", "-o", builtBin, "./cmd/cartlift")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cartlift: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// killBacklog produces n shopper events with event times from 3h to 1m
// before t0, leaving out the activity whose due times would fall in
// (t0, t0+killWindow]. It returns the last event time.
func killBacklog(t *testing.T, brokers []string, topic string, t0 time.Time, n int) time.Time {
	t.Helper()
	type span struct{ from, to time.Time } // [from, to)
	allowed := []span{{t0.Add(-3 * time.Hour), t0.Add(-time.Minute)}}
	for _, d := range killDelays {
		// Activity in (t0-d, t0-d+window] would come due in (t0, t0+window].
		gapFrom, gapTo := t0.Add(-d), t0.Add(-d+killWindow+time.Nanosecond)
		var next []span
		for _, s := range allowed {
			if !gapFrom.Before(s.to) || !gapTo.After(s.from) {
				next = append(next, s)
				continue
			}
			if s.from.Before(gapFrom) {
				next = append(next, span{s.from, gapFrom.Add(time.Nanosecond)})
			}
			if gapTo.Before(s.to) {
				next = append(next, span{gapTo, s.to})
			}
		}
		allowed = next
	}
	var total time.Duration
	for _, s := range allowed {
		total += s.to.Sub(s.from)
	}
	at := func(i int) time.Time { // the i-th of n instants spread over the allowed spans
		off := time.Duration(float64(total) * float64(i) / float64(n))
		for _, s := range allowed {
			if off < s.to.Sub(s.from) {
				return s.from.Add(off)
			}
			off -= s.to.Sub(s.from)
		}
		return allowed[len(allowed)-1].to.Add(-time.Nanosecond)
	}

	// No guest logins: a login moves carts between two partitions, and
	// where the handed-over login lands in the guest's partition depends on
	// timing, so two runs (crashed or not) may legitimately differ there.
	// The move's own exactly-once (a repeat moves nothing) is tested in
	// projections and in TestGuestCartFollowsLogin.
	// No erasures either: an erasure drops the customer's decisions that
	// still wait in the outbox, so what a run emits depends on how far its
	// relay had got (TestErasureOutputIndependentOfTiming pins that down).
	sim := shopper.New(shopper.Options{Seed: 7, Customers: 5000, LoginShare: -1, EraseShare: -1})
	// The processor fetches up to 4 MiB per partition and commits each
	// fetch as one batch. With bare shopper records that is a whole
	// partition of this backlog, so the processor would go from nothing
	// to done in one step per partition, all partitions at once, leaving
	// no moment "mid-stream" to kill it at. A padding header (as a
	// tracing header might be) makes records ~2 KiB, so a partition takes
	// 2-3 fetches and commits; uncompressed, so that the size counts.
	pad := bytes.Repeat([]byte("0123456789abcdef"), 80)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.MaxBufferedRecords(20_000), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var last time.Time
	recs := make([]*kgo.Record, 0, 5000)
	flush := func() {
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		recs = recs[:0]
	}
	for i := range n {
		last = at(i).UTC()
		r := sim.Next(last)
		recs = append(recs, &kgo.Record{Key: []byte(r.Key), Value: r.Value,
			Headers: []kgo.RecordHeader{{Key: "x-padding", Value: pad}}})
		if len(recs) == cap(recs) {
			flush()
		}
	}
	flush()
	return last
}

// cartlift is one `cartlift run` subprocess.
type cartlift struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	httpURL string
	started time.Time
	exited  chan struct{}
	waitErr error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCartlift starts `cartlift run` with the environment env on top of
// the test's, logging to logPath (appended).
func startCartlift(t *testing.T, bin, name, logPath string, env map[string]string) *cartlift {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "run")
	cmd.Env = os.Environ()
	env["CARTLIFT_HTTP_ADDR"] = addr
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "===== %s: start %s\n", name, time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = logf, logf
	c := &cartlift{t: t, name: name, cmd: cmd, httpURL: "http://" + addr, exited: make(chan struct{})}
	c.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

func (c *cartlift) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// metrics returns the process's Prometheus metrics without labels.
func (c *cartlift) metrics() map[string]float64 {
	resp, err := httpClient.Get(c.httpURL + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cartlift_") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = f
		}
	}
	return out
}

type readyz struct {
	Status     string `json:"status"`
	Partitions int    `json:"partitions"`
	CaughtUp   int    `json:"caught_up"`
	Lag        int64  `json:"lag"`
}

// ready reports whether /readyz says the process owns all partitions and
// has caught up with all of them.
func (c *cartlift) ready() bool {
	resp, err := httpClient.Get(c.httpURL + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var r readyz
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return false
	}
	return resp.StatusCode == http.StatusOK && r.Partitions == killPartitions && r.CaughtUp == r.Partitions && r.Lag == 0
}

// kill SIGKILLs the process and waits for it to exit.
func (c *cartlift) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// stop SIGTERMs the process and waits for a clean exit.
func (c *cartlift) stop() {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.kill()
		c.t.Fatalf("%s did not stop within 30s of SIGTERM", c.name)
	}
	if c.waitErr != nil {
		c.t.Errorf("%s exited with %v after SIGTERM", c.name, c.waitErr)
	}
}

// waitProcessing waits until the process has processed input, and returns
// how long that took since it was started.
func (c *cartlift) waitProcessing() time.Duration {
	c.t.Helper()
	deadline := c.started.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if !c.running() {
			c.t.Fatalf("%s exited: %v", c.name, c.waitErr)
		}
		if c.metrics()["cartlift_events_consumed_total"] > 0 {
			return time.Since(c.started)
		}
		if c.ready() {
			// The incarnation before finished the backlog before its kill:
			// nothing is left to process, and being caught up (ready) is
			// what "processing again" means here.
			c.t.Logf("%s: caught up with nothing left to process (the kill before came after the backlog's end)", c.name)
			return time.Since(c.started)
		}
		time.Sleep(time.Millisecond)
	}
	c.t.Fatalf("%s processed nothing within 30s", c.name)
	return 0
}

// killAfterCommit SIGKILLs the process as soon as it has committed a batch
// of input (its first, usually: the whole backlog takes it a few seconds)
// and, with emitted, the relay has produced some of its decisions. It
// returns how many records it had committed by then. It fails when the
// process got through the whole backlog first.
func (c *cartlift) killAfterCommit(emitted bool) (consumed float64) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !c.running() {
			c.t.Fatalf("%s exited: %v", c.name, c.waitErr)
		}
		m := c.metrics()
		if n := m["cartlift_events_consumed_total"]; n > 0 && (!emitted || m["cartlift_decisions_emitted_total"] > 0) {
			c.kill()
			return n
		}
		if c.ready() {
			c.t.Fatalf("%s caught up before it could be killed mid-stream: make the backlog bigger", c.name)
		}
		time.Sleep(time.Millisecond)
	}
	c.t.Fatalf("%s processed nothing within 60s", c.name)
	return 0
}

// waitDone waits until the process has caught up and its output topics
// have not grown for quiet.
func (c *cartlift) waitDone(brokers []string, quiet time.Duration, topics ...string) {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, c.name+" to catch up", func() bool {
		if !c.running() {
			c.t.Fatalf("%s exited: %v", c.name, c.waitErr)
		}
		return c.ready()
	})
	c.t.Logf("%s: caught up %s after its start", c.name, time.Since(c.started).Round(time.Millisecond))
	var last int64 = -1
	since := time.Now()
	waitFor(c.t, 60*time.Second, c.name+"'s output to settle", func() bool {
		var n int64
		for _, topic := range topics {
			n += sumOffsets(endOffsets(c.t, brokers, topic))
		}
		if n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// TestHardKillExactlyOnce runs the binary over a backlog twice: once
// undisturbed (the reference), once SIGKILLed twice mid-stream and
// restarted on the same data dir. Both must emit the same set of decision
// and outcome ids, and every copy of an id must be byte-identical.
func TestHardKillExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := cartliftBinary(t)
	brokers := newCluster(t)
	dir := t.TempDir()
	flowsFile := filepath.Join(dir, "flows.yaml")
	if err := os.WriteFile(flowsFile, []byte(killFlows), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "cartlift.log")
	// The processes' logs are shown when the test fails, or always with
	// CARTLIFT_KILL_TEST_LOG=1.
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CARTLIFT_KILL_TEST_LOG") != "" {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("last lines of the cartlift logs:\n%s", strings.Join(lines[max(0, len(lines)-400):], "\n"))
		}
	})

	// Each run has its own copy of the input: the processor writes to its
	// input topic too (logins handed to the guest's partition, carts
	// assigned on login), so two runs must not share one.
	type run struct{ group, events, decisions, outcomes, dlq, state, data string }
	mk := func(name string) run {
		r := run{group: uniqueName(t, name), events: uniqueName(t, "cart-events-"+name), decisions: uniqueName(t, "decisions-"+name),
			outcomes: uniqueName(t, "outcomes-"+name), dlq: uniqueName(t, "dlq-"+name), state: uniqueName(t, "state-"+name),
			data: filepath.Join(dir, name)}
		createTopics(t, brokers, killPartitions, r.events, r.decisions, r.outcomes, r.dlq)
		return r
	}
	ref, crash := mk("ref"), mk("crash")
	env := func(r run) map[string]string {
		return map[string]string{
			"KAFKA_BROKERS":            strings.Join(brokers, ","),
			"CARTLIFT_DATA_DIR":        r.data,
			"CARTLIFT_FLOWS":           flowsFile,
			"CARTLIFT_GROUP":           r.group,
			"CARTLIFT_PARTITIONS":      strconv.Itoa(killPartitions),
			"CARTLIFT_TOPIC_EVENTS":    r.events,
			"CARTLIFT_TOPIC_DECISIONS": r.decisions,
			"CARTLIFT_TOPIC_OUTCOMES":  r.outcomes,
			"CARTLIFT_TOPIC_DLQ":       r.dlq,
			"CARTLIFT_TOPIC_STATE":     r.state,
			"CARTLIFT_LOG_LEVEL":       "info",
		}
	}

	t0 := time.Now()
	lastEvent := killBacklog(t, brokers, ref.events, t0, killEvents)
	killBacklog(t, brokers, crash.events, t0, killEvents) // the same bytes: a fixed seed
	t.Logf("backlog: %d events, the last at t0-%s, produced in %s",
		killEvents, t0.Sub(lastEvent).Round(time.Second), time.Since(t0).Round(time.Millisecond))

	// (a) The reference: undisturbed.
	start := time.Now()
	a := startCartlift(t, bin, "ref", logPath, env(ref))
	a.waitDone(brokers, 3*time.Second, ref.decisions, ref.outcomes, ref.dlq)
	a.stop()
	t.Logf("reference run: %s", time.Since(start).Round(time.Millisecond))
	inputEnd := endOffsets(t, brokers, ref.events)
	if sumOffsets(inputEnd) < killEvents {
		t.Fatalf("input topic holds %d records, want at least the %d of the backlog", sumOffsets(inputEnd), killEvents)
	}
	// A cleanly stopped processor commits its group offsets: all of them.
	if got := committedOffsets(t, brokers, ref.group, ref.events); !mapsEqual(got, inputEnd) {
		t.Fatalf("reference run stopped at offsets %v, want the end offsets %v", got, inputEnd)
	}

	// (b) Killed twice mid-stream, restarted on the same data dir.
	start = time.Now()
	// Each incarnation is killed right after its first commit of input:
	// some partitions have committed a batch, the others are in the middle
	// of one; the relay is producing what was committed (the first time,
	// it has produced some of it already).
	b := startCartlift(t, bin, "crash-1", logPath, env(crash))
	consumed := b.killAfterCommit(true)
	t.Logf("crash run: SIGKILL 1 after %.0f events, %d decisions on the topic", consumed,
		sumOffsets(endOffsets(t, brokers, crash.decisions)))
	var restarts []time.Duration
	b = startCartlift(t, bin, "crash-2", logPath, env(crash))
	restarts = append(restarts, b.waitProcessing())
	consumed = b.killAfterCommit(false)
	t.Logf("crash run: SIGKILL 2 after %.0f more events, %d decisions on the topic", consumed,
		sumOffsets(endOffsets(t, brokers, crash.decisions)))
	b = startCartlift(t, bin, "crash-3", logPath, env(crash))
	restarts = append(restarts, b.waitProcessing())
	b.waitDone(brokers, 3*time.Second, crash.decisions, crash.outcomes, crash.dlq)
	b.stop()
	t.Logf("crash run: %s; processing again %v after each restart", time.Since(start).Round(time.Millisecond), restarts)
	if elapsed := time.Since(t0); elapsed > killWindow {
		t.Fatalf("the test took %s from its backlog to its end, more than the %s its timeline is built for: "+
			"the runs may have seen different wall-clock timers", elapsed.Round(time.Second), killWindow)
	}

	for i, d := range restarts {
		if d > 5*time.Second {
			t.Errorf("restart %d: processing again after %s, the target is 5s", i+1, d.Round(time.Millisecond))
		}
	}

	// The runs read the same records from two input topics: a decision's
	// cause names its run's (partition and offset are the same).
	refDecisions := readTopic(t, brokers, ref.decisions)
	compareOutputs(t, "decisions", refDecisions, renameCauseTopic(readTopic(t, brokers, crash.decisions), crash.events, ref.events))
	compareOutputs(t, "outcomes", readTopic(t, brokers, ref.outcomes), readTopic(t, brokers, crash.outcomes))
	if n, m := len(readTopic(t, brokers, ref.dlq)), len(readTopic(t, brokers, crash.dlq)); n != 0 || m != 0 {
		t.Errorf("dead letters: %d in the reference, %d in the crash run; the shopper's events are all valid", n, m)
	}

	// Both timer paths were exercised: decisions due before the backlog's
	// last event fired in event time, later ones by the wall clock.
	var byWall, byEvent int
	for _, r := range refDecisions {
		var d struct {
			Data struct {
				DecidedAt time.Time `json:"decided_at"`
			} `json:"data"`
		}
		if err := gojson.Unmarshal(r.Value, &d); err != nil || d.Data.DecidedAt.IsZero() {
			t.Fatalf("decision %s: no decided_at (%v)", r.ID, err)
		}
		if d.Data.DecidedAt.After(lastEvent) {
			byWall++
		} else {
			byEvent++
		}
	}
	t.Logf("reference: %d decisions due during the backlog, %d due after its last event", byEvent, byWall)
	if byWall == 0 || byEvent == 0 {
		t.Errorf("want decisions fired in event time and by the wall clock, got %d and %d", byEvent, byWall)
	}
}

// renameCauseTopic rewrites the input topic the causes of recs name.
func renameCauseTopic(recs []record, from, to string) []record {
	old, repl := []byte(`"topic":"`+from+`"`), []byte(`"topic":"`+to+`"`)
	for i := range recs {
		recs[i].Value = bytes.ReplaceAll(recs[i].Value, old, repl)
	}
	return recs
}

// compareOutputs checks that crash has exactly the ids of ref, and that
// every copy of an id, in either run, has the same key and value.
func compareOutputs(t *testing.T, what string, ref, crash []record) {
	t.Helper()
	index := func(run string, recs []record) map[string][]byte {
		m := make(map[string][]byte, len(recs))
		conflicts := 0
		for _, r := range recs {
			if r.ID == "" {
				t.Errorf("%s %s: a record without an id: %q", run, what, r.Value)
				continue
			}
			kv := append(append([]byte(r.Key), 0), r.Value...)
			if prev, ok := m[r.ID]; ok && !bytes.Equal(prev, kv) {
				if conflicts++; conflicts <= 5 {
					t.Errorf("%s %s: id %s with two different contents:\n%s\n%s", run, what, r.ID, prev, kv)
				}
			}
			m[r.ID] = kv
		}
		if conflicts > 5 {
			t.Errorf("%s %s: %d ids with different contents", run, what, conflicts)
		}
		return m
	}
	rm, cm := index("reference", ref), index("crash run", crash)
	t.Logf("%s: reference %d records (%d ids), crash run %d records (%d ids, %d copies of re-emitted ones)",
		what, len(ref), len(rm), len(crash), len(cm), len(crash)-len(cm))
	if len(rm) != len(ref) {
		t.Errorf("reference %s: %d records but %d ids: re-emissions without a crash", what, len(ref), len(rm))
	}
	if len(rm) == 0 {
		t.Fatalf("reference run emitted no %s", what)
	}
	var missing, extra, differ []string
	for id, v := range rm {
		w, ok := cm[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case !bytes.Equal(v, w):
			differ = append(differ, id)
		}
	}
	for id := range cm {
		if _, ok := rm[id]; !ok {
			extra = append(extra, id)
		}
	}
	show := func(ids []string, m map[string][]byte) string {
		slices.Sort(ids)
		var b strings.Builder
		for _, id := range ids[:min(len(ids), 5)] {
			fmt.Fprintf(&b, "\n  %s: %s", id, bytes.ReplaceAll(m[id], []byte{0}, []byte(" | ")))
		}
		return b.String()
	}
	if len(missing) > 0 {
		t.Errorf("%s lost by the crash run: %d of %d%s", what, len(missing), len(rm), show(missing, rm))
	}
	if len(extra) > 0 {
		t.Errorf("%s only in the crash run: %d%s", what, len(extra), show(extra, cm))
	}
	if len(differ) > 0 {
		t.Errorf("%s with the same id but different contents in the two runs: %d%s", what, len(differ), show(differ, cm))
	}
}
