package actions

import (
	"strconv"

	"github.com/cartlift/cartlift/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The format of cart-actions.dlq, in one place: the Consumer writes it
// (NewDeadLetter), Redrive reads it (ParseDeadLetter).
//
// A dead-lettered record keeps the key, the value (the decision's
// CloudEvent, or the undecodable bytes) and the headers of the record of
// cart-decisions unchanged, and gets the headers of events/deadletter.go:
// cartlift-error-reason (one of the Reason constants), cartlift-error,
// cartlift-source-topic, -partition and -offset.

// DLQ reasons.
const (
	// ReasonUndecodable: the record is not a decision; Redrive skips it.
	ReasonUndecodable = "undecodable"
	// ReasonPermanentFailure: the channel refused the decision for good
	// (SMTP 5xx, webhook 4xx other than 408/429, an invalid address or
	// template); the refusal is recorded in the Store.
	ReasonPermanentFailure = "permanent_failure"
	// ReasonRetriesExhausted: a decision without valid_until was held for
	// ConsumerConfig.MaxHold without success (and, before the consumer held
	// transient failures, one whose attempts ran out); nothing is recorded.
	ReasonRetriesExhausted = "retries_exhausted"
)

// NewDeadLetter is the record of topic (the DLQ) for r, which could not be
// handled for reason (cause, if any, is its error message).
func NewDeadLetter(topic string, r *kgo.Record, reason string, cause error) *kgo.Record {
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	rec := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value}
	rec.Headers = append(rec.Headers, r.Headers...)
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: events.HeaderErrorReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: events.HeaderError, Value: []byte(msg)},
		kgo.RecordHeader{Key: events.HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: events.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: events.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	return rec
}

// DeadLetter is a record of the DLQ, parsed.
type DeadLetter struct {
	Reason          string
	Error           string
	SourceTopic     string
	SourcePartition int32 // -1 when the header is missing
	SourceOffset    int64 // -1 when the header is missing
	// Record is the DLQ record itself; its Value is the original value.
	Record *kgo.Record
}

// ParseDeadLetter reads the DLQ headers of r. When a header occurs twice
// (a record dead-lettered again after a redrive), the last one counts.
func ParseDeadLetter(r *kgo.Record) DeadLetter {
	dl := DeadLetter{SourcePartition: -1, SourceOffset: -1, Record: r}
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case events.HeaderErrorReason:
			dl.Reason = v
		case events.HeaderError:
			dl.Error = v
		case events.HeaderSourceTopic:
			dl.SourceTopic = v
		case events.HeaderSourcePartition:
			if p, err := strconv.ParseInt(v, 10, 32); err == nil {
				dl.SourcePartition = int32(p)
			}
		case events.HeaderSourceOffset:
			if o, err := strconv.ParseInt(v, 10, 64); err == nil {
				dl.SourceOffset = o
			}
		}
	}
	return dl
}

// Decision decodes the dead-lettered decision.
func (dl DeadLetter) Decision() (events.Decision, error) { return DecodeDecision(dl.Record.Value) }
