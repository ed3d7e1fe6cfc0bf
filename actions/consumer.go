package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of ConsumerConfig.
const (
	DefaultGroup       = "cartlift-actions"
	TopicActionsDLQ    = "cart-actions.dlq"
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = time.Minute
	DefaultMaxHold     = 24 * time.Hour
)

// KindSkippedAction is recorded for a decision whose action no channel of
// the consumer handles yet.
const KindSkippedAction = "skipped_action"

// ConsumerConfig configures a Consumer. Zero fields take the defaults.
type ConsumerConfig struct {
	Brokers []string
	Group   string // default "cartlift-actions"
	// InstanceID, when set, makes the consumer a static member of the
	// group: restarted (even after a crash), it takes its partitions back
	// at once instead of after the session timeout. One per Store.
	InstanceID string

	TopicDecisions string // default events.TopicDecisions
	TopicOutcomes  string // default events.TopicOutcomes
	TopicDLQ       string // default "cart-actions.dlq"
	// TopicSuppressions receives a cart.step.suppressed record (stage
	// actions) for every decision the role drops without acting: no
	// consent, no address, past valid_until, no channel for its action;
	// default events.TopicSuppressions. Holdout decisions get none (they
	// are the control group, not suppressed steps).
	TopicSuppressions string

	// A transient failure (SMTP 4xx, a network error or timeout, a webhook
	// 5xx, 408 or 429) holds the record: it is tried again, waiting
	// BackoffBase·2^(n-1) capped at BackoffMax, with jitter (between half
	// and all of it), after the n-th failure, until it succeeds, is refused
	// for good, or the decision's valid_until passes; then the decision is
	// recorded expired and dropped. Meanwhile no later record is handled
	// and no offset past it is committed. A decision without valid_until
	// is held at most MaxHold, then dead-lettered (retries_exhausted).
	// Defaults 1s, 60s, 24h.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	MaxHold     time.Duration

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
	def(&c.TopicSuppressions, events.TopicSuppressions)
	if c.BackoffBase <= 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffBase)
	if c.MaxHold <= 0 {
		c.MaxHold = DefaultMaxHold
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
// cartlift-actions and hands them to their channel (the email Handler, the
// WebhookHandler). Results go to cart-outcomes as cart.outcome events;
// undecodable records and decisions refused for good go to
// cart-actions.dlq. The offset of a record is committed only after it was
// fully handled (at-least-once; the Store makes a redelivery send
// nothing), and a transient failure holds the record (see ConsumerConfig).
//
// Records are handled one at a time, in the order polled: a held record
// holds every partition of the member. When the group takes a partition
// away while one of its records is held, the hold is abandoned (the new
// owner retries it) and the rest of that partition's polled records are
// dropped unhandled.
type Consumer struct {
	dispatcher
	cl *kgo.Client

	mu       sync.Mutex
	current  *inFlight       // the record being handled, if any
	revoked  map[int32]int64 // partition → generation of its last revocation
	revokeGn int64
}

// inFlight is the record the consumer is handling.
type inFlight struct {
	partition int32
	cancel    context.CancelCauseFunc
	done      chan struct{} // closed once it is handled (or abandoned) and marked
}

// errRevoked is the cause of the cancellation of a record's context when
// its partition was revoked.
var errRevoked = errors.New("actions: partition revoked")

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
	c := &Consumer{revoked: map[int32]int64{}}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.TopicDecisions),
		// The processor produces in transactions: only committed ones count.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AutoCommitMarks(),
		kgo.AllowAutoTopicCreation(),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			c.revoke(m[cfg.TopicDecisions])
			// What kgo does by default on a revocation: commit what is marked.
			if err := cl.CommitMarkedOffsets(ctx); err != nil {
				c.log.Warn("actions: committing offsets on revocation", "err", err)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			c.revoke(m[cfg.TopicDecisions])
		}),
	}, cfg.ClientOpts...)
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	c.dispatcher = dispatcher{cfg: cfg, email: email, log: cfg.Logger, stats: newStats(), produce: produceSync(cl)}
	if cfg.EmailsPerSecond > 0 {
		c.limiter = newTokenBucket(cfg.EmailsPerSecond)
	}
	return c, nil
}

// Stats returns the consumer's counters; safe to call from any goroutine.
func (c *Consumer) Stats() Stats { return c.stats.snapshot() }

// Run consumes until ctx is cancelled (returning nil) or a record cannot be
// handled (a produce to the outcomes or DLQ topic failed), then commits the
// marked offsets and closes the client.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.cl.Close()
	ensureTopic(ctx, c.cl, c.cfg.TopicSuppressions, c.log)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.cl.CommitMarkedOffsets(cctx); err != nil {
			c.log.Warn("actions: committing offsets", "err", err)
		}
	}()
	for {
		// Records of a partition revoked from here on are not handled.
		c.mu.Lock()
		gen := c.revokeGn
		c.mu.Unlock()
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
			err := c.handleOwned(ctx, r, gen)
			if errors.Is(err, errRevoked) {
				return // no longer ours; the next owner reads it
			}
			failed = err
		})
		if failed != nil {
			if ctx.Err() != nil {
				return nil
			}
			return failed
		}
	}
}

// handleOwned handles r and marks it for commit, unless its partition was
// revoked after the poll of generation gen (errRevoked, before or during
// the handling). It is what a revocation waits for.
func (c *Consumer) handleOwned(ctx context.Context, r *kgo.Record, gen int64) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f := &inFlight{partition: r.Partition, cancel: cancel, done: make(chan struct{})}
	c.mu.Lock()
	if c.revoked[r.Partition] > gen {
		c.mu.Unlock()
		return errRevoked
	}
	c.current = f
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.current = nil
		c.mu.Unlock()
		close(f.done)
	}()
	err := c.handleRecord(rctx, r)
	if err == nil {
		c.cl.MarkCommitRecords(r)
		return nil
	}
	if errors.Is(context.Cause(rctx), errRevoked) && ctx.Err() == nil {
		c.log.Info("actions: partition revoked while its record was held; left to the next owner",
			"partition", r.Partition, "offset", r.Offset)
		return errRevoked
	}
	return err
}

// revoke is called by the group when it takes partitions away: the record
// being handled, when it is of one of them, is cancelled and waited for
// (at most 10 s), and the rest of their polled records will be dropped.
func (c *Consumer) revoke(partitions []int32) {
	if len(partitions) == 0 {
		return
	}
	c.mu.Lock()
	c.revokeGn++
	for _, p := range partitions {
		c.revoked[p] = c.revokeGn
	}
	f := c.current
	c.mu.Unlock()
	if f == nil || !slices.Contains(partitions, f.partition) {
		return
	}
	f.cancel(errRevoked)
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		c.log.Warn("actions: the record being handled did not stop within 10 s of its partition's revocation", "partition", f.partition)
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
	if d.Shadow {
		// A shadow flow's decision is never actioned; it belongs on its
		// own topic, which this role does not read.
		c.log.Warn("actions: shadow decision ignored", "partition", r.Partition, "offset", r.Offset, "flow", d.Flow)
		return nil
	}
	h, err := c.dispatch(ctx, d)
	if err != nil {
		return err
	}
	if h.DeadLetter != "" {
		return c.deadLetter(ctx, r, h.DeadLetter, h.Err)
	}
	return nil
}

func (c *Consumer) deadLetter(ctx context.Context, r *kgo.Record, reason string, cause error) error {
	if err := c.produce(ctx, NewDeadLetter(c.cfg.TopicDLQ, r, reason, cause)); err != nil {
		return err
	}
	c.stats.deadLettered(reason)
	return nil
}

// ensureTopic creates topic when it is missing (the brokers' default
// partitions and replication), so that the role does not depend on the
// processor (which creates it too) having started first, nor on the
// brokers creating topics on first use. A failure is logged: it shows
// again, with the reason, when a record cannot be produced there.
func ensureTopic(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(cctx, -1, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		log.Warn("actions: creating a topic", "topic", topic, "err", err)
	}
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
