package actions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Webhook result kinds.
const (
	KindWebhookDelivered = "webhook.delivered"
	KindWebhookFailed    = "webhook.failed"
)

// Webhook headers.
const (
	HeaderSignature = "Cartlift-Signature"
	HeaderDelivery  = "Cartlift-Delivery"
)

// Webhook defaults.
const (
	DefaultWebhookTimeout      = 10 * time.Second
	DefaultSignatureTolerance  = 5 * time.Minute
	webhookResponseBodyToRead  = 4 << 10
	webhookErrorBodyToShowChar = 200
)

// WebhookConfig configures the webhook channel.
type WebhookConfig struct {
	// Endpoints receive every decision whose action is "webhook".
	Endpoints []string
	// DiscountURL, when set, receives every issued discount code
	// (an IssuedDiscount as JSON), so that the shop can honour it.
	DiscountURL string
	// Secret is the shared HMAC-SHA256 key; required.
	Secret string
	// Timeout of one POST; DefaultWebhookTimeout when zero.
	Timeout time.Duration
}

// WebhookHandler POSTs decisions to the configured endpoints, signed, at
// most once per decision id and endpoint (recorded in the Store after a
// 2xx answer). It is safe for concurrent use.
type WebhookHandler struct {
	Config WebhookConfig
	Store  *Store
	Client *http.Client
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// NewWebhookHandler builds a webhook handler.
func NewWebhookHandler(cfg WebhookConfig, store *Store) (*WebhookHandler, error) {
	if cfg.Secret == "" {
		return nil, errors.New("webhook: a secret is required")
	}
	if store == nil {
		return nil, errors.New("webhook: a store is required")
	}
	for _, u := range append(append([]string(nil), cfg.Endpoints...), cfg.DiscountURL) {
		if u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return nil, fmt.Errorf("webhook: endpoint %q must be an http(s) URL", u)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWebhookTimeout
	}
	return &WebhookHandler{Config: cfg, Store: store, Client: &http.Client{Timeout: cfg.Timeout}}, nil
}

func (w *WebhookHandler) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Sign returns the Cartlift-Signature header value of body at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func Sign(secret string, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifySignature checks a Cartlift-Signature header against the raw body,
// as a receiver must: it recomputes HMAC-SHA256(secret, t + "." + body),
// compares it with every v1 value in constant time, and rejects a
// timestamp more than tolerance away from now (a replay).
func VerifySignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook signature: missing or invalid timestamp")
	}
	if len(sigs) == 0 {
		return errors.New("webhook signature: no v1 signature")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook signature: timestamp %d outside the tolerance of %s", sec, tolerance)
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return errors.New("webhook signature: mismatch")
}

// Post POSTs body to url once, signed, with Cartlift-Delivery: deliveryID.
// A 2xx answer is success; a 4xx answer other than 408 and 429 is a
// permanent *DeliveryError; 5xx, 408, 429 and network errors (timeouts
// included) are transient.
func (w *WebhookHandler) Post(ctx context.Context, url, deliveryID string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &DeliveryError{Permanent: true, Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cartlift-webhook")
	req.Header.Set(HeaderSignature, Sign(w.Config.Secret, body, w.now()))
	req.Header.Set(HeaderDelivery, deliveryID)
	client := w.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultWebhookTimeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return &DeliveryError{Err: err}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, webhookResponseBodyToRead))
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	if len(snippet) > webhookErrorBodyToShowChar {
		snippet = snippet[:webhookErrorBodyToShowChar]
	}
	return ClassifyHTTP(resp.StatusCode, fmt.Errorf("webhook %s: %s: %s", url, resp.Status, strings.TrimSpace(string(snippet))))
}

// ClassifyHTTP classifies a non-2xx HTTP status: 4xx except 408 and 429
// is permanent, anything else transient.
func ClassifyHTTP(status int, err error) *DeliveryError {
	permanent := status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
	return &DeliveryError{Permanent: permanent, Code: status, Err: err}
}

type webhookRecord struct {
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
}

// deliverOnce POSTs body to url unless the store records that delivery
// (key "w/" + key + "|" + url) as done; it records it after a 2xx.
// delivered is false when it had been delivered before.
func (w *WebhookHandler) deliverOnce(ctx context.Context, key, url, deliveryID string, body []byte) (delivered bool, err error) {
	skey := "w/" + key + "|" + url
	var rec webhookRecord
	if ok, err := w.Store.getJSON(skey, &rec); err != nil {
		return false, &DeliveryError{Err: err}
	} else if ok {
		return false, nil
	}
	if err := w.Post(ctx, url, deliveryID, body); err != nil {
		return false, err
	}
	if err := w.Store.putJSON(skey, webhookRecord{Kind: KindWebhookDelivered, At: w.now().UTC()}); err != nil {
		return true, fmt.Errorf("actions store: %w", err)
	}
	return true, nil
}

// Handle POSTs a "webhook" decision (its CloudEvent data, the
// events.Decision as JSON) to every endpoint. Kinds: webhook.delivered,
// webhook.failed (Err a *DeliveryError), duplicate (every endpoint had it
// already), skipped_holdout and expired (recorded, nothing sent).
func (w *WebhookHandler) Handle(ctx context.Context, d events.Decision) Result {
	res := Result{DecisionID: d.ID}
	if d.ID == "" {
		res.Kind, res.Err = KindWebhookFailed, &DeliveryError{Permanent: true, Err: errors.New("decision without id")}
		return res
	}
	return handleOnce(w.Store, d, w.now, KindWebhookFailed, func() (res Result) {
		res.DecisionID = d.ID
		if len(w.Config.Endpoints) == 0 {
			res.Kind, res.Err = KindWebhookFailed, &DeliveryError{Permanent: true, Err: errors.New("no webhook endpoint configured")}
			return res
		}
		body, err := json.Marshal(d)
		if err != nil {
			res.Kind, res.Err = KindWebhookFailed, &DeliveryError{Permanent: true, Err: err}
			return res
		}
		res.Kind = KindWebhookDelivered
		for _, u := range w.Config.Endpoints {
			if _, err := w.deliverOnce(ctx, d.ID, u, d.ID, body); err != nil {
				res.Kind, res.Err = KindWebhookFailed, err
				break
			}
		}
		return res
	})
}

// AnnounceDiscount POSTs an issued code (an IssuedDiscount as JSON) to
// Config.DiscountURL, once per decision id; nothing when no URL is
// configured. Cartlift-Delivery is the decision id.
func (w *WebhookHandler) AnnounceDiscount(ctx context.Context, disc IssuedDiscount) error {
	if w == nil || w.Config.DiscountURL == "" {
		return nil
	}
	body, err := json.Marshal(disc)
	if err != nil {
		return &DeliveryError{Permanent: true, Err: err}
	}
	_, err = w.deliverOnce(ctx, disc.DecisionID+"|"+KindDiscountIssued, w.Config.DiscountURL, disc.DecisionID, body)
	return err
}
