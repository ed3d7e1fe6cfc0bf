package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/internal/refusal"
)

// actionsConfig is the configuration of `cartlift actions`, from the
// environment.
type actionsConfig struct {
	// Brokers of the Kafka cluster; empty means the (separately started)
	// embedded broker at BrokerAddr.
	Brokers    []string `env:"KAFKA_BROKERS"`
	BrokerAddr string   `env:"CARTLIFT_BROKER_ADDR, default=127.0.0.1:9092"`
	DataDir    string   `env:"CARTLIFT_DATA_DIR, default=./data"`

	Group string `env:"CARTLIFT_ACTIONS_GROUP, default=cartlift-actions"`
	// InstanceID for static group membership; default derived from the
	// host name and the data directory (whose store it goes with), so a
	// restarted role takes its partitions back at once.
	InstanceID     string `env:"CARTLIFT_ACTIONS_INSTANCE_ID"`
	TopicDecisions string `env:"CARTLIFT_TOPIC_DECISIONS, default=cart-decisions"`
	TopicOutcomes  string `env:"CARTLIFT_TOPIC_OUTCOMES, default=cart-outcomes"`
	TopicDLQ       string `env:"CARTLIFT_TOPIC_ACTIONS_DLQ, default=cart-actions.dlq"`
	// TopicSuppressions receives the decisions the role drops without
	// acting (no consent, no address, expired, no channel).
	TopicSuppressions string `env:"CARTLIFT_TOPIC_SUPPRESSIONS, default=cart-suppressions"`

	SMTPHost     string        `env:"SMTP_HOST, default=localhost"`
	SMTPPort     int           `env:"SMTP_PORT, default=587"`
	SMTPUsername string        `env:"SMTP_USERNAME"`
	SMTPPassword string        `env:"SMTP_PASSWORD"`
	SMTPFrom     string        `env:"SMTP_FROM"`
	SMTPTLS      string        `env:"SMTP_TLS, default=opportunistic"`
	SMTPTimeout  time.Duration `env:"SMTP_TIMEOUT, default=10s"`

	ResumeURL      string `env:"CARTLIFT_RESUME_URL"`
	UnsubscribeURL string `env:"CARTLIFT_UNSUBSCRIBE_URL"`

	// The emails' layout (actions.Branding): the shop's name (default: the
	// display name of SMTP_FROM, else its domain), its colour (#rrggbb or
	// #rgb) and the catalog's image URL with {sku} for items without one.
	ShopName   string `env:"CARTLIFT_SHOP_NAME"`
	BrandColor string `env:"CARTLIFT_BRAND_COLOR"`
	ImageURL   string `env:"CARTLIFT_EMAIL_IMAGE_URL"`

	// Signed links: with LinkBaseURL set, emails carry signed resume and
	// unsubscribe links under it (LinkSecret, at least 32 characters, is
	// then required) and the role serves them on HTTPAddr: GET /r/{token}
	// redirects to CartURL ({cart_id}, {decision_id}, {customer_key}) and
	// records link.clicked on cart-outcomes; /u/{token} unsubscribes
	// (RFC 8058 one-click POST) and emits customer.updated to cart-events.
	LinkSecret  string        `env:"CARTLIFT_LINK_SECRET"`
	LinkBaseURL string        `env:"CARTLIFT_LINK_BASE_URL"`
	LinkTTL     time.Duration `env:"CARTLIFT_LINK_TTL, default=720h"`
	CartURL     string        `env:"CARTLIFT_CART_URL"`
	HTTPAddr    string        `env:"CARTLIFT_ACTIONS_HTTP_ADDR, default=127.0.0.1:8081"`
	TopicEvents string        `env:"CARTLIFT_TOPIC_EVENTS, default=cart-events"`
	// HTTP bounds the link server: timeouts, header size, connections.
	HTTP httpConfig

	// Webhooks: decisions with action "webhook" go to WebhookURLs; issued
	// discount codes to DiscountWebhookURL. Both need WebhookSecret.
	WebhookURLs        []string      `env:"CARTLIFT_WEBHOOK_URLS"`
	DiscountWebhookURL string        `env:"CARTLIFT_DISCOUNT_WEBHOOK_URL"`
	WebhookSecret      string        `env:"CARTLIFT_WEBHOOK_SECRET"`
	WebhookTimeout     time.Duration `env:"CARTLIFT_WEBHOOK_TIMEOUT, default=10s"`

	// Rate is the email channel's limit in emails per second; 0: none.
	Rate float64 `env:"CARTLIFT_ACTIONS_RATE, default=10"`
	// A transient failure holds the decision: retried after BackoffBase,
	// doubling up to BackoffMax, until its valid_until (MaxHold for a
	// decision without one).
	BackoffBase time.Duration `env:"CARTLIFT_ACTIONS_BACKOFF, default=1s"`
	BackoffMax  time.Duration `env:"CARTLIFT_ACTIONS_BACKOFF_MAX, default=60s"`
	MaxHold     time.Duration `env:"CARTLIFT_ACTIONS_MAX_HOLD, default=24h"`
	// MaxAttempts is deprecated and ignored (transient failures are held
	// until valid_until, not retried a number of times); a string, so that
	// no old value stops the start. A warning says so when it is set.
	MaxAttempts string `env:"CARTLIFT_ACTIONS_MAX_ATTEMPTS"`
}

func loadActionsConfig(ctx context.Context, l envconfig.Lookuper) (actionsConfig, error) {
	cfg, err := processEnv[actionsConfig](ctx, l)
	if err != nil {
		return cfg, err
	}
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{cfg.BrokerAddr}
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = derivedInstanceID("cartlift-actions-", cfg.DataDir)
	}
	if err := cfg.HTTP.validate(); err != nil {
		return cfg, err
	}
	if err := cfg.validateRetries(); err != nil {
		return cfg, err
	}
	if err := cfg.validateBranding(); err != nil {
		return cfg, err
	}
	return cfg, cfg.validateLinks()
}

// validateRetries checks the rate and the hold of transient failures.
func (c *actionsConfig) validateRetries() error {
	switch {
	case c.Rate < 0:
		return configError("CARTLIFT_ACTIONS_RATE", "must not be negative, got %v", c.Rate)
	case c.BackoffBase <= 0:
		return configError("CARTLIFT_ACTIONS_BACKOFF", "must be positive, got %s", c.BackoffBase)
	case c.BackoffMax < c.BackoffBase:
		return configError("CARTLIFT_ACTIONS_BACKOFF_MAX", "must be at least CARTLIFT_ACTIONS_BACKOFF (%s), got %s", c.BackoffBase, c.BackoffMax)
	case c.MaxHold <= 0:
		return configError("CARTLIFT_ACTIONS_MAX_HOLD", "must be positive, got %s", c.MaxHold)
	}
	return nil
}

// validateBranding checks the emails' layout settings.
func (c *actionsConfig) validateBranding() error {
	if err := actions.CheckShopName(c.ShopName); err != nil {
		return configError("CARTLIFT_SHOP_NAME", "%v", err)
	}
	if c.BrandColor != "" {
		if _, err := actions.ParseColor(c.BrandColor); err != nil {
			return configError("CARTLIFT_BRAND_COLOR", "%v", err)
		}
	}
	if c.ImageURL != "" {
		if err := actions.CheckImageURL(c.ImageURL); err != nil {
			return configError("CARTLIFT_EMAIL_IMAGE_URL", "%v", err)
		}
	}
	return nil
}

// actionsConfigured reports whether the actions role is configured in the
// environment (SMTP_HOST or CARTLIFT_LINK_BASE_URL set), so `cartlift run`
// runs it too.
func actionsConfigured(l envconfig.Lookuper) bool {
	for _, env := range []string{"SMTP_HOST", "CARTLIFT_LINK_BASE_URL"} {
		if v, ok := l.Lookup(env); ok && v != "" {
			return true
		}
	}
	return false
}

// minLinkSecret is the shortest accepted CARTLIFT_LINK_SECRET.
const minLinkSecret = 32

// validateLinks checks the signed-link settings.
func (c *actionsConfig) validateLinks() error {
	if c.LinkSecret != "" && len(c.LinkSecret) < minLinkSecret {
		return configError("CARTLIFT_LINK_SECRET", "must be at least %d characters, got %d", minLinkSecret, len(c.LinkSecret))
	}
	if c.LinkBaseURL == "" {
		if c.LinkSecret != "" {
			return configError("CARTLIFT_LINK_BASE_URL", "required when CARTLIFT_LINK_SECRET is set")
		}
		return nil
	}
	if c.LinkSecret == "" {
		return configError("CARTLIFT_LINK_SECRET", "required when CARTLIFT_LINK_BASE_URL is set")
	}
	if u, err := url.Parse(c.LinkBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return configError("CARTLIFT_LINK_BASE_URL", "%q is not an absolute http(s) URL", c.LinkBaseURL)
	}
	if c.CartURL == "" {
		return configError("CARTLIFT_CART_URL", "required when CARTLIFT_LINK_BASE_URL is set")
	}
	if u, err := url.Parse(c.CartURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return configError("CARTLIFT_CART_URL", "%q is not an absolute http(s) URL", c.CartURL)
	}
	if c.LinkTTL <= 0 {
		return configError("CARTLIFT_LINK_TTL", "must be positive, got %s", c.LinkTTL)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return configError("CARTLIFT_ACTIONS_HTTP_ADDR", "%q is not host:port", c.HTTPAddr)
	}
	if c.TopicEvents == "" {
		return configError("CARTLIFT_TOPIC_EVENTS", "must not be empty")
	}
	return nil
}

// linkServer serves the signed links (actions.LinkHandler) with a producer
// for what they record: outcomes to cart-outcomes, customer.updated to
// cart-events, each keyed by the customer key.
type linkServer struct {
	handler  http.Handler
	mux      *http.ServeMux // handler, for more routes (/metrics)
	producer *kgo.Client
}

// newLinkServer builds the link server of cfg; nil (and no error) when
// signed links are not configured. Close it with close.
func newLinkServer(cfg actionsConfig, opts ...kgo.Opt) (*linkServer, error) {
	if cfg.LinkBaseURL == "" {
		return nil, nil
	}
	if err := cfg.validateLinks(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.RequiredAcks(kgo.AllISRAcks())}, opts...)...)
	if err != nil {
		return nil, err
	}
	produce := func(ctx context.Context, rec *kgo.Record) error {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return cl.ProduceSync(pctx, rec).FirstErr()
	}
	lh := &actions.LinkHandler{
		Signer:          actions.LinkSigner{Secret: []byte(cfg.LinkSecret)},
		CartURLTemplate: cfg.CartURL,
		Outcome: func(ctx context.Context, o events.Outcome) error {
			v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, o.CartID, o)
			if err != nil {
				return err
			}
			return produce(ctx, &kgo.Record{Topic: cfg.TopicOutcomes, Key: []byte(o.CustomerKey), Value: v,
				Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte(o.ID)}, {Key: "ce_type", Value: []byte(events.TypeOutcome)}}})
		},
		CustomerUpdate: func(ctx context.Context, key string, value []byte) error {
			return produce(ctx, &kgo.Record{Topic: cfg.TopicEvents, Key: []byte(key), Value: value})
		},
	}
	mux := http.NewServeMux()
	mux.Handle("/r/", lh)
	mux.Handle("/u/", lh)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	// Anything else: 404, ending the connection without reading a body
	// (this server faces the public).
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		refusal.Refuse(w, http.StatusNotFound, "text/plain; charset=utf-8", []byte("not found\n"))
	})
	return &linkServer{handler: mux, mux: mux, producer: cl}, nil
}

func (s *linkServer) close() { s.producer.Close() }

// actionsRole is the running actions role: the consumer of cart-decisions
// and, with signed links configured, the link server.
type actionsRole struct {
	done     chan error
	cancel   context.CancelFunc
	srv      *http.Server
	links    *linkServer
	store    *actions.Store
	consumer *actions.Consumer
}

// actionsParts are the channels of the actions role over its store (the
// role and `cartlift actions redrive` share them).
type actionsParts struct {
	store       *actions.Store
	email       *actions.Handler
	webhook     *actions.WebhookHandler // nil without webhooks
	emailConfig actions.EmailConfig
}

// openActions validates the email settings, opens the store under
// CARTLIFT_DATA_DIR/actions and builds the handlers. Close the store.
func openActions(cfg actionsConfig) (*actionsParts, error) {
	email := actions.EmailConfig{
		Host: cfg.SMTPHost, Port: cfg.SMTPPort, Username: cfg.SMTPUsername, Password: cfg.SMTPPassword,
		From: cfg.SMTPFrom, TLSPolicy: cfg.SMTPTLS, Timeout: cfg.SMTPTimeout,
		ResumeURLTemplate: cfg.ResumeURL, UnsubscribeURL: cfg.UnsubscribeURL,
		Branding: actions.Branding{ShopName: cfg.ShopName, Color: cfg.BrandColor, ImageURL: cfg.ImageURL},
	}
	if cfg.LinkBaseURL != "" {
		email.LinkSecret, email.LinkBaseURL, email.LinkTTL = []byte(cfg.LinkSecret), cfg.LinkBaseURL, cfg.LinkTTL
	}
	email = email.WithDefaults()
	if err := email.Validate(); err != nil {
		return nil, &exitError{2, err}
	}
	sender, err := actions.NewSMTPSender(email)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, "actions")
	store, err := actions.OpenStore(dir)
	if err != nil {
		// Pebble locks the directory: fcntl's EAGAIN or EACCES when another
		// process holds it, its own message when this one does.
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) || strings.Contains(err.Error(), "lock held by current process") {
			return nil, fmt.Errorf("%w: the store %s is in use by another process (one process opens it at a time: stop the actions role using it first)", err, dir)
		}
		return nil, err
	}
	p := &actionsParts{store: store, emailConfig: email}
	if p.email, err = actions.NewHandler(email, sender, store, nil); err != nil {
		store.Close()
		return nil, err
	}
	if len(cfg.WebhookURLs) > 0 || cfg.DiscountWebhookURL != "" {
		p.webhook, err = actions.NewWebhookHandler(actions.WebhookConfig{
			Endpoints: cfg.WebhookURLs, DiscountURL: cfg.DiscountWebhookURL,
			Secret: cfg.WebhookSecret, Timeout: cfg.WebhookTimeout,
		}, store)
		if err != nil {
			store.Close()
			return nil, &exitError{2, err}
		}
	}
	return p, nil
}

// startActionsRole starts the actions role of cfg (`cartlift actions`, and
// `cartlift run` when the actions are configured). stop ends it.
func startActionsRole(ctx context.Context, cfg actionsConfig, log *slog.Logger) (*actionsRole, error) {
	if cfg.MaxAttempts != "" {
		log.Warn("CARTLIFT_ACTIONS_MAX_ATTEMPTS is deprecated and ignored: a transient failure is retried until the decision's valid_until "+
			"(CARTLIFT_ACTIONS_BACKOFF, CARTLIFT_ACTIONS_BACKOFF_MAX, CARTLIFT_ACTIONS_MAX_HOLD)", "value", cfg.MaxAttempts)
	}
	parts, err := openActions(cfg)
	if err != nil {
		return nil, err
	}
	r := &actionsRole{done: make(chan error, 1), store: parts.store}
	fail := func(err error) (*actionsRole, error) {
		if r.links != nil {
			r.links.close()
		}
		r.store.Close()
		return nil, err
	}
	h, wh, email := parts.email, parts.webhook, parts.emailConfig
	c, err := actions.NewConsumer(actions.ConsumerConfig{
		Brokers: cfg.Brokers, Group: cfg.Group, InstanceID: cfg.InstanceID,
		TopicDecisions: cfg.TopicDecisions, TopicOutcomes: cfg.TopicOutcomes, TopicDLQ: cfg.TopicDLQ,
		TopicSuppressions: cfg.TopicSuppressions,
		BackoffBase:       cfg.BackoffBase, BackoffMax: cfg.BackoffMax, MaxHold: cfg.MaxHold,
		EmailsPerSecond: cfg.Rate, Webhook: wh, Logger: log,
	}, h)
	if err != nil {
		return fail(err)
	}
	r.consumer = c
	r.links, err = newLinkServer(cfg)
	if err != nil {
		return fail(err)
	}
	if r.links != nil {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fail(fmt.Errorf("config: CARTLIFT_ACTIONS_HTTP_ADDR: %w", err))
		}
		r.srv = startHTTPServer(cfg.HTTP, ln, r.links.handler, "actions links", log)
		log.Info("actions link server listening", "addr", ln.Addr().String(), "base", cfg.LinkBaseURL)
	}
	ctx, r.cancel = context.WithCancel(ctx)
	go func() { r.done <- c.Run(ctx) }()
	log.Info("actions role running", "brokers", cfg.Brokers, "group", cfg.Group, "instance", cfg.InstanceID, "smtp", fmt.Sprintf("%s:%d", email.Host, email.Port), "rate", cfg.Rate)
	return r, nil
}

// wait blocks until the consumer stopped, then shuts the rest down.
func (r *actionsRole) wait() error {
	err := <-r.done
	r.done <- err // for a later stop
	if r.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.srv.Shutdown(sctx)
		cancel()
	}
	if r.links != nil {
		r.links.close()
		r.links = nil
	}
	if r.store != nil {
		r.store.Close()
		r.store = nil
	}
	return err
}

// stop cancels the role and waits for it.
func (r *actionsRole) stop() error {
	r.cancel()
	return r.wait()
}

// runActions is `cartlift actions`: the actions role on its own, consuming
// cart-decisions until the context is cancelled, with /metrics and
// /healthz on CARTLIFT_ACTIONS_HTTP_ADDR (next to the signed links, when
// configured); `cartlift actions redrive` re-sends what its DLQ holds.
func runActions(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "redrive" {
		return runRedrive(ctx, args[1:], stdout)
	}
	if len(args) > 0 {
		return &exitError{2, fmt.Errorf("actions takes no arguments but redrive; configure it with SMTP_* and CARTLIFT_* environment variables")}
	}
	cfg, err := loadActionsConfig(ctx, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	log := slog.Default()
	r, err := startActionsRole(ctx, cfg, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	r.register(reg)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	fmt.Fprintf(stdout, "actions: consuming %s as %s, emails via %s:%d\n", cfg.TopicDecisions, cfg.Group, cfg.SMTPHost, cfg.SMTPPort)
	switch {
	case r.links != nil:
		r.links.mux.Handle("GET /metrics", metrics)
		fmt.Fprintf(stdout, "actions: serving signed links %s/r/ and /u/, and /metrics, on %s\n", strings.TrimRight(cfg.LinkBaseURL, "/"), cfg.HTTPAddr)
	case cfg.HTTPAddr != "off":
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			_ = r.stop()
			return &exitError{2, configError("CARTLIFT_ACTIONS_HTTP_ADDR", "%v", err)}
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		srv := startHTTPServer(cfg.HTTP, ln, mux, "actions metrics", log)
		defer srv.Close()
		fmt.Fprintf(stdout, "actions: metrics on http://%s/metrics\n", ln.Addr())
	}
	return r.wait()
}
