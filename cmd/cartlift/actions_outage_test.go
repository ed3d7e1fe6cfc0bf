package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

// buildCartlift builds the cartlift binary for the test.
func buildCartlift(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cartlift")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// actionsCluster is an in-process broker with the actions role's topics.
func actionsCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0),
		kfake.SeedTopics(1, events.TopicDecisions, events.TopicOutcomes, actions.TopicActionsDLQ))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// actionsEnv is the environment of `cartlift actions` sending to the
// Mailpit at smtpPort, with a short backoff.
func actionsEnv(brokers []string, dataDir string, smtpPort int) map[string]string {
	return map[string]string{
		"KAFKA_BROKERS":                strings.Join(brokers, ","),
		"CARTLIFT_DATA_DIR":            dataDir,
		"SMTP_HOST":                    "127.0.0.1",
		"SMTP_PORT":                    strconv.Itoa(smtpPort),
		"SMTP_FROM":                    "shop@example.com",
		"SMTP_TLS":                     actions.TLSNone,
		"SMTP_TIMEOUT":                 "5s",
		"CARTLIFT_RESUME_URL":          "https://shop.example/cart/{cart_id}",
		"CARTLIFT_UNSUBSCRIBE_URL":     "https://shop.example/unsubscribe?c={customer_key}",
		"CARTLIFT_ACTIONS_RATE":        "0",
		"CARTLIFT_ACTIONS_BACKOFF":     "20ms",
		"CARTLIFT_ACTIONS_BACKOFF_MAX": "300ms",
	}
}

// emailDecision is an email decision for a recipient of its own.
func emailDecision(id, domain string, validUntil time.Time) events.Decision {
	now := time.Now().UTC()
	return events.Decision{
		ID: id, Flow: "default", Step: "first", Action: "email",
		Cart: events.CartSnapshot{CartID: "cart-" + id, Currency: "EUR", TotalMinor: 1999, ItemCount: 1,
			Items: []events.Item{{SKU: "sku-1", Name: "Rain jacket", Quantity: 1, UnitPriceMinor: 1999}}},
		Customer: events.CustomerSnapshot{Key: "c-" + id, CustomerID: "c-" + id, Email: id + "@" + domain, Name: "Ada",
			Locale: "en-GB", MarketingConsent: true},
		DecidedAt: now, ValidUntil: validUntil,
	}
}

func produceDecisions(t *testing.T, brokers []string, ds ...events.Decision) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, d := range ds {
		v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: events.TopicDecisions, Key: []byte(d.Customer.Key), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// scrape reads a Prometheus text page into name{labels} → value.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// actionsProcess is `cartlift actions` running as a subprocess.
type actionsProcess struct {
	cmd     *exec.Cmd
	metrics string // URL of its /metrics
}

func startActionsProcess(t *testing.T, bin string, env map[string]string, logFile string) *actionsProcess {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "actions")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "CARTLIFT_ACTIONS_HTTP_ADDR="+addr)
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &actionsProcess{cmd: cmd, metrics: "http://" + addr + "/metrics"}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	waitUntil(t, "the actions process to serve /metrics", 20*time.Second, func() bool {
		_, err := scrape(p.metrics)
		return err == nil
	})
	return p
}

func (p *actionsProcess) metric(t *testing.T, name string) float64 {
	t.Helper()
	m, err := scrape(p.metrics)
	if err != nil {
		t.Fatalf("scraping %s: %v", p.metrics, err)
	}
	v, ok := m[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return v
}

func testOutage(t *testing.T, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CARTLIFT_TEST_OUTAGE")); err == nil && d > 0 {
		t.Logf("outage of %v (CARTLIFT_TEST_OUTAGE)", d)
		return d
	}
	return def
}

// TestActionsProcessSurvivesSMTPOutageAndKill runs the built binary's
// `cartlift actions` against an in-process broker and a Mailpit, stops
// Mailpit mid-stream for the outage (CARTLIFT_TEST_OUTAGE=10m for the
// real ten minutes; a few seconds by default, with a short backoff),
// kill -9s the process in the middle of it and starts it again: every
// decision still valid gets exactly one email, none goes to the DLQ, and
// the two whose valid_until passed during the outage are recorded expired
// and get none. The decisions are valid for ten minutes past the outage.
func TestActionsProcessSurvivesSMTPOutageAndKill(t *testing.T) {
	outage := testOutage(t, 6*time.Second)
	bin := buildCartlift(t)
	dir := t.TempDir()
	mp, err := actions.StartMailpit(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Stop)
	brokers := actionsCluster(t)
	env := actionsEnv(brokers, dir, mp.SMTPPort)
	env["CARTLIFT_ACTIONS_MAX_ATTEMPTS"] = "5" // deprecated: must not stop the start
	logFile := filepath.Join(dir, "actions.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("actions log:\n%s", b)
		}
	})
	proc := startActionsProcess(t, bin, env, logFile)

	seq := time.Now().UnixNano()
	mk := func(prefix string, n int, validUntil time.Time) []events.Decision {
		var ds []events.Decision
		for i := range n {
			ds = append(ds, emailDecision(fmt.Sprintf("%s-%d-%d", prefix, seq, i), "example.com", validUntil))
		}
		return ds
	}
	emailsOf := func(ds []events.Decision) (n int) {
		ids, err := mp.MessageIDs()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			n += min(ids[actions.MessageID(d.ID)], 1)
		}
		return n
	}
	before := mk("before", 10, time.Now().Add(10*time.Minute+outage))
	produceDecisions(t, brokers, before...)
	waitUntil(t, "the emails before the outage", 20*time.Second, func() bool { return emailsOf(before) == len(before) })

	mp.Stop()
	began := time.Now()
	valid := mk("during", 30, began.Add(10*time.Minute+outage))
	heldExpiry := emailDecision(fmt.Sprintf("held-expiry-%d", seq), "example.com", began.Add(outage*3/4))
	queuedExpiry := emailDecision(fmt.Sprintf("queued-expiry-%d", seq), "example.com", began.Add(outage*3/4))
	produceDecisions(t, brokers, heldExpiry)
	produceDecisions(t, brokers, valid[:15]...)
	produceDecisions(t, brokers, queuedExpiry)
	produceDecisions(t, brokers, valid[15:]...)
	waitUntil(t, "the process to hold the partition", 20*time.Second, func() bool {
		return proc.metric(t, "cartlift_actions_blocked") == 1 && proc.metric(t, `cartlift_actions_transient_failures_total{channel="email"}`) >= 3
	})

	time.Sleep(time.Until(began.Add(outage / 2)))
	if !time.Now().Before(heldExpiry.ValidUntil) {
		t.Fatal("the kill comes after the held decision's valid_until: the outage is too short for this machine")
	}
	if blocked := proc.metric(t, "cartlift_actions_blocked_seconds"); blocked <= 0 {
		t.Fatalf("cartlift_actions_blocked_seconds %v while held", blocked)
	}
	t.Log("kill -9 of the actions process in the middle of the outage")
	if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.cmd.Wait()
	proc = startActionsProcess(t, bin, env, logFile)
	waitUntil(t, "the restarted process to hold the partition", 20*time.Second, func() bool {
		return proc.metric(t, "cartlift_actions_blocked") == 1
	})

	time.Sleep(time.Until(began.Add(outage)))
	if err := mp.Start(); err != nil {
		t.Fatal(err)
	}
	all := append(append([]events.Decision(nil), before...), valid...)
	waitUntil(t, "an email for every valid decision", 30*time.Second, func() bool { return emailsOf(all) == len(all) })
	waitUntil(t, "the process to stop holding", 10*time.Second, func() bool { return proc.metric(t, "cartlift_actions_blocked") == 0 })

	t.Logf("the restarted process: %v decisions expired while held, %v transient email failures",
		proc.metric(t, "cartlift_actions_expired_while_held_total"), proc.metric(t, `cartlift_actions_transient_failures_total{channel="email"}`))
	// The restarted process handled both expiries and sent the rest.
	for name, want := range map[string]float64{
		"cartlift_actions_expired_total":                                   2,
		`cartlift_actions_decisions_total{kind="email.sent"}`:              float64(len(valid)),
		`cartlift_actions_dead_lettered_total{reason="retries_exhausted"}`: 0,
		`cartlift_actions_dead_lettered_total{reason="permanent_failure"}`: 0,
		"cartlift_actions_blocked_seconds":                                 0,
	} {
		if got := proc.metric(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// A redrive while the role runs is refused: the store is in use.
	redrive := exec.Command(bin, "actions", "redrive")
	redrive.Env = proc.cmd.Env
	if out, err := redrive.CombinedOutput(); err == nil || !strings.Contains(string(out), "in use by another process") {
		t.Errorf("redrive next to the running role: %v\n%s", err, out)
	}
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.cmd.Wait(); err != nil {
		t.Errorf("the actions process after SIGTERM: %v", err)
	}

	ids, err := mp.MessageIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if n := ids[actions.MessageID(d.ID)]; n != 1 {
			t.Errorf("%s: %d emails, want exactly 1", d.ID, n)
		}
	}
	if len(ids) != len(all) {
		t.Errorf("%d distinct emails, want %d", len(ids), len(all))
	}
	if dlq := readAll(t, brokers, actions.TopicActionsDLQ); len(dlq) != 0 {
		t.Errorf("%d records in the DLQ, want none", len(dlq))
	}
	store, err := actions.OpenStore(filepath.Join(dir, "actions"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, d := range []events.Decision{heldExpiry, queuedExpiry} {
		if rec, ok, err := store.Get(d.ID); err != nil || !ok || rec.Kind != actions.KindExpired {
			t.Errorf("%s: recorded %+v (%v, %v), want expired", d.ID, rec, ok, err)
		}
	}
	if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), "CARTLIFT_ACTIONS_MAX_ATTEMPTS is deprecated") {
		t.Error("no warning about the deprecated CARTLIFT_ACTIONS_MAX_ATTEMPTS")
	}
}

// readAll reads topic from the start to its current end.
func readAll(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		if len(fs.Records()) == 0 {
			return recs
		}
		recs = append(recs, fs.Records()...)
	}
}

// TestActionsRedrive: decisions refused for good by the SMTP server go to
// the DLQ; once the server accepts them, `cartlift actions redrive` sends
// each exactly once (a dry run first sends nothing), a second redrive
// sends nothing, and a decision that is refused again makes it exit 1. It
// refuses to run while the role's store is open.
func TestActionsRedrive(t *testing.T) {
	dir := t.TempDir()
	mp, err := actions.StartMailpit(dir, "--smtp-allowed-recipients", `@example\.com>?$`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Stop)
	brokers := actionsCluster(t)
	env := actionsEnv(brokers, dir, mp.SMTPPort)
	cfg, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(env))
	if err != nil {
		t.Fatal(err)
	}
	role, err := startActionsRole(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	seq := time.Now().UnixNano()
	validUntil := time.Now().Add(time.Hour)
	var refused []events.Decision
	for i := range 3 {
		refused = append(refused, emailDecision(fmt.Sprintf("refused-%d-%d", seq, i), "example.org", validUntil))
	}
	sent := emailDecision(fmt.Sprintf("sent-%d", seq), "example.com", validUntil)
	produceDecisions(t, brokers, append(refused, sent)...)
	waitUntil(t, "three refusals in the DLQ and one email", 20*time.Second, func() bool {
		st := role.consumer.Stats()
		return st.DeadLettered[actions.ReasonPermanentFailure] == 3 && st.Results[actions.KindEmailSent] == 1
	})
	if err := role.stop(); err != nil {
		t.Fatal(err)
	}
	// A decision dead-lettered before the role held transient failures,
	// and the sent one (dead-lettered twice by a crash, say).
	exhausted := emailDecision(fmt.Sprintf("exhausted-%d", seq), "example.org", validUntil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadLetter := func(d events.Decision, reason string) {
		t.Helper()
		v, err := events.Encode(d.ID, events.Source, events.TypeDecision, d.DecidedAt, d.Cart.CartID, d)
		if err != nil {
			t.Fatal(err)
		}
		src := &kgo.Record{Topic: events.TopicDecisions, Key: []byte(d.Customer.Key), Value: v}
		if err := cl.ProduceSync(context.Background(), actions.NewDeadLetter(actions.TopicActionsDLQ, src, reason, nil)).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	deadLetter(exhausted, actions.ReasonRetriesExhausted)
	deadLetter(sent, actions.ReasonRetriesExhausted)

	for k, v := range env {
		t.Setenv(k, v)
	}
	redrive := func(args ...string) (string, error) {
		var out strings.Builder
		err := run(context.Background(), append([]string{"actions", "redrive"}, args...), &out, io.Discard)
		return out.String(), err
	}
	emails := func() map[string]int {
		ids, err := mp.MessageIDs()
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}

	// The role's store is in use: redrive says so.
	store, err := actions.OpenStore(filepath.Join(dir, "actions"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := redrive(); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("redrive with the store open elsewhere: %v, want an error saying it is in use", err)
	}
	store.Close()

	// The fix: the server accepts example.org.
	mp.Stop()
	if err := mp.Start("--smtp-allowed-recipients", `@example\.(com|org)>?$`); err != nil {
		t.Fatal(err)
	}
	out, err := redrive("-dry-run")
	if err != nil || !strings.Contains(out, "5 read: 0 redriven, 1 already done, 0 expired, 0 failed again, 0 skipped, 4 would be redriven") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if n := len(emails()); n != 1 {
		t.Fatalf("%d emails after the dry run, want 1", n)
	}
	out, err = redrive()
	if err != nil || !strings.Contains(out, "5 read: 4 redriven, 1 already done, 0 expired, 0 failed again, 0 skipped") ||
		!strings.Contains(out, refused[0].ID+" (permanent_failure): redriven (email.sent)") {
		t.Fatalf("redrive: %v\n%s", err, out)
	}
	ids := emails()
	for _, d := range append(append(refused, sent), exhausted) {
		if ids[actions.MessageID(d.ID)] != 1 {
			t.Errorf("%s: %d emails, want 1", d.ID, ids[actions.MessageID(d.ID)])
		}
	}
	out, err = redrive()
	if err != nil || !strings.Contains(out, "5 read: 0 redriven, 5 already done") {
		t.Fatalf("second redrive: %v\n%s", err, out)
	}
	if n := len(emails()); n != 5 {
		t.Fatalf("%d emails after the second redrive, want 5", n)
	}

	// Refused again, read alone with -since: exit 1.
	since := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	deadLetter(emailDecision(fmt.Sprintf("again-%d", seq), "rejected.test", validUntil), actions.ReasonPermanentFailure)
	out, err = redrive("-since", since.Format(time.RFC3339Nano))
	if exitCode(err) != 1 || !strings.Contains(out, "1 read: 0 redriven, 0 already done, 0 expired, 1 failed again") {
		t.Fatalf("redrive of a decision refused again: %v (exit %d)\n%s", err, exitCode(err), out)
	}
	if _, err := redrive("-offset", "-1"); exitCode(err) != 2 {
		t.Errorf("-offset -1: %v, want exit 2", err)
	}
}
