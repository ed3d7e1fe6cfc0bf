package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultRedriveHold bounds how long Redrive retries one decision's
// transient failure.
const DefaultRedriveHold = time.Minute

// RedriveConfig configures Redrive. Zero fields take the defaults.
type RedriveConfig struct {
	Brokers       []string
	TopicDLQ      string // default "cart-actions.dlq"
	TopicOutcomes string // default events.TopicOutcomes
	// TopicSuppressions as in ConsumerConfig.
	TopicSuppressions string

	// Where to start in each partition of the DLQ: the first record at or
	// after Since when it is set, else offset FromOffset (0: the start).
	// Redrive reads up to the end offsets it finds when it starts.
	Since      time.Time
	FromOffset int64

	// DryRun reports what a redrive would do and changes nothing: no
	// email, no webhook, no outcome, no write to the Store.
	DryRun bool

	// A transient failure is retried as by the Consumer (backoff
	// BackoffBase..BackoffMax) for at most Hold per decision (default 1m)
	// and never past its valid_until; then the decision counts as failed
	// again (or expired).
	Hold        time.Duration
	BackoffBase time.Duration
	BackoffMax  time.Duration

	EmailsPerSecond float64
	// Webhook handles the decisions whose action is "webhook" (they are
	// skipped when it is nil).
	Webhook *WebhookHandler

	Logger *slog.Logger
	Now    func() time.Time
	// Progress, when set, is called after each DLQ record, from the
	// goroutine of Redrive.
	Progress func(RedriveItem)
	// ClientOpts are extra franz-go options (tests).
	ClientOpts []kgo.Opt
}

// What Redrive did with a DLQ record (RedriveItem.Status).
const (
	// RedriveSent: sent (or delivered) now.
	RedriveSent = "redriven"
	// RedriveWould: a dry run would send it.
	RedriveWould = "would_redrive"
	// RedriveAlreadyDone: the Store records it as done (sent, delivered,
	// or nothing to send); nothing was sent.
	RedriveAlreadyDone = "already_done"
	// RedriveExpired: its valid_until has passed (recorded expired).
	RedriveExpired = "expired"
	// RedriveFailedAgain: it failed again, for good or transiently for
	// longer than the hold; the DLQ still has it, a later redrive may
	// succeed.
	RedriveFailedAgain = "failed_again"
	// RedriveSkipped: not a decision (undecodable), or nothing to send
	// (an action no channel handles, a holdout, no consent, no address).
	RedriveSkipped = "skipped"
)

// RedriveItem is what Redrive did with one DLQ record.
type RedriveItem struct {
	Partition  int32
	Offset     int64
	Reason     string // the DLQ reason it was dead-lettered with
	DecisionID string // empty when undecodable
	Status     string // one of the Redrive constants
	// Kind is the result kind (email.sent, email.failed, ...) or, for
	// already_done, the kind the Store recorded.
	Kind string
	Err  error
}

// RedriveSummary counts the DLQ records a Redrive read, by status.
type RedriveSummary struct {
	Read         int
	Redriven     int
	WouldRedrive int
	AlreadyDone  int
	Expired      int
	FailedAgain  int
	Skipped      int
}

func (s *RedriveSummary) add(status string) {
	s.Read++
	switch status {
	case RedriveSent:
		s.Redriven++
	case RedriveWould:
		s.WouldRedrive++
	case RedriveAlreadyDone:
		s.AlreadyDone++
	case RedriveExpired:
		s.Expired++
	case RedriveFailedAgain:
		s.FailedAgain++
	case RedriveSkipped:
		s.Skipped++
	}
}

// Redrive reads the actions DLQ from cfg's start up to its current end and
// hands every dead-lettered decision to its channel again, as the Consumer
// would (the same Handler, outcomes on cart-outcomes), idempotent on the
// decision id: a decision the Store records as a failure is cleared and
// handled again; one it records as done (sent, delivered, expired, ...)
// is not sent again. So a second Redrive of the same DLQ sends nothing.
// Undecodable records are skipped. It returns the counts; an error means
// it stopped early (ctx, the brokers, the Store).
//
// The Store is the one of the actions role (a Pebble database, which one
// process opens at a time): run Redrive with the role stopped, against
// its data directory.
func Redrive(ctx context.Context, cfg RedriveConfig, email *Handler) (RedriveSummary, error) {
	var sum RedriveSummary
	if email == nil {
		return sum, errors.New("actions: redrive: an email handler is required")
	}
	if len(cfg.Brokers) == 0 {
		return sum, errors.New("actions: redrive: no brokers")
	}
	if cfg.Hold <= 0 {
		cfg.Hold = DefaultRedriveHold
	}
	ccfg := ConsumerConfig{
		Brokers: cfg.Brokers, TopicDLQ: cfg.TopicDLQ, TopicOutcomes: cfg.TopicOutcomes, TopicSuppressions: cfg.TopicSuppressions,
		BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax, EmailsPerSecond: cfg.EmailsPerSecond,
		Webhook: cfg.Webhook, Logger: cfg.Logger, Now: cfg.Now,
	}.withDefaults()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOpts...)...)
	if err != nil {
		return sum, err
	}
	defer cl.Close()
	if !cfg.DryRun {
		ensureTopic(ctx, cl, ccfg.TopicSuppressions, ccfg.Logger)
	}
	d := &dispatcher{cfg: ccfg, email: email, log: ccfg.Logger, stats: newStats(), produce: produceSync(cl), holdCap: cfg.Hold}
	if ccfg.EmailsPerSecond > 0 {
		d.limiter = newTokenBucket(ccfg.EmailsPerSecond)
	}

	start, end, err := redriveRange(ctx, kadm.NewClient(cl), ccfg.TopicDLQ, cfg.Since, cfg.FromOffset)
	if err != nil || len(start) == 0 {
		return sum, err
	}
	rd, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{ccfg.TopicDLQ: start})}, cfg.ClientOpts...)...)
	if err != nil {
		return sum, err
	}
	defer rd.Close()
	for len(end) > 0 {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return sum, ctx.Err()
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			return sum, fmt.Errorf("actions: redrive: reading %s: %w", ccfg.TopicDLQ, err)
		}
		for _, r := range fs.Records() {
			last, ok := end[r.Partition]
			if !ok || r.Offset >= last {
				continue // past the end found at the start
			}
			item, err := d.redriveRecord(ctx, r, cfg.DryRun)
			if err != nil {
				return sum, fmt.Errorf("actions: redrive: %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			sum.add(item.Status)
			if cfg.Progress != nil {
				cfg.Progress(item)
			}
			if r.Offset+1 >= last {
				delete(end, r.Partition)
			}
		}
	}
	return sum, nil
}

// redriveRange is, per partition of topic with records to read, the offset
// to start at and the end offset (exclusive). A missing topic has none.
func redriveRange(ctx context.Context, adm *kadm.Client, topic string, since time.Time, from int64) (map[int32]kgo.Offset, map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("actions: redrive: end offsets of %s: %w", topic, err)
	}
	var starts kadm.ListedOffsets
	if since.IsZero() {
		starts, err = adm.ListStartOffsets(ctx, topic)
	} else {
		starts, err = adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), topic)
	}
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("actions: redrive: start offsets of %s: %w", topic, err)
	}
	start, end := map[int32]kgo.Offset{}, map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		first := max(from, 0)
		if s, ok := starts.Lookup(topic, e.Partition); ok && s.Offset >= 0 {
			first = max(first, s.Offset)
		}
		if first < e.Offset {
			start[e.Partition] = kgo.NewOffset().At(first)
			end[e.Partition] = e.Offset
		}
	})
	return start, end, nil
}

// redriveRecord handles one DLQ record (see Redrive). An error stops the
// redrive.
func (c *dispatcher) redriveRecord(ctx context.Context, r *kgo.Record, dryRun bool) (RedriveItem, error) {
	dl := ParseDeadLetter(r)
	item := RedriveItem{Partition: r.Partition, Offset: r.Offset, Reason: dl.Reason}
	d, err := dl.Decision()
	if err != nil {
		item.Status, item.Err = RedriveSkipped, err
		return item, nil
	}
	item.DecisionID = d.ID
	channel := d.Action == "email" || d.Action == "webhook" && c.cfg.Webhook != nil
	if dryRun {
		prev, found, err := c.email.Store.Get(d.ID)
		switch {
		case err != nil:
			return item, err
		case found && !isFailureKind(prev.Kind):
			item.Status, item.Kind = doneStatus(prev.Kind), prev.Kind
		case !channel:
			item.Status = RedriveSkipped
		case !d.ValidUntil.IsZero() && c.cfg.Now().After(d.ValidUntil):
			item.Status = RedriveExpired
		default:
			item.Status = RedriveWould
		}
		return item, nil
	}
	prev, found, err := c.email.Store.ClearFailure(d.ID)
	if err != nil {
		return item, err
	}
	if found && !isFailureKind(prev.Kind) {
		item.Status, item.Kind = doneStatus(prev.Kind), prev.Kind
		return item, nil
	}
	if !channel {
		item.Status = RedriveSkipped
		return item, nil
	}
	h, err := c.dispatch(ctx, d)
	if err != nil {
		return item, err
	}
	item.Kind, item.Err = h.Kind, h.Err
	switch {
	case h.DeadLetter != "", h.Kind == KindEmailFailed, h.Kind == KindWebhookFailed:
		item.Status = RedriveFailedAgain
	case h.Kind == KindEmailSent, h.Kind == KindWebhookDelivered:
		item.Status = RedriveSent
	case h.Kind == KindDuplicate:
		item.Status, item.Kind = doneStatus(h.Previous), h.Previous
	default:
		item.Status = doneStatus(h.Kind)
	}
	return item, nil
}

// doneStatus is the redrive status of a decision recorded as kind (not a
// failure): expired, skipped (nothing to send: holdout, no consent, no
// address, no channel) or already done.
func doneStatus(kind string) string {
	switch kind {
	case KindExpired:
		return RedriveExpired
	case KindSkippedHoldout, KindNoConsent, KindNoAddress, KindSkippedAction:
		return RedriveSkipped
	}
	return RedriveAlreadyDone
}
