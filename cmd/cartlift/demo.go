package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/analytics"
	"github.com/cartlift/cartlift/cmd/cartlift/shopper"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/internal/refusal"
)

// runDemo is `cartlift demo` (what `make demo` runs): the embedded broker,
// the processor and the shopper generator in one process, live progress,
// a sample of the decisions as they are made, and a summary at the end.
func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	duration := fs.Duration("duration", time.Minute, "how long to generate traffic (Ctrl-C stops earlier)")
	rate := fs.Float64("rate", 400, "generated events per second")
	customers := fs.Int("customers", 2000, "registered customers in the generated population")
	keep := fs.Bool("keep", false, "keep the data directory of an earlier demo instead of starting fresh")
	effect := fs.Float64("effect", demoDefaultEffect, "the reminders' true effect: treated carts come back and buy this much more often (absolute, 0.05 = +5 pp) than the holdout's base rate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *effect < -demoResponseBase || *effect > 1-demoResponseBase {
		return &exitError{2, fmt.Errorf("demo: -effect must be between %g and %g (the base rate is %g), got %g", -demoResponseBase, 1-demoResponseBase, demoResponseBase, *effect)}
	}
	cfg, err := loadRunConfig(ctx, nil)
	if err != nil {
		return err
	}
	if !*keep && len(cfg.Brokers) == 0 {
		if err := os.RemoveAll(cfg.Broker.DataDir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.Broker.DataDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(cfg.Broker.DataDir, "cartlift.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)

	// The processor stops when the generator has stopped and it has caught
	// up, not on the first signal: procCtx is ours.
	procCtx, stopProc := context.WithCancel(context.Background())
	defer stopProc()
	n, err := startNode(procCtx, cfg, log)
	if err != nil {
		return err
	}
	broker := n.brokers[0]
	fmt.Fprintf(stdout, "cartlift demo: %s of shopper traffic at %.0f events/s, flows %s\n", *duration, *rate, cfg.FlowsFile)
	fmt.Fprintf(stdout, "  broker   %s   watch decisions: kcat -b %s -C -t %s -f '%%k %%s\\n'\n", broker, broker, cfg.TopicDecisions)
	if cfg.HTTPAddr != "off" {
		fmt.Fprintf(stdout, "  metrics  http://%s/metrics   readiness: http://%s/readyz\n", n.httpLn.Addr(), n.httpLn.Addr())
		fmt.Fprintf(stdout, "  carts    curl -s http://%s/v1/customers/c-000042/carts   (a customer's open carts)\n", n.httpLn.Addr())
	}
	// The shop: where the emails' links land, with the cart from the API
	// and a button that completes the order.
	var shop *demoShop
	if n.httpLn != nil {
		if shop, err = startDemoShop(cfg.HTTP, n.httpLn.Addr().String(), n.brokers, cfg.TopicEvents, log); err != nil {
			return err
		}
		defer shop.close()
	}
	// The actions role sends the email decisions to a local mail catcher,
	// Mailpit, when it is installed (`make tools`), with signed links
	// that its link server records as clicks and sends on to the shop.
	var (
		mp            *demoMailpit
		stopActions   = func() {}
		receivedHooks = func() int64 { return 0 }
		clicker       *demoClicker
	)
	if bin, err := actions.FindMailpit(); err != nil {
		fmt.Fprintf(stdout, "  emails   none: Mailpit not found (go install github.com/axllent/mailpit@v1.33.1, or make tools)\n")
	} else if mp, err = startDemoMailpit(bin, cfg.Broker.DataDir); err != nil {
		fmt.Fprintf(stdout, "  emails   none: starting Mailpit: %v\n", err)
		mp = nil
	} else {
		defer mp.stop()
		hooks, err := startDemoWebhooks(cfg.HTTP, log)
		if err != nil {
			return err
		}
		defer hooks.close()
		links, err := demoLinks(shop)
		if err != nil {
			return err
		}
		role, err := startDemoActions(procCtx, cfg.Broker.DataDir, n.brokers, mp.smtpPort, hooks.url, links, cfg.HTTP, log)
		if err != nil {
			return err
		}
		receivedHooks = hooks.received
		clicker = newDemoClicker(links)
		stopActions = sync.OnceFunc(func() { clicker.stop(); _ = role.stop() })
		defer stopActions()
		fmt.Fprintf(stdout, "  emails   %s/ (Mailpit: the reminders cartlift sends; click one through to the shop)\n", mp.web)
		if shop != nil {
			fmt.Fprintf(stdout, "  shop     %s/cart/…   (where the emails' links land: the cart from the API, and \"Complete order\")\n", shop.url)
			fmt.Fprintf(stdout, "  links    %s/r/… and /u/…   (signed; a click is recorded as link.clicked, an unsubscribe withdraws consent)\n", links.base)
		}
	}
	// The analytics sink lands decisions and outcomes in ClickHouse
	// (CLICKHOUSE_ADDR, else a local clickhouse-server under the data
	// directory); the demo ends with the recovery report.
	chCfg, chDir, stopClickHouse, err := demoClickHouse(ctx, cfg.Broker.DataDir)
	withAnalytics := err == nil
	if !withAnalytics {
		fmt.Fprintf(stdout, "  report   none: %v\n", err)
	} else {
		defer stopClickHouse()
		n.analytics = startAnalyticsRole(context.WithoutCancel(procCtx), analyticsConfig{Brokers: n.brokers, ClickHouse: chCfg,
			Group: analytics.DefaultSinkGroup, TopicDecisions: cfg.TopicDecisions, TopicOutcomes: cfg.TopicOutcomes,
			TopicSuppressions: cfg.TopicSuppressions, TopicShadowDecisions: cfg.TopicShadowDecisions, TopicDLQ: analytics.DefaultTopicDLQ, BatchRows: analytics.DefaultBatchRows, BatchInterval: time.Second}, log, n.metrics.reg)
		fmt.Fprintf(stdout, "  report   ClickHouse %s, database %s (analytics; the recovery report comes at the end)\n", strings.Join(chCfg.Addr, ","), chCfg.Database)
	}
	fmt.Fprintf(stdout, "  shoppers answer reminders: %s for treated carts over the holdout's %.0f%% (-effect), %.0f%% of the other emails clicked\n",
		signedPP(*effect), 100*demoResponseBase, 100*demoClickShare)
	fmt.Fprintf(stdout, "  logs     %s\n\n", logPath)

	genCl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers...), kgo.DefaultProduceTopic(cfg.TopicEvents),
		kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer genCl.Close()
	genDone := make(chan genStats, 1)
	start := time.Now()
	// Every decision reaches the simulated shoppers, who answer it
	// (shopper.Response): the first one of a cart decides whether its
	// shopper comes back and buys; clicks go through the link server.
	reminders := make(chan genReminder, 1<<16)
	tail := newDecisionTail(n.brokers, cfg.TopicDecisions, cfg.TopicOutcomes)
	tail.onDecision = func(d events.Decision) {
		r := genReminder{Reminder: shopper.Reminder{DecisionID: d.ID, CartID: d.Cart.CartID, Holdout: d.Holdout}}
		if clicker != nil && d.Action == "email" {
			r.Answered = func(a shopper.Answer) {
				if a.Click {
					clicker.click(d, a.ClickAt)
				}
			}
		}
		select {
		case reminders <- r:
		default: // the generator has stopped
		}
	}
	go tail.run(procCtx)
	trafficEnd := time.After(*duration)
	go func() {
		st, err := produceShopperTraffic(ctx, genCl, genOptions{Rate: *rate, Duration: *duration, Drain: demoDrain, Reminders: reminders,
			Sim: shopper.Options{Customers: *customers, ReturnAfter: 40 * time.Second,
				Response: shopper.Response{On: true, Base: demoResponseBase, Effect: *effect, ClickShare: demoClickShare, After: demoResponseAfter}}},
			io.Discard)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			log.Error("generator", "err", err)
		}
		genDone <- st
	}()

	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var gen genStats
	var lastEvents, lastDecisions int64
	lastSample := time.Now()
loop:
	for {
		select {
		case gen = <-genDone:
			break loop
		case <-trafficEnd:
			fmt.Fprintf(stdout, "\nno new shoppers; the ones reminded so far come back for up to %s…\n", demoDrain)
			trafficEnd = nil
		case err := <-n.runErr:
			n.runErr <- err
			break loop
		case <-tick.C:
			s := n.proc.Stats()
			emails := ""
			if mp != nil {
				emails = " · emails sent " + num(int64(tail.emailsSent()))
			}
			fmt.Fprintf(stdout, "[%3.0fs] events %s (%s/s) · open carts %s · pending timers %s · decisions %s (%.1f/s) · outcomes %s%s · lag %d\n",
				time.Since(start).Seconds(), num(s.EventsConsumed), num((s.EventsConsumed-lastEvents)/2),
				num(s.OpenCarts), num(s.PendingTimers), num(s.DecisionsEmitted),
				float64(s.DecisionsEmitted-lastDecisions)/2, num(s.OutcomesEmitted), emails, s.Lag)
			lastEvents, lastDecisions = s.EventsConsumed, s.DecisionsEmitted
			if time.Since(lastSample) >= 6*time.Second {
				if line := tail.sample(); line != "" {
					fmt.Fprintf(stdout, "        ↳ %s\n", line)
				}
				lastSample = time.Now()
			}
		}
	}
	// Let the processor finish what the generator sent, then stop it.
	fmt.Fprintln(stdout, "\ngenerator stopped; letting the processor catch up…")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && n.proc.Stats().Lag > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // the relay's last round, and the tail's
	s := n.proc.Stats()
	stopActions() // before the broker it consumes from
	// The processor stops (its relay drains the outbox first), so no more
	// decisions come; the sink, with its own context, then stores what was
	// emitted: done once it has stored as many records as the tail saw
	// (the tail reads the same topics) and nothing new came for a second.
	// (The sink's lag is no signal here: it stays at the partitions'
	// last transaction markers.)
	stopProc()
	procErr := <-n.runErr
	n.runErr <- procErr // for n.wait
	if withAnalytics {
		waitSinkStored(n.analytics, tail, 20*time.Second)
	}
	runErr := n.wait()
	printDemoSummary(stdout, time.Since(start), gen, s.EventsConsumed, s.EventsRejected, s.OpenCarts, s.PendingTimers, tail)
	if mp != nil {
		fmt.Fprintf(stdout, "  emails sent        %12s   see them at %s/ (Mailpit stops with the demo)\n", num(int64(tail.emailsSent())), mp.web)
		fmt.Fprintf(stdout, "  links clicked      %12s   by the simulated shoppers, through the link server (%s by people; failed %s)\n",
			num(clicker.clicked.Load()), num(max(0, int64(tail.clicks())-clicker.clicked.Load())), num(clicker.failed.Load()))
		fmt.Fprintf(stdout, "  webhooks delivered %12s   signed, verified by the demo's shop\n", num(receivedHooks()))
	}
	fmt.Fprintf(stdout, "  stopped by guards  %12s   deferred for quiet hours %s (no consent, caps, combined: cartlift_decisions_suppressed_total)\n",
		num(s.DecisionsSuppressed), num(s.DecisionsDeferred))
	if withAnalytics {
		// Ctrl-C stopped the traffic, not the report: ClickHouse runs (and
		// is asked) until the report is written.
		if err := printDemoReport(context.WithoutCancel(ctx), stdout, chCfg, chDir, start, cfg.Broker.DataDir); err != nil {
			fmt.Fprintf(stdout, "\nno recovery report: %v\n", err)
		}
	}
	fmt.Fprintf(stdout, "\nstate and broker log kept in %s (run with -keep to continue from them)\n", cfg.Broker.DataDir)
	return runErr
}

// demoClickHouse is the demo's ClickHouse: CLICKHOUSE_ADDR (and the other
// CLICKHOUSE_* settings) when set, else a clickhouse-server started under
// dataDir/clickhouse from deploy/clickhouse/config.xml. stop stops the
// latter. Without either the demo runs without analytics (make demo
// installs clickhouse-server first where it can, and stops if it cannot).
//
// dir is the local server's data directory ("" for CLICKHOUSE_ADDR); it
// stays when the demo ends, so that `cartlift report --clickhouse-dir`
// reports on it again.
func demoClickHouse(ctx context.Context, dataDir string) (cfg clickhouseConfig, dir string, stop func(), err error) {
	if cfg, err = processEnv[clickhouseConfig](ctx, nil); err != nil {
		return cfg, "", nil, err
	}
	if len(cfg.Addr) > 0 {
		return cfg, "", func() {}, cfg.validate()
	}
	dir = filepath.Join(dataDir, "clickhouse")
	// Not ctx: the server must outlive a Ctrl-C until the report is out.
	srv, err := analytics.StartLocal(context.WithoutCancel(ctx), dir)
	if err != nil {
		return cfg, "", nil, fmt.Errorf("the demo needs ClickHouse for its recovery report: %w", err)
	}
	cfg.Addr = []string{srv.Addr}
	return cfg, dir, func() { _ = srv.Stop() }, nil
}

// printDemoReport prints the recovery report of the demo's period, writes
// its HTML next to the demo's data, and prints the command that writes
// the same report again (chDir: the local ClickHouse's data, "" for
// CLICKHOUSE_ADDR).
func printDemoReport(ctx context.Context, w io.Writer, cfg clickhouseConfig, chDir string, start time.Time, dataDir string) error {
	// Exactly the demo's period: from the second it started until now
	// (the report rounds both up to whole seconds, and "Generated" too).
	opt := analytics.ReportOptions{Since: start.UTC().Truncate(time.Second), Until: time.Now().UTC(), CompareShadow: true}
	rep, err := buildReport(ctx, cfg, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n── recovery report (from ClickHouse) ─────────────────────────\n")
	if err := rep.WriteTable(w); err != nil {
		return err
	}
	html := filepath.Join(dataDir, "report.html")
	if err := writeReportTo(rep, (*analytics.Report).WriteHTML, html, w); err != nil {
		return err
	}
	abs, _ := filepath.Abs(html)
	fmt.Fprintf(w, "\n  the same report with charts: file://%s\n", abs)
	fmt.Fprintf(w, "  write it again later:        %s\n", demoReportCommand(os.Args[0], chDir, cfg, rep, html))
	return nil
}

// demoReportCommand is the command line that writes rep again, as HTML
// to out: the same period, from the demo's local ClickHouse (chDir, which
// the command starts and stops) or from CLICKHOUSE_ADDR.
func demoReportCommand(bin, chDir string, cfg clickhouseConfig, rep *analytics.Report, out string) string {
	if bin == "" || strings.HasSuffix(bin, ".test") {
		bin = "cartlift"
	}
	var b strings.Builder
	if chDir == "" {
		fmt.Fprintf(&b, "CLICKHOUSE_ADDR=%s ", shellQuote(strings.Join(cfg.Addr, ",")))
		if cfg.Database != analytics.DefaultDatabase {
			fmt.Fprintf(&b, "CLICKHOUSE_DATABASE=%s ", shellQuote(cfg.Database))
		}
	}
	b.WriteString(shellQuote(bin) + " report")
	if chDir != "" {
		b.WriteString(" --clickhouse-dir " + shellQuote(chDir))
	}
	if len(rep.ShadowComparisons) > 0 {
		b.WriteString(" --compare-shadow")
	}
	fmt.Fprintf(&b, " --since %s --until %s --format html --out %s",
		rep.Since.Format(time.RFC3339), rep.Until.Format(time.RFC3339), shellQuote(out))
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:,=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// demoMailpit is the Mailpit subprocess of the demo: SMTP and web UI on
// 127.0.0.1.
type demoMailpit struct {
	cmd      *exec.Cmd
	smtpPort int
	web      string // http://127.0.0.1:<port>
}

// demoFreePort returns a free port of 127.0.0.1, preferring want.
func demoFreePort(want int) (int, error) {
	if want > 0 {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", want)); err == nil {
			l.Close()
			return want, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startDemoMailpit starts Mailpit (its output to dataDir/mailpit.log) and
// waits for its HTTP API. Its messages are in a temporary database that it
// deletes when it stops.
func startDemoMailpit(bin, dataDir string) (*demoMailpit, error) {
	smtpPort, err := demoFreePort(0)
	if err != nil {
		return nil, err
	}
	webPort, err := demoFreePort(8025)
	if err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dataDir, "mailpit.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(bin,
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", webPort),
		"--smtp-disable-rdns", "--disable-version-check", "--quiet")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	mp := &demoMailpit{cmd: cmd, smtpPort: smtpPort, web: fmt.Sprintf("http://127.0.0.1:%d", webPort)}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(mp.web + "/api/v1/info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return mp, nil
			}
		}
		if time.Now().After(deadline) {
			mp.stop()
			return nil, fmt.Errorf("its API at %s did not come up: %v", mp.web, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *demoMailpit) stop() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
}

// startDemoActions runs the actions role in-process with the settings of
// the demo, as `cartlift actions` would with them in its environment:
// the store under dataDir/actions, emails to the demo's Mailpit without
// TLS, links to the demo's shop, no rate limit.
func startDemoActions(ctx context.Context, dataDir string, brokers []string, smtpPort int, webhookURL string, links demoLinkConfig,
	hcfg httpConfig, log *slog.Logger) (*actionsRole, error) {
	env := map[string]string{
		"KAFKA_BROKERS":           strings.Join(brokers, ","),
		"CARTLIFT_DATA_DIR":       dataDir,
		"SMTP_HOST":               "127.0.0.1",
		"SMTP_PORT":               strconv.Itoa(smtpPort),
		"SMTP_FROM":               "shop@cartlift.example",
		"SMTP_TLS":                string(actions.TLSNone),
		"CARTLIFT_SHOP_NAME":      demoShopName,
		"CARTLIFT_ACTIONS_RATE":   "0",
		"CARTLIFT_WEBHOOK_URLS":   webhookURL,
		"CARTLIFT_WEBHOOK_SECRET": demoWebhookSecret,
	}
	if links.base != "" {
		env["CARTLIFT_LINK_BASE_URL"] = links.base
		env["CARTLIFT_LINK_SECRET"] = links.secret
		env["CARTLIFT_CART_URL"] = links.cartURL
		env["CARTLIFT_ACTIONS_HTTP_ADDR"] = links.addr
	} else {
		env["CARTLIFT_ACTIONS_HTTP_ADDR"] = "off"
	}
	cfg, err := loadActionsConfig(ctx, envconfig.MapLookuper(env))
	if err != nil {
		return nil, err
	}
	cfg.HTTP = hcfg
	return startActionsRole(ctx, cfg, log)
}

// demoWebhookSecret signs the demo's webhooks.
const demoWebhookSecret = "demo-webhook-secret-0123456789abcdef"

// demoWebhooks is the shop's side of the demo's webhooks (the B2B flow's
// account-manager step): a local receiver that verifies each signature, as
// a shop must, and counts what it accepted.
type demoWebhooks struct {
	url  string
	srv  *http.Server
	seen atomic.Int64
}

func startDemoWebhooks(cfg httpConfig, log *slog.Logger) (*demoWebhooks, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &demoWebhooks{url: "http://" + ln.Addr().String() + "/hooks/cartlift"}
	h.srv = startHTTPServer(cfg, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The signature covers the body, so the body is read before the
		// answer; past 1 MiB it is not one of ours.
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || actions.VerifySignature(demoWebhookSecret, r.Header.Get(actions.HeaderSignature), body, time.Now(), 5*time.Minute) != nil {
			refusal.Refuse(w, http.StatusUnauthorized, "text/plain; charset=utf-8", []byte("bad signature\n"))
			return
		}
		h.seen.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}), "demo webhooks", log)
	return h, nil
}

func (h *demoWebhooks) received() int64 { return h.seen.Load() }

func (h *demoWebhooks) close() { _ = h.srv.Close() }

// decisionTail reads the output topics, as a downstream service would, and
// keeps counts and a recent decision for the demo's display.
type decisionTail struct {
	brokers            []string
	decisions, outcome string

	mu        sync.Mutex
	seen      map[string]bool // decision and outcome ids: consumers de-duplicate
	byStep    map[string]int
	holdout   int
	outcomes  map[string]int
	recovered map[string]int64 // by currency, minor units
	latest    *events.Decision
	dupes     int

	// onDecision, when set, gets every new decision, under the lock; it
	// must not block.
	onDecision func(events.Decision)
	// onOutcome, the same for every new outcome.
	onOutcome func(events.Outcome)
}

func newDecisionTail(brokers []string, decisions, outcomes string) *decisionTail {
	return &decisionTail{brokers: brokers, decisions: decisions, outcome: outcomes, seen: map[string]bool{},
		byStep: map[string]int{}, outcomes: map[string]int{}, recovered: map[string]int64{}}
}

func (t *decisionTail) run(ctx context.Context) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(t.brokers...), kgo.ConsumeTopics(t.decisions, t.outcome), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			var env events.Envelope
			if json.Unmarshal(r.Value, &env) != nil {
				return
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.seen[env.ID] {
				t.dupes++
				return
			}
			t.seen[env.ID] = true
			switch env.Type {
			case events.TypeDecision:
				var d events.Decision
				if json.Unmarshal(env.Data, &d) == nil {
					t.byStep[d.Flow+"/"+d.Step]++
					if d.Holdout {
						t.holdout++
					}
					t.latest = &d
					if t.onDecision != nil {
						t.onDecision(d)
					}
				}
			case events.TypeOutcome:
				var o events.Outcome
				if json.Unmarshal(env.Data, &o) == nil {
					t.outcomes[o.Kind]++
					if o.Kind == events.OutcomeRecovered {
						t.recovered[o.Currency] += o.ValueMinor
					}
					if t.onOutcome != nil {
						t.onOutcome(o)
					}
				}
			}
		})
	}
}

// seenIDs is the number of distinct decisions and outcomes seen.
func (t *decisionTail) seenIDs() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

// waitSinkStored waits, at most timeout, until the analytics sink has
// stored as many records as tail has seen, nothing new has come to
// either for a second, and ClickHouse is up.
func waitSinkStored(a *analyticsRole, tail *decisionTail, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	var last int64 = -1
	lastChange := time.Now()
	for time.Now().Before(deadline) {
		st, seen := a.stats(), int64(tail.seenIDs())
		if st.Records+seen != last {
			last, lastChange = st.Records+seen, time.Now()
		}
		if st.ClickHouseUp && st.Pending == 0 && st.Records >= seen && time.Since(lastChange) > time.Second {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// clicks is the number of link.clicked outcomes seen.
func (t *decisionTail) clicks() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.outcomes[actions.KindLinkClicked]
}

// emailsSent is the number of email.sent outcomes seen.
func (t *decisionTail) emailsSent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.outcomes[actions.KindEmailSent]
}

// sample describes the newest decision in one line, without personal data.
func (t *decisionTail) sample() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.latest
	if d == nil {
		return ""
	}
	t.latest = nil
	what := d.Action + " " + d.Template
	if d.Holdout {
		what = "holdout (no message)"
	}
	if d.Discount != nil {
		what += fmt.Sprintf(" with %d%% off", d.Discount.Percent)
	}
	return fmt.Sprintf("decision %s: %s/%s → %s for %s, cart %s (%s, %s)",
		d.ID[:10], d.Flow, d.Step, what, d.Customer.Key, d.Cart.CartID, plural(d.Cart.ItemCount, "item", "items"), money(d.Cart.TotalMinor, d.Cart.Currency))
}

func printDemoSummary(w io.Writer, took time.Duration, gen genStats, consumed, rejected, open, timers int64, t *decisionTail) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(w, "\n── cartlift demo summary (%s) ──────────────────────────────\n", took.Round(time.Second))
	fmt.Fprintf(w, "  events produced    %12s   (%.0f/s)\n", num(gen.Acked), gen.Rate())
	fmt.Fprintf(w, "  events processed   %12s   rejected to DLQ %s\n", num(consumed), num(rejected))
	if own := consumed - gen.Acked; own > 0 {
		fmt.Fprintf(w, "    of them cartlift's own %6s   (logins handed to guest carts, carts assigned on login)\n", num(own))
	}
	fmt.Fprintf(w, "  open carts now     %12s   pending timers %s\n", num(open), num(timers))
	total := 0
	for _, n := range t.byStep {
		total += n
	}
	fmt.Fprintf(w, "  decisions          %12s   (holdout %s, duplicates seen and dropped %s)\n", num(int64(total)), num(int64(t.holdout)), num(int64(t.dupes)))
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range t.byStep {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(w, "    %-34s %8s\n", k, num(int64(t.byStep[k])))
	}
	fmt.Fprintf(w, "  outcomes\n")
	for _, k := range []string{events.OutcomeConverted, events.OutcomeRecovered, events.OutcomeConvertedHoldout,
		events.OutcomeLost, events.OutcomeDiscarded, events.OutcomeMerged} {
		if n := t.outcomes[k]; n > 0 {
			fmt.Fprintf(w, "    %-34s %8s\n", k, num(int64(n)))
		}
	}
	var rev []string
	for cur, v := range t.recovered {
		rev = append(rev, money(v, cur))
	}
	slices.Sort(rev)
	if len(rev) == 0 {
		rev = []string{"none yet"}
	}
	fmt.Fprintf(w, "  recovered revenue  %s\n", strings.Join(rev, " · "))
}

// num formats an integer with thousands separators.
func num(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// money formats minor units in the currency's major unit.
func money(minor int64, currency string) string {
	amount := events.FormatMinor(minor, currency)
	whole, frac, hasFrac := strings.Cut(strings.TrimPrefix(amount, "-"), ".")
	n, _ := strconv.ParseInt(whole, 10, 64)
	s := num(n)
	if strings.HasPrefix(amount, "-") {
		s = "-" + s
	}
	if hasFrac {
		s += "." + frac
	}
	return s + " " + currency
}
