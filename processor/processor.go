// Package processor is cartlift's runtime: a franz-go consumer group with
// one worker goroutine per assigned partition, the Pebble store that holds
// each partition's state, timers, outbox and input offset, the timer
// driver and the outbox relay. The business rules are in projections; this
// package moves data between Kafka, Pebble and the fold.
//
// Exactly-once in effect: each fetched batch of a partition (and each round
// of due timers) becomes one Pebble batch holding the state changes, timer
// changes, outbox entries and the next input offset. On assignment a worker
// resumes from the offset in Pebble, never from the group's committed
// offset; with no local state it rebuilds the partition from its earliest
// offset. Output records have deterministic ids, so the re-emissions that a
// crash can cause are de-duplicated by every consumer.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/projections"
)

// Topics names the topics the processor reads and writes.
type Topics struct {
	Events    string // input; default events.TopicEvents
	Decisions string // default events.TopicDecisions
	Outcomes  string // default events.TopicOutcomes
	DLQ       string // default events.TopicDLQ
	// Suppressions receives a record of every step that came due and was
	// not sent (a guard stopped it) or was deferred (quiet hours); default
	// events.TopicSuppressions. Consumers of Decisions see nothing of them.
	Suppressions string
	// ShadowDecisions receives the decisions of shadow flows, through
	// the same outbox and transaction as the other outputs. Default
	// events.TopicShadowDecisions. The actions role never reads it.
	ShadowDecisions string
	// State is the changelog: compacted, one partition per input
	// partition; default "cartlift-state" for the default group and
	// "<group>-state" for any other.
	State string
}

// Hooks are optional callbacks through which the processor reports what
// it does (Prometheus lives at the edge, in cmd). They are called from
// worker goroutines, concurrently, and must not block.
type Hooks struct {
	// EventRejected is called for each record sent to the DLQ.
	EventRejected func(reason string)
	// EventSkipped is called for each record of an unknown type.
	EventSkipped func(detail string)
	// EventDuplicate is called for each event dropped as a repeat of one
	// in its customer's window (same source and id).
	EventDuplicate func()
	// OutputReduced is called when the brokers refused an output record
	// for good and the relay replaced it by a reduced dead letter;
	// OutputDropped when they refused that too and it was dropped.
	OutputReduced, OutputDropped func()
	// TimerFired is called for each timer fired by the wall clock, with how
	// late it fired.
	TimerFired func(lateness time.Duration)
	// DecisionSuppressed is called for each step a guard stopped (reason
	// is a projections Reason constant: no_consent, frequency_cap, …).
	DecisionSuppressed func(reason string)
	// BatchCommitted is called after each committed batch of input.
	BatchCommitted func(partition int32, events int, took time.Duration)
}

// Config configures a Processor. Zero fields take the documented defaults.
type Config struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Group is the consumer group; default "cartlift-processor".
	Group string
	// InstanceID enables static group membership: an instance restarted
	// with the same id takes its partitions back at once instead of waiting
	// for its old session to time out. It must be unique per store; the
	// command derives it from the host and data directory.
	InstanceID string
	// SessionTimeout of the group member; default 15s.
	SessionTimeout time.Duration
	Topics         Topics
	// Partitions for topics the processor creates; default 8.
	Partitions int32
	// DataDir holds the Pebble store. Required.
	DataDir string
	// Flows is the fold's configuration. Required.
	Flows *projections.Config
	// SyncWrites fsyncs every Pebble batch, so that a machine crash (not
	// only a process crash) loses nothing. Default false via the zero
	// value; the command turns it on.
	SyncWrites bool
	// TimerTick is how often idle, caught-up partitions check for due
	// timers; default 100ms.
	TimerTick time.Duration
	// LagPoll is how often end offsets are polled; default 1s.
	LagPoll time.Duration
	// DrainTimeout bounds how long a stopping relay keeps producing; default 5s.
	DrainTimeout time.Duration
	// Clock is the wall clock; default time.Now. Only the timer driver and
	// the decoder's future-time check read it.
	Clock func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	Hooks  Hooks
	// AdvertiseAddr is the HTTP address other instances reach this one at;
	// it travels in the Kafka client id so that instances find the owner
	// of a partition through the consumer group (Owners). Empty: none.
	AdvertiseAddr string
	// KafkaOpts are extra franz-go options for both clients (TLS, SASL).
	KafkaOpts []kgo.Opt
	// ReplayInput allows a partition whose changelog is empty, and whose
	// input no longer starts at offset 0 (retention deleted records), to
	// build its state from what the input still holds: the migration of a
	// deployment that predates the changelog. Without it such a partition
	// fails to start, since its state would silently miss the deleted
	// history.
	ReplayInput bool
	// StandbyReplicas is how many instances besides a partition's owner
	// keep a warm copy of it (standby.go); default 0.
	StandbyReplicas int
	// StateCacheBytes bounds the customer states the workers keep in
	// memory, encoded, in all (each partition's worker gets an equal share
	// of what its instance owns at most, 1/Partitions of it). Default 256
	// MiB.
	StateCacheBytes int64
	// BlockCacheBytes is the Pebble block cache (uncompressed table
	// blocks, shared by all partitions); default 256 MiB. A smaller one
	// makes state reads of new customers dear: their bloom filter and
	// index blocks fall out of it.
	BlockCacheBytes int64
	// MemTableBytes is the size of one Pebble memtable; up to four exist
	// at a time while flushes run behind. Default 64 MiB.
	MemTableBytes int64
	// FetchMaxBytes bounds one fetch of the input (all partitions), in
	// the records' compressed bytes; default 4 MiB. Each partition's
	// share is an equal part of it (at least 256 KiB), so that one fetch
	// feeds every worker: when one partition could take all of it, the
	// poll loop waited on that partition's worker while the others had
	// nothing (2 cores: 13-31% more events/s in 4 alternated pairs with
	// the equal parts, at 0.1-0.2 GiB more peak RSS). The client decodes a whole fetch into records before
	// the workers take them, so memory holds several times this: at
	// 32 MiB the records waiting for the workers took 0.45 GiB of the
	// heap in a catch-up (a heap profile of `cartlift load`), and 4 MiB
	// brought its peak RSS from 1.8-2.0 GiB to under 1 GiB at no cost in
	// CPU per event.
	FetchMaxBytes int32
	// CleanupDelay is how long the local copy of a partition that is
	// neither owned nor a standby here is kept (in case it comes back)
	// before it is dropped; default 10m.
	CleanupDelay time.Duration
	// RestoreMemoryBytes bounds the state records a restore from the
	// changelog holds in memory at once; default 1 GiB. A partition whose
	// changelog holds more is restored in two passes, at about half the
	// speed: the first keeps only each key's last offset, the second
	// reads the changelog again and ingests the last record of each key in
	// chunks of this size.
	RestoreMemoryBytes int64
	// StateFormat is the format of the state records the workers write
	// to the store and the changelog: 4 (the default, see codec.go) or 3,
	// which builds before format 4 read, for the first phase of a rolling
	// upgrade from them. Every format is read.
	StateFormat byte
}

func (c *Config) fill() error {
	if len(c.Brokers) == 0 {
		return errors.New("processor: Brokers is required")
	}
	if c.DataDir == "" {
		return errors.New("processor: DataDir is required")
	}
	if c.Flows == nil {
		return errors.New("processor: Flows is required")
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&c.Group, "cartlift-processor")
	def(&c.Topics.Events, events.TopicEvents)
	def(&c.Topics.Decisions, events.TopicDecisions)
	def(&c.Topics.Outcomes, events.TopicOutcomes)
	def(&c.Topics.DLQ, events.TopicDLQ)
	def(&c.Topics.Suppressions, events.TopicSuppressions)
	def(&c.Topics.ShadowDecisions, events.TopicShadowDecisions)
	if c.Topics.State == "" {
		// Like Kafka Streams' <application.id>-...-changelog: two
		// groups (deployments, or a replay beside production) must never
		// share a changelog.
		c.Topics.State = DefaultTopicState
		if c.Group != "cartlift-processor" {
			c.Topics.State = c.Group + "-state"
		}
	}
	names := []string{c.Topics.Events, c.Topics.Decisions, c.Topics.Outcomes, c.Topics.DLQ, c.Topics.Suppressions, c.Topics.ShadowDecisions, c.Topics.State}
	if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
		return fmt.Errorf("processor: topic names must differ, got %v", names)
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.StateCacheBytes == 0 {
		c.StateCacheBytes = 256 << 20
	}
	if c.BlockCacheBytes == 0 {
		c.BlockCacheBytes = 256 << 20
	}
	if c.MemTableBytes == 0 {
		c.MemTableBytes = 64 << 20
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = 4 << 20
	}
	if c.RestoreMemoryBytes == 0 {
		c.RestoreMemoryBytes = 1 << 30
	}
	switch c.StateFormat {
	case 0:
		c.StateFormat = stateFormatV4
	case stateFormatV3, stateFormatV4:
	default:
		return fmt.Errorf("processor: StateFormat %d is not 3 or 4", c.StateFormat)
	}
	if c.CleanupDelay == 0 {
		c.CleanupDelay = 10 * time.Minute
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 15 * time.Second
	}
	if c.TimerTick == 0 {
		c.TimerTick = 100 * time.Millisecond
	}
	if c.LagPoll == 0 {
		c.LagPoll = time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 5 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Processor runs the processing pipeline. Create it with New, run it with
// Run, and Close it after Run returned.
type Processor struct {
	cfg      Config
	flows    *projections.Config
	log      *slog.Logger
	db       *pebble.DB
	consumer *kgo.Client
	// admin is the client for metadata, offsets, topics and the
	// changelog's reads; the relays produce with their own transactional
	// clients.
	admin *kgo.Client
	// messageLimit is the brokers' and output topics' message size limit,
	// read by Run: the relays' batches never exceed it.
	messageLimit int
	// runCtx is Run's context, for the work of assigning partitions;
	// setUp is closed once Run has set it and messageLimit (the group may
	// assign partitions before, as the consumer joins it in New).
	runCtx     context.Context
	pollMu     sync.Mutex
	cancelPoll context.CancelFunc
	setUp      chan struct{}
	setUpOnce  sync.Once
	// restoring counts partitions being restored from the changelog.
	restoring atomic.Int32
	// localPartitions is Stats.LocalPartitions, counted once a second by
	// dropIdleCopies.
	localPartitions atomic.Int32

	// mu guards workers, standbys and wantStandby. The group callbacks
	// mutate workers (serially with the poll loop, see
	// BlockRebalanceOnPoll); Stats and Ready read it.
	mu      sync.Mutex
	workers map[int32]*worker
	// standbys are the running standby tasks (standby.go), wantStandby the
	// partitions the group last assigned this instance copies of.
	// standbyMu serializes starting and stopping tasks with workers taking
	// partitions over; standbyWake wakes the reconciler.
	standbys    map[int32]*standbyTask
	wantStandby []int32
	standbyMu   sync.Mutex
	standbyWake chan struct{}

	errOnce sync.Once
	errc    chan error
	stats   counters
	// partitions is the input topic's partition count, once known.
	partitions atomic.Int32
}

type counters struct {
	eventsConsumed, eventsRejected, eventsSkipped, eventsDuplicate atomic.Int64
	decisionsMade, outcomesMade, timersFired                       atomic.Int64
	decisionsEmitted, outcomesEmitted                              atomic.Int64
	deadLettered, outputReduced, outputDropped, restored           atomic.Int64
	// takeovers counts partitions taken over, by where the state came from.
	takeovers            [numTakeoverSources]atomic.Int64
	suppressed, deferred atomic.Int64
}

// New opens the store and creates the Kafka clients. It does not contact
// the brokers; Run does. Its consumer joins the group at once (the group
// assigns partitions once Run has set up).
func New(cfg Config) (*Processor, error) {
	return open(cfg, true)
}

// OpenStore opens the store with an admin client and no group membership,
// for Verify and Rebuild on a stopped instance's store. It cannot Run.
func OpenStore(cfg Config) (*Processor, error) {
	return open(cfg, false)
}

func open(cfg Config, join bool) (*Processor, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	db, err := openDB(cfg.DataDir, storeSizes{blockCache: cfg.BlockCacheBytes, memTable: cfg.MemTableBytes})
	if err != nil {
		return nil, fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
	}
	p := &Processor{cfg: cfg, flows: cfg.Flows, log: cfg.Logger, db: db,
		workers: make(map[int32]*worker), errc: make(chan error, 1), setUp: make(chan struct{}),
		standbys: make(map[int32]*standbyTask), standbyWake: make(chan struct{}, 1)}

	common := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOpts...)
	p.admin, err = kgo.NewClient(common...)
	if err != nil {
		db.Close()
		return nil, err
	}
	if !join {
		return p, nil
	}
	group := []kgo.Opt{
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics.Events),
		kgo.Balancers(&standbyBalancer{p: p}, kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.revoked),
		kgo.AdjustFetchOffsetsFn(p.adjustOffsets),
		kgo.BlockRebalanceOnPoll(),
		kgo.AutoCommitMarks(),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, cfg.SessionTimeout/5)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(cfg.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(max(cfg.FetchMaxBytes/max(1, cfg.Partitions), 256<<10)),
		// Transaction markers (of the API's ingest, or of any
		// transactional producer) take an offset each: the workers see
		// them, so that their next offset moves past them to the end.
		kgo.KeepControlRecords(),
	}
	if cfg.InstanceID != "" {
		group = append(group, kgo.InstanceID(cfg.InstanceID))
	}
	if cfg.AdvertiseAddr != "" {
		group = append(group, kgo.ClientID(clientIDPrefix+cfg.AdvertiseAddr))
	}
	p.consumer, err = kgo.NewClient(append(common, group...)...)
	if err != nil {
		p.admin.Close()
		db.Close()
		return nil, err
	}
	return p, nil
}

// fail stops Run with err; the first error wins.
func (p *Processor) fail(err error) {
	p.errOnce.Do(func() {
		p.errc <- err
		p.stopPoll()
	})
}

func (p *Processor) stopPoll() {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	if p.cancelPoll != nil {
		p.cancelPoll()
	}
}

// DefaultTopicState is the changelog topic's default name.
const DefaultTopicState = "cartlift-state"

// Run consumes until ctx is cancelled or a worker fails. On return every
// worker has committed its last batch and stopped.
func (p *Processor) Run(ctx context.Context) error {
	if p.consumer == nil {
		return errors.New("processor: a store opened with OpenStore cannot run")
	}
	if err := EnsureTopics(ctx, p.admin, p.cfg.Partitions,
		p.cfg.Topics.Events, p.cfg.Topics.Decisions, p.cfg.Topics.Outcomes, p.cfg.Topics.DLQ, p.cfg.Topics.Suppressions,
		p.cfg.Topics.ShadowDecisions); err != nil {
		return err
	}
	p.runCtx = ctx
	// A failure (fail) ends the poll at once, not with the next fetch.
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	p.pollMu.Lock()
	p.cancelPoll = stopPoll
	p.pollMu.Unlock()
	// Should the set-up fail, assigned must not wait for it for good; it
	// then sees no messageLimit and takes nothing.
	defer p.setUpOnce.Do(func() { close(p.setUp) })
	if err := p.learnPartitions(ctx); err != nil {
		return fmt.Errorf("input topic %s: %w", p.cfg.Topics.Events, err)
	}
	if err := EnsureTopicsWith(ctx, p.admin, p.partitions.Load(), changelogTopicConfig, p.cfg.Topics.State); err != nil {
		return err
	}
	outputs := []string{p.cfg.Topics.Events, p.cfg.Topics.Decisions, p.cfg.Topics.Outcomes, p.cfg.Topics.DLQ,
		p.cfg.Topics.Suppressions, p.cfg.Topics.ShadowDecisions, p.cfg.Topics.State}
	limit, err := readMessageLimit(ctx, p.admin, outputs...)
	if err != nil {
		limit = defaultMessageLimit
		p.log.Warn("cannot read the brokers' message size limits; assuming Kafka's default", "bytes", limit, "err", err)
	}
	p.messageLimit = limit
	p.log.Info("output record limit", "bytes", limit)
	p.setUpOnce.Do(func() { close(p.setUp) })
	lagCtx, stopLag := context.WithCancel(ctx)
	var lagDone sync.WaitGroup
	lagDone.Go(func() { p.pollEndOffsets(lagCtx) })
	lagDone.Go(func() { p.reconcileStandbys(lagCtx) })
	defer func() {
		stopLag()
		lagDone.Wait()
	}()

	var runErr error
loop:
	for {
		fetches := p.consumer.PollRecords(pollCtx, 20_000)
		select {
		case runErr = <-p.errc:
			break loop
		default:
		}
		if ctx.Err() != nil || fetches.IsClientClosed() {
			break loop
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if errors.Is(err, kerr.InvalidSessionTimeout) {
				// The group would refuse every join: say why instead of
				// retrying for ever.
				p.fail(fmt.Errorf("the group coordinator refuses the session timeout %s (CARTLIFT_SESSION_TIMEOUT): "+
					"it must lie within the brokers' group.min.session.timeout.ms and group.max.session.timeout.ms (6s and 30m by default): %w",
					p.cfg.SessionTimeout, err))
				return
			}
			if !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if ftp.Err != nil {
				return
			}
			w := p.workerFor(ftp.Partition)
			if w == nil {
				return
			}
			select {
			case w.in <- fetched{records: ftp.Records, end: ftp.LastStableOffset}:
			case <-w.done:
			}
		})
		p.consumer.AllowRebalance()
	}
	p.stopWorkers(slices.Collect(maps.Keys(p.snapshotWorkers())))
	// Commit the group offsets the workers marked, for lag monitoring.
	cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_ = p.consumer.CommitMarkedOffsets(cctx)
	cancel()
	p.consumer.CloseAllowingRebalance()
	return runErr
}

// Close flushes the producer and closes the store. Call it after Run.
func (p *Processor) Close() error {
	p.admin.Close()
	return p.db.Close()
}

func (p *Processor) workerFor(part int32) *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers[part]
}

func (p *Processor) snapshotWorkers() map[int32]*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.workers)
}

func (p *Processor) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	<-p.setUp
	if p.messageLimit == 0 {
		return
	}
	p.standbyMu.Lock()
	defer p.standbyMu.Unlock()
	for _, part := range assigned[p.cfg.Topics.Events] {
		p.stopStandby(part) // the worker takes the copy over
		w, err := newWorker(p, part)
		if err != nil {
			p.fail(err)
			continue
		}
		p.mu.Lock()
		p.workers[part] = w
		p.mu.Unlock()
		w.start()
	}
	p.log.Info("partitions assigned", "partitions", assigned[p.cfg.Topics.Events])
}

func (p *Processor) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	p.stopWorkers(revoked[p.cfg.Topics.Events])
	p.wakeStandbys() // a revoked partition may be one to keep a copy of
	if len(revoked[p.cfg.Topics.Events]) > 0 {
		p.log.Info("partitions revoked", "partitions", revoked[p.cfg.Topics.Events])
	}
}

func (p *Processor) stopWorkers(parts []int32) {
	var wg sync.WaitGroup
	for _, part := range parts {
		p.mu.Lock()
		w := p.workers[part]
		delete(p.workers, part)
		p.mu.Unlock()
		if w != nil {
			wg.Go(w.stop)
		}
	}
	wg.Wait()
}

// adjustOffsets replaces the group's committed offsets with the offsets in
// the store: the state is only consistent with its own offset. A partition
// without local state starts from its earliest offset, to rebuild it.
func (p *Processor) adjustOffsets(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, parts := range offsets {
		if topic != p.cfg.Topics.Events {
			continue
		}
		for part := range parts {
			meta, err := loadMeta(p.db, part, nil)
			if err != nil {
				return nil, err
			}
			if meta.NextOffset < 0 {
				parts[part] = kgo.NewOffset().AtStart()
			} else {
				parts[part] = kgo.NewOffset().At(meta.NextOffset)
			}
		}
	}
	return offsets, nil
}

// pollEndOffsets tells every worker its partition's end offset, so that a
// partition with nothing new to fetch learns it has caught up and its
// timers fire on the wall clock.
func (p *Processor) pollEndOffsets(ctx context.Context) {
	t := time.NewTicker(p.cfg.LagPoll)
	defer t.Stop()
	for {
		ws := p.snapshotWorkers()
		if len(ws) > 0 {
			ends, err := ListEndOffsets(ctx, p.admin, p.cfg.Topics.Events, slices.Collect(maps.Keys(ws)))
			if err != nil && ctx.Err() == nil {
				p.log.Debug("listing end offsets", "err", err)
			}
			for part, end := range ends {
				if w := ws[part]; w != nil {
					w.setEnd(end)
				}
			}
			p.commitResumedOffsets(ctx, ws)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// commitResumedOffsets commits, for lag monitoring, the store's offset of
// partitions that resumed with nothing new to consume: franz-go commits
// marks only for partitions it has polled records from.
func (p *Processor) commitResumedOffsets(ctx context.Context, ws map[int32]*worker) {
	offsets := map[int32]kgo.EpochOffset{}
	for part, w := range ws {
		if n := w.next.Load(); n > 0 && !w.groupSynced.Load() && w.caughtUp.Load() {
			offsets[part] = kgo.EpochOffset{Epoch: -1, Offset: n}
		}
	}
	if len(offsets) == 0 {
		return
	}
	p.consumer.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{p.cfg.Topics.Events: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				return
			}
			for _, t := range resp.Topics {
				for _, rp := range t.Partitions {
					if w := ws[rp.Partition]; w != nil && rp.ErrorCode == 0 {
						w.groupSynced.Store(true)
					}
				}
			}
		})
}

// ListEndOffsets returns the last stable offsets of the given partitions.
func ListEndOffsets(ctx context.Context, cl *kgo.Client, topic string, parts []int32) (map[int32]int64, error) {
	return listOffsets(ctx, cl, topic, parts, -1)
}

// ListStartOffsets returns the partitions' earliest offsets (log start).
func ListStartOffsets(ctx context.Context, cl *kgo.Client, topic string, parts []int32) (map[int32]int64, error) {
	return listOffsets(ctx, cl, topic, parts, -2)
}

// listOffsets lists offsets at a timestamp: -1 the last stable offset, -2
// the earliest.
func listOffsets(ctx context.Context, cl *kgo.Client, topic string, parts []int32, timestamp int64) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = 1 // read committed: the last stable offset
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, part := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = part
		rp.Timestamp = timestamp
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	out := make(map[int32]int64, len(parts))
	var firstErr error
	for _, shard := range cl.RequestSharded(ctx, req) {
		if shard.Err != nil {
			firstErr = shard.Err
			continue
		}
		resp := shard.Resp.(*kmsg.ListOffsetsResponse)
		for _, t := range resp.Topics {
			for _, rp := range t.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					firstErr = err
					continue
				}
				out[rp.Partition] = rp.Offset
			}
		}
	}
	return out, firstErr
}

// EnsureTopics creates the topics that do not exist yet, with the given
// number of partitions and the brokers' default replication.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, topics ...string) error {
	return EnsureTopicsWith(ctx, cl, partitions, nil, topics...)
}

// EnsureTopicsWith is EnsureTopics with topic configs for the topics it
// creates (an existing topic keeps its own).
func EnsureTopicsWith(ctx context.Context, cl *kgo.Client, partitions int32, configs map[string]string, topics ...string) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10_000
	for _, t := range topics {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic = t
		rt.NumPartitions = partitions
		rt.ReplicationFactor = -1
		for k, v := range configs {
			c := kmsg.NewCreateTopicsRequestTopicConfig()
			c.Name, c.Value = k, kmsg.StringPtr(v)
			rt.Configs = append(rt.Configs, c)
		}
		req.Topics = append(req.Topics, rt)
	}
	var resp *kmsg.CreateTopicsResponse
	var err error
	for attempt := 0; ; attempt++ {
		resp, err = req.RequestWith(ctx, cl)
		if err == nil || attempt == 20 || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", t.Topic, err)
		}
	}
	return nil
}

// Stats is a snapshot of what the processor did since it started, and of
// the partitions it owns now.
type Stats struct {
	EventsConsumed   int64 // input records processed (valid or not)
	EventsRejected   int64 // records sent to the DLQ
	EventsSkipped    int64 // records of unknown types
	EventsDuplicate  int64 // repeats (same source and id) dropped
	DecisionsMade    int64 // decisions committed to the outbox
	OutcomesMade     int64
	DecisionsEmitted int64 // decisions acknowledged by the brokers
	OutcomesEmitted  int64
	DeadLettered     int64 // DLQ records acknowledged by the brokers
	OutputReduced    int64 // output records refused for good, sent as reduced dead letters
	OutputDropped    int64 // reduced dead letters refused too, dropped
	// Restoring counts partitions being restored from the changelog;
	// RestoredCustomers the customer states restored since the start.
	Restoring         int
	RestoredCustomers int64
	// StandbyPartitions counts the standby copies this instance keeps,
	// StandbyWarm those built and following the changelog, and
	// StandbyLag the changelog records they are behind in all.
	StandbyPartitions, StandbyWarm int
	StandbyLag                     int64
	// LocalPartitions counts the partitions the store holds data of:
	// owned, standby copies, and copies kept for CleanupDelay, as of the
	// last second.
	LocalPartitions int
	// Takeovers counts the partitions this instance took over since its
	// start, by where their state came from.
	Takeovers map[TakeoverSource]int64
	// ChangelogLag counts the outbox entries (outputs and changelog
	// records) of assigned partitions committed to the store and not yet
	// to Kafka.
	ChangelogLag int64
	TimersFired  int64
	// DecisionsSuppressed counts steps a guard stopped (consent, caps,
	// combined); DecisionsDeferred steps held for quiet hours.
	DecisionsSuppressed int64
	DecisionsDeferred   int64
	Partitions          int   // assigned partitions
	CaughtUp            int   // assigned partitions caught up with their end
	OpenCarts           int64 // in assigned partitions
	PendingTimers       int64 // in assigned partitions
	Lag                 int64 // records between the processed and the end offsets
	// Clock is the earliest effective time of the assigned partitions
	// (see projections.Advance): every timer due by then has fired and
	// been committed. Zero when no partition is assigned.
	Clock time.Time
}

// TakeoverSource is where a partition's state came from when this instance
// took it over.
type TakeoverSource int

// The sources of a taken-over partition's state.
const (
	FromLocal     TakeoverSource = iota // the instance's own store, current with the changelog
	FromStandby                         // a standby copy, caught up with the changelog
	FromChangelog                       // a restore from the changelog
	FromInput                           // nothing: a new partition, processed from the input
	numTakeoverSources
)

// TakeoverSources lists every TakeoverSource.
func TakeoverSources() []TakeoverSource {
	return []TakeoverSource{FromLocal, FromStandby, FromChangelog, FromInput}
}

// String names the source as the metrics label it.
func (s TakeoverSource) String() string {
	return [...]string{"local", "standby", "changelog", "input"}[s]
}

// Stats returns a snapshot. It is safe to call from any goroutine.
func (p *Processor) Stats() Stats {
	s := Stats{
		EventsConsumed: p.stats.eventsConsumed.Load(), EventsRejected: p.stats.eventsRejected.Load(),
		EventsSkipped: p.stats.eventsSkipped.Load(), EventsDuplicate: p.stats.eventsDuplicate.Load(), DecisionsMade: p.stats.decisionsMade.Load(),
		OutcomesMade: p.stats.outcomesMade.Load(), DecisionsEmitted: p.stats.decisionsEmitted.Load(),
		OutcomesEmitted: p.stats.outcomesEmitted.Load(), DeadLettered: p.stats.deadLettered.Load(),
		OutputReduced: p.stats.outputReduced.Load(), OutputDropped: p.stats.outputDropped.Load(),
		TimersFired: p.stats.timersFired.Load(), DecisionsSuppressed: p.stats.suppressed.Load(),
		DecisionsDeferred: p.stats.deferred.Load(), Restoring: int(p.restoring.Load()),
		RestoredCustomers: p.stats.restored.Load(), Takeovers: map[TakeoverSource]int64{},
	}
	for src := range TakeoverSource(numTakeoverSources) {
		s.Takeovers[src] = p.stats.takeovers[src].Load()
	}
	s.LocalPartitions = int(p.localPartitions.Load())
	p.mu.Lock()
	for _, t := range p.standbys {
		s.StandbyPartitions++
		if t.warm.Load() {
			s.StandbyWarm++
			if end := t.end.Load(); end >= 0 {
				s.StandbyLag += max(0, end-t.next.Load())
			}
		}
	}
	p.mu.Unlock()
	for _, w := range p.snapshotWorkers() {
		s.ChangelogLag += max(0, int64(w.outboxNext.Load())-int64(w.relay.head.Load()))
		s.Partitions++
		if w.caughtUp.Load() {
			s.CaughtUp++
		}
		s.OpenCarts += w.openCarts.Load()
		s.PendingTimers += w.timers.Load()
		if end := w.end.Load(); end >= 0 {
			s.Lag += max(0, end-w.next.Load())
		}
		var c time.Time
		if n := w.clock.Load(); n != 0 {
			c = time.Unix(0, n).UTC()
		}
		if s.Partitions == 1 || c.Before(s.Clock) {
			s.Clock = c
		}
	}
	return s
}

// DiskUsage returns the bytes the store occupies on disk (SSTables, WAL,
// manifests). Safe to call from any goroutine.
func (p *Processor) DiskUsage() uint64 {
	return p.db.Metrics().DiskSpaceUsage()
}

// StoreMemory is the memory the Pebble store holds outside the Go heap
// accounting of the state cache: its block cache and its memtables
// (flushing ones included).
func (p *Processor) StoreMemory() (blockCache, memTables int64) {
	m := p.db.Metrics()
	return m.BlockCache.Size, int64(m.MemTable.Size)
}

// StoreWrites is what the Pebble store has written since it opened: the
// bytes of its write-ahead log, of its flushes and of its compactions,
// for judging the write path's cost (write amplification).
type StoreWrites struct {
	WAL, Flushed, Compacted uint64
}

// StoreWrites returns the store's writes since it opened.
func (p *Processor) StoreWrites() StoreWrites {
	m := p.db.Metrics()
	total := m.Total()
	// Total's flushed bytes count the WAL's too: L0's are the flushes'.
	return StoreWrites{WAL: m.WAL.BytesWritten, Flushed: m.Levels[0].BytesFlushed, Compacted: total.BytesCompacted}
}

// Ready reports whether the processor owns partitions and all of them
// have caught up with the end of their log.
func (p *Processor) Ready() bool {
	s := p.Stats()
	return s.Partitions > 0 && s.CaughtUp == s.Partitions && s.Restoring == 0
}
