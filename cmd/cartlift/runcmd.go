package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/processor"
)

// node is one running cartlift instance: the embedded broker when no
// external one is configured, the processor and the HTTP server (the API
// with the ops endpoints).
type node struct {
	log      *slog.Logger
	broker   *kfake.Cluster // nil with an external broker
	brokers  []string
	proc     *processor.Processor
	producer *kgo.Client // the API's transactional producer; nil without HTTP
	http     *http.Server
	httpLn   net.Listener
	runErr   chan error
	actions  *actionsRole // nil unless the actions role runs in this node
	// analytics is the analytics sink; nil unless it runs in this node.
	analytics *analyticsRole
	metrics   *metrics
	// emporix is the Emporix webhook adapter; nil unless configured.
	emporix *emporixAdapter
}

// startNode starts everything of `cartlift run` and returns once the
// processor is running. Stop it with stop.
func startNode(ctx context.Context, cfg runConfig, log *slog.Logger) (*node, error) {
	flows, err := loadFlows(cfg.FlowsFile)
	if err != nil {
		return nil, err
	}
	n := &node{log: log, runErr: make(chan error, 1)}
	n.brokers = cfg.Brokers
	if len(n.brokers) == 0 {
		n.broker, err = startBroker(cfg.Broker)
		if err != nil {
			return nil, err
		}
		n.brokers = n.broker.ListenAddrs()
		log.Info("embedded broker started", "addr", n.brokers[0], "data", filepath.Join(cfg.Broker.DataDir, "broker"))
	}
	// The listener first: its address travels in the processor's group
	// membership, for forwarding between instances.
	var advertise string
	n.httpLn, advertise, err = listenHTTP(&cfg, log)
	if err != nil && !errors.Is(err, errHTTPOff) {
		n.closeBroker()
		return nil, err
	}
	fail := func(err error) (*node, error) {
		if n.httpLn != nil {
			n.httpLn.Close()
		}
		if n.emporix != nil {
			n.emporix.close()
		}
		if n.producer != nil {
			n.producer.Close()
		}
		if n.proc != nil {
			n.proc.Close()
		}
		n.closeBroker()
		return nil, err
	}
	m := newMetrics()
	n.metrics = m
	n.proc, err = processor.New(processor.Config{
		Brokers:    n.brokers,
		Group:      cfg.Group,
		InstanceID: cfg.instanceID(),
		Topics: processor.Topics{Events: cfg.TopicEvents, Decisions: cfg.TopicDecisions,
			Outcomes: cfg.TopicOutcomes, DLQ: cfg.TopicDLQ, State: cfg.TopicState,
			Suppressions: cfg.TopicSuppressions, ShadowDecisions: cfg.TopicShadowDecisions},
		Partitions:         cfg.Broker.Partitions,
		DataDir:            filepath.Join(cfg.Broker.DataDir, "state"),
		Flows:              flows,
		SyncWrites:         cfg.SyncWrites,
		ReplayInput:        cfg.ReplayInput,
		StandbyReplicas:    cfg.StandbyReplicas,
		SessionTimeout:     cfg.SessionTimeout,
		CleanupDelay:       cfg.CleanupDelay,
		StateFormat:        byte(cfg.StateFormat),
		RestoreMemoryBytes: cfg.RestoreMemoryMiB << 20,
		StateCacheBytes:    cfg.StateCacheMiB << 20,
		BlockCacheBytes:    cfg.BlockCacheMiB << 20,
		MemTableBytes:      cfg.MemTableMiB << 20,
		FetchMaxBytes:      int32(cfg.FetchMaxMiB << 20),
		TimerTick:          cfg.TimerTick,
		Logger:             log,
		Hooks:              m.hooks(),
		AdvertiseAddr:      advertise,
	})
	if err != nil {
		return fail(err)
	}
	m.register(n.proc)
	if n.httpLn != nil {
		n.producer, err = processor.NewTxnProducer(n.brokers, apiTransactionalID(&cfg))
		if err != nil {
			return fail(err)
		}
		if cfg.Emporix.enabled() {
			n.emporix, err = startEmporixAdapter(ctx, cfg.Emporix, n.brokers, "cartlift-emporix-"+cfg.instanceID(),
				cfg.Broker.Partitions, cfg.TopicEvents, cfg.TopicDLQ, cfg.HTTPMaxBody, ownsKey(n.proc), log)
			if err != nil {
				return fail(err)
			}
			a := n.emporix
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cartlift_emporix_pending",
				Help: "Emporix item events waiting for a snapshot of their cart (CARTLIFT_EMPORIX_PENDING_MAX bounds them)."},
				func() float64 { return float64(a.pendingCount()) }))
		}
		h, err := n.newAPIHandler(&cfg, advertise, n.producer, m)
		if err != nil {
			return fail(err)
		}
		n.serveHTTP(cfg.HTTP, h)
	}
	go func() { n.runErr <- n.proc.Run(ctx) }()
	log.Info("processor started", "brokers", strings.Join(n.brokers, ","), "flows", cfg.FlowsFile,
		"flow_count", len(flows.Flows), "data", cfg.Broker.DataDir, "instance", cfg.instanceID())
	return n, nil
}

// wait blocks until the processor stopped (its context was cancelled or it
// failed), then shuts everything down.
func (n *node) wait() error {
	err := <-n.runErr
	if n.analytics != nil {
		if aerr := n.analytics.stop(); aerr != nil && err == nil {
			err = aerr
		}
	}
	if n.actions != nil {
		// Before the broker it consumes from.
		if aerr := n.actions.stop(); aerr != nil && err == nil && !errors.Is(aerr, context.Canceled) {
			err = aerr
		}
	}
	if n.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.http.Shutdown(sctx)
		cancel()
	}
	if n.emporix != nil {
		n.emporix.close()
	}
	if n.producer != nil {
		n.producer.Close()
	}
	if cerr := n.proc.Close(); err == nil {
		err = cerr
	}
	n.closeBroker()
	return err
}

func (n *node) closeBroker() {
	if n.broker != nil {
		n.broker.Close()
	}
}

// serveHTTP serves h on the node's listener, bounded by cfg, until wait
// shuts it down.
func (n *node) serveHTTP(cfg httpConfig, h http.Handler) {
	n.http = startHTTPServer(cfg, n.httpLn, h, "api", n.log)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = jsonEncode(w, v)
}

// runProcessor is `cartlift run`.
func runProcessor(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return &exitError{2, errors.New("run takes no arguments: it is configured from the environment (see README)")}
	}
	cfg, err := loadRunConfig(ctx, nil)
	if err != nil {
		return err
	}
	// The actions role (emails, webhooks, signed links) is part of `cartlift
	// run` when it is configured, i.e. SMTP_HOST or CARTLIFT_LINK_BASE_URL
	// is set: it then consumes cart-decisions in this process, from the same
	// brokers, and serves the links on CARTLIFT_ACTIONS_HTTP_ADDR, a mux of
	// its own. `cartlift actions` runs the same role on its own.
	var acfg actionsConfig
	withActions := actionsConfigured(envconfig.OsLookuper())
	if withActions {
		if acfg, err = loadActionsConfig(ctx, envconfig.OsLookuper()); err != nil {
			return err
		}
	}
	// Likewise the analytics sink, when CLICKHOUSE_ADDR is set; its metrics
	// join the run's /metrics.
	var ancfg analyticsConfig
	withAnalytics := analyticsConfigured(envconfig.OsLookuper())
	if withAnalytics {
		if ancfg, err = loadAnalyticsConfig(ctx, envconfig.OsLookuper()); err != nil {
			return err
		}
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)
	slog.SetDefault(log)
	setGoMemoryLimit(log, cfg, "/sys/fs/cgroup")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n, err := startNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	if withActions {
		acfg.Brokers = n.brokers
		if n.actions, err = startActionsRole(ctx, acfg, log); err != nil {
			log.Error("actions role", "err", err)
			cancel()
			_ = n.wait()
			return err
		}
		n.actions.register(n.metrics.reg)
	}
	if withAnalytics {
		ancfg.Brokers = n.brokers
		n.analytics = startAnalyticsRole(ctx, ancfg, log, n.metrics.reg)
	}
	err = n.wait()
	s := n.proc.Stats()
	log.Info("stopped", "events", s.EventsConsumed, "rejected", s.EventsRejected, "decisions", s.DecisionsEmitted, "outcomes", s.OutcomesEmitted)
	return err
}

// metrics is the Prometheus face of the processor's hooks and stats, and
// of the API's requests.
type metrics struct {
	reg        *prometheus.Registry
	rejected   *prometheus.CounterVec
	suppressed *prometheus.CounterVec
	skipped    prometheus.Counter
	duplicate  prometheus.Counter
	reduced    prometheus.Counter
	dropped    prometheus.Counter
	lateness   prometheus.Histogram
	batch      prometheus.Histogram
	http       *prometheus.HistogramVec
	forwarded  *prometheus.CounterVec
	once       sync.Once
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cartlift_events_rejected_total",
		Help: "Input records sent to the dead-letter topic, by reason."}, []string{"reason"})
	m.suppressed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cartlift_decisions_suppressed_total",
		Help: "Steps that came due but a guard stopped, by reason (no_consent, frequency_cap, cart_cap, combined, superseded)."}, []string{"reason"})
	m.skipped = prometheus.NewCounter(prometheus.CounterOpts{Name: "cartlift_events_skipped_total",
		Help: "Input records of unknown event types, skipped."})
	m.duplicate = prometheus.NewCounter(prometheus.CounterOpts{Name: "cartlift_events_duplicate_total",
		Help: "Input events dropped as repeats (same source and id as one of the customer's recent events)."})
	m.reduced = prometheus.NewCounter(prometheus.CounterOpts{Name: "cartlift_output_reduced_total",
		Help: "Output records the brokers refused for good (too large), sent to the DLQ in a reduced form instead."})
	m.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "cartlift_output_dropped_total",
		Help: "Reduced dead letters the brokers refused too, dropped (each is logged)."})
	m.lateness = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cartlift_timer_lateness_seconds",
		Help:    "How late timers fired by the wall clock fired after their due time.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cartlift_batch_commit_seconds",
		Help: "Time to fold and commit one fetched batch of a partition.", Buckets: prometheus.DefBuckets})
	m.http = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cartlift_http_request_duration_seconds",
		Help:    "HTTP requests by route pattern, method and status code class (forwarded requests included).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
		[]string{"route", "method", "code"})
	m.forwarded = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cartlift_http_forwarded_total",
		Help: "API requests forwarded to the instance that owns the customer's partition, by route pattern."}, []string{"route"})
	m.reg.MustRegister(m.rejected, m.suppressed, m.skipped, m.duplicate, m.reduced, m.dropped, m.lateness, m.batch, m.http, m.forwarded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) hooks() processor.Hooks {
	return processor.Hooks{
		EventRejected:      func(reason string) { m.rejected.WithLabelValues(reason).Inc() },
		EventSkipped:       func(string) { m.skipped.Inc() },
		EventDuplicate:     func() { m.duplicate.Inc() },
		OutputReduced:      func() { m.reduced.Inc() },
		OutputDropped:      func() { m.dropped.Inc() },
		DecisionSuppressed: func(reason string) { m.suppressed.WithLabelValues(reason).Inc() },
		TimerFired:         func(d time.Duration) { m.lateness.Observe(d.Seconds()) },
		BatchCommitted:     func(_ int32, _ int, took time.Duration) { m.batch.Observe(took.Seconds()) },
	}
}

// observeHTTP is the API's Observe hook.
func (m *metrics) observeHTTP(ri processor.RequestInfo) {
	m.http.WithLabelValues(ri.Route, ri.Method, codeClass(ri.Code)).Observe(ri.Took.Seconds())
	if ri.Forwarded {
		m.forwarded.WithLabelValues(ri.Route).Inc()
	}
}

// register exposes the processor's stats.
func (m *metrics) register(p *processor.Processor) {
	m.once.Do(func() {
		counter := func(name, help string, f func(processor.Stats) int64) {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
				func() float64 { return float64(f(p.Stats())) }))
		}
		gauge := func(name, help string, f func(processor.Stats) int64) {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
				func() float64 { return float64(f(p.Stats())) }))
		}
		counter("cartlift_events_consumed_total", "Input records processed.", func(s processor.Stats) int64 { return s.EventsConsumed })
		counter("cartlift_decisions_emitted_total", "Decisions acknowledged by the brokers.", func(s processor.Stats) int64 { return s.DecisionsEmitted })
		counter("cartlift_outcomes_emitted_total", "Outcomes acknowledged by the brokers.", func(s processor.Stats) int64 { return s.OutcomesEmitted })
		counter("cartlift_timers_fired_total", "Timers fired.", func(s processor.Stats) int64 { return s.TimersFired })
		counter("cartlift_decisions_deferred_total", "Steps held for quiet hours (decided at the window's end).", func(s processor.Stats) int64 { return s.DecisionsDeferred })
		gauge("cartlift_consumer_lag", "Records between the processed and the end offsets of assigned partitions.", func(s processor.Stats) int64 { return s.Lag })
		gauge("cartlift_open_carts", "Open carts in assigned partitions.", func(s processor.Stats) int64 { return s.OpenCarts })
		gauge("cartlift_pending_timers", "Pending timers in assigned partitions.", func(s processor.Stats) int64 { return s.PendingTimers })
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cartlift_store_bytes",
			Help: "Bytes the Pebble store occupies on disk."}, func() float64 { return float64(p.DiskUsage()) }))
		for _, kind := range []string{"block_cache", "memtables"} {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cartlift_store_memory_bytes",
				Help:        "Memory of the Pebble store: its block cache and its memtables (the Go heap is in go_memstats_heap_alloc_bytes).",
				ConstLabels: prometheus.Labels{"kind": kind}}, func() float64 {
				cache, mem := p.StoreMemory()
				if kind == "block_cache" {
					return float64(cache)
				}
				return float64(mem)
			}))
		}
		gauge("cartlift_partitions_assigned", "Assigned input partitions.", func(s processor.Stats) int64 { return int64(s.Partitions) })
		gauge("cartlift_partitions_restoring", "Partitions being restored from the changelog.", func(s processor.Stats) int64 { return int64(s.Restoring) })
		gauge("cartlift_local_partitions", "Partitions the store holds data of: owned, standby copies, and copies kept for CARTLIFT_STATE_CLEANUP_DELAY.", func(s processor.Stats) int64 { return int64(s.LocalPartitions) })
		gauge("cartlift_standby_partitions", "Standby copies this instance keeps (CARTLIFT_STANDBY_REPLICAS).", func(s processor.Stats) int64 { return int64(s.StandbyPartitions) })
		gauge("cartlift_standby_partitions_warm", "Standby copies built and following the changelog.", func(s processor.Stats) int64 { return int64(s.StandbyWarm) })
		gauge("cartlift_standby_lag_records", "Changelog records the standby copies are behind, in all.", func(s processor.Stats) int64 { return s.StandbyLag })
		gauge("cartlift_changelog_lag_entries", "Outbox entries (outputs and changelog records) committed to the store and not yet to Kafka.", func(s processor.Stats) int64 { return s.ChangelogLag })
		for _, src := range processor.TakeoverSources() {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cartlift_partition_takeovers_total",
				Help:        "Partitions taken over, by where their state came from: local (this instance's store), standby (a standby copy), changelog (a restore), input (a new partition).",
				ConstLabels: prometheus.Labels{"source": src.String()}},
				func() float64 { return float64(p.Stats().Takeovers[src]) }))
		}
		gauge("cartlift_restored_customers", "Customer states restored from the changelog since the start (a counter).", func(s processor.Stats) int64 { return s.RestoredCustomers })
	})
}
