package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
)

// Defaults of SinkConfig.
const (
	DefaultSinkGroup     = "cartlift-analytics"
	DefaultTopicDLQ      = "cart-analytics.dlq"
	DefaultBatchRows     = 50000
	DefaultBatchInterval = time.Second
	DefaultRetryMin      = 100 * time.Millisecond
	DefaultRetryMax      = 10 * time.Second
	DefaultShutdownGrace = 10 * time.Second
)

// SinkConfig configures the analytics sink.
type SinkConfig struct {
	Brokers []string
	// Group is the consumer group; default cartlift-analytics.
	Group string
	// InstanceID, when set, makes the membership static (a restart takes
	// the partitions back without a rebalance).
	InstanceID string
	// Topics read; defaults cart-decisions, cart-outcomes and
	// cart-suppressions.
	TopicDecisions    string
	TopicOutcomes     string
	TopicSuppressions string
	// TopicShadowDecisions holds the shadow flows' decisions, for the
	// shadow_decisions table; default cart-decisions.shadow.
	TopicShadowDecisions string
	// TopicDLQ receives records that are not decisions or outcomes, with
	// the reason; default cart-analytics.dlq.
	TopicDLQ string
	// A batch is inserted when it holds BatchRows records or its first
	// record is BatchInterval old; defaults 50000 and 1s.
	BatchRows     int
	BatchInterval time.Duration
	// Failed inserts are retried after a backoff that doubles from
	// RetryMin to RetryMax (with jitter); defaults 100ms and 10s.
	RetryMin, RetryMax time.Duration
	// ShutdownGrace is how long inserts may go on after Run's context
	// ended (default 10s); what is not stored by then is read again by the
	// next run.
	ShutdownGrace time.Duration
	Logger        *slog.Logger
	// ClientOpts are extra franz-go options (TLS, SASL, ...).
	ClientOpts []kgo.Opt
}

func (c SinkConfig) withDefaults() SinkConfig {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Group, DefaultSinkGroup)
	def(&c.TopicDecisions, events.TopicDecisions)
	def(&c.TopicOutcomes, events.TopicOutcomes)
	def(&c.TopicSuppressions, events.TopicSuppressions)
	def(&c.TopicShadowDecisions, events.TopicShadowDecisions)
	def(&c.TopicDLQ, DefaultTopicDLQ)
	if c.BatchRows <= 0 {
		c.BatchRows = DefaultBatchRows
	}
	if c.BatchInterval <= 0 {
		c.BatchInterval = DefaultBatchInterval
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// SinkStats are the sink's counters since it started.
type SinkStats struct {
	// Rows inserted, per table (a retried batch counts once).
	Decisions, Outcomes, ActionResults, Suppressions int64
	// Records read from the topics and records sent to the DLQ.
	Records, DeadLettered int64
	// Erasures are the erased outcomes applied: what the customer did up
	// to the erasure was deleted from every table. ErasedDropped counts
	// the decisions and cart outcomes from before an erasure read after
	// it, and dropped.
	Erasures, ErasedDropped int64
	// Batches inserted and inserts (or erasures) that failed, each retry
	// counted.
	Batches, InsertErrors int64
	// DLQErrors counts failed produces to the dead-letter topic (each
	// retry counted); the batch waits for them as for ClickHouse.
	DLQErrors int64
	// CommitErrors counts batches stored whose offset commit failed: they
	// are read again (harmless, the rows replace themselves).
	CommitErrors int64
	// Pending records read but not yet in ClickHouse.
	Pending int
	// Lag is the consumer group's lag, all members together: the records
	// on the topics past the group's committed offsets, i.e. not yet in
	// ClickHouse. Refreshed every lagInterval (-1 until first known).
	Lag int64
	// ClickHouseUp is false from a failed insert until one succeeds.
	ClickHouseUp bool
	// LastBatch is when the last batch was inserted; LastBatchDuration
	// how long its insert took.
	LastBatch         time.Time
	LastBatchDuration time.Duration
}

// Sink moves decisions, outcomes and suppressions from Kafka into
// ClickHouse: consumer group cartlift-analytics on cart-decisions,
// cart-outcomes and cart-suppressions, batches by
// size and by time, offsets committed only after ClickHouse accepted the
// batch. While ClickHouse is down it holds its position and retries: no
// new records are polled, so memory stays bounded by two batches (plus the
// client's buffered fetch and the erasures table's key hashes). Delivery is at least once; the tables'
// deterministic ids make a repeat harmless (see Migrate).
type Sink struct {
	cfg  SinkConfig
	conn driver.Conn
	cl   *kgo.Client
	adm  *kadm.Client
	log  *slog.Logger

	mu              sync.Mutex
	stats           SinkStats
	inflightRecords int // records of the batch being inserted (under mu)

	// erased is the erasures table in memory (owned by Run's goroutine):
	// decisions and cart outcomes of an erased customer from before the
	// erasure are dropped when they arrive after it (the topics are read
	// independently, by several members, and may be replayed).
	erased       erasedKeys
	erasedLoaded time.Time
}

// erasuresRefresh is how often the sink reloads the erasures table, which
// other members also write.
const erasuresRefresh = 5 * time.Minute

// batch is the records of one insert: their rows per table, the dead
// letters, and the last record of each partition (what to commit).
type batch struct {
	rows    rows
	last    map[topicPartition]*kgo.Record
	dlq     []*kgo.Record
	records int
	start   time.Time // when its first record arrived
}

func newBatch() *batch { return &batch{last: map[topicPartition]*kgo.Record{}} }

// reuse empties b for the next batch, keeping its columns' capacity.
func (b *batch) reuse() *batch {
	b.rows.reset()
	clear(b.last)
	b.dlq, b.records, b.start = nil, 0, time.Time{}
	return b
}

type topicPartition struct {
	topic     string
	partition int32
}

// NewSink creates the sink's Kafka client. conn must be migrated.
func NewSink(cfg SinkConfig, conn driver.Conn) (*Sink, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("analytics sink: no brokers")
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.TopicDecisions, cfg.TopicOutcomes, cfg.TopicSuppressions, cfg.TopicShadowDecisions),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// A rebalance waits until the batch in hand is in ClickHouse and
		// committed, so no partition changes owner with records in flight.
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(32 << 20),
		kgo.ClientID("cartlift-analytics"),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	cl, err := kgo.NewClient(append(opts, cfg.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("analytics sink: %w", err)
	}
	return &Sink{cfg: cfg, conn: conn, cl: cl, adm: kadm.NewClient(cl), log: cfg.Logger,
		stats: SinkStats{ClickHouseUp: true, Lag: -1}, erased: erasedKeys{}}, nil
}

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// commitTimeout bounds one offset commit.
const commitTimeout = 2 * time.Second

// lagInterval is how often the sink asks the brokers for its group's lag.
const lagInterval = 2 * time.Second

// watchLag keeps Stats().Lag current until ctx ends. It asks the group
// coordinator (end offsets minus committed offsets), so the figure is the
// same from every member and keeps growing while the sink holds during an
// outage.
func (s *Sink) watchLag(ctx context.Context) {
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, lagInterval)
		lags, err := s.adm.Lag(lctx, s.cfg.Group)
		cancel()
		if err == nil {
			// A group that has not formed yet is "Dead" with no error:
			// its lag stays unknown.
			if l, ok := lags[s.cfg.Group]; ok && l.Error() == nil && l.State != "Dead" {
				s.mu.Lock()
				s.stats.Lag = l.Lag.Total()
				s.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close leaves the group and closes the Kafka client. Call it after Run
// returned.
func (s *Sink) Close() { s.cl.Close() }

// rebalanceEvery bounds how long a rebalance waits under a steady stream:
// the sink lets one through at least this often (see Run).
const rebalanceEvery = 5 * time.Second

// Run consumes until ctx is cancelled. One batch is inserted while the
// next is read and decoded (decoding and ClickHouse's work overlap); the
// next insert starts only when the previous one is committed, so offsets
// are committed in order and at most two batches are in memory. A
// rebalance waits until nothing is pending (at most rebalanceEvery), so no
// partition changes owner with records in flight.
//
// On cancellation it stops reading and gives the insert in flight and the
// batch in hand SinkConfig.ShutdownGrace to be stored and committed; what is
// not stored by then is not committed either, and the next run reads it
// again. It returns ctx's error: ClickHouse failures are retried, never
// fatal.
func (s *Sink) Run(ctx context.Context) error {
	defer s.cl.AllowRebalance()
	s.ensureDLQ(ctx)
	if err := s.loadErasures(ctx, true); err != nil {
		return err
	}
	lagDone := make(chan struct{})
	defer func() { <-lagDone }()
	go func() { defer close(lagDone); s.watchLag(ctx) }()
	// Inserts outlive ctx by the grace period, so a shutdown does not cut
	// an insert that is about to succeed.
	flushCtx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlush()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(s.cfg.ShutdownGrace, cancelFlush) })
	defer stopGrace()

	cur, spare := newBatch(), newBatch()
	var inflight chan error // the result of the insert in flight; nil when none
	var flushing *batch     // the batch in flight
	// wait collects the insert in flight. Its error means it was given up
	// (shutdown grace over): nothing after it may be committed then, so
	// Run returns at once.
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		if err == nil {
			spare = flushing.reuse()
		}
		return err
	}
	given := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	lastAllowed := time.Now()
	for {
		if ctx.Err() != nil {
			// The batch in hand only after the one in flight: committing
			// its offsets would skip the other's records.
			if err := wait(); err != nil {
				return given(err)
			}
			if cur.records > 0 {
				_ = s.flush(flushCtx, cur)
			}
			return ctx.Err()
		}
		if time.Since(s.erasedLoaded) > erasuresRefresh {
			_ = s.loadErasures(ctx, false) // a failure keeps the current set; the next round retries
		}
		pollCtx, cancel := s.pollContext(ctx, cur)
		fetches := s.cl.PollRecords(pollCtx, s.cfg.BatchRows-cur.records)
		cancel()
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.log.Warn("analytics: fetch", "topic", topic, "partition", p, "err", err)
			}
		})
		s.take(fetches, cur)
		if inflight != nil && len(inflight) > 0 { // finished: collect it, so an idle sink lets rebalances through
			if err := wait(); err != nil {
				return given(err)
			}
		}
		due := cur.records >= s.cfg.BatchRows || (cur.records > 0 && time.Since(cur.start) >= s.cfg.BatchInterval)
		starved := cur.records > 0 && time.Since(lastAllowed) >= rebalanceEvery
		if due || starved {
			if err := wait(); err != nil {
				return given(err)
			}
			flushing, cur, spare = cur, spare, newBatch()
			s.setInflight(flushing.records)
			inflight = make(chan error, 1)
			go func(b *batch) { inflight <- s.flush(flushCtx, b) }(flushing)
			if starved {
				if err := wait(); err != nil {
					return given(err)
				}
			}
		}
		if cur.records == 0 && inflight == nil {
			s.cl.AllowRebalance()
			lastAllowed = time.Now()
		}
	}
}

func (s *Sink) setInflight(n int) {
	s.mu.Lock()
	s.inflightRecords = n
	s.stats.Pending = n
	s.mu.Unlock()
}

// pollContext bounds a poll by the batch's deadline, so a partial batch is
// inserted on time even when no more records come.
func (s *Sink) pollContext(ctx context.Context, b *batch) (context.Context, context.CancelFunc) {
	if b.records == 0 {
		return context.WithTimeout(ctx, s.cfg.BatchInterval)
	}
	return context.WithDeadline(ctx, b.start.Add(s.cfg.BatchInterval))
}

// take adds the fetched records to the batch b.
func (s *Sink) take(fetches kgo.Fetches, b *batch) {
	n, dropped := 0, 0
	fetches.EachRecord(func(r *kgo.Record) {
		if b.records == 0 {
			b.start = time.Now()
		}
		b.records++
		n++
		b.last[topicPartition{r.Topic, r.Partition}] = r
		gone, err := b.rows.add(r.Value, s.erased)
		if err != nil {
			b.dlq = append(b.dlq, deadLetter(s.cfg.TopicDLQ, r, err))
		}
		if gone {
			dropped++
		}
	})
	s.mu.Lock()
	s.stats.Records += int64(n)
	s.stats.ErasedDropped += int64(dropped)
	s.stats.Pending = s.inflightRecords + b.records
	s.mu.Unlock()
}

// flush inserts the batch, retrying with backoff until ClickHouse accepts
// it or ctx is cancelled, then sends the dead letters and commits the
// batch's offsets. On an error (ctx cancelled) nothing is committed.
func (s *Sink) flush(ctx context.Context, b *batch) error {
	insertedAt := time.Now().UTC()
	tables := []struct {
		name string
		n    int
		cols func(time.Time) []column
		done bool
	}{
		{"decisions", b.rows.decisions.len(), b.rows.decisions.columns, false},
		{"shadow_decisions", b.rows.shadow.len(), b.rows.shadow.columns, false},
		{"outcomes", b.rows.outcomes.len(), b.rows.outcomes.columns, false},
		{"action_results", b.rows.actions.len(), b.rows.actions.columns, false},
		{"suppressions", b.rows.suppressions.len(), b.rows.suppressions.columns, false},
	}
	backoff := s.cfg.RetryMin
	erasedDone := false
	for attempt := 1; ; attempt++ {
		start := time.Now()
		var err error
		for i := range tables {
			t := &tables[i]
			if t.done || t.n == 0 {
				continue
			}
			if err = insert(ctx, s.conn, t.name, t.cols(insertedAt)); err != nil {
				err = fmt.Errorf("insert %d rows into %s: %w", t.n, t.name, err)
				break
			}
			t.done = true // a retry does not insert this table's rows again
		}
		if err == nil && len(b.rows.erased) > 0 && !erasedDone {
			if err = erase(ctx, s.conn, b.rows.erased); err == nil {
				erasedDone = true
			}
		}
		clickhouseOK := err == nil
		if err == nil && len(b.dlq) > 0 {
			if err = s.cl.ProduceSync(ctx, b.dlq...).FirstErr(); err != nil {
				err = fmt.Errorf("dead-letter %d records to %s: %w", len(b.dlq), s.cfg.TopicDLQ, err)
			}
		}
		if err == nil {
			s.commit(ctx, b, time.Since(start))
			return nil
		}
		s.mu.Lock()
		wasUp := s.stats.ClickHouseUp
		if clickhouseOK {
			s.stats.DLQErrors++
		} else {
			s.stats.InsertErrors++
			s.stats.ClickHouseUp = false
		}
		s.mu.Unlock()
		if wasUp || attempt%10 == 0 {
			what := "batch not stored in ClickHouse"
			if clickhouseOK {
				what = "batch stored, but its dead letters could not be produced"
			}
			s.log.Warn("analytics: "+what+"; holding position and retrying", "records", b.records,
				"attempt", attempt, "retry_in", backoff, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// commit commits the batch's offsets and counts it. A failed commit (the
// group moved on, say) is logged: the records are read again and their
// rows replace themselves.
func (s *Sink) commit(ctx context.Context, b *batch, took time.Duration) {
	recs := make([]*kgo.Record, 0, len(b.last))
	for _, r := range b.last {
		recs = append(recs, r)
	}
	// Bounded: a commit that meets a rebalance is refused (and retried by
	// the client) while the rebalance waits for it; giving up soon lets the
	// rebalance finish, and the records are read again by their new owner.
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	commitErr := s.cl.CommitRecords(cctx, recs...)
	if commitErr != nil {
		s.log.Warn("analytics: commit after insert failed; the batch will be read again", "err", commitErr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if commitErr != nil {
		s.stats.CommitErrors++
	}
	if !s.stats.ClickHouseUp {
		s.log.Info("analytics: ClickHouse accepts inserts again")
	}
	s.stats.Decisions += int64(b.rows.decisions.len())
	s.stats.Outcomes += int64(b.rows.outcomes.len())
	s.stats.ActionResults += int64(b.rows.actions.len())
	s.stats.Suppressions += int64(b.rows.suppressions.len())
	s.stats.DeadLettered += int64(len(b.dlq))
	s.stats.Erasures += int64(len(b.rows.erased))
	s.stats.Batches++
	s.stats.Pending -= b.records
	s.inflightRecords = 0
	s.stats.ClickHouseUp = true
	s.stats.LastBatch = time.Now()
	s.stats.LastBatchDuration = took
}

// loadErasures reads the erasures table into s.erased. With wait it
// retries with backoff until it succeeds or ctx ends: the sink must not
// read before it knows who was erased.
func (s *Sink) loadErasures(ctx context.Context, wait bool) error {
	backoff := s.cfg.RetryMin
	for {
		erased, err := readErasures(ctx, s.conn)
		if err == nil {
			s.erased, s.erasedLoaded = erased, time.Now()
			return nil
		}
		if !wait {
			return err
		}
		s.log.Warn("analytics: cannot read the erasures table; retrying", "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

func readErasures(ctx context.Context, conn driver.Conn) (erasedKeys, error) {
	rows, err := conn.Query(ctx, "SELECT key_hash, max(erased_at) FROM erasures GROUP BY key_hash")
	if err != nil {
		return nil, fmt.Errorf("read erasures: %w", err)
	}
	defer rows.Close()
	erased := erasedKeys{}
	for rows.Next() {
		var h uint64
		var at time.Time
		if err := rows.Scan(&h, &at); err != nil {
			return nil, fmt.Errorf("read erasures: %w", err)
		}
		erased[h] = at.UTC()
	}
	return erased, rows.Err()
}

// erasureChunk bounds the erasures of one statement.
const erasureChunk = 200

// erase applies a batch's erasures: it records them in the erasures table,
// then deletes what each customer did up to the erasure: the action
// results of those decisions, the decisions, the cart outcomes. Each is an
// ALTER TABLE … DELETE mutation, which ClickHouse applies in the background
// to the parts that exist when it is issued, so it covers rows the same
// batch just inserted; later arrivals are dropped by the sink (see add).
// A repeat (a retry, a replay) deletes nothing new and keeps what the
// customer did after the erasure.
func erase(ctx context.Context, conn driver.Conn, erasures []erasure) error {
	now := time.Now().UTC()
	cols := []column{{"key_hash", make([]uint64, len(erasures))}, {"erased_at", make([]time.Time, len(erasures))},
		{"inserted_at", repeatTime(now, len(erasures))}}
	for i, e := range erasures {
		cols[0].values.([]uint64)[i] = KeyHash(e.key)
		cols[1].values.([]time.Time)[i] = e.at
	}
	if err := insert(ctx, conn, "erasures", cols); err != nil {
		return fmt.Errorf("record %d erasures: %w", len(erasures), err)
	}
	for len(erasures) > 0 {
		chunk := erasures[:min(len(erasures), erasureChunk)]
		erasures = erasures[len(chunk):]
		decided, decidedArgs := erasedBefore(chunk, "decided_at")
		ids, err := decisionIDs(ctx, conn, decided, decidedArgs)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			if err := conn.Exec(ctx, "ALTER TABLE action_results DELETE WHERE has(?, decision_id)", ids); err != nil {
				return fmt.Errorf("erase from action_results: %w", err)
			}
		}
		if err := conn.Exec(ctx, "ALTER TABLE decisions DELETE WHERE "+decided, decidedArgs...); err != nil {
			return fmt.Errorf("erase from decisions: %w", err)
		}
		if err := conn.Exec(ctx, "ALTER TABLE shadow_decisions DELETE WHERE "+decided, decidedArgs...); err != nil {
			return fmt.Errorf("erase from shadow_decisions: %w", err)
		}
		at, atArgs := erasedBefore(chunk, "at")
		if err := conn.Exec(ctx, "ALTER TABLE outcomes DELETE WHERE "+at, atArgs...); err != nil {
			return fmt.Errorf("erase from outcomes: %w", err)
		}
		if err := conn.Exec(ctx, "ALTER TABLE suppressions DELETE WHERE "+at, atArgs...); err != nil {
			return fmt.Errorf("erase from suppressions: %w", err)
		}
	}
	return nil
}

// erasedBefore is the condition "a row of an erased customer from up to
// its erasure", timed by the column, with its arguments.
func erasedBefore(erasures []erasure, column string) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, 2*len(erasures))
	for i, e := range erasures {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(customer_key = ? AND " + column + " <= ?)")
		args = append(args, e.key, e.at)
	}
	return b.String(), args
}

func decisionIDs(ctx context.Context, conn driver.Conn, where string, args []any) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT id FROM decisions WHERE "+where, args...)
	if err != nil {
		return nil, fmt.Errorf("erase: the decisions to delete: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// ensureDLQ creates the dead-letter topic when it is missing (one
// partition, the broker's replication); failures are logged and show
// again, with the reason, when a dead letter cannot be produced.
func (s *Sink) ensureDLQ(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := s.adm.CreateTopic(ctx, 1, -1, nil, s.cfg.TopicDLQ)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		s.log.Warn("analytics: creating the dead-letter topic", "topic", s.cfg.TopicDLQ, "err", err)
	}
}

// insert sends one table's columns as one native-protocol batch. The
// column list is explicit (ClickHouse 18.16 needs it).
func insert(ctx context.Context, conn driver.Conn, table string, cols []column) error {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+strings.Join(names, ", ")+")")
	if err != nil {
		return err
	}
	for i, c := range cols {
		if err := b.Column(i).Append(c.values); err != nil {
			_ = b.Abort()
			return fmt.Errorf("column %s: %w", c.name, err)
		}
	}
	return b.Send()
}

// deadLetter is the DLQ record of r, which could not become a row: the
// original key, value and headers, the reason (a *RecordError's, else
// ReasonInvalid), the error and the source.
func deadLetter(topic string, r *kgo.Record, cause error) *kgo.Record {
	reason := ReasonInvalid
	var re *RecordError
	if errors.As(cause, &re) {
		reason = re.Reason
	}
	rec := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value}
	rec.Headers = append(rec.Headers, r.Headers...)
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: events.HeaderErrorReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: events.HeaderError, Value: []byte(cause.Error())},
		kgo.RecordHeader{Key: events.HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: events.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: events.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	return rec
}

// jitter spreads d over [d/2, d].
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(d-half+1)
}
