package main

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cartlift/cartlift/processor"
)

// node is one running cartlift instance: the embedded broker when no
// external one is configured, the processor and the HTTP server.
type node struct {
	log     *slog.Logger
	broker  *kfake.Cluster // nil with an external broker
	brokers []string
	proc    *processor.Processor
	http    *http.Server
	httpLn  net.Listener
	runErr  chan error
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
	m := newMetrics()
	n.proc, err = processor.New(processor.Config{
		Brokers:    n.brokers,
		Group:      cfg.Group,
		InstanceID: cfg.instanceID(),
		Topics: processor.Topics{Events: cfg.TopicEvents, Decisions: cfg.TopicDecisions,
			Outcomes: cfg.TopicOutcomes, DLQ: cfg.TopicDLQ},
		Partitions: cfg.Broker.Partitions,
		DataDir:    filepath.Join(cfg.Broker.DataDir, "state"),
		Flows:      flows,
		SyncWrites: cfg.SyncWrites,
		TimerTick:  cfg.TimerTick,
		Logger:     log,
		Hooks:      m.hooks(),
	})
	if err != nil {
		n.closeBroker()
		return nil, err
	}
	m.register(n.proc)
	if cfg.HTTPAddr != "off" {
		if err := n.serveHTTP(cfg.HTTPAddr, m); err != nil {
			n.proc.Close()
			n.closeBroker()
			return nil, err
		}
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
	if n.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.http.Shutdown(sctx)
		cancel()
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

func (n *node) serveHTTP(addr string, m *metrics) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s := n.proc.Stats()
		status, code := "ready", http.StatusOK
		if !n.proc.Ready() {
			status, code = "catching up", http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"status": status, "partitions": s.Partitions, "caught_up": s.CaughtUp, "lag": s.Lag})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("CARTLIFT_HTTP_ADDR %s: %w", addr, err)
	}
	n.httpLn = ln
	n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "err", err)
		}
	}()
	n.log.Info("http listening", "addr", ln.Addr().String())
	return nil
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
	log := newLogger(cfg.LogLevel, cfg.LogFormat)
	slog.SetDefault(log)
	n, err := startNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	err = n.wait()
	s := n.proc.Stats()
	log.Info("stopped", "events", s.EventsConsumed, "rejected", s.EventsRejected, "decisions", s.DecisionsEmitted, "outcomes", s.OutcomesEmitted)
	return err
}

// metrics is the Prometheus face of the processor's hooks and stats.
type metrics struct {
	reg      *prometheus.Registry
	rejected *prometheus.CounterVec
	skipped  prometheus.Counter
	lateness prometheus.Histogram
	batch    prometheus.Histogram
	once     sync.Once
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cartlift_events_rejected_total",
		Help: "Input records sent to the dead-letter topic, by reason."}, []string{"reason"})
	m.skipped = prometheus.NewCounter(prometheus.CounterOpts{Name: "cartlift_events_skipped_total",
		Help: "Input records of unknown event types, skipped."})
	m.lateness = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cartlift_timer_lateness_seconds",
		Help:    "How late timers fired by the wall clock fired after their due time.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cartlift_batch_commit_seconds",
		Help: "Time to fold and commit one fetched batch of a partition.", Buckets: prometheus.DefBuckets})
	m.reg.MustRegister(m.rejected, m.skipped, m.lateness, m.batch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) hooks() processor.Hooks {
	return processor.Hooks{
		EventRejected:  func(reason string) { m.rejected.WithLabelValues(reason).Inc() },
		EventSkipped:   func(string) { m.skipped.Inc() },
		TimerFired:     func(d time.Duration) { m.lateness.Observe(d.Seconds()) },
		BatchCommitted: func(_ int32, _ int, took time.Duration) { m.batch.Observe(took.Seconds()) },
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
		gauge("cartlift_consumer_lag", "Records between the processed and the end offsets of assigned partitions.", func(s processor.Stats) int64 { return s.Lag })
		gauge("cartlift_open_carts", "Open carts in assigned partitions.", func(s processor.Stats) int64 { return s.OpenCarts })
		gauge("cartlift_pending_timers", "Pending timers in assigned partitions.", func(s processor.Stats) int64 { return s.PendingTimers })
		gauge("cartlift_partitions_assigned", "Assigned input partitions.", func(s processor.Stats) int64 { return int64(s.Partitions) })
	})
}
