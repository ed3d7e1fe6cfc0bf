package main

// The Emporix adapter of `cartlift run`: POST /v1/adapters/emporix takes
// Emporix's Svix-signed webhook deliveries, and events/emporix translates
// them into v1 events on cart-events. Item events name only the cart; the
// owner comes from the cart's last snapshot, kept in a compacted topic
// (CARTLIFT_EMPORIX_TOPIC) that every instance reads whole into memory.
// Item events of carts without a known owner wait in the same topic until
// a snapshot arrives, or go to the dead-letter topic after
// CARTLIFT_EMPORIX_PENDING_MAX_AGE. See the README's "Emporix" section.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/events/emporix"
	"github.com/cartlift/cartlift/internal/refusal"
	"github.com/cartlift/cartlift/processor"
)

// emporixConfig configures the Emporix adapter of cartlift run. Without a
// secret the adapter is off.
type emporixConfig struct {
	// Secret is the Svix endpoint's signing secret (whsec_...).
	Secret string `env:"CARTLIFT_EMPORIX_WEBHOOK_SECRET"`
	// Tolerance is how far svix-timestamp may be from the clock.
	Tolerance time.Duration `env:"CARTLIFT_EMPORIX_TOLERANCE, default=5m"`
	// Topic holds the carts' owners and the waiting item events (compacted).
	Topic string `env:"CARTLIFT_EMPORIX_TOPIC, default=cart-emporix"`
	// PendingMaxAge is how long an item event waits for its cart's snapshot.
	PendingMaxAge time.Duration `env:"CARTLIFT_EMPORIX_PENDING_MAX_AGE, default=1h"`
	// PendingMax bounds the waiting item events; beyond, they are
	// dead-lettered at once.
	PendingMax int `env:"CARTLIFT_EMPORIX_PENDING_MAX, default=10000"`
	// ClosedRetention is how long the owner of a closed cart is kept (an
	// order.created may follow the cart.closed).
	ClosedRetention time.Duration `env:"CARTLIFT_EMPORIX_CLOSED_RETENTION, default=24h"`
}

func (c *emporixConfig) enabled() bool { return c.Secret != "" }

func (c *emporixConfig) validate() error {
	if c.Secret != "" {
		if _, err := emporix.NewVerifier(c.Secret, c.Tolerance); err != nil {
			return configError("CARTLIFT_EMPORIX_WEBHOOK_SECRET", "%v", err) // names no part of the secret
		}
	}
	if c.Tolerance < time.Second || c.Tolerance > time.Hour {
		return configError("CARTLIFT_EMPORIX_TOLERANCE", "must be between 1s and 1h, got %s", c.Tolerance)
	}
	if c.PendingMaxAge < time.Second || c.PendingMaxAge > 7*24*time.Hour {
		return configError("CARTLIFT_EMPORIX_PENDING_MAX_AGE", "must be between 1s and 168h, got %s", c.PendingMaxAge)
	}
	if c.PendingMax < 1 || c.PendingMax > 1_000_000 {
		return configError("CARTLIFT_EMPORIX_PENDING_MAX", "must be between 1 and 1000000, got %d", c.PendingMax)
	}
	if c.ClosedRetention < time.Minute || c.ClosedRetention > 30*24*time.Hour {
		return configError("CARTLIFT_EMPORIX_CLOSED_RETENTION", "must be between 1m and 720h, got %s", c.ClosedRetention)
	}
	return nil
}

// Dead-letter reasons of the adapter (header cartlift-error-reason on
// cart-events.dlq).
const (
	reasonEmporixUnknownCart = "emporix_unknown_cart"
	reasonEmporixPendingFull = "emporix_pending_full"
	reasonEmporixInvalid     = "emporix_invalid"
)

// emporixRoute is the adapter's route on the API's server.
const emporixRoute = "POST /v1/adapters/emporix"

// Keys of the adapter's topic.
const (
	ownerPrefix   = "owner\x00"   // + cart id: emporix.Owner
	pendingPrefix = "pending\x00" // + cart id + \x00 + svix id: pendingDelivery
)

// pendingDelivery is an item event waiting for its cart's owner.
type pendingDelivery struct {
	ID       string          `json:"id"`
	CartID   string          `json:"cart_id"`
	Time     time.Time       `json:"time"`
	Received time.Time       `json:"received"`
	TypeHint string          `json:"type_hint,omitempty"`
	Body     json.RawMessage `json:"body"`
}

// emporixAdapter is the adapter of one instance.
type emporixAdapter struct {
	cfg         emporixConfig
	verifier    *emporix.Verifier
	log         *slog.Logger
	eventsTopic string
	dlqTopic    string
	maxBody     int64
	// owns reports whether this instance handles a customer key's
	// partition: only it resolves and dead-letters waiting deliveries.
	owns  func(key string) bool
	clock func() time.Time

	producer *kgo.Client // transactional; txnMu serializes its transactions
	txnMu    sync.Mutex
	consumer *kgo.Client

	mu         sync.Mutex
	owners     map[string]emporix.Owner
	byCustomer map[string]map[string]struct{}
	pending    map[string]map[string]pendingDelivery // cart id -> svix id
	npending   int
	kick       chan struct{}

	stop chan struct{}
	done sync.WaitGroup
}

// startEmporixAdapter creates the topic when missing, starts reading it
// and starts the loop that resolves waiting deliveries.
func startEmporixAdapter(ctx context.Context, cfg emporixConfig, brokers []string, transactionalID string, partitions int32,
	eventsTopic, dlqTopic string, maxBody int64, owns func(string) bool, log *slog.Logger) (*emporixAdapter, error) {
	v, err := emporix.NewVerifier(cfg.Secret, cfg.Tolerance)
	if err != nil {
		return nil, configError("CARTLIFT_EMPORIX_WEBHOOK_SECRET", "%v", err)
	}
	a := &emporixAdapter{cfg: cfg, verifier: v, log: log, eventsTopic: eventsTopic, dlqTopic: dlqTopic, maxBody: maxBody,
		owns: owns, clock: time.Now, owners: map[string]emporix.Owner{}, byCustomer: map[string]map[string]struct{}{},
		pending: map[string]map[string]pendingDelivery{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	err = processor.EnsureTopicsWith(ctx, admin, partitions, map[string]string{"cleanup.policy": "compact"}, cfg.Topic)
	admin.Close()
	if err != nil {
		return nil, fmt.Errorf("CARTLIFT_EMPORIX_TOPIC: %w", err)
	}
	if a.producer, err = processor.NewTxnProducer(brokers, transactionalID); err != nil {
		return nil, err
	}
	a.consumer, err = kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		a.producer.Close()
		return nil, err
	}
	a.done.Add(2)
	go a.read()
	go a.resolveLoop()
	return a, nil
}

// close stops the adapter's loops and clients.
func (a *emporixAdapter) close() {
	close(a.stop)
	a.consumer.Close() // ends the blocked poll
	a.done.Wait()
	a.producer.Close()
}

// --- the view -------------------------------------------------------------

// Owner implements emporix.View.
func (a *emporixAdapter) Owner(cartID string) (emporix.Owner, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.owners[cartID]
	return o, ok
}

// LatestShoppingCart implements emporix.View.
func (a *emporixAdapter) LatestShoppingCart(customerID string) (emporix.Owner, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best emporix.Owner
	found := false
	for id := range a.byCustomer[customerID] {
		o := a.owners[id]
		if o.Shopping() && (!found || o.ModifiedAt.After(best.ModifiedAt) || (o.ModifiedAt.Equal(best.ModifiedAt) && o.CartID < best.CartID)) {
			best, found = o, true
		}
	}
	return best, found
}

// setOwner records an owner in the view (nil: the cart's owner is gone)
// and reports whether deliveries wait for that cart.
func (a *emporixAdapter) setOwner(cartID string, o *emporix.Owner) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old, ok := a.owners[cartID]; ok && old.CustomerID != "" {
		delete(a.byCustomer[old.CustomerID], cartID)
		if len(a.byCustomer[old.CustomerID]) == 0 {
			delete(a.byCustomer, old.CustomerID)
		}
	}
	if o == nil {
		delete(a.owners, cartID)
		return false
	}
	a.owners[cartID] = *o
	if o.CustomerID != "" {
		if a.byCustomer[o.CustomerID] == nil {
			a.byCustomer[o.CustomerID] = map[string]struct{}{}
		}
		a.byCustomer[o.CustomerID][cartID] = struct{}{}
	}
	return len(a.pending[cartID]) > 0
}

func (a *emporixAdapter) setPending(cartID, id string, p *pendingDelivery) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.pending[cartID]
	_, had := m[id]
	switch {
	case p == nil && had:
		delete(m, id)
		a.npending--
		if len(m) == 0 {
			delete(a.pending, cartID)
		}
	case p != nil:
		if m == nil {
			m = map[string]pendingDelivery{}
			a.pending[cartID] = m
		}
		m[id] = *p
		if !had {
			a.npending++
		}
	}
}

func (a *emporixAdapter) pendingCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.npending
}

func (a *emporixAdapter) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// read applies the topic to the view, from its start, for good.
func (a *emporixAdapter) read() {
	defer a.done.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-a.stop; cancel() }()
	for {
		fs := a.consumer.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			a.log.Warn("reading the Emporix topic", "partition", p, "err", err)
		})
		fs.EachRecord(a.apply)
		a.wake()
	}
}

// apply applies one record of the topic to the view.
func (a *emporixAdapter) apply(r *kgo.Record) {
	k := string(r.Key)
	switch {
	case strings.HasPrefix(k, ownerPrefix):
		cart := k[len(ownerPrefix):]
		if r.Value == nil {
			a.setOwner(cart, nil)
			return
		}
		var o emporix.Owner
		if err := json.Unmarshal(r.Value, &o); err != nil {
			a.log.Warn("an unreadable owner record in the Emporix topic", "partition", r.Partition, "offset", r.Offset)
			return
		}
		a.setOwner(cart, &o)
	case strings.HasPrefix(k, pendingPrefix):
		cart, id, ok := strings.Cut(k[len(pendingPrefix):], "\x00")
		if !ok {
			return
		}
		if r.Value == nil {
			a.setPending(cart, id, nil)
			return
		}
		var p pendingDelivery
		if err := json.Unmarshal(r.Value, &p); err != nil {
			a.log.Warn("an unreadable waiting delivery in the Emporix topic", "partition", r.Partition, "offset", r.Offset)
			return
		}
		a.setPending(cart, id, &p)
	}
}

// --- the webhook ----------------------------------------------------------

// emporixResponse answers an accepted delivery.
type emporixResponse struct {
	// Status: accepted (events produced), ignored (nothing to produce),
	// pending (waits for its cart's snapshot), dead_lettered.
	Status   string   `json:"status"`
	EventIDs []string `json:"event_ids,omitempty"`
	Reason   string   `json:"reason,omitempty"`
}

func writeEmporixError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// ServeHTTP handles one delivery: size, signature, translation, produce.
func (a *emporixAdapter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > a.maxBody {
		refuseJSON(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is %d bytes, the limit is %d", r.ContentLength, a.maxBody))
		return
	}
	h := r.Header
	id, ts, sig := headerOr(h, "svix-id", "webhook-id"), headerOr(h, "svix-timestamp", "webhook-timestamp"), headerOr(h, "svix-signature", "webhook-signature")
	if id == "" || ts == "" || sig == "" {
		refuseJSON(w, http.StatusUnauthorized, emporix.ErrMissingHeaders.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			refuseJSON(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body exceeds the limit of %d bytes", mb.Limit))
			return
		}
		writeEmporixError(w, http.StatusBadRequest, "reading the request body failed")
		return
	}
	at, err := a.verifier.Verify(id, ts, sig, body, a.clock())
	if err != nil {
		writeEmporixError(w, http.StatusUnauthorized, "the delivery is not signed with CARTLIFT_EMPORIX_WEBHOOK_SECRET: "+err.Error())
		return
	}
	hint := r.URL.Query().Get("type")
	res, err := a.translate(id, at, hint, body)
	var te *emporix.Error
	if errors.As(err, &te) {
		code := http.StatusUnprocessableEntity
		if te.Reason == emporix.ReasonMalformed {
			code = http.StatusBadRequest
		}
		writeEmporixError(w, code, te.Error())
		return
	} else if err != nil {
		writeEmporixError(w, http.StatusInternalServerError, "translating the delivery failed")
		return
	}
	resp, err := a.commit(r.Context(), id, at, hint, body, res)
	if err != nil {
		a.log.Error("producing an Emporix delivery failed", "err", err)
		w.Header().Set("Retry-After", "1")
		writeEmporixError(w, http.StatusServiceUnavailable, "producing the delivery's events failed, none were committed; retry")
		return
	}
	writeJSON(w, http.StatusAccepted, resp)
}

// translate parses and translates a verified body.
func (a *emporixAdapter) translate(id string, at time.Time, hint string, body []byte) (emporix.Result, error) {
	typ, payload, err := emporix.ParseBody(body, hint)
	if err != nil {
		return emporix.Result{}, err
	}
	return emporix.Translate(emporix.Delivery{ID: id, Time: at, Type: typ, Payload: payload}, a)
}

// commit produces what a delivery translated to, in one transaction: its
// events and the cart's owner record; or the delivery as waiting; or, when
// too many wait, the delivery as a dead letter.
func (a *emporixAdapter) commit(ctx context.Context, id string, at time.Time, hint string, body []byte, res emporix.Result) (emporixResponse, error) {
	if res.Wait != "" {
		if a.pendingCount() >= a.cfg.PendingMax {
			rec := a.deadLetter(res.Wait, id, body, reasonEmporixPendingFull,
				fmt.Sprintf("%d deliveries already wait for their carts (CARTLIFT_EMPORIX_PENDING_MAX)", a.cfg.PendingMax))
			if err := a.produce(ctx, rec); err != nil {
				return emporixResponse{}, err
			}
			return emporixResponse{Status: "dead_lettered", Reason: reasonEmporixPendingFull}, nil
		}
		p := pendingDelivery{ID: id, CartID: res.Wait, Time: at, Received: a.clock().UTC(), TypeHint: hint, Body: body}
		v, err := json.Marshal(p)
		if err != nil {
			return emporixResponse{}, err
		}
		if err := a.produce(ctx, &kgo.Record{Topic: a.cfg.Topic, Key: []byte(pendingPrefix + res.Wait + "\x00" + id), Value: v}); err != nil {
			return emporixResponse{}, err
		}
		a.setPending(res.Wait, id, &p)
		a.wake()
		return emporixResponse{Status: "pending", Reason: "the cart's owner is not known yet: the delivery waits for its snapshot"}, nil
	}
	var recs []*kgo.Record
	resp := emporixResponse{Status: "accepted"}
	for _, e := range res.Events {
		recs = append(recs, &kgo.Record{Topic: a.eventsTopic, Key: []byte(e.Key), Value: e.Value})
		resp.EventIDs = append(resp.EventIDs, e.ID)
	}
	if res.Owner != nil {
		v, err := json.Marshal(res.Owner)
		if err != nil {
			return emporixResponse{}, err
		}
		recs = append(recs, &kgo.Record{Topic: a.cfg.Topic, Key: []byte(ownerPrefix + res.Owner.CartID), Value: v})
	}
	if len(res.Events) == 0 {
		resp.Status, resp.Reason = "ignored", res.Ignored
	}
	if len(recs) > 0 {
		if err := a.produce(ctx, recs...); err != nil {
			return emporixResponse{}, err
		}
	}
	if res.Owner != nil && a.setOwner(res.Owner.CartID, res.Owner) {
		a.wake()
	}
	return resp, nil
}

// deadLetter is the dead letter of a delivery: the body unchanged, keyed
// by the cart, with the reason in cartlift's dead-letter headers.
func (a *emporixAdapter) deadLetter(cartID, id string, body []byte, reason, msg string) *kgo.Record {
	return &kgo.Record{Topic: a.dlqTopic, Key: []byte(cartID), Value: body, Headers: []kgo.RecordHeader{
		{Key: events.HeaderErrorReason, Value: []byte(reason)},
		{Key: events.HeaderError, Value: []byte(msg)},
		{Key: events.HeaderSourceTopic, Value: []byte(a.cfg.Topic)},
		{Key: "svix-id", Value: []byte(id)},
	}}
}

// produce produces recs in one transaction (all or none).
func (a *emporixAdapter) produce(ctx context.Context, recs ...*kgo.Record) error {
	a.txnMu.Lock()
	defer a.txnMu.Unlock()
	return processor.ProduceTransaction(ctx, a.producer, 10*time.Second, recs...)
}

// --- waiting deliveries ---------------------------------------------------

// resolveLoop resolves waiting deliveries when an owner arrives, and
// dead-letters those that waited too long, once a second and whenever
// the view changes.
func (a *emporixAdapter) resolveLoop() {
	defer a.done.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastCleanup := time.Time{}
	for {
		select {
		case <-a.stop:
			return
		case <-tick.C:
		case <-a.kick:
		}
		a.resolve()
		if now := a.clock(); now.Sub(lastCleanup) > time.Minute {
			lastCleanup = now
			a.dropClosedOwners(now)
		}
	}
}

// resolve handles every waiting delivery whose cart's owner is known now,
// or that waited longer than PendingMaxAge. Only the instance that owns
// the partition (of the owner's key, or of the cart id when the owner is
// unknown) acts; a repeat by another instance, during a rebalance, gives
// the same event ids, which the processor drops.
func (a *emporixAdapter) resolve() {
	byCart := map[string][]pendingDelivery{}
	a.mu.Lock()
	for cart, m := range a.pending {
		for _, p := range m {
			byCart[cart] = append(byCart[cart], p)
		}
	}
	a.mu.Unlock()
	now := a.clock()
	for cart, ps := range byCart {
		// In the order they happened: item events of one cart do not
		// commute (an update after an add).
		slices.SortFunc(ps, func(x, y pendingDelivery) int {
			if c := x.Time.Compare(y.Time); c != 0 {
				return c
			}
			if c := x.Received.Compare(y.Received); c != 0 {
				return c
			}
			return strings.Compare(x.ID, y.ID)
		})
		o, known := a.Owner(cart)
		if known && !a.owns(o.Key()) || !known && !a.owns(cart) {
			continue
		}
		var recs []*kgo.Record
		var done []string
		for _, p := range ps {
			tomb := &kgo.Record{Topic: a.cfg.Topic, Key: []byte(pendingPrefix + cart + "\x00" + p.ID)}
			switch {
			case known:
				res, err := a.translate(p.ID, p.Time, p.TypeHint, p.Body)
				switch {
				case err != nil:
					recs = append(recs, a.deadLetter(cart, p.ID, p.Body, reasonEmporixInvalid, err.Error()))
				case res.Wait != "":
					continue
				default:
					for _, e := range res.Events {
						recs = append(recs, &kgo.Record{Topic: a.eventsTopic, Key: []byte(e.Key), Value: e.Value})
					}
				}
			case now.Sub(p.Received) > a.cfg.PendingMaxAge:
				recs = append(recs, a.deadLetter(cart, p.ID, p.Body, reasonEmporixUnknownCart,
					fmt.Sprintf("no snapshot of the cart arrived within %s (CARTLIFT_EMPORIX_PENDING_MAX_AGE)", a.cfg.PendingMaxAge)))
			default:
				continue
			}
			recs = append(recs, tomb)
			done = append(done, p.ID)
		}
		if len(done) == 0 {
			continue
		}
		// A cart's resolved events and their tombstones: one transaction.
		if err := a.produce(context.Background(), recs...); err != nil {
			a.log.Warn("resolving waiting Emporix deliveries failed; retrying", "err", err)
			return
		}
		for _, id := range done {
			a.setPending(cart, id, nil)
		}
	}
}

// dropClosedOwners removes the owner records of carts closed longer than
// ClosedRetention ago, so that the view holds open carts (and recent
// ones), not every cart ever seen.
func (a *emporixAdapter) dropClosedOwners(now time.Time) {
	var old []string
	a.mu.Lock()
	for id, o := range a.owners {
		if o.Closed && now.Sub(o.ModifiedAt) > a.cfg.ClosedRetention && len(a.pending[id]) == 0 {
			old = append(old, id)
		}
	}
	a.mu.Unlock()
	for _, id := range old {
		if !a.owns(id) {
			continue
		}
		if err := a.produce(context.Background(), &kgo.Record{Topic: a.cfg.Topic, Key: []byte(ownerPrefix + id)}); err != nil {
			a.log.Warn("dropping closed Emporix carts failed; retrying", "err", err)
			return
		}
		a.setOwner(id, nil)
	}
}

func headerOr(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// refuseJSON answers with a JSON error without reading the body
// (refusal.Refuse), as the API's other refusals do.
func refuseJSON(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Cache-Control", "no-store")
	refusal.Refuse(w, code, "application/json", append(b, '\n'))
}

// ownsKey adapts the processor's Lookup: whether this instance owns the
// partition of key.
func ownsKey(p *processor.Processor) func(string) bool {
	return func(key string) bool {
		_, _, owned, err := p.Lookup(key)
		return err == nil && owned
	}
}
