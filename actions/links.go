package actions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/internal/refusal"
)

// Link kinds of signed tokens.
const (
	LinkResume      = "r"
	LinkUnsubscribe = "u"
)

// Outcome kinds recorded by the LinkHandler.
const (
	KindLinkClicked  = "link.clicked"
	KindUnsubscribed = "unsubscribed"
)

// DefaultLinkTTL is how long a signed link is valid (EmailConfig.LinkTTL).
const DefaultLinkTTL = 30 * 24 * time.Hour

// Errors of LinkSigner.Parse.
var (
	ErrLinkTampered = errors.New("link: invalid or tampered token")
	ErrLinkExpired  = errors.New("link: expired token")
)

const linkMACBytes = 16

// Link is the content of a signed token.
type Link struct {
	Kind        string
	DecisionID  string
	CustomerKey string
	CartID      string
	Expires     time.Time
}

type linkPayload struct {
	D string `json:"d"`
	K string `json:"k"`
	C string `json:"c,omitempty"`
	E int64  `json:"e"`
}

// LinkSigner makes and checks signed, expiring link tokens:
// base64url(JSON payload) "." base64url(HMAC-SHA256(secret, kind "." payload)[:16]).
// The kind is part of the MAC, so a resume token is no unsubscribe token.
type LinkSigner struct {
	Secret []byte
}

func (s LinkSigner) mac(kind, payload string) []byte {
	m := hmac.New(sha256.New, s.Secret)
	m.Write([]byte(kind))
	m.Write([]byte{'.'})
	m.Write([]byte(payload))
	return m.Sum(nil)[:linkMACBytes]
}

// Token returns the token of a link of kind ("r" resume, "u" unsubscribe).
func (s LinkSigner) Token(kind, decisionID, customerKey, cartID string, expires time.Time) string {
	raw, _ := json.Marshal(linkPayload{D: decisionID, K: customerKey, C: cartID, E: expires.Unix()})
	p := base64.RawURLEncoding.EncodeToString(raw)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac(kind, p))
}

// linkEncoding is the tokens' base64: URL alphabet, no padding, and
// strict, so that the unused low bits of the last character must be zero.
var linkEncoding = base64.RawURLEncoding.Strict()

// decodeCanonical decodes s, and fails unless s is the one encoding of
// what it decodes to. Strict decoding alone still skips CR and LF, and
// without it the unused bits of the last character are free: either way
// one token would have several spellings that all pass the MAC.
func decodeCanonical(s string) ([]byte, bool) {
	b, err := linkEncoding.DecodeString(s)
	if err != nil || linkEncoding.EncodeToString(b) != s {
		return nil, false
	}
	return b, true
}

// Parse checks a token of kind at now: ErrLinkTampered for a bad format or
// MAC (or a token of another kind), or for any spelling of a valid token
// other than the one Token returns; ErrLinkExpired once it has expired.
func (s LinkSigner) Parse(token, kind string, now time.Time) (Link, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok || p == "" || len(s.Secret) == 0 {
		return Link{}, ErrLinkTampered
	}
	got, ok := decodeCanonical(sig)
	if !ok || !hmac.Equal(got, s.mac(kind, p)) {
		return Link{}, ErrLinkTampered
	}
	raw, ok := decodeCanonical(p)
	if !ok {
		return Link{}, ErrLinkTampered
	}
	var lp linkPayload
	if err := json.Unmarshal(raw, &lp); err != nil || lp.D == "" || lp.K == "" {
		return Link{}, ErrLinkTampered
	}
	l := Link{Kind: kind, DecisionID: lp.D, CustomerKey: lp.K, CartID: lp.C, Expires: time.Unix(lp.E, 0).UTC()}
	if !now.Before(l.Expires) {
		return l, ErrLinkExpired
	}
	return l, nil
}

// LinkHandler serves signed links:
//
//   - GET /r/{token}: 302 to CartURLTemplate ({cart_id}, {decision_id},
//     {customer_key} replaced by query-escaped values) and a link.clicked
//     outcome (id "o-<decision id>-link.clicked", so repeated clicks are one
//     outcome for an idempotent consumer).
//   - GET /u/{token}: a confirmation page with a POST form.
//   - POST /u/{token} (RFC 8058 one-click, body List-Unsubscribe=One-Click):
//     an unsubscribed outcome and, for a known customer, a customer.updated
//     event with marketing_consent false (id "unsub-<decision id>"). Guests
//     ("anon:...") get the outcome only.
//
// A tampered token answers 400, an expired one 410, each with an HTML page
// and never a redirect. Those answers, and 404 and 405, end the connection
// without reading the request body (refusal.Refuse).
type LinkHandler struct {
	Signer          LinkSigner
	CartURLTemplate string
	// Outcome records an outcome (to cart-outcomes); may be nil.
	Outcome func(ctx context.Context, o events.Outcome) error
	// CustomerUpdate produces a cart-events record (key, value); may be nil.
	CustomerUpdate func(ctx context.Context, key string, value []byte) error
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

func (h *LinkHandler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

var linkPage = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p>{{if .Form}}
<form method="post" action="{{.Form}}"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>{{end}}
</body></html>
`))

func renderPage(title, msg, form string) []byte {
	var b bytes.Buffer
	_ = linkPage.Execute(&b, struct{ Title, Message, Form string }{title, msg, form})
	return b.Bytes()
}

func writePage(w http.ResponseWriter, status int, title, msg, form string) {
	b := renderPage(title, msg, form)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// refusePage answers with an error page as the connection's last answer,
// without reading the request body. The handler must return right after.
func refusePage(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	refusal.Refuse(w, status, "text/html; charset=utf-8", renderPage(title, msg, ""))
}

// ServeHTTP implements http.Handler.
func (h *LinkHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, token, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || (kind != LinkResume && kind != LinkUnsubscribe) || token == "" || strings.Contains(token, "/") {
		refusePage(w, http.StatusNotFound, "Not found", "This page does not exist.")
		return
	}
	switch {
	case kind == LinkResume && (r.Method == http.MethodGet || r.Method == http.MethodHead):
	case kind == LinkUnsubscribe && (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodPost):
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		refusePage(w, http.StatusMethodNotAllowed, "Method not allowed", "This method is not allowed here.")
		return
	}
	now := h.now()
	l, err := h.Signer.Parse(token, kind, now)
	switch {
	case errors.Is(err, ErrLinkExpired):
		refusePage(w, http.StatusGone, "Link expired", "This link has expired. Links in our emails are valid for a limited time.")
		return
	case err != nil:
		refusePage(w, http.StatusBadRequest, "Invalid link", "This link is invalid or has been altered. Please use the link from the email as it is.")
		return
	}
	if kind == LinkResume {
		h.resume(w, r, l, now)
		return
	}
	if r.Method != http.MethodPost {
		writePage(w, http.StatusOK, "Unsubscribe", "Do you want to stop receiving these emails?", r.URL.Path)
		return
	}
	h.unsubscribe(w, r, l, now)
}

func linkOutcome(l Link, kind string, now time.Time) events.Outcome {
	return events.Outcome{
		ID:          OutcomeID(l.DecisionID, kind),
		Kind:        kind,
		CustomerKey: l.CustomerKey,
		CartID:      l.CartID,
		DecisionID:  l.DecisionID,
		At:          now.UTC(),
	}
}

func (h *LinkHandler) resume(w http.ResponseWriter, r *http.Request, l Link, now time.Time) {
	target := strings.NewReplacer(
		"{cart_id}", url.QueryEscape(l.CartID),
		"{decision_id}", url.QueryEscape(l.DecisionID),
		"{customer_key}", url.QueryEscape(l.CustomerKey),
	).Replace(h.CartURLTemplate)
	if h.Outcome != nil && r.Method == http.MethodGet {
		// A failed record must not keep the customer from the cart.
		_ = h.Outcome(r.Context(), linkOutcome(l, KindLinkClicked, now))
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
}

func (h *LinkHandler) unsubscribe(w http.ResponseWriter, r *http.Request, l Link, now time.Time) {
	if !strings.HasPrefix(l.CustomerKey, events.AnonPrefix) && h.CustomerUpdate != nil {
		consent := false
		v, err := events.Encode("unsub-"+l.DecisionID, "cartlift-actions", events.TypeCustomerUpdated, now.UTC(), "",
			events.CustomerUpdated{CustomerID: l.CustomerKey, MarketingConsent: &consent})
		if err == nil {
			err = h.CustomerUpdate(r.Context(), l.CustomerKey, v)
		}
		if err != nil {
			writePage(w, http.StatusServiceUnavailable, "Please try again", "We could not unsubscribe you right now. Please try again in a moment.", "")
			return
		}
	}
	if h.Outcome != nil {
		if err := h.Outcome(r.Context(), linkOutcome(l, KindUnsubscribed, now)); err != nil && strings.HasPrefix(l.CustomerKey, events.AnonPrefix) {
			writePage(w, http.StatusServiceUnavailable, "Please try again", "We could not unsubscribe you right now. Please try again in a moment.", "")
			return
		}
	}
	writePage(w, http.StatusOK, "Unsubscribed", "You are unsubscribed and will not receive these emails any more.", "")
}

// signedLinks returns the resume and unsubscribe URLs of d when signed links
// are configured (ok false otherwise).
func (c EmailConfig) signedLinks(d events.Decision, now time.Time) (resume, unsub string, ok bool) {
	if !c.SignedLinks() {
		return "", "", false
	}
	ttl := c.LinkTTL
	if ttl <= 0 {
		ttl = DefaultLinkTTL
	}
	s := LinkSigner{Secret: c.LinkSecret}
	exp := now.Add(ttl)
	base := strings.TrimRight(c.LinkBaseURL, "/")
	resume = base + "/r/" + s.Token(LinkResume, d.ID, d.Customer.Key, d.Cart.CartID, exp)
	unsub = base + "/u/" + s.Token(LinkUnsubscribe, d.ID, d.Customer.Key, d.Cart.CartID, exp)
	return resume, unsub, true
}
