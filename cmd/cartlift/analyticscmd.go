package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sethvargo/go-envconfig"

	"github.com/cartlift/cartlift/analytics"
)

// clickhouseConfig says where the analytics tables live (the sink, the
// report, the demo).
type clickhouseConfig struct {
	// Addr: host:port of ClickHouse's native protocol, comma-separated for
	// several servers. Empty: no analytics.
	Addr     []string `env:"CLICKHOUSE_ADDR"`
	Database string   `env:"CLICKHOUSE_DATABASE, default=cartlift"`
	User     string   `env:"CLICKHOUSE_USER, default=default"`
	Password string   `env:"CLICKHOUSE_PASSWORD"`
	// TLS connects with TLS (port 9440 usually); TLSSkipVerify skips the
	// certificate check (self-signed development servers only).
	TLS           bool `env:"CLICKHOUSE_TLS, default=false"`
	TLSSkipVerify bool `env:"CLICKHOUSE_TLS_SKIP_VERIFY, default=false"`
}

func (c clickhouseConfig) analytics() analytics.ClickHouseConfig {
	return analytics.ClickHouseConfig{Addr: c.Addr, Database: c.Database, Username: c.User, Password: c.Password,
		TLS: c.TLS, InsecureSkipVerify: c.TLSSkipVerify}
}

func (c clickhouseConfig) validate() error {
	if len(c.Addr) == 0 {
		return configError("CLICKHOUSE_ADDR", "required (host:port of ClickHouse's native protocol, e.g. 127.0.0.1:9000)")
	}
	var ce *analytics.ConfigError
	if err := c.analytics().Validate(); errors.As(err, &ce) {
		env := map[string]string{"Addr": "CLICKHOUSE_ADDR", "Database": "CLICKHOUSE_DATABASE"}[ce.Field]
		return configError(env, "%v", ce.Err)
	} else if err != nil {
		return configError("CLICKHOUSE_ADDR", "%v", err)
	}
	return nil
}

// analyticsConfig is the configuration of the analytics role (`cartlift
// analytics`, and `cartlift run` with CLICKHOUSE_ADDR set).
type analyticsConfig struct {
	Brokers    []string `env:"KAFKA_BROKERS"`
	BrokerAddr string   `env:"CARTLIFT_BROKER_ADDR, default=127.0.0.1:9092"`
	ClickHouse clickhouseConfig

	Group          string `env:"CARTLIFT_ANALYTICS_GROUP, default=cartlift-analytics"`
	TopicDecisions string `env:"CARTLIFT_TOPIC_DECISIONS, default=cart-decisions"`
	TopicOutcomes  string `env:"CARTLIFT_TOPIC_OUTCOMES, default=cart-outcomes"`
	// TopicSuppressions holds the suppressed and deferred steps.
	TopicSuppressions string `env:"CARTLIFT_TOPIC_SUPPRESSIONS, default=cart-suppressions"`
	// TopicShadowDecisions holds the shadow flows' decisions.
	TopicShadowDecisions string `env:"CARTLIFT_TOPIC_SHADOW_DECISIONS, default=cart-decisions.shadow"`
	TopicDLQ             string `env:"CARTLIFT_TOPIC_ANALYTICS_DLQ, default=cart-analytics.dlq"`
	// A batch is inserted at BatchRows records or BatchInterval after its
	// first record, whichever comes first.
	BatchRows     int           `env:"CARTLIFT_ANALYTICS_BATCH_ROWS, default=50000"`
	BatchInterval time.Duration `env:"CARTLIFT_ANALYTICS_BATCH_INTERVAL, default=1s"`
	// HTTPAddr serves /metrics and /healthz for `cartlift analytics` on its
	// own ("off": none); within `cartlift run` the run's /metrics has them.
	HTTPAddr string `env:"CARTLIFT_ANALYTICS_HTTP_ADDR, default=127.0.0.1:8082"`
	// HTTP bounds that server: timeouts, header size, connections.
	HTTP httpConfig
}

func loadAnalyticsConfig(ctx context.Context, l envconfig.Lookuper) (analyticsConfig, error) {
	cfg, err := processEnv[analyticsConfig](ctx, l)
	if err != nil {
		return cfg, err
	}
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{cfg.BrokerAddr}
	}
	if err := cfg.ClickHouse.validate(); err != nil {
		return cfg, err
	}
	if err := cfg.HTTP.validate(); err != nil {
		return cfg, err
	}
	if cfg.BatchRows <= 0 || cfg.BatchRows > 1_000_000 {
		return cfg, configError("CARTLIFT_ANALYTICS_BATCH_ROWS", "must be in 1..1000000, got %d", cfg.BatchRows)
	}
	if cfg.BatchInterval <= 0 {
		return cfg, configError("CARTLIFT_ANALYTICS_BATCH_INTERVAL", "must be positive, got %s", cfg.BatchInterval)
	}
	return cfg, nil
}

// analyticsConfigured reports whether CLICKHOUSE_ADDR is set, so `cartlift
// run` runs the analytics role too.
func analyticsConfigured(l envconfig.Lookuper) bool {
	v, ok := l.Lookup("CLICKHOUSE_ADDR")
	return ok && v != ""
}

// analyticsRole is the running sink. It connects (and migrates) in the
// background, retrying while ClickHouse is unreachable, so a ClickHouse
// outage never stops the processor it runs next to.
type analyticsRole struct {
	sink   atomic.Pointer[analytics.Sink]
	cancel context.CancelFunc
	done   chan error
}

// startAnalyticsRole starts the role of cfg; reg, when not nil, gets its
// metrics. stop ends it.
func startAnalyticsRole(ctx context.Context, cfg analyticsConfig, log *slog.Logger, reg prometheus.Registerer) *analyticsRole {
	r := &analyticsRole{done: make(chan error, 1)}
	ctx, r.cancel = context.WithCancel(ctx)
	if reg != nil {
		r.register(reg)
	}
	go func() {
		err := r.run(ctx, cfg, log)
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("analytics role stopped", "err", err)
		}
		r.done <- err
	}()
	return r
}

func (r *analyticsRole) run(ctx context.Context, cfg analyticsConfig, log *slog.Logger) error {
	conn, err := connectAnalytics(ctx, cfg.ClickHouse, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	sink, err := analytics.NewSink(analytics.SinkConfig{
		Brokers: cfg.Brokers, Group: cfg.Group,
		TopicDecisions: cfg.TopicDecisions, TopicOutcomes: cfg.TopicOutcomes, TopicSuppressions: cfg.TopicSuppressions,
		TopicShadowDecisions: cfg.TopicShadowDecisions, TopicDLQ: cfg.TopicDLQ, BatchRows: cfg.BatchRows, BatchInterval: cfg.BatchInterval, Logger: log,
	}, conn)
	if err != nil {
		return err
	}
	defer sink.Close()
	r.sink.Store(sink)
	log.Info("analytics sink running", "clickhouse", strings.Join(cfg.ClickHouse.Addr, ","), "database", cfg.ClickHouse.Database,
		"group", cfg.Group, "batch_rows", cfg.BatchRows, "batch_interval", cfg.BatchInterval)
	go r.logProgress(ctx, log)
	return sink.Run(ctx)
}

// connectAnalytics opens ClickHouse and migrates, retrying with backoff
// (1 s doubling to 30 s) until it succeeds or ctx is cancelled.
func connectAnalytics(ctx context.Context, cfg clickhouseConfig, log *slog.Logger) (driver.Conn, error) {
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		conn, err := analytics.Open(ctx, cfg.analytics())
		if err == nil {
			var applied []uint32
			applied, err = analytics.Migrate(ctx, conn)
			if err == nil {
				if len(applied) > 0 {
					log.Info("analytics: migrations applied", "versions", applied)
				}
				return conn, nil
			}
			conn.Close()
		}
		log.Warn("analytics: ClickHouse not ready; retrying", "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// logProgress logs the sink's counters every 30 s while they move.
func (r *analyticsRole) logProgress(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	var last int64 = -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := r.stats()
			if s.Records == last && s.Lag == 0 {
				continue
			}
			last = s.Records
			log.Info("analytics: progress", "records", s.Records, "decisions", s.Decisions, "outcomes", s.Outcomes,
				"action_results", s.ActionResults, "suppressions", s.Suppressions, "dead_lettered", s.DeadLettered, "batches", s.Batches,
				"lag", s.Lag, "clickhouse_up", s.ClickHouseUp)
		}
	}
}

// stats is the sink's counters; before it connected, ClickHouse counts as
// down.
func (r *analyticsRole) stats() analytics.SinkStats {
	if s := r.sink.Load(); s != nil {
		return s.Stats()
	}
	return analytics.SinkStats{Lag: -1}
}

func (r *analyticsRole) register(reg prometheus.Registerer) {
	counter := func(name, help string, f func(analytics.SinkStats) int64, labels prometheus.Labels) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f(r.stats())) }))
	}
	gauge := func(name, help string, f func(analytics.SinkStats) int64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(f(r.stats())) }))
	}
	rows := "Rows the analytics sink inserted into ClickHouse, by table."
	counter("cartlift_analytics_rows_total", rows, func(s analytics.SinkStats) int64 { return s.Decisions }, prometheus.Labels{"table": "decisions"})
	counter("cartlift_analytics_rows_total", rows, func(s analytics.SinkStats) int64 { return s.Outcomes }, prometheus.Labels{"table": "outcomes"})
	counter("cartlift_analytics_rows_total", rows, func(s analytics.SinkStats) int64 { return s.ActionResults }, prometheus.Labels{"table": "action_results"})
	counter("cartlift_analytics_rows_total", rows, func(s analytics.SinkStats) int64 { return s.Suppressions }, prometheus.Labels{"table": "suppressions"})
	counter("cartlift_analytics_records_total", "Records the analytics sink read.", func(s analytics.SinkStats) int64 { return s.Records }, nil)
	counter("cartlift_analytics_dead_lettered_total", "Records sent to the analytics dead-letter topic.", func(s analytics.SinkStats) int64 { return s.DeadLettered }, nil)
	counter("cartlift_analytics_batches_total", "Batches inserted and committed.", func(s analytics.SinkStats) int64 { return s.Batches }, nil)
	counter("cartlift_analytics_insert_errors_total", "Failed inserts and erasures (each retry counts).", func(s analytics.SinkStats) int64 { return s.InsertErrors }, nil)
	counter("cartlift_analytics_dlq_errors_total", "Failed produces to the analytics dead-letter topic (each retry counts).", func(s analytics.SinkStats) int64 { return s.DLQErrors }, nil)
	counter("cartlift_analytics_commit_errors_total", "Stored batches whose offset commit failed (read again, harmlessly).", func(s analytics.SinkStats) int64 { return s.CommitErrors }, nil)
	counter("cartlift_analytics_erasures_total", "Erased outcomes applied: what the customer did up to the erasure deleted from every table.", func(s analytics.SinkStats) int64 { return s.Erasures }, nil)
	counter("cartlift_analytics_erased_dropped_total", "Decisions and outcomes from before an erasure read after it, dropped.", func(s analytics.SinkStats) int64 { return s.ErasedDropped }, nil)
	gauge("cartlift_analytics_pending_records", "Records read but not yet in ClickHouse.", func(s analytics.SinkStats) int64 { return int64(s.Pending) })
	gauge("cartlift_analytics_lag", "The analytics group's lag: records on the topics past its committed offsets, not yet in ClickHouse (-1 until known).", func(s analytics.SinkStats) int64 { return s.Lag })
	gauge("cartlift_analytics_clickhouse_up", "1 while ClickHouse accepts inserts, 0 from a failed insert (or before connecting) until one succeeds.",
		func(s analytics.SinkStats) int64 {
			if s.ClickHouseUp {
				return 1
			}
			return 0
		})
}

// running reports whether the role has not ended.
func (r *analyticsRole) running() bool { return len(r.done) == 0 }

// stop cancels the role and waits for it.
func (r *analyticsRole) stop() error {
	r.cancel()
	err := <-r.done
	r.done <- err
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// runAnalytics is `cartlift analytics`: the sink on its own.
func runAnalytics(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return &exitError{2, errors.New("analytics takes no arguments; configure it with CLICKHOUSE_* and CARTLIFT_* environment variables")}
	}
	cfg, err := loadAnalyticsConfig(ctx, envconfig.OsLookuper())
	if err != nil {
		return &exitError{2, err}
	}
	log := slog.Default()
	reg := prometheus.NewRegistry()
	r := startAnalyticsRole(ctx, cfg, log, reg)
	if cfg.HTTPAddr != "off" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			r.cancel()
			<-r.done
			return &exitError{2, configError("CARTLIFT_ANALYTICS_HTTP_ADDR", "%v", err)}
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			if !r.running() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "analytics sink stopped\n")
				return
			}
			_, _ = io.WriteString(w, "ok\n")
		})
		srv := startHTTPServer(cfg.HTTP, ln, mux, "analytics metrics", log)
		defer srv.Close()
		fmt.Fprintf(stdout, "analytics: metrics on http://%s/metrics\n", ln.Addr())
	}
	fmt.Fprintf(stdout, "analytics: %s, %s and %s → ClickHouse %s/%s as %s\n", cfg.TopicDecisions, cfg.TopicOutcomes, cfg.TopicSuppressions,
		strings.Join(cfg.ClickHouse.Addr, ","), cfg.ClickHouse.Database, cfg.Group)
	select {
	case <-ctx.Done():
		return r.stop()
	case err := <-r.done: // the role failed on its own
		r.done <- err
		return fmt.Errorf("analytics: %w", err)
	}
}

// runReport is `cartlift report`.
func runReport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	since := fs.String("since", "30d", "start of the period: a duration back from now (30d, 12h, 90m), or a date or time (2026-11-01, RFC 3339)")
	until := fs.String("until", "", "end of the period (exclusive), same forms (a duration also counts back from now); default now")
	flow := fs.String("flow", "", "only this flow")
	compareShadow := fs.Bool("compare-shadow", false, "add each shadow flow against its live flow: carts reached, overlap, the recoveries each would be credited with, revenue, discount cost")
	format := fs.String("format", "table", "table, json or html")
	out := fs.String("out", "", "write to this file instead of standard output")
	chDir := fs.String("clickhouse-dir", "", "instead of CLICKHOUSE_ADDR: start a local clickhouse-server over this data directory (the demo's data/demo/clickhouse) for the report, and stop it after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("report: unexpected argument %q", fs.Arg(0))}
	}
	now := time.Now().UTC()
	opt := analytics.ReportOptions{Flow: *flow, Until: now, CompareShadow: *compareShadow}
	var err error
	if opt.Since, err = parseReportTime(*since, now); err != nil {
		return &exitError{2, fmt.Errorf("report: --since: %w", err)}
	}
	if *until != "" {
		if opt.Until, err = parseReportTime(*until, now); err != nil {
			return &exitError{2, fmt.Errorf("report: --until: %w", err)}
		}
	}
	if !opt.Since.Before(opt.Until) {
		return &exitError{2, fmt.Errorf("report: --since (%s) must be before --until (%s)", opt.Since.Format(time.RFC3339), opt.Until.Format(time.RFC3339))}
	}
	write, err := reportWriter(*format)
	if err != nil {
		return &exitError{2, err}
	}
	cfg, err := processEnv[clickhouseConfig](ctx, nil)
	if err != nil {
		return &exitError{2, err}
	}
	if *chDir != "" {
		if len(cfg.Addr) > 0 {
			return &exitError{2, errors.New("report: --clickhouse-dir starts a server of its own: unset CLICKHOUSE_ADDR, or leave out --clickhouse-dir")}
		}
		srv, err := startReportClickHouse(ctx, *chDir)
		if err != nil {
			return err
		}
		defer srv.Stop()
		cfg.Addr = []string{srv.Addr}
	}
	if err := cfg.validate(); err != nil {
		return &exitError{2, err}
	}
	return writeReport(ctx, cfg, opt, write, *out, stdout)
}

// startReportClickHouse starts a local clickhouse-server over the data
// directory dir, which must hold a server's data already (a new one would
// have no analytics tables to report on).
func startReportClickHouse(ctx context.Context, dir string) (*analytics.LocalServer, error) {
	if _, err := os.Stat(filepath.Join(dir, "metadata")); err != nil {
		return nil, &exitError{2, fmt.Errorf("report: --clickhouse-dir %s holds no ClickHouse data (the demo leaves its own in data/demo/clickhouse): %w", dir, err)}
	}
	srv, err := analytics.StartLocal(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("report: --clickhouse-dir: %w", err)
	}
	return srv, nil
}

// writeReport builds the report from ClickHouse and writes it with write
// to the file out (standard output when empty).
func writeReport(ctx context.Context, cfg clickhouseConfig, opt analytics.ReportOptions,
	write func(*analytics.Report, io.Writer) error, out string, stdout io.Writer) error {
	rep, err := buildReport(ctx, cfg, opt)
	if err != nil {
		return err
	}
	return writeReportTo(rep, write, out, stdout)
}

// buildReport runs the report's queries against ClickHouse.
func buildReport(ctx context.Context, cfg clickhouseConfig, opt analytics.ReportOptions) (*analytics.Report, error) {
	conn, err := analytics.Open(ctx, cfg.analytics())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rep, err := analytics.BuildReport(ctx, conn, opt)
	if err != nil {
		var ex *clickhouse.Exception
		if errors.As(err, &ex) && ex.Code == 60 { // UNKNOWN_TABLE
			return nil, fmt.Errorf("report: no analytics tables in database %s yet: run the analytics role (cartlift run or cartlift analytics with CLICKHOUSE_ADDR) first: %w", cfg.Database, err)
		}
		return nil, fmt.Errorf("report: %w", err)
	}
	return rep, nil
}

// writeReportTo writes rep with write to the file out, or to stdout when
// out is empty.
func writeReportTo(rep *analytics.Report, write func(*analytics.Report, io.Writer) error, out string, stdout io.Writer) error {
	if out == "" {
		return write(rep, stdout)
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := write(rep, f); err != nil {
		f.Close()
		return fmt.Errorf("report: %w", err)
	}
	return f.Close()
}

func reportWriter(format string) (func(*analytics.Report, io.Writer) error, error) {
	switch format {
	case "table":
		return (*analytics.Report).WriteTable, nil
	case "json":
		return (*analytics.Report).WriteJSON, nil
	case "html":
		return (*analytics.Report).WriteHTML, nil
	}
	return nil, fmt.Errorf("report: --format %q: want table, json or html", format)
}

// parseReportTime reads "30d", "12h", "90m" (back from now), a date
// (2026-11-01, midnight UTC) or an RFC 3339 time.
func parseReportTime(s string, now time.Time) (time.Time, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 36500 {
			return time.Time{}, fmt.Errorf("%q: want a positive number of days like 30d", s)
		}
		return now.AddDate(0, 0, -days), nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q: the duration must be positive", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q: want a duration (30d, 12h), a date (2026-11-01) or an RFC 3339 time", s)
}
