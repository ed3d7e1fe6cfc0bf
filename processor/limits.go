package processor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
)

// defaultMessageLimit is Kafka's default message.max.bytes (and
// franz-go's default batch limit): what the relay assumes when the
// brokers' configuration cannot be read.
const defaultMessageLimit = 1_000_012

// maxDeadLetterValue bounds the copy of an input record on the DLQ: the
// first 64 KiB, with the original size and SHA-256 in headers. A record
// the brokers accepted as input may be larger than what they accept as
// output (a 2 MB record compressed with zstd is a small batch), and the
// copy is for finding the record, not for reprocessing it whole.
const (
	maxDeadLetterValue   = 64 << 10
	maxDeadLetterKey     = 1 << 10
	maxDeadLetterHeaders = 16 << 10
	// maxReducedHeader bounds each header of a record the relay reduces.
	maxReducedHeader = 1 << 10
)

// Headers a capped or reduced dead letter carries besides events' ones.
const (
	HeaderOriginalSize   = "cartlift-original-size"
	HeaderOriginalSHA256 = "cartlift-original-sha256"
	HeaderTruncated      = "cartlift-truncated"
	HeaderOriginalTopic  = "cartlift-original-topic"
	HeaderProduceError   = "cartlift-produce-error"
)

// readMessageLimit returns the largest record batch every broker and each
// of topics accept: the least of the brokers' message.max.bytes and the
// topics' max.message.bytes, read once at start.
func readMessageLimit(ctx context.Context, cl *kgo.Client, topics ...string) (int, error) {
	adm := kadm.NewClient(cl)
	limit := 0
	take := func(v string) {
		if n, err := strconv.Atoi(v); err == nil && n > 0 && (limit == 0 || n < limit) {
			limit = n
		}
	}
	brokers, err := adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		return 0, fmt.Errorf("describe broker configs: %w", err)
	}
	for _, rc := range brokers {
		for _, c := range rc.Configs {
			if c.Key == "message.max.bytes" && c.Value != nil {
				take(*c.Value)
			}
		}
	}
	tcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("describe topic configs: %w", err)
	}
	for _, rc := range tcs {
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" && c.Value != nil {
				take(*c.Value)
			}
		}
	}
	if limit == 0 {
		return 0, errors.New("no message size limit in the brokers' or topics' configs")
	}
	return limit, nil
}

// permanentProduceError reports whether the brokers (or the client, before
// sending) refuse a record for what it is, so that retrying it as it is
// can never succeed.
func permanentProduceError(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

// capDeadLetter bounds a dead-letter copy of an input record: a value
// larger than maxDeadLetterValue keeps its first bytes and gets headers
// with the original size and SHA-256; a key larger than maxDeadLetterKey
// is cut the same way; original headers beyond maxDeadLetterHeaders in all
// are left out.
func capDeadLetter(e *outboxEntry, headers []kgo.RecordHeader) {
	if len(e.Value) > maxDeadLetterValue {
		sum := sha256.Sum256(e.Value)
		e.Headers = append(e.Headers,
			[2]string{HeaderOriginalSize, strconv.Itoa(len(e.Value))},
			[2]string{HeaderOriginalSHA256, hex.EncodeToString(sum[:])},
			[2]string{HeaderTruncated, "value"})
		e.Value = e.Value[:maxDeadLetterValue]
	}
	if len(e.Key) > maxDeadLetterKey {
		e.Headers = append(e.Headers, [2]string{HeaderTruncated, "key"})
		e.Key = e.Key[:maxDeadLetterKey]
	}
	total := 0
	for _, h := range headers {
		total += len(h.Key) + len(h.Value)
		if total > maxDeadLetterHeaders {
			e.Headers = append(e.Headers, [2]string{HeaderTruncated, "headers"})
			break
		}
		e.Headers = append(e.Headers, [2]string{h.Key, string(h.Value)})
	}
}

// reduced is the dead letter that replaces an outbox entry the brokers
// refused for good: the record goes to the DLQ topic with its value cut to
// what fits (at most maxDeadLetterValue, at most a quarter of the limit),
// each header cut to maxReducedHeader, and the produce error, the original
// topic, size and SHA-256 in headers. A dead letter keeps its reason; any
// other record gets the reason too_large.
func reduced(e *outboxEntry, dlq string, limit int, cause error) outboxEntry {
	sum := sha256.Sum256(e.Value)
	r := outboxEntry{Topic: dlq, Key: e.Key[:min(len(e.Key), maxDeadLetterKey)]}
	r.Value = e.Value[:min(len(e.Value), maxDeadLetterValue, limit/4)]
	hasReason := false
	for _, h := range e.Headers {
		hasReason = hasReason || h[0] == events.HeaderErrorReason
		r.Headers = append(r.Headers, [2]string{h[0], h[1][:min(len(h[1]), maxReducedHeader)]})
	}
	if !hasReason {
		r.Headers = append(r.Headers, [2]string{events.HeaderErrorReason, events.ReasonTooLarge},
			[2]string{events.HeaderError, "the brokers refused the record as too large"})
	}
	msg := cause.Error()
	r.Headers = append(r.Headers,
		[2]string{HeaderProduceError, msg[:min(len(msg), maxReducedHeader)]},
		[2]string{HeaderOriginalTopic, e.Topic},
		[2]string{HeaderOriginalSize, strconv.Itoa(len(e.Value))},
		[2]string{HeaderOriginalSHA256, hex.EncodeToString(sum[:])})
	return r
}
