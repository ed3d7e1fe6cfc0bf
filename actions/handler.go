package actions

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Result kinds.
const (
	KindEmailSent      = "email.sent"
	KindEmailFailed    = "email.failed"
	KindSkippedHoldout = "skipped_holdout"
	KindExpired        = "expired"
	KindNoConsent      = "no_consent"
	KindNoAddress      = "no_address"
	KindDuplicate      = "duplicate"
)

// Result is what handling one decision did. Err is set for email.failed
// (a *DeliveryError: see IsPermanent and Retryable) and for store errors.
// For a duplicate, Previous is the kind recorded the first time.
type Result struct {
	DecisionID string
	Kind       string
	Previous   string
	Err        error
	// Discount is the code issued for the decision (email.sent only).
	Discount *IssuedDiscount
}

// Retryable reports whether handling the decision again may succeed: a
// transient delivery failure, which is not recorded in the store.
func (r Result) Retryable() bool {
	return (r.Kind == KindEmailFailed || r.Kind == KindWebhookFailed) && r.Err != nil && !IsPermanent(r.Err)
}

// Handler handles decisions with the email channel, at most one email per
// decision id. It is safe for concurrent use.
//
// Order of checks: a decision id already in the store gives "duplicate"
// (nothing is sent); then holdout, valid_until, consent and address. Every
// outcome except a transient delivery failure is recorded, so a redelivery
// of the decision (a Kafka replay, a restart) sends nothing. The record is
// written after the send: a crash between the two can send an email twice
// (at-least-once in that window); the Message-ID is derived from the
// decision id so that a receiver can de-duplicate.
type Handler struct {
	Sender    Sender
	Store     *Store
	Templates *Templates
	Config    EmailConfig
	// Now returns the current time; time.Now when nil.
	Now func() time.Time

	locks [64]sync.Mutex
}

// NewHandler builds a handler from its parts; templates nil means the
// embedded defaults.
func NewHandler(cfg EmailConfig, sender Sender, store *Store, templates *Templates) (*Handler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sender == nil || store == nil {
		return nil, errors.New("actions: a sender and a store are required")
	}
	if templates == nil {
		t, err := DefaultTemplates()
		if err != nil {
			return nil, err
		}
		templates = t
	}
	return &Handler{Sender: sender, Store: store, Templates: templates, Config: cfg}, nil
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) lock(id string) *sync.Mutex {
	f := fnv.New32a()
	f.Write([]byte(id))
	return &h.locks[f.Sum32()%uint32(len(h.locks))]
}

// handleOnce is what every action shares. A decision already recorded is a
// duplicate; a holdout decision is skipped and one past valid_until is
// expired; otherwise act acts. The result is recorded under the decision
// id, except a transient failure, so that a retry can still act.
func handleOnce(store *Store, d events.Decision, now func() time.Time, failKind string, act func() Result) Result {
	res := Result{DecisionID: d.ID}
	prev, found, err := store.Get(d.ID)
	switch {
	case err != nil:
		res.Kind, res.Err = failKind, &DeliveryError{Err: err}
		return res
	case found:
		res.Kind, res.Previous = KindDuplicate, prev.Kind
		return res
	case d.Holdout:
		res.Kind = KindSkippedHoldout
	case !d.ValidUntil.IsZero() && now().After(d.ValidUntil):
		res.Kind = KindExpired
	default:
		res = act()
		if res.Retryable() {
			return res // transient: not recorded, so a retry can act
		}
	}
	rec := Record{Kind: res.Kind, At: now().UTC()}
	if res.Err != nil {
		rec.Error = res.Err.Error()
	}
	if err := store.Put(d.ID, rec); err != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("actions store: %w", err))
	}
	return res
}

// Handle handles one decision.
func (h *Handler) Handle(ctx context.Context, d events.Decision) Result {
	res := Result{DecisionID: d.ID}
	if d.ID == "" {
		res.Kind, res.Err = KindEmailFailed, &DeliveryError{Permanent: true, Err: errors.New("decision without id")}
		return res
	}
	mu := h.lock(d.ID)
	mu.Lock()
	defer mu.Unlock()

	return handleOnce(h.Store, d, h.now, KindEmailFailed, func() (res Result) {
		res.DecisionID = d.ID
		switch {
		case !d.Customer.MarketingConsent:
			res.Kind = KindNoConsent
		case strings.TrimSpace(d.Customer.Email) == "":
			res.Kind = KindNoAddress
		default:
			res.Kind, res.Err, res.Discount = h.send(ctx, d)
		}
		return res
	})
}

// send issues the decision's discount code (if it has a discount; the same
// code on every attempt, see Store.IssueDiscount), renders and sends.
func (h *Handler) send(ctx context.Context, d events.Decision) (string, error, *IssuedDiscount) {
	resume, unsub, signed := h.Config.signedLinks(d, h.now())
	if !signed {
		resume = ExpandURL(h.Config.ResumeURLTemplate, d)
		unsub = ExpandURL(h.Config.UnsubscribeURL, d)
	}
	data := h.Config.Branding.EmailData(d, resume, unsub)
	var disc *IssuedDiscount
	if HasDiscount(d) && data.Discount != nil {
		issued, _, err := h.Store.IssueDiscount(d, h.now())
		if err != nil {
			return KindEmailFailed, &DeliveryError{Err: fmt.Errorf("discount code: %w", err)}, nil
		}
		disc = &issued
		data.Discount.Code = issued.Code
		data.Discount.ValidUntil = issued.ExpiresAt.Format(time.RFC3339)
	}
	r, err := h.Templates.RenderData(d.Template, data)
	if err != nil {
		return KindEmailFailed, &DeliveryError{Permanent: true, Err: fmt.Errorf("render: %w", err)}, disc
	}
	e := Email{
		To:        d.Customer.Email,
		ToName:    d.Customer.Name,
		Subject:   r.Subject,
		Text:      r.Text,
		HTML:      r.HTML,
		MessageID: MessageID(d.ID),
		Headers: map[string]string{
			"List-Unsubscribe":      "<" + unsub + ">",
			"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		},
	}
	if err := h.Sender.Send(ctx, e); err != nil {
		return KindEmailFailed, Classify(err), disc
	}
	return KindEmailSent, nil, disc
}

// MessageID is the Message-ID (without angle brackets) of the email of a
// decision: the same decision always gets the same one.
func MessageID(decisionID string) string {
	return url.PathEscape(decisionID) + "@cartlift"
}

// ExpandURL replaces {decision_id}, {cart_id}, {customer_key} and
// {customer_id} in tmpl with the path-escaped values of d.
func ExpandURL(tmpl string, d events.Decision) string {
	return strings.NewReplacer(
		"{decision_id}", url.PathEscape(d.ID),
		"{cart_id}", url.PathEscape(d.Cart.CartID),
		"{customer_key}", url.PathEscape(d.Customer.Key),
		"{customer_id}", url.PathEscape(d.Customer.CustomerID),
	).Replace(tmpl)
}
