package processor

import (
	"context"
	"errors"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cartlift/cartlift/projections"
)

// clientIDPrefix starts the Kafka client id of every processor; the rest
// is the instance's advertised HTTP address, so that instances find each
// other through the consumer group (DescribeGroups) without any other
// registry.
const clientIDPrefix = "cartlift@"

// keyPartitioner is Kafka's default partitioner for keyed records (murmur2),
// the one producers must use.
var keyPartitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

// ErrPartitionsUnknown is returned before the processor has learned the
// partition count of its input topic.
var ErrPartitionsUnknown = errors.New("the input topic's partition count is not known yet")

// Freshness says how current a partition's projection is: the next input
// offset it will process, how many records it is behind the end of the
// partition, and whether it has caught up.
type Freshness struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"processed_offset"`
	Lag       int64 `json:"lag"`
	CaughtUp  bool  `json:"caught_up"`
}

// PartitionOf returns the input partition that holds a customer key.
func (p *Processor) PartitionOf(key string) (int32, error) {
	n := p.partitions.Load()
	if n <= 0 {
		return 0, ErrPartitionsUnknown
	}
	return int32(keyPartitioner.Partition(&kgo.Record{Key: []byte(key)}, int(n))), nil
}

// Lookup returns the committed state of a customer (nil when there is
// none, or when the customer was erased) if this instance owns the customer's partition; owned is false
// otherwise, and the caller should ask the owner (Owners). It is safe to
// call from any goroutine.
func (p *Processor) Lookup(key string) (st *projections.CustomerState, fresh Freshness, owned bool, err error) {
	part, err := p.PartitionOf(key)
	if err != nil {
		return nil, Freshness{}, false, err
	}
	fresh.Partition = part
	w := p.workerFor(part)
	if w == nil {
		return nil, fresh, false, nil
	}
	fresh.Offset = w.next.Load()
	fresh.CaughtUp = w.caughtUp.Load()
	if end := w.end.Load(); end >= 0 {
		fresh.Lag = max(0, end-fresh.Offset)
	}
	st, err = loadState(p.db, part, key)
	if st != nil && st.Erased() {
		st = nil // a tombstone: the customer is gone
	}
	return st, fresh, true, err
}

// Flows returns the flows config the processor folds with (the API
// explains decisions with it).
func (p *Processor) Flows() *projections.Config { return p.flows }

// Owners maps each assigned input partition to the advertised HTTP address
// of the instance that owns it, from the consumer group's description.
// Members without an advertised address are left out.
func (p *Processor) Owners(ctx context.Context) (map[int32]string, error) {
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{p.cfg.Group}
	resp, err := req.RequestWith(ctx, p.admin)
	if err != nil {
		return nil, err
	}
	out := map[int32]string{}
	for _, g := range resp.Groups {
		for _, m := range g.Members {
			addr, ok := strings.CutPrefix(m.ClientID, clientIDPrefix)
			if !ok || addr == "" {
				continue
			}
			var a kmsg.ConsumerMemberAssignment
			if err := a.ReadFrom(m.MemberAssignment); err != nil {
				continue
			}
			for _, t := range a.Topics {
				if t.Topic != p.cfg.Topics.Events {
					continue
				}
				for _, part := range t.Partitions {
					out[part] = addr
				}
			}
		}
	}
	return out, nil
}

// learnPartitions asks the brokers for the input topic's partition count.
func (p *Processor) learnPartitions(ctx context.Context) error {
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(p.cfg.Topics.Events)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, p.admin)
	if err != nil {
		return err
	}
	for _, rt := range resp.Topics {
		if rt.Topic != nil && *rt.Topic == p.cfg.Topics.Events && len(rt.Partitions) > 0 {
			p.partitions.Store(int32(len(rt.Partitions)))
			return nil
		}
	}
	return errors.New("metadata: input topic not found")
}
