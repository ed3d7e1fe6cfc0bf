package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/sethvargo/go-envconfig"
)

// actionsConfig is the configuration of `cartlift actions`, from the
// environment.
type actionsConfig struct {
	// Brokers of the Kafka cluster; empty means the (separately started)
	// embedded broker at BrokerAddr.
	Brokers    []string `env:"KAFKA_BROKERS"`
	BrokerAddr string   `env:"CARTLIFT_BROKER_ADDR, default=127.0.0.1:9092"`
	DataDir    string   `env:"CARTLIFT_DATA_DIR, default=./data"`

	Group          string `env:"CARTLIFT_ACTIONS_GROUP, default=cartlift-actions"`
	TopicDecisions string `env:"CARTLIFT_TOPIC_DECISIONS, default=cart-decisions"`
	TopicOutcomes  string `env:"CARTLIFT_TOPIC_OUTCOMES, default=cart-outcomes"`
	TopicDLQ       string `env:"CARTLIFT_TOPIC_ACTIONS_DLQ, default=cart-actions.dlq"`

	SMTPHost     string        `env:"SMTP_HOST, default=localhost"`
	SMTPPort     int           `env:"SMTP_PORT, default=587"`
	SMTPUsername string        `env:"SMTP_USERNAME"`
	SMTPPassword string        `env:"SMTP_PASSWORD"`
	SMTPFrom     string        `env:"SMTP_FROM"`
	SMTPTLS      string        `env:"SMTP_TLS, default=opportunistic"`
	SMTPTimeout  time.Duration `env:"SMTP_TIMEOUT, default=10s"`

	ResumeURL      string `env:"CARTLIFT_RESUME_URL"`
	UnsubscribeURL string `env:"CARTLIFT_UNSUBSCRIBE_URL"`

	// Webhooks: decisions with action "webhook" go to WebhookURLs; issued
	// discount codes to DiscountWebhookURL. Both need WebhookSecret.
	WebhookURLs        []string      `env:"CARTLIFT_WEBHOOK_URLS"`
	DiscountWebhookURL string        `env:"CARTLIFT_DISCOUNT_WEBHOOK_URL"`
	WebhookSecret      string        `env:"CARTLIFT_WEBHOOK_SECRET"`
	WebhookTimeout     time.Duration `env:"CARTLIFT_WEBHOOK_TIMEOUT, default=10s"`

	// Rate is the email channel's limit in emails per second; 0: none.
	Rate        float64       `env:"CARTLIFT_ACTIONS_RATE, default=10"`
	MaxAttempts int           `env:"CARTLIFT_ACTIONS_MAX_ATTEMPTS, default=5"`
	BackoffBase time.Duration `env:"CARTLIFT_ACTIONS_BACKOFF, default=200ms"`
	BackoffMax  time.Duration `env:"CARTLIFT_ACTIONS_BACKOFF_MAX, default=10s"`
}

func loadActionsConfig(ctx context.Context, l envconfig.Lookuper) (actionsConfig, error) {
	var cfg actionsConfig
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &cfg, Lookuper: l}); err != nil {
		return cfg, envError(err, reflect.TypeOf(cfg))
	}
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{cfg.BrokerAddr}
	}
	return cfg, nil
}

// runActions is `cartlift actions`: the actions role on its own, consuming
// cart-decisions until the context is cancelled.
func runActions(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return &exitError{2, fmt.Errorf("actions takes no arguments; configure it with SMTP_* and CARTLIFT_* environment variables")}
	}
	cfg, err := loadActionsConfig(ctx, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	email := actions.EmailConfig{
		Host: cfg.SMTPHost, Port: cfg.SMTPPort, Username: cfg.SMTPUsername, Password: cfg.SMTPPassword,
		From: cfg.SMTPFrom, TLSPolicy: cfg.SMTPTLS, Timeout: cfg.SMTPTimeout,
		ResumeURLTemplate: cfg.ResumeURL, UnsubscribeURL: cfg.UnsubscribeURL,
	}.WithDefaults()
	if err := email.Validate(); err != nil {
		return &exitError{2, err}
	}
	sender, err := actions.NewSMTPSender(email)
	if err != nil {
		return err
	}
	store, err := actions.OpenStore(filepath.Join(cfg.DataDir, "actions"))
	if err != nil {
		return err
	}
	defer store.Close()
	h, err := actions.NewHandler(email, sender, store, nil)
	if err != nil {
		return err
	}
	var wh *actions.WebhookHandler
	if len(cfg.WebhookURLs) > 0 || cfg.DiscountWebhookURL != "" {
		wh, err = actions.NewWebhookHandler(actions.WebhookConfig{
			Endpoints: cfg.WebhookURLs, DiscountURL: cfg.DiscountWebhookURL,
			Secret: cfg.WebhookSecret, Timeout: cfg.WebhookTimeout,
		}, store)
		if err != nil {
			return &exitError{2, err}
		}
	}
	c, err := actions.NewConsumer(actions.ConsumerConfig{
		Brokers: cfg.Brokers, Group: cfg.Group,
		TopicDecisions: cfg.TopicDecisions, TopicOutcomes: cfg.TopicOutcomes, TopicDLQ: cfg.TopicDLQ,
		MaxAttempts: cfg.MaxAttempts, BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax,
		EmailsPerSecond: cfg.Rate, Webhook: wh,
	}, h)
	if err != nil {
		return err
	}
	slog.Info("actions role running", "brokers", cfg.Brokers, "group", cfg.Group, "smtp", fmt.Sprintf("%s:%d", email.Host, email.Port), "rate", cfg.Rate)
	fmt.Fprintf(stdout, "actions: consuming %s as %s, emails via %s:%d\n", cfg.TopicDecisions, cfg.Group, email.Host, email.Port)
	return c.Run(ctx)
}
