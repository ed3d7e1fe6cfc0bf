package processor

// The HTTP API: the read side of the projection (a customer's carts and
// profile, with how fresh they are), the discard command, and validated
// ingest for producers without a Kafka client. Requests for a customer
// whose partition another instance owns are forwarded to that instance.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/internal/refusal"
	"github.com/cartlift/cartlift/projections"
)

// Defaults of APIConfig.
const (
	DefaultMaxBody   = 1 << 20
	DefaultMaxEvents = 10_000
	DefaultOwnersTTL = time.Second
)

// HTTP headers of the instance-to-instance protocol.
const (
	// HeaderForwarded marks a request one instance forwarded to the owner
	// of the customer's partition. An instance that receives a forwarded
	// request for a partition it does not own answers 503 instead of
	// forwarding it again, so requests never loop.
	HeaderForwarded = "X-Cartlift-Forwarded"
	// HeaderNotOwner is set on that 503, so that the forwarding instance
	// knows its map of owners is stale.
	HeaderNotOwner = "X-Cartlift-Not-Owner"
)

// APISource is the CloudEvents source of the events the API emits itself
// (cart.discarded from the discard route).
const APISource = "cartlift-api"

// Scope is what a bearer token may do. Write implies read.
type Scope uint8

// Scopes, weakest first.
const (
	ScopeNone Scope = iota
	ScopeRead
	ScopeWrite
)

// ParseScope parses "read" or "write".
func ParseScope(s string) (Scope, error) {
	switch s {
	case "read":
		return ScopeRead, nil
	case "write":
		return ScopeWrite, nil
	}
	return ScopeNone, fmt.Errorf("scope %q is neither read nor write", s)
}

// String returns "read", "write" or "none".
func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeWrite:
		return "write"
	}
	return "none"
}

// Backend is what the API needs of the processor; *Processor implements it.
type Backend interface {
	// Lookup returns a customer's committed state (nil for none), how
	// fresh it is, and whether this instance owns the customer's
	// partition. It returns ErrPartitionsUnknown before the partition
	// count is known.
	Lookup(key string) (*projections.CustomerState, Freshness, bool, error)
	// Owners maps partitions to the advertised HTTP address of their owner.
	Owners(ctx context.Context) (map[int32]string, error)
}

// TxnProducer is what the API needs of a transactional Kafka client
// (kgo.TransactionalID); *kgo.Client implements it. The API runs one
// transaction at a time on it, and nothing else may use it.
type TxnProducer interface {
	BeginTransaction() error
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
	AbortBufferedRecords(ctx context.Context) error
	EndTransaction(ctx context.Context, commit kgo.TransactionEndTry) error
}

// NewTxnProducer creates the transactional client the API produces with.
// transactionalID must be unique per instance and stable across its
// restarts (a restarted instance fences its predecessor's open
// transaction). opts are extra options (TLS, SASL).
func NewTxnProducer(brokers []string, transactionalID string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.TransactionalID(transactionalID),
		kgo.TransactionTimeout(30 * time.Second),
		kgo.ProducerLinger(0),
		kgo.RecordRetries(10),
	}, opts...)...)
}

// RequestInfo describes one served request, for metrics. It carries no
// personal data: Route is the matched pattern ("GET /v1/customers/{id}"),
// never the path.
type RequestInfo struct {
	Route  string // the matched pattern; "unmatched" for 404 and 405
	Method string
	Code   int
	Took   time.Duration
	// Forwarded is set when this instance forwarded the request to the
	// owner of the customer's partition.
	Forwarded bool
}

// APIConfig configures an API. Zero fields take the documented defaults.
type APIConfig struct {
	// Backend answers lookups. Required.
	Backend Backend
	// Producer produces discards and ingested events. Nil makes the write
	// routes answer 503.
	Producer TxnProducer
	// EventsTopic is the input topic; default events.TopicEvents.
	EventsTopic string
	// Flows is the processor's flows config, for explanations; default
	// the Backend's, when it has a Flows method (*Processor has). Without
	// one the explain route answers 503.
	Flows *projections.Config
	// Tokens maps bearer tokens to their scope. Empty: no authentication
	// (development mode; every request may read and write).
	Tokens map[string]Scope
	// MaxBody bounds every request body; default DefaultMaxBody (1 MiB).
	// Larger bodies get 413.
	MaxBody int64
	// MaxEvents bounds the events of one POST /v1/events; default
	// DefaultMaxEvents (10,000).
	MaxEvents int
	// SelfAddr is this instance's advertised address (as in
	// Config.AdvertiseAddr); the API never forwards to it.
	SelfAddr string
	// OwnersTTL is how long the map of partition owners is cached; a
	// partition missing from it refreshes it sooner. Default 1s.
	OwnersTTL time.Duration
	// ForwardTimeout bounds a forwarded request; default 10s.
	ForwardTimeout time.Duration
	// Transport carries forwarded requests; default a keep-alive transport
	// for instance-to-instance traffic.
	Transport http.RoundTripper
	// ProduceTimeout bounds producing a request's events; default 10s.
	ProduceTimeout time.Duration
	// Clock is the wall clock: event time of discards, and the decoder's
	// future-time check. Default time.Now.
	Clock func() time.Time
	// Logger; default slog.Default(). The API logs routes, status codes
	// and durations, never paths, customer keys or bodies.
	Logger *slog.Logger
	// Observe, when set, is called after every request. It must not block.
	Observe func(RequestInfo)
}

type tokenEntry struct {
	sum   [sha256.Size]byte
	scope Scope
}

// API is the HTTP handler of cartlift's API. Create it with NewAPI; it is
// safe for concurrent use.
type API struct {
	cfg    APIConfig
	log    *slog.Logger
	mux    *http.ServeMux
	tokens []tokenEntry
	client *http.Client

	// txnMu serializes transactions on cfg.Producer.
	txnMu sync.Mutex

	// Owners cache: ownersMu guards owners, fetched and stale; refreshMu
	// makes one goroutine at a time ask the group.
	ownersMu  sync.Mutex
	owners    map[int32]string
	fetched   time.Time
	stale     bool
	refreshMu sync.Mutex
}

// NewAPI validates cfg and builds the handler with its routes:
//
//	GET  /v1/customers/{id}                       profile (read)
//	GET  /v1/customers/{id}/carts                 carts (read)
//	GET  /v1/customers/{id}/carts/{cartId}        one cart (read)
//	GET  /v1/customers/{id}/carts/{cartId}/explain  its decision history, explained (read)
//	POST /v1/customers/{id}/carts/{cartId}/discard  emit cart.discarded (write)
//	POST /v1/events                               ingest events (write)
//
// Handle adds unauthenticated routes (health, metrics).
func NewAPI(cfg APIConfig) (*API, error) {
	if cfg.Backend == nil {
		return nil, errors.New("api: Backend is required")
	}
	if cfg.EventsTopic == "" {
		cfg.EventsTopic = events.TopicEvents
	}
	if fb, ok := cfg.Backend.(interface{ Flows() *projections.Config }); ok && cfg.Flows == nil {
		cfg.Flows = fb.Flows()
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.OwnersTTL <= 0 {
		cfg.OwnersTTL = DefaultOwnersTTL
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 10 * time.Second
	}
	if cfg.ProduceTimeout <= 0 {
		cfg.ProduceTimeout = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.ForwardTimeout,
			DisableCompression:    true,
		}
	}
	a := &API{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(),
		client: &http.Client{Transport: cfg.Transport, Timeout: cfg.ForwardTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	for tok, scope := range cfg.Tokens {
		if tok == "" {
			return nil, errors.New("api: empty token")
		}
		if scope != ScopeRead && scope != ScopeWrite {
			return nil, fmt.Errorf("api: token with scope %v", scope)
		}
		a.tokens = append(a.tokens, tokenEntry{sum: sha256.Sum256([]byte(tok)), scope: scope})
	}
	a.route("GET /v1/customers/{id}", ScopeRead, a.getCustomer)
	a.route("GET /v1/customers/{id}/carts", ScopeRead, a.listCarts)
	a.route("GET /v1/customers/{id}/carts/{cartId}", ScopeRead, a.getCart)
	a.route("GET /v1/customers/{id}/carts/{cartId}/explain", ScopeRead, a.explainCart)
	a.route("POST /v1/customers/{id}/carts/{cartId}/discard", ScopeWrite, a.discard)
	a.route("POST /v1/events", ScopeWrite, a.ingest)
	return a, nil
}

// Open reports whether the API runs without authentication.
func (a *API) Open() bool { return len(a.tokens) == 0 }

// Handle registers an unauthenticated route (health checks, metrics) on
// the API's mux, so that one server answers everything with the same JSON
// 404 and 405. Call it before serving.
func (a *API) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// route registers an authenticated route. The token and the declared body
// size are checked before anything reads the body, and a refusal (401, 403,
// 413) ends the connection without reading it (refuse), so a client that
// sends its body slowly cannot hold the server.
func (a *API) route(pattern string, need Scope, h http.HandlerFunc) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if !a.authorize(w, r, need) {
			return
		}
		if r.ContentLength > a.cfg.MaxBody {
			refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is %d bytes, the limit is %d", r.ContentLength, a.cfg.MaxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBody)
		h(w, r)
	})
}

// authorize checks the bearer token against every configured token, in
// constant time per token and without stopping at the first match, and
// answers 401 or 403 when the token does not grant need.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, need Scope) bool {
	if len(a.tokens) == 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cartlift"`)
		refuse(w, http.StatusUnauthorized, "a bearer token is required (Authorization: Bearer <token>)")
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	got := 0
	for _, t := range a.tokens {
		eq := subtle.ConstantTimeCompare(sum[:], t.sum[:])
		got = subtle.ConstantTimeSelect(eq, int(t.scope), got)
	}
	switch {
	case got == int(ScopeNone):
		w.Header().Set("WWW-Authenticate", `Bearer realm="cartlift", error="invalid_token"`)
		refuse(w, http.StatusUnauthorized, "the bearer token is not valid")
		return false
	case got < int(need):
		refuse(w, http.StatusForbidden, fmt.Sprintf("the token's scope is %s; this route needs %s", Scope(got), need))
		return false
	}
	return true
}

// ServeHTTP routes the request, answers unknown routes and methods with
// JSON errors, and reports the request to Observe.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	route := "unmatched"
	if _, pattern := a.mux.Handler(r); pattern == "" {
		a.unmatched(sw, r)
	} else {
		route = pattern
		a.mux.ServeHTTP(sw, r)
	}
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	took := time.Since(start)
	if a.cfg.Observe != nil {
		a.cfg.Observe(RequestInfo{Route: route, Method: r.Method, Code: sw.code, Took: took, Forwarded: sw.forwarded})
	}
	if a.log.Enabled(r.Context(), slog.LevelDebug) {
		a.log.Debug("http request", "route", route, "method", r.Method, "status", sw.code, "took", took, "forwarded", sw.forwarded)
	}
}

// unmatched answers a request no route matches: 404, or 405 with Allow
// when the path exists with other methods (as net/http's mux decides).
// Like the other refusals, the answer ends the connection and the body is
// never read.
func (a *API) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := a.mux.Handler(r)
	cw := &captureWriter{header: http.Header{}}
	h.ServeHTTP(cw, r)
	switch cw.code {
	case http.StatusMethodNotAllowed:
		if allow := cw.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		refuse(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed here", r.Method))
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// The mux cleans paths ("//", "/./"): keep its redirect.
		w.Header().Set("Location", cw.header.Get("Location"))
		refuse(w, cw.code, "the path is not in canonical form")
	default:
		refuse(w, http.StatusNotFound, "no such route")
	}
}

// statusWriter records the status code of a response.
type statusWriter struct {
	http.ResponseWriter
	code      int
	forwarded bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// captureWriter captures what net/http's not-found and method-not-allowed
// handlers would answer.
type captureWriter struct {
	header http.Header
	code   int
}

func (w *captureWriter) Header() http.Header { return w.header }
func (w *captureWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *captureWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(b), nil
}

// errorBody is every error response.
type errorBody struct {
	Error     string     `json:"error"`
	Freshness *Freshness `json:"freshness,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := gojson.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = gojson.Marshal(errorBody{Error: "encoding the response failed"})
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// refuse answers a request that will not be served (401, 403, 413, an
// unknown route) with a JSON error as the connection's last answer,
// without reading the request body (refusal.Refuse). The handler must
// return right after.
func refuse(w http.ResponseWriter, code int, msg string) {
	b, _ := gojson.Marshal(errorBody{Error: msg})
	w.Header().Set("Cache-Control", "no-store")
	refusal.Refuse(w, code, "application/json", append(b, '\n'))
}

func writeErrorFresh(w http.ResponseWriter, code int, msg string, fresh Freshness) {
	writeJSON(w, code, errorBody{Error: msg, Freshness: &fresh})
}

func writeUnavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, msg)
}

// --- read side ---------------------------------------------------------

// ItemView is a line item in API responses.
type ItemView struct {
	SKU            string `json:"sku"`
	Name           string `json:"name,omitempty"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	LineTotalMinor int64  `json:"line_total_minor"`
	Category       string `json:"category,omitempty"`
	ImageURL       string `json:"image_url,omitempty"`
}

// CartView is a cart in API responses. Money is in minor units of
// Currency.
type CartView struct {
	ID          string            `json:"id"`
	Type        string            `json:"type,omitempty"`
	Site        string            `json:"site,omitempty"`
	Channel     string            `json:"channel,omitempty"`
	Currency    string            `json:"currency"`
	LegalEntity string            `json:"legal_entity,omitempty"`
	Items       []ItemView        `json:"items"`
	TotalMinor  int64             `json:"total_minor"`
	ItemCount   int64             `json:"item_count"`
	Status      string            `json:"status"`
	Version     int64             `json:"version"`
	CreatedAt   time.Time         `json:"created_at"`
	ModifiedAt  time.Time         `json:"modified_at"`
	ClosedAt    *time.Time        `json:"closed_at,omitempty"`
	OrderID     string            `json:"order_id,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// CartsResponse answers GET /v1/customers/{id}/carts. Carts are sorted by
// modification time, newest first.
type CartsResponse struct {
	CustomerKey string     `json:"customer_key"`
	Carts       []CartView `json:"carts"`
	Count       int        `json:"count"`
	Freshness   Freshness  `json:"freshness"`
}

// CartResponse answers GET /v1/customers/{id}/carts/{cartId}.
type CartResponse struct {
	CustomerKey string    `json:"customer_key"`
	Cart        CartView  `json:"cart"`
	Freshness   Freshness `json:"freshness"`
}

// ProfileView is a customer's profile in API responses. It is personal
// data: the API serves it, and logs none of it.
type ProfileView struct {
	CustomerID       string     `json:"customer_id,omitempty"`
	Email            string     `json:"email,omitempty"`
	Name             string     `json:"name,omitempty"`
	Locale           string     `json:"locale,omitempty"`
	TimeZone         string     `json:"time_zone,omitempty"`
	Segment          string     `json:"segment,omitempty"`
	MarketingConsent bool       `json:"marketing_consent"`
	LastLoginAt      *time.Time `json:"last_login_at,omitempty"`
}

// CustomerResponse answers GET /v1/customers/{id}.
type CustomerResponse struct {
	CustomerKey string      `json:"customer_key"`
	Profile     ProfileView `json:"profile"`
	OpenCarts   int         `json:"open_carts"`
	Freshness   Freshness   `json:"freshness"`
}

// DiscardResponse answers POST /v1/customers/{id}/carts/{cartId}/discard.
type DiscardResponse struct {
	Status    string    `json:"status"`
	EventID   string    `json:"event_id"`
	Note      string    `json:"note"`
	Freshness Freshness `json:"freshness"`
}

// IngestResponse answers a successful POST /v1/events.
type IngestResponse struct {
	Accepted int `json:"accepted"`
}

// EventError is one rejected event of POST /v1/events. Index is the
// event's 0-based position in the array, or among the non-blank lines of
// JSON lines.
type EventError struct {
	Index   int    `json:"index"`
	ID      string `json:"id,omitempty"`
	Reason  string `json:"reason"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// IngestErrorResponse answers a POST /v1/events with invalid events:
// nothing was produced. Events lists at most maxListedErrors of them;
// Invalid counts all.
type IngestErrorResponse struct {
	Error   string       `json:"error"`
	Invalid int          `json:"invalid"`
	Events  []EventError `json:"events"`
}

const maxListedErrors = 100

func cartView(c *projections.Cart) CartView {
	v := CartView{ID: c.ID, Type: c.Type, Site: c.Site, Channel: c.Channel, Currency: c.Currency,
		LegalEntity: c.LegalEntity, Items: make([]ItemView, len(c.Items)), TotalMinor: c.TotalMinor,
		ItemCount: c.ItemCount, Status: c.Status, Version: c.Version, CreatedAt: c.CreatedAt,
		ModifiedAt: c.ModifiedAt, OrderID: c.OrderID, Metadata: c.Metadata}
	if !c.ClosedAt.IsZero() {
		t := c.ClosedAt
		v.ClosedAt = &t
	}
	for i, it := range c.Items {
		v.Items[i] = ItemView{SKU: it.SKU, Name: it.Name, Quantity: it.Quantity, UnitPriceMinor: it.UnitPriceMinor,
			LineTotalMinor: it.LineTotalMinor, Category: it.Category, ImageURL: it.ImageURL}
	}
	return v
}

var cartStatuses = []string{projections.StatusOpen, projections.StatusCheckedOut, projections.StatusDiscarded,
	projections.StatusExpired, projections.StatusMerged}

// maxKeyLen bounds customer keys in paths: the longest key Decode accepts.
const maxKeyLen = events.MaxIDLen + len(events.AnonPrefix)

func (a *API) listCarts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	if status == "" {
		status = projections.StatusOpen
	}
	if status != "all" && !slices.Contains(cartStatuses, status) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("status must be all or one of %s", strings.Join(cartStatuses, ", ")))
		return
	}
	typ, site := q.Get("type"), q.Get("site")
	key := r.PathValue("id")
	st, fresh, done := a.resolve(w, r, key)
	if done {
		return
	}
	resp := CartsResponse{CustomerKey: key, Carts: []CartView{}, Freshness: fresh}
	if st != nil {
		for _, c := range st.Carts {
			if (status == "all" || c.Status == status) && (typ == "" || c.Type == typ) && (site == "" || c.Site == site) {
				resp.Carts = append(resp.Carts, cartView(c))
			}
		}
	}
	slices.SortStableFunc(resp.Carts, func(x, y CartView) int {
		if c := y.ModifiedAt.Compare(x.ModifiedAt); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	resp.Count = len(resp.Carts)
	writeJSON(w, http.StatusOK, resp)
}

func (a *API) getCart(w http.ResponseWriter, r *http.Request) {
	key, cartID := r.PathValue("id"), r.PathValue("cartId")
	st, fresh, done := a.resolve(w, r, key)
	if done {
		return
	}
	var c *projections.Cart
	if st != nil {
		c = st.Cart(cartID)
	}
	if c == nil {
		writeErrorFresh(w, http.StatusNotFound, "no such cart", fresh)
		return
	}
	writeJSON(w, http.StatusOK, CartResponse{CustomerKey: key, Cart: cartView(c), Freshness: fresh})
}

// ExplainResponse answers GET /v1/customers/{id}/carts/{cartId}/explain:
// the explanation (projections.Explain, the same JSON as `cartlift
// backtest --explain`) and how fresh it is.
type ExplainResponse struct {
	*projections.Explanation
	Freshness Freshness `json:"freshness"`
}

func (a *API) explainCart(w http.ResponseWriter, r *http.Request) {
	key, cartID := r.PathValue("id"), r.PathValue("cartId")
	st, fresh, done := a.resolve(w, r, key) // forwards to the owner
	if done {
		return
	}
	if a.cfg.Flows == nil {
		writeUnavailable(w, "explanations need the processor's flows")
		return
	}
	if st == nil {
		writeErrorFresh(w, http.StatusNotFound, "no such customer", fresh)
		return
	}
	x, ok := projections.Explain(st, cartID, a.cfg.Flows, a.cfg.EventsTopic)
	if !ok {
		writeErrorFresh(w, http.StatusNotFound, "no such cart", fresh)
		return
	}
	writeJSON(w, http.StatusOK, ExplainResponse{Explanation: x, Freshness: fresh})
}

func (a *API) getCustomer(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("id")
	st, fresh, done := a.resolve(w, r, key)
	if done {
		return
	}
	if st == nil {
		writeErrorFresh(w, http.StatusNotFound, "no such customer", fresh)
		return
	}
	p := st.Profile
	pv := ProfileView{CustomerID: p.CustomerID, Email: p.Email, Name: p.Name, Locale: p.Locale,
		TimeZone: p.TimeZone, Segment: p.Segment, MarketingConsent: p.MarketingConsent}
	if !p.LastLoginAt.IsZero() {
		t := p.LastLoginAt
		pv.LastLoginAt = &t
	}
	writeJSON(w, http.StatusOK, CustomerResponse{CustomerKey: key, Profile: pv, OpenCarts: st.OpenCarts(), Freshness: fresh})
}

// resolve looks the customer up. When this instance does not own the
// customer's partition it forwards the request to the owner; when it
// cannot answer it writes the error. done reports that the response was
// written.
func (a *API) resolve(w http.ResponseWriter, r *http.Request, key string) (st *projections.CustomerState, fresh Freshness, done bool) {
	if len(key) > maxKeyLen {
		writeError(w, http.StatusNotFound, "no such customer")
		return nil, fresh, true
	}
	st, fresh, owned, err := a.cfg.Backend.Lookup(key)
	switch {
	case errors.Is(err, ErrPartitionsUnknown):
		writeUnavailable(w, "the processor is starting: its partitions are not known yet")
		return nil, fresh, true
	case err != nil:
		// The error may name the customer key: log its cause only.
		cause := err
		if u := errors.Unwrap(err); u != nil {
			cause = u
		}
		a.log.Error("reading a customer's state failed", "partition", fresh.Partition, "err", cause)
		writeError(w, http.StatusInternalServerError, "reading the customer's state failed")
		return nil, fresh, true
	case !owned:
		a.forward(w, r, fresh.Partition)
		return nil, fresh, true
	}
	return st, fresh, false
}

// --- forwarding --------------------------------------------------------

// hopHeaders are not forwarded (RFC 9110, section 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward sends the request to the owner of partition part and copies its
// answer back. A forwarded request is never forwarded again.
func (a *API) forward(w http.ResponseWriter, r *http.Request, part int32) {
	if r.Header.Get(HeaderForwarded) != "" {
		w.Header().Set(HeaderNotOwner, "1")
		writeUnavailable(w, fmt.Sprintf("partition %d moved away from this instance; retry", part))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		bodyError(w, err)
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.forwarded = true
	}
	for attempt := 0; ; attempt++ {
		addr := a.ownerOf(r.Context(), part)
		if addr == "" || addr == a.cfg.SelfAddr {
			writeUnavailable(w, fmt.Sprintf("partition %d is being rebalanced; retry", part))
			return
		}
		resp, err := a.send(r, addr, body)
		if err != nil {
			a.invalidateOwners()
			if attempt == 0 && r.Context().Err() == nil {
				continue
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // without the URL, which names the customer
			}
			a.log.Warn("forwarding to the partition's owner failed", "partition", part, "owner", addr, "err", err)
			writeUnavailable(w, fmt.Sprintf("the owner of partition %d is unreachable; retry", part))
			return
		}
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderNotOwner) != "" {
			// Our map of owners is stale: refresh it and try once more.
			a.invalidateOwners()
			if attempt == 0 {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				continue
			}
			resp.Header.Del(HeaderNotOwner)
		}
		copyResponse(w, resp)
		return
	}
}

func (a *API) send(r *http.Request, addr string, body []byte) (*http.Response, error) {
	u := *r.URL
	u.Scheme, u.Host = "http", addr
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, vs := range r.Header {
		out.Header[k] = vs
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Header.Set(HeaderForwarded, "1")
	return a.client.Do(out)
}

func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// minOwnersRefresh bounds how often the owners are refreshed: while a
// partition has no owner (a rebalance), requests must not turn into a
// storm of DescribeGroups requests.
const minOwnersRefresh = 100 * time.Millisecond

// ownerOf returns the advertised address of partition part's owner, from
// the cached map when it is fresh and knows the partition, else from a new
// description of the group (at most every minOwnersRefresh). It returns ""
// when the owner is unknown.
func (a *API) ownerOf(ctx context.Context, part int32) string {
	addr, ok, fresh, recent := a.cachedOwner(part)
	if ok && fresh {
		return addr
	}
	if recent {
		return addr // the best we know; the client retries
	}
	a.refreshMu.Lock()
	defer a.refreshMu.Unlock()
	if addr, ok, fresh, recent = a.cachedOwner(part); (ok && fresh) || recent {
		return addr // another request refreshed the map meanwhile
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	owners, err := a.cfg.Backend.Owners(ctx)
	a.ownersMu.Lock()
	defer a.ownersMu.Unlock()
	a.fetched = time.Now()
	if err != nil {
		a.log.Warn("describing the consumer group failed", "err", err)
		return addr // the stale owner is the best guess
	}
	a.owners, a.stale = owners, false
	return owners[part]
}

// cachedOwner reads the cache: the partition's owner, whether the map has
// it and is fresh, and whether the map was fetched too recently to fetch
// it again.
func (a *API) cachedOwner(part int32) (addr string, ok, fresh, recent bool) {
	a.ownersMu.Lock()
	defer a.ownersMu.Unlock()
	addr, ok = a.owners[part]
	age := time.Since(a.fetched)
	return addr, ok, !a.stale && age < a.cfg.OwnersTTL, age < minOwnersRefresh
}

// invalidateOwners makes the next lookup describe the group again.
func (a *API) invalidateOwners() {
	a.ownersMu.Lock()
	a.stale = true
	a.ownersMu.Unlock()
}

// --- writes ------------------------------------------------------------

func bodyError(w http.ResponseWriter, err error) {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body exceeds the limit of %d bytes", mb.Limit))
		return
	}
	writeError(w, http.StatusBadRequest, "reading the request body failed")
}

// discardRequest is the optional body of the discard route.
type discardRequest struct {
	Reason string `json:"reason"`
}

const discardNote = "the cart is discarded when the processor consumes the event"

func (a *API) discard(w http.ResponseWriter, r *http.Request) {
	key, cartID := r.PathValue("id"), r.PathValue("cartId")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		bodyError(w, err)
		return
	}
	var req discardRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
			return
		}
		if dec.More() {
			writeError(w, http.StatusBadRequest, "malformed JSON body: data after the object")
			return
		}
	}
	// The owner decides: forwarding needs the body back.
	r.Body = io.NopCloser(bytes.NewReader(body))
	st, fresh, done := a.resolve(w, r, key)
	if done {
		return
	}
	var c *projections.Cart
	if st != nil {
		c = st.Cart(cartID)
	}
	if c == nil || !c.IsOpen() {
		writeErrorFresh(w, http.StatusNotFound, "no such open cart", fresh)
		return
	}
	if a.cfg.Producer == nil {
		writeUnavailable(w, "this instance does not accept writes")
		return
	}
	ref := events.CartRef{CartID: cartID}
	if anon, ok := strings.CutPrefix(key, events.AnonPrefix); ok {
		ref.AnonymousID = anon
	} else {
		ref.CustomerID = key
	}
	id := DiscardEventID(key, cartID, c.Version)
	now := a.cfg.Clock().UTC()
	v, err := events.Encode(id, APISource, events.TypeCartDiscarded, now, cartID,
		events.CartDiscarded{CartRef: ref, Reason: req.Reason})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the event failed")
		return
	}
	ev, err := events.Decode(v, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, "the discard is not a valid event: "+err.Error())
		return
	}
	if ev.Key() != key {
		writeErrorFresh(w, http.StatusNotFound, "no such open cart", fresh)
		return
	}
	if err := a.produce(r.Context(), []*kgo.Record{{Topic: a.cfg.EventsTopic, Key: []byte(key), Value: v}}); err != nil {
		a.log.Error("producing a discard failed", "err", err)
		writeUnavailable(w, "producing the event failed; retry")
		return
	}
	writeJSON(w, http.StatusAccepted, DiscardResponse{Status: "accepted", EventID: id, Note: discardNote, Freshness: fresh})
}

// DiscardEventID is the id of the cart.discarded event the API emits for a
// cart at a version: a retried request produces the same event.
func DiscardEventID(key, cartID string, version int64) string {
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(cartID))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, version, 10))
	return "api-discard-" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (a *API) ingest(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Producer == nil {
		writeUnavailable(w, "this instance does not accept writes")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		bodyError(w, err)
		return
	}
	raws, code, msg := splitEvents(body, a.cfg.MaxEvents)
	if code == http.StatusRequestEntityTooLarge {
		refuse(w, code, msg)
		return
	}
	if code != 0 {
		writeError(w, code, msg)
		return
	}
	now := a.cfg.Clock()
	recs := make([]*kgo.Record, 0, len(raws))
	bad := IngestErrorResponse{Error: "invalid events", Events: []EventError{}}
	for i, raw := range raws {
		ev, err := events.Decode(raw, now)
		if err == nil && ev.Type == events.TypeCartAssigned {
			err = &events.ValidationError{Reason: events.ReasonNotForInput, Field: "type",
				Msg: "cart.assigned is emitted by cartlift itself"}
		}
		if err != nil {
			bad.Invalid++
			if len(bad.Events) < maxListedErrors {
				e := EventError{Index: i, ID: envelopeID(raw), Reason: events.ReasonMalformed, Message: err.Error()}
				var ve *events.ValidationError
				if errors.As(err, &ve) {
					e.Reason, e.Field, e.Message = ve.Reason, ve.Field, ve.Msg
				}
				bad.Events = append(bad.Events, e)
			}
			continue
		}
		recs = append(recs, &kgo.Record{Topic: a.cfg.EventsTopic, Key: []byte(ev.Key()), Value: raw})
	}
	if bad.Invalid > 0 {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	if err := a.produce(r.Context(), recs); err != nil {
		a.log.Error("producing ingested events failed", "events", len(recs), "err", err)
		writeUnavailable(w, "producing the events failed, none were committed; retry")
		return
	}
	writeJSON(w, http.StatusAccepted, IngestResponse{Accepted: len(recs)})
}

// envelopeID returns the id of an event that failed validation, when it
// has one that is short enough to echo.
func envelopeID(raw []byte) string {
	var env struct {
		ID string `json:"id"`
	}
	if gojson.Unmarshal(raw, &env) != nil || len(env.ID) > events.MaxIDLen {
		return ""
	}
	return env.ID
}

// splitEvents splits an ingest body into one raw value per event: a JSON
// array (first non-space byte '[') or JSON lines (first byte '{'). A
// non-zero code is the status of a malformed or too large body.
func splitEvents(body []byte, maxEvents int) (raws [][]byte, code int, msg string) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, http.StatusBadRequest, "no events: the body is empty"
	}
	tooMany := func() ([][]byte, int, string) {
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("too many events: the limit is %d per request", maxEvents)
	}
	switch trimmed[0] {
	case '[':
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		if _, err := dec.Token(); err != nil {
			return nil, http.StatusBadRequest, "malformed JSON: " + err.Error()
		}
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, http.StatusBadRequest, "malformed JSON: " + err.Error()
			}
			if len(raws) == maxEvents {
				return tooMany()
			}
			raws = append(raws, raw)
		}
		if _, err := dec.Token(); err != nil {
			return nil, http.StatusBadRequest, "malformed JSON: " + err.Error()
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, http.StatusBadRequest, "malformed JSON: data after the array"
		}
	case '{':
		for line := range bytes.SplitSeq(trimmed, []byte{'\n'}) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if len(raws) == maxEvents {
				return tooMany()
			}
			raws = append(raws, line)
		}
	default:
		return nil, http.StatusBadRequest, "malformed JSON: the body must be a JSON array of events or JSON lines (one event per line)"
	}
	if len(raws) == 0 {
		return nil, http.StatusBadRequest, "no events: the array is empty"
	}
	return raws, 0, ""
}

// produce produces recs in one transaction: all of them become visible to
// read-committed consumers (the processor), or none.
func (a *API) produce(ctx context.Context, recs []*kgo.Record) error {
	a.txnMu.Lock()
	defer a.txnMu.Unlock()
	return ProduceTransaction(ctx, a.cfg.Producer, a.cfg.ProduceTimeout, recs...)
}

// ProduceTransaction produces recs in one transaction of the transactional
// producer p, waiting at most timeout for the records and as long again
// for the transaction's end: all of them become visible to read-committed
// consumers, or none. The caller keeps one transaction at a time on p.
// Ending the transaction is not cut short by ctx (a client going away):
// its outcome would be unknown.
func ProduceTransaction(ctx context.Context, p TxnProducer, timeout time.Duration, recs ...*kgo.Record) error {
	if err := p.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	perr := p.ProduceSync(pctx, recs...).FirstErr()
	ectx, ecancel := context.WithTimeout(context.Background(), timeout)
	defer ecancel()
	if perr != nil {
		// A timed-out ProduceSync may leave records buffered: they must
		// not join the next transaction.
		if err := p.AbortBufferedRecords(ectx); err != nil {
			return fmt.Errorf("produce: %w; abort buffered records: %v", perr, err)
		}
		if err := p.EndTransaction(ectx, kgo.TryAbort); err != nil {
			return fmt.Errorf("produce: %w; abort: %v", perr, err)
		}
		return fmt.Errorf("produce: %w", perr)
	}
	if err := p.EndTransaction(ectx, kgo.TryCommit); err != nil {
		if aerr := p.EndTransaction(ectx, kgo.TryAbort); aerr != nil {
			return fmt.Errorf("commit: %w; abort: %v", err, aerr)
		}
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
