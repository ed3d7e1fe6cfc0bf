package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cartlift/cartlift/actions"
)

// actionsCollector exposes the actions consumer's Stats to Prometheus.
type actionsCollector struct {
	stats func() actions.Stats
}

var (
	actionsDecisionsDesc = prometheus.NewDesc("cartlift_actions_decisions_total",
		"Decisions the actions role handled for good, by result kind (email.sent, email.failed, webhook.delivered, expired, duplicate, ...).", []string{"kind"}, nil)
	actionsTransientDesc = prometheus.NewDesc("cartlift_actions_transient_failures_total",
		"Failed attempts that are retried, by channel (email, webhook, discount_webhook): each holds the record until it succeeds or its valid_until passes.", []string{"channel"}, nil)
	actionsDeadLetteredDesc = prometheus.NewDesc("cartlift_actions_dead_lettered_total",
		"Records sent to cart-actions.dlq, by reason (permanent_failure, undecodable, retries_exhausted).", []string{"reason"}, nil)
	actionsExpiredDesc = prometheus.NewDesc("cartlift_actions_expired_total",
		"Decisions dropped (and recorded) because their valid_until had passed, on arrival or while a transient failure held them.", nil, nil)
	actionsExpiredHeldDesc = prometheus.NewDesc("cartlift_actions_expired_while_held_total",
		"Decisions whose valid_until passed while a transient failure held them: lost to an outage.", nil, nil)
	actionsNotAnnouncedDesc = prometheus.NewDesc("cartlift_actions_discounts_not_announced_total",
		"Discount codes sent by email whose announcement to the shop's webhook failed for good.", nil, nil)
	actionsBlockedDesc = prometheus.NewDesc("cartlift_actions_blocked",
		"1 while a transient failure holds a record (nothing after it is handled), else 0.", nil, nil)
	actionsBlockedSecondsDesc = prometheus.NewDesc("cartlift_actions_blocked_seconds",
		"How long the record held by a transient failure has been held (0 when none is).", nil, nil)
)

func (c actionsCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c actionsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	for _, k := range []string{actions.KindEmailSent, actions.KindEmailFailed, actions.KindExpired} {
		if _, ok := s.Results[k]; !ok {
			s.Results[k] = 0
		}
	}
	for k, v := range s.Results {
		counter(actionsDecisionsDesc, v, k)
	}
	for _, ch := range []string{actions.ChannelEmail, actions.ChannelWebhook, actions.ChannelDiscountWebhook} {
		if _, ok := s.TransientFailures[ch]; !ok {
			s.TransientFailures[ch] = 0
		}
	}
	for k, v := range s.TransientFailures {
		counter(actionsTransientDesc, v, k)
	}
	for _, r := range []string{actions.ReasonPermanentFailure, actions.ReasonUndecodable, actions.ReasonRetriesExhausted} {
		if _, ok := s.DeadLettered[r]; !ok {
			s.DeadLettered[r] = 0
		}
	}
	for k, v := range s.DeadLettered {
		counter(actionsDeadLetteredDesc, v, k)
	}
	counter(actionsExpiredDesc, s.Results[actions.KindExpired])
	counter(actionsExpiredHeldDesc, s.ExpiredWhileHeld)
	counter(actionsNotAnnouncedDesc, s.DiscountsNotAnnounced)
	blocked, held := 0.0, 0.0
	if s.Held {
		blocked, held = 1, time.Since(s.HeldSince).Seconds()
	}
	gauge(actionsBlockedDesc, blocked)
	gauge(actionsBlockedSecondsDesc, held)
}

// register exposes the role's metrics in reg.
func (r *actionsRole) register(reg prometheus.Registerer) {
	reg.MustRegister(actionsCollector{stats: r.consumer.Stats})
}
