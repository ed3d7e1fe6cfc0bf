package processor

import (
	"encoding/binary"
	"errors"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// standbyBalancer is the group protocol of the processors: cooperative
// (KIP-429: a member keeps consuming what it keeps through a rebalance),
// with each member's warm copies in its join metadata and each member's
// standby partitions in its assignment. The leader plans with
// assignPartitions. It is listed before cooperative-sticky, which
// remains the common protocol while a group upgrades from a release
// without it.
type standbyBalancer struct {
	p *Processor
}

// standbyProtocol names the protocol; a change to its metadata needs a new name.
const standbyProtocol = "cartlift-standby-v1"

var errStandbyUserData = errors.New("malformed cartlift standby user data")

// ProtocolName is the group protocol's name.
func (*standbyBalancer) ProtocolName() string { return standbyProtocol }

// IsCooperative is true: partitions move in two rounds, revoked first.
func (*standbyBalancer) IsCooperative() bool { return true }

// JoinGroupMetadata reports the partitions owned and the warm copies kept.
func (s *standbyBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	for _, t := range interests {
		if parts, ok := current[t]; ok {
			op := kmsg.NewConsumerMemberMetadataOwnedPartition()
			op.Topic, op.Partitions = t, parts
			meta.OwnedPartitions = append(meta.OwnedPartitions, op)
		}
	}
	meta.UserData = appendPartitionList(nil, s.p.warmCopies())
	return meta.AppendTo(nil)
}

// ParseSyncAssignment returns the assigned partitions and hands the
// standby partitions to the processor.
func (s *standbyBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(assignment); err != nil {
		return nil, err
	}
	out := make(map[string][]int32, len(a.Topics))
	for _, t := range a.Topics {
		out[t.Topic] = t.Partitions
	}
	standbys, err := parsePartitionList(a.UserData)
	if err != nil {
		return nil, err
	}
	s.p.setStandbys(standbys)
	return out, nil
}

// MemberBalancer parses the members' metadata for Balance.
func (s *standbyBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	b, err := kgo.NewConsumerBalancer(s, members)
	if err != nil {
		return nil, nil, err
	}
	return b, b.MemberTopics(), nil
}

// Balance plans the group (on the leader).
func (s *standbyBalancer) Balance(b *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	topic := s.p.cfg.Topics.Events
	members := b.Members()
	joined := make([]joinedMember, len(members))
	b.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		i := slices.IndexFunc(members, func(x kmsg.JoinGroupResponseMember) bool { return x.MemberID == m.MemberID })
		jm := joinedMember{key: m.MemberID, gen: meta.Generation}
		if m.InstanceID != nil {
			jm.key = *m.InstanceID
		}
		for _, op := range meta.OwnedPartitions {
			if op.Topic == topic {
				jm.owned = op.Partitions
			}
		}
		jm.warm, _ = parsePartitionList(meta.UserData) // a malformed list is no warm copy
		joined[i] = jm
	})
	a := assignPartitions(joined, topics[topic], s.p.cfg.StandbyReplicas)
	plan := b.NewPlan()
	for part, m := range a.owners {
		plan.AddPartition(&members[m], topic, int32(part))
	}
	plan.AdjustCooperative(b)
	byID := plan.AsMemberIDMap()
	out := make(syncAssignments, 0, len(members))
	for i, m := range members {
		var ka kmsg.ConsumerMemberAssignment
		if parts := byID[m.MemberID][topic]; len(parts) > 0 {
			slices.Sort(parts)
			at := kmsg.NewConsumerMemberAssignmentTopic()
			at.Topic, at.Partitions = topic, parts
			ka.Topics = append(ka.Topics, at)
		}
		ka.UserData = appendPartitionList(nil, a.standbys[i])
		sa := kmsg.NewSyncGroupRequestGroupAssignment()
		sa.MemberID, sa.MemberAssignment = m.MemberID, ka.AppendTo(nil)
		out = append(out, sa)
	}
	s.p.log.Debug("group planned", "owners", a.owners, "standbys", a.standbys)
	return out
}

type syncAssignments []kmsg.SyncGroupRequestGroupAssignment

func (s syncAssignments) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment { return s }

// appendPartitionList encodes partitions as a version byte, a count and
// the partitions, as uvarints.
func appendPartitionList(b []byte, parts []int32) []byte {
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(p))
	}
	return b
}

// parsePartitionList decodes appendPartitionList's encoding; empty input
// is an empty list.
func parsePartitionList(b []byte) ([]int32, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != 1 {
		return nil, errStandbyUserData
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errStandbyUserData
	}
	b = b[k:]
	out := make([]int32, 0, n)
	for range n {
		v, k := binary.Uvarint(b)
		if k <= 0 || v > 1<<31-1 {
			return nil, errStandbyUserData
		}
		out = append(out, int32(v))
		b = b[k:]
	}
	return out, nil
}
