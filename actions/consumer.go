package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of ConsumerConfig.
const (
	DefaultGroup       = "cartlift-actions"
	TopicActionsDLQ    = "cart-actions.dlq"
	DefaultMaxAttempts = 5
	DefaultBackoffBase = 200 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
)

// KindSkippedAction is recorded for a decision whose action no channel of
// the consumer handles yet.
const KindSkippedAction = "skipped_action"

// DLQ reasons.
const (
	ReasonUndecodable      = "undecodable"
	ReasonPermanentFailure = "permanent_failure"
	ReasonRetriesExhausted = "retries_exhausted"
)

// ConsumerConfig configures a Consumer. Zero fields take the defaults.
type ConsumerConfig struct {
	Brokers []string
	Group   string // default "cartlift-actions"

	TopicDecisions string // default events.TopicDecisions
	TopicOutcomes  string // default events.TopicOutcomes
	TopicDLQ       string // default "cart-actions.dlq"

	// Retries of a transient failure: at most MaxAttempts attempts in all,
	// waiting BackoffBase·2^(n-1), capped at BackoffMax, with jitter
	// (between half and all of it) between attempts.
	MaxAttempts int
	BackoffBase time.Duration
	BackoffMax  time.Duration

	// EmailsPerSecond limits the email channel; 0 means no limit.
	EmailsPerSecond float64

	// Webhook, when set, handles the decisions whose action is "webhook"
	// and announces issued discount codes to its DiscountURL.
	Webhook *WebhookHandler

	Logger *slog.Logger
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// ClientOpts are extra franz-go options (tests).
	ClientOpts []kgo.Opt
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Group, DefaultGroup)
	def(&c.TopicDecisions, events.TopicDecisions)
	def(&c.TopicOutcomes, events.TopicOutcomes)
	def(&c.TopicDLQ, TopicActionsDLQ)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Consumer reads decisions from cart-decisions in the consumer group
// cartlift-actions and hands the email decisions to the email Handler.
// Results go to cart-outcomes as cart.outcome events; undecodable records
// and decisions that failed for good go to cart-actions.dlq. The offset of
// a record is committed only after it was fully handled (at-least-once; the
// Handler's store makes a redelivery send nothing).
type Consumer struct {
	cfg     ConsumerConfig
	email   *Handler
	cl      *kgo.Client
	limiter *tokenBucket
	log     *slog.Logger
}

// NewConsumer builds a consumer; Run starts it.
func NewConsumer(cfg ConsumerConfig, email *Handler) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("actions: no brokers")
	}
	if email == nil {
		return nil, errors.New("actions: an email handler is required")
	}
	if cfg.EmailsPerSecond < 0 {
		return nil, fmt.Errorf("actions: negative rate %v", cfg.EmailsPerSecond)
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.TopicDecisions),
		// The processor produces in transactions: only committed ones count.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AutoCommitMarks(),
		kgo.AllowAutoTopicCreation(),
	}, cfg.ClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, email: email, cl: cl, log: cfg.Logger}
	if cfg.EmailsPerSecond > 0 {
		c.limiter = newTokenBucket(cfg.EmailsPerSecond)
	}
	return c, nil
}

// Run consumes until ctx is cancelled (returning nil) or a record cannot be
// handled (a produce to the outcomes or DLQ topic failed), then commits the
// marked offsets and closes the client.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.cl.Close()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.cl.CommitMarkedOffsets(cctx); err != nil {
			c.log.Warn("actions: committing offsets", "err", err)
		}
	}()
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			c.log.Warn("actions: fetch", "topic", topic, "partition", p, "err", err)
		})
		var failed error
		fs.EachRecord(func(r *kgo.Record) {
			if failed != nil {
				return
			}
			if err := c.handleRecord(ctx, r); err != nil {
				failed = err
				return
			}
			c.cl.MarkCommitRecords(r)
		})
		if failed != nil {
			if ctx.Err() != nil {
				return nil
			}
			return failed
		}
	}
}

// handleRecord handles one record fully; an error means it was not (the
// offset must not be committed).
func (c *Consumer) handleRecord(ctx context.Context, r *kgo.Record) error {
	d, err := DecodeDecision(r.Value)
	if err != nil {
		c.log.Warn("actions: undecodable record to the DLQ", "partition", r.Partition, "offset", r.Offset, "err", err)
		return c.deadLetter(ctx, r, ReasonUndecodable, err)
	}
	if d.Action == "webhook" && c.cfg.Webhook != nil {
		return c.handleWebhookRecord(ctx, r, d)
	}
	if d.Action != "email" {
		c.log.Info("actions: skipped decision", "decision_id", d.ID, "action", d.Action, "kind", KindSkippedAction)
		if _, ok, err := c.email.Store.Get(d.ID); err == nil && !ok {
			if err := c.email.Store.Put(d.ID, Record{Kind: KindSkippedAction, At: c.cfg.Now().UTC()}); err != nil {
				return err
			}
		}
		return nil
	}
	res, attempts := c.handleEmail(ctx, d)
	if ctx.Err() != nil && res.Retryable() {
		return ctx.Err() // not handled: redelivered after a restart
	}
	log := c.log.With("decision_id", d.ID, "flow", d.Flow, "step", d.Step, "kind", res.Kind, "attempts", attempts)
	switch res.Kind {
	case KindEmailSent:
		log.Info("actions: email sent")
		if err := c.outcome(ctx, d, KindEmailSent); err != nil {
			return err
		}
		if res.Discount != nil {
			return c.announceDiscount(ctx, d, *res.Discount)
		}
		return nil
	case KindEmailFailed:
		reason := ReasonPermanentFailure
		if res.Retryable() {
			reason = ReasonRetriesExhausted
		}
		log.Warn("actions: email failed, decision to the DLQ", "reason", reason, "err", res.Err)
		if err := c.outcome(ctx, d, KindEmailFailed); err != nil {
			return err
		}
		return c.deadLetter(ctx, r, reason, res.Err)
	default: // duplicate, holdout, expired, no consent, no address
		log.Info("actions: no email", "previous", res.Previous)
		return nil
	}
}

// handleWebhookRecord handles a "webhook" decision: webhook.delivered and
// webhook.failed outcomes, a failure to the DLQ.
func (c *Consumer) handleWebhookRecord(ctx context.Context, r *kgo.Record, d events.Decision) error {
	res, attempts := c.retry(ctx, d, c.cfg.Webhook.Handle, nil, KindWebhookFailed)
	if ctx.Err() != nil && res.Retryable() {
		return ctx.Err()
	}
	log := c.log.With("decision_id", d.ID, "flow", d.Flow, "step", d.Step, "kind", res.Kind, "attempts", attempts)
	switch res.Kind {
	case KindWebhookDelivered:
		log.Info("actions: webhook delivered")
		return c.outcome(ctx, d, KindWebhookDelivered)
	case KindWebhookFailed:
		reason := ReasonPermanentFailure
		if res.Retryable() {
			reason = ReasonRetriesExhausted
		}
		log.Warn("actions: webhook failed, decision to the DLQ", "reason", reason, "err", res.Err)
		if err := c.outcome(ctx, d, KindWebhookFailed); err != nil {
			return err
		}
		return c.deadLetter(ctx, r, reason, res.Err)
	default:
		log.Info("actions: no webhook", "previous", res.Previous)
		return nil
	}
}

// announceDiscount produces the discount.issued outcome (the code in its
// headers) and, when configured, POSTs the code to the shop (retried like
// any transient failure; a failure for good is logged, the email is out).
func (c *Consumer) announceDiscount(ctx context.Context, d events.Decision, disc IssuedDiscount) error {
	o := DiscountOutcome(d, disc, c.cfg.Now())
	if err := c.produceOutcome(ctx, d, o,
		kgo.RecordHeader{Key: HeaderDiscountCode, Value: []byte(disc.Code)},
		kgo.RecordHeader{Key: HeaderDiscountExpires, Value: []byte(disc.ExpiresAt.Format(time.RFC3339))}); err != nil {
		return err
	}
	if c.cfg.Webhook == nil || c.cfg.Webhook.Config.DiscountURL == "" {
		return nil
	}
	res, attempts := c.retry(ctx, d, func(ctx context.Context, d events.Decision) Result {
		if err := c.cfg.Webhook.AnnounceDiscount(ctx, disc); err != nil {
			return Result{DecisionID: d.ID, Kind: KindWebhookFailed, Err: err}
		}
		return Result{DecisionID: d.ID, Kind: KindWebhookDelivered}
	}, nil, KindWebhookFailed)
	if res.Err != nil {
		if ctx.Err() != nil && res.Retryable() {
			return ctx.Err()
		}
		c.log.Warn("actions: discount webhook failed", "decision_id", d.ID, "attempts", attempts, "err", res.Err)
	}
	return nil
}

// handleEmail handles an email decision, retrying transient failures.
func (c *Consumer) handleEmail(ctx context.Context, d events.Decision) (Result, int) {
	return c.retry(ctx, d, c.email.Handle, c.limiter, KindEmailFailed)
}

// retry calls handle until its result is not retryable, MaxAttempts
// attempts or ctx is done, waiting the backoff between attempts and for a
// token of limiter (if any) before each.
func (c *Consumer) retry(ctx context.Context, d events.Decision, handle func(context.Context, events.Decision) Result, limiter *tokenBucket, failKind string) (Result, int) {
	var res Result
	for attempt := 1; ; attempt++ {
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				return Result{DecisionID: d.ID, Kind: failKind, Err: &DeliveryError{Err: err}}, attempt - 1
			}
		}
		res = handle(ctx, d)
		if !res.Retryable() || attempt >= c.cfg.MaxAttempts || ctx.Err() != nil {
			return res, attempt
		}
		wait := c.backoff(attempt)
		c.log.Info("actions: transient failure, retrying", "decision_id", d.ID, "attempt", attempt, "wait", wait, "err", res.Err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, attempt
		case <-t.C:
		}
	}
}

// backoff is the wait after the n-th attempt: base·2^(n-1) capped at max,
// with equal jitter (between half and all of it).
func (c *Consumer) backoff(n int) time.Duration {
	d := c.cfg.BackoffMax
	if n-1 < 32 {
		if e := c.cfg.BackoffBase << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// OutcomeID is the deterministic id of the outcome of an action.
func OutcomeID(decisionID, kind string) string { return "o-" + decisionID + "-" + kind }

// newOutcome is the outcome of kind of a decision, at now.
func newOutcome(d events.Decision, kind string, now time.Time) events.Outcome {
	return events.Outcome{
		ID:          OutcomeID(d.ID, kind),
		Kind:        kind,
		CustomerKey: d.Customer.Key,
		CartID:      d.Cart.CartID,
		CartType:    d.Cart.CartType,
		Site:        d.Cart.Site,
		Channel:     d.Cart.Channel,
		Currency:    d.Cart.Currency,
		DecisionID:  d.ID,
		Flow:        d.Flow,
		Step:        d.Step,
		Holdout:     d.Holdout,
		At:          now.UTC(),
	}
}

func (c *Consumer) outcome(ctx context.Context, d events.Decision, kind string) error {
	return c.produceOutcome(ctx, d, newOutcome(d, kind, c.cfg.Now()))
}

func (c *Consumer) produceOutcome(ctx context.Context, d events.Decision, o events.Outcome, headers ...kgo.RecordHeader) error {
	v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, o.CartID, o)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: c.cfg.TopicOutcomes, Key: []byte(d.Customer.Key), Value: v,
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte(o.ID)}, {Key: "ce_type", Value: []byte(events.TypeOutcome)}}}
	rec.Headers = append(rec.Headers, headers...)
	return c.produce(ctx, rec)
}

func (c *Consumer) deadLetter(ctx context.Context, r *kgo.Record, reason string, cause error) error {
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	rec := &kgo.Record{Topic: c.cfg.TopicDLQ, Key: r.Key, Value: r.Value}
	rec.Headers = append(rec.Headers, r.Headers...)
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: events.HeaderErrorReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: events.HeaderError, Value: []byte(msg)},
		kgo.RecordHeader{Key: events.HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: events.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: events.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	return c.produce(ctx, rec)
}

// produce produces one record synchronously. A shutdown (ctx cancelled)
// does not abort it: the record being handled is finished first.
func (c *Consumer) produce(ctx context.Context, rec *kgo.Record) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return c.cl.ProduceSync(pctx, rec).FirstErr()
}

// tokenBucket is a small rate limiter: rate tokens per second, a burst of
// max(1, rate).
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64) *tokenBucket {
	b := max(1, rate)
	return &tokenBucket{rate: rate, burst: b, tokens: b, last: time.Now()}
}

// Wait takes one token, waiting for it when there is none.
func (b *tokenBucket) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		now := time.Now()
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
		if b.tokens >= 1 {
			b.tokens--
			b.mu.Unlock()
			return nil
		}
		wait := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
		b.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
