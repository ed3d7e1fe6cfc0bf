package actions

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// dispatcher handles one decision at a time, whoever read it (the Consumer
// from cart-decisions, Redrive from the DLQ): it routes the decision to its
// channel, holds it through transient failures (hold), and produces its
// outcomes. It is used from one goroutine.
type dispatcher struct {
	cfg     ConsumerConfig // with defaults
	email   *Handler
	limiter *tokenBucket
	log     *slog.Logger
	stats   *stats
	// produce produces one record synchronously.
	produce func(ctx context.Context, rec *kgo.Record) error
	// holdCap, when positive, bounds how long one decision is held, also
	// before its valid_until (Redrive: an operator waits for it).
	holdCap time.Duration
}

// handled is what dispatching a decision did.
type handled struct {
	Result
	Attempts int
	// DeadLetter is the DLQ reason when the decision failed for good and
	// belongs in the DLQ (permanent_failure, retries_exhausted); empty
	// otherwise.
	DeadLetter string
}

// dispatch handles d. An error means it was not handled (an outcome could
// not be produced, or ctx ended during a transient failure): its offset
// must not be committed.
func (c *dispatcher) dispatch(ctx context.Context, d events.Decision) (handled, error) {
	switch {
	case d.Action == "email":
		return c.dispatchChannel(ctx, d, ChannelEmail, c.email.Handle, c.limiter, KindEmailFailed)
	case d.Action == "webhook" && c.cfg.Webhook != nil:
		return c.dispatchChannel(ctx, d, ChannelWebhook, c.cfg.Webhook.Handle, nil, KindWebhookFailed)
	}
	c.log.Info("actions: skipped decision", "decision_id", d.ID, "action", d.Action, "kind", KindSkippedAction)
	if _, err := c.email.Store.recordOnce(d.ID, Record{Kind: KindSkippedAction, At: c.cfg.Now().UTC()}); err != nil {
		return handled{}, err
	}
	c.stats.result(KindSkippedAction)
	h := handled{Result: Result{DecisionID: d.ID, Kind: KindSkippedAction}}
	return h, c.suppressed(ctx, d, KindSkippedAction)
}

// dispatchChannel handles a decision of the email or the webhook channel:
// outcome <channel>.sent/.delivered or .failed, a permanent failure to the
// DLQ, a transient one held (see hold).
func (c *dispatcher) dispatchChannel(ctx context.Context, d events.Decision, channel string,
	handle func(context.Context, events.Decision) Result, limiter *tokenBucket, failKind string) (handled, error) {
	res, attempts, end := c.hold(ctx, d, channel, handle, limiter)
	h := handled{Result: res, Attempts: attempts}
	if ctx.Err() != nil && res.Retryable() {
		return h, ctx.Err() // not handled: redelivered after a restart
	}
	log := c.log.With("decision_id", d.ID, "flow", d.Flow, "step", d.Step, "attempts", attempts)
	switch end {
	case holdExpired:
		var err error
		h.Result, err = c.expire(d, res.Err)
		if err != nil {
			return h, err
		}
		log.Warn("actions: valid_until passed while a transient failure held the decision; dropped, recorded expired",
			"channel", channel, "valid_until", d.ValidUntil, "err", res.Err)
		c.stats.update(func(s *Stats) { s.ExpiredWhileHeld++ })
		c.stats.result(KindExpired)
		return h, c.suppressed(ctx, d, KindExpired)
	case holdExhausted:
		h.DeadLetter = ReasonRetriesExhausted
		log.Warn("actions: transient failure held too long, decision to the DLQ", "channel", channel,
			"reason", h.DeadLetter, "err", res.Err)
		c.stats.result(failKind)
		return h, c.outcome(ctx, d, failKind)
	}
	log = log.With("kind", res.Kind)
	c.stats.result(res.Kind)
	switch res.Kind {
	case KindEmailSent:
		log.Info("actions: email sent")
		if err := c.outcome(ctx, d, KindEmailSent); err != nil {
			return h, err
		}
		if res.Discount != nil {
			return h, c.announceDiscount(ctx, d, *res.Discount)
		}
		return h, nil
	case KindWebhookDelivered:
		log.Info("actions: webhook delivered")
		return h, c.outcome(ctx, d, KindWebhookDelivered)
	case KindEmailFailed, KindWebhookFailed:
		h.DeadLetter = ReasonPermanentFailure
		log.Warn("actions: refused for good, decision to the DLQ", "channel", channel, "reason", h.DeadLetter, "err", res.Err)
		return h, c.outcome(ctx, d, res.Kind)
	case KindDuplicate:
		log.Info("actions: nothing to send", "previous", res.Previous)
		// Again, in case the first time ended before it was produced;
		// the id is the same.
		return h, c.suppressed(ctx, d, res.Previous)
	default: // holdout, expired, no consent, no address
		log.Info("actions: nothing to send")
		return h, c.suppressed(ctx, d, res.Kind)
	}
}

// suppressionReasons maps the result kinds of a decision dropped without
// acting to the reason of its suppression record. Holdout decisions are
// not suppressions: they are the control group.
var suppressionReasons = map[string]string{
	KindNoConsent:     events.SuppressedNoConsent,
	KindNoAddress:     events.SuppressedNoAddress,
	KindExpired:       events.SuppressedExpired,
	KindSkippedAction: events.SuppressedNoChannel,
}

// Suppression is the cart.step.suppressed record (stage actions) of a
// decision dropped with the result kind (no_consent, no_address, expired,
// skipped_action), and false for any other kind. Its id is
// events.SuppressionID of the decision id, and it is dated by the
// decision (At and Due are its decided_at), so a redelivery gives the
// same record.
func Suppression(d events.Decision, kind string) (events.Suppression, bool) {
	reason, ok := suppressionReasons[kind]
	if !ok {
		return events.Suppression{}, false
	}
	return events.Suppression{ID: events.SuppressionID(d.ID), DecisionID: d.ID, Reason: reason,
		Stage: events.StageActions, Flow: d.Flow, Step: d.Step, StepIndex: d.StepIndex, Action: d.Action,
		Holdout: d.Holdout, CustomerKey: d.Customer.Key, CartID: d.Cart.CartID, CartType: d.Cart.CartType,
		Site: d.Cart.Site, Channel: d.Cart.Channel, Currency: d.Cart.Currency, ValueMinor: d.Cart.TotalMinor,
		Due: d.DecidedAt.UTC(), At: d.DecidedAt.UTC()}, true
}

// suppressed produces the suppression record of d when kind is a drop
// without acting (see Suppression); nothing otherwise.
func (c *dispatcher) suppressed(ctx context.Context, d events.Decision, kind string) error {
	s, ok := Suppression(d, kind)
	if !ok {
		return nil
	}
	v, err := events.Encode(s.ID, events.Source, events.TypeSuppressed, s.At, s.CartID, s)
	if err != nil {
		return err
	}
	return c.produce(ctx, &kgo.Record{Topic: c.cfg.TopicSuppressions, Key: []byte(d.Customer.Key), Value: v,
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte(s.ID)}, {Key: "ce_type", Value: []byte(events.TypeSuppressed)}}})
}

// holdEnd says how hold ended.
type holdEnd int

const (
	holdDone      holdEnd = iota // a final result (or ctx ended)
	holdExpired                  // the decision's valid_until passed
	holdExhausted                // held MaxHold (no valid_until) or holdCap
)

// hold calls handle until its result is final (not Retryable), waiting for
// a token of limiter (if any) before each attempt and the backoff after
// each transient failure: BackoffBase·2^(n-1) capped at BackoffMax, with
// equal jitter, and never past the deadline. The deadline is the
// decision's valid_until (holdExpired), or MaxHold after the first failure
// for a decision without one (holdExhausted); holdCap, when set, caps it.
// It returns early when ctx ends. The stats show the hold while it lasts.
func (c *dispatcher) hold(ctx context.Context, d events.Decision, channel string,
	handle func(context.Context, events.Decision) Result, limiter *tokenBucket) (Result, int, holdEnd) {
	var (
		res      Result
		since    time.Time
		deadline time.Time
		end      holdEnd
	)
	defer func() {
		if !since.IsZero() {
			c.stats.release()
		}
	}()
	for attempt := 1; ; attempt++ {
		if attempt > 1 && !c.cfg.Now().Before(deadline) {
			return res, attempt - 1, end
		}
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				return Result{DecisionID: d.ID, Kind: failKindOf(channel), Err: &DeliveryError{Err: err}}, attempt - 1, holdDone
			}
		}
		res = handle(ctx, d)
		if !res.Retryable() {
			if !since.IsZero() {
				c.log.Info("actions: transient failure over", "decision_id", d.ID, "channel", channel, "attempts", attempt,
					"held", c.cfg.Now().Sub(since).Round(time.Millisecond), "kind", res.Kind)
			}
			return res, attempt, holdDone
		}
		if ctx.Err() != nil {
			return res, attempt, holdDone
		}
		now := c.cfg.Now()
		c.stats.transient(channel)
		if since.IsZero() {
			since = now
			deadline, end = d.ValidUntil, holdExpired
			if deadline.IsZero() {
				deadline, end = now.Add(c.cfg.MaxHold), holdExhausted
			}
			if c.holdCap > 0 && now.Add(c.holdCap).Before(deadline) {
				deadline, end = now.Add(c.holdCap), holdExhausted
			}
			c.stats.hold(d.ID, since)
		}
		if !now.Before(deadline) {
			return res, attempt, end
		}
		wait := min(c.backoff(attempt), deadline.Sub(now))
		c.log.Warn("actions: transient failure, holding the partition", "decision_id", d.ID, "channel", channel,
			"attempt", attempt, "next_retry", now.Add(wait).UTC().Format(time.RFC3339Nano), "retry_in", wait.Round(time.Millisecond),
			"held", now.Sub(since).Round(time.Millisecond), "valid_until", d.ValidUntil, "err", res.Err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, attempt, holdDone
		case <-t.C:
		}
	}
}

func failKindOf(channel string) string {
	if channel == ChannelEmail {
		return KindEmailFailed
	}
	return KindWebhookFailed
}

// backoff is the wait after the n-th attempt: base·2^(n-1) capped at max,
// with equal jitter (between half and all of it).
func (c *dispatcher) backoff(n int) time.Duration {
	d := c.cfg.BackoffMax
	if n-1 < 32 {
		if e := c.cfg.BackoffBase << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// expire records d as expired (unless something is recorded already): its
// valid_until passed while it was held, so a redelivery sends nothing.
func (c *dispatcher) expire(d events.Decision, cause error) (Result, error) {
	rec := Record{Kind: KindExpired, At: c.cfg.Now().UTC()}
	if cause != nil {
		rec.Error = "valid_until passed while held: " + cause.Error()
	}
	if _, err := c.email.Store.recordOnce(d.ID, rec); err != nil {
		return Result{DecisionID: d.ID, Kind: KindExpired, Err: err}, fmt.Errorf("actions store: %w", err)
	}
	return Result{DecisionID: d.ID, Kind: KindExpired}, nil
}

// announceDiscount produces the discount.issued outcome (the code in its
// headers) and, when configured, POSTs the code to the shop, holding a
// transient failure like any other until the decision's valid_until; a
// failure for good is logged and counted (the email is out).
func (c *dispatcher) announceDiscount(ctx context.Context, d events.Decision, disc IssuedDiscount) error {
	o := DiscountOutcome(d, disc, c.cfg.Now())
	if err := c.produceOutcome(ctx, d, o,
		kgo.RecordHeader{Key: HeaderDiscountCode, Value: []byte(disc.Code)},
		kgo.RecordHeader{Key: HeaderDiscountExpires, Value: []byte(disc.ExpiresAt.Format(time.RFC3339))}); err != nil {
		return err
	}
	if c.cfg.Webhook == nil || c.cfg.Webhook.Config.DiscountURL == "" {
		return nil
	}
	res, attempts, _ := c.hold(ctx, d, ChannelDiscountWebhook, func(ctx context.Context, d events.Decision) Result {
		if err := c.cfg.Webhook.AnnounceDiscount(ctx, disc); err != nil {
			return Result{DecisionID: d.ID, Kind: KindWebhookFailed, Err: err}
		}
		return Result{DecisionID: d.ID, Kind: KindWebhookDelivered}
	}, nil)
	if res.Err != nil {
		if ctx.Err() != nil && res.Retryable() {
			return ctx.Err()
		}
		c.stats.update(func(s *Stats) { s.DiscountsNotAnnounced++ })
		c.log.Warn("actions: discount webhook failed for good; the code is not announced", "decision_id", d.ID, "attempts", attempts, "err", res.Err)
	}
	return nil
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

func (c *dispatcher) outcome(ctx context.Context, d events.Decision, kind string) error {
	return c.produceOutcome(ctx, d, newOutcome(d, kind, c.cfg.Now()))
}

func (c *dispatcher) produceOutcome(ctx context.Context, d events.Decision, o events.Outcome, headers ...kgo.RecordHeader) error {
	v, err := events.Encode(o.ID, events.Source, events.TypeOutcome, o.At, o.CartID, o)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: c.cfg.TopicOutcomes, Key: []byte(d.Customer.Key), Value: v,
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte(o.ID)}, {Key: "ce_type", Value: []byte(events.TypeOutcome)}}}
	rec.Headers = append(rec.Headers, headers...)
	return c.produce(ctx, rec)
}

// produceSync produces one record synchronously with cl. A shutdown (ctx
// cancelled) does not abort it: the record being handled is finished first.
func produceSync(cl *kgo.Client) func(context.Context, *kgo.Record) error {
	return func(ctx context.Context, rec *kgo.Record) error {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return cl.ProduceSync(pctx, rec).FirstErr()
	}
}
