package actions_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

var linkSecret = []byte("test-link-secret")

type linkRecorder struct {
	mu       sync.Mutex
	outcomes []events.Outcome
	keys     []string
	values   [][]byte
}

func (lr *linkRecorder) outcome(_ context.Context, o events.Outcome) error {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.outcomes = append(lr.outcomes, o)
	return nil
}

func (lr *linkRecorder) update(_ context.Context, key string, value []byte) error {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.keys = append(lr.keys, key)
	lr.values = append(lr.values, value)
	return nil
}

var linkNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func linkServer(t *testing.T) (*httptest.Server, *linkRecorder) {
	t.Helper()
	lr := &linkRecorder{}
	h := &actions.LinkHandler{
		Signer:          actions.LinkSigner{Secret: linkSecret},
		CartURLTemplate: "https://shop.example/cart/{cart_id}?ref={decision_id}",
		Outcome:         lr.outcome,
		CustomerUpdate:  lr.update,
		Now:             func() time.Time { return linkNow },
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, lr
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirect().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestLinkTokenParse(t *testing.T) {
	s := actions.LinkSigner{Secret: linkSecret}
	tok := s.Token(actions.LinkResume, "dec-1", "cust-7", "cart 42", linkNow.Add(time.Hour))
	l, err := s.Parse(tok, actions.LinkResume, linkNow)
	if err != nil || l.DecisionID != "dec-1" || l.CustomerKey != "cust-7" || l.CartID != "cart 42" || !l.Expires.Equal(linkNow.Add(time.Hour)) {
		t.Fatalf("parse: %+v %v", l, err)
	}
	if _, err := s.Parse(tok, actions.LinkUnsubscribe, linkNow); !errors.Is(err, actions.ErrLinkTampered) {
		t.Fatalf("other kind: %v", err)
	}
	if _, err := (actions.LinkSigner{Secret: []byte("other")}).Parse(tok, actions.LinkResume, linkNow); !errors.Is(err, actions.ErrLinkTampered) {
		t.Fatalf("other secret: %v", err)
	}
	if _, err := s.Parse(tok, actions.LinkResume, linkNow.Add(2*time.Hour)); !errors.Is(err, actions.ErrLinkExpired) {
		t.Fatalf("expired: %v", err)
	}
	for _, bad := range []string{"", "x", "abc.def", tok + "x", "A" + tok} {
		if _, err := s.Parse(bad, actions.LinkResume, linkNow); !errors.Is(err, actions.ErrLinkTampered) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func TestResumeLinkRedirects(t *testing.T) {
	srv, lr := linkServer(t)
	tok := actions.LinkSigner{Secret: linkSecret}.Token("r", "dec-1", "cust-7", "cart/42", linkNow.Add(time.Hour))
	resp, _ := get(t, srv.URL+"/r/"+tok)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "https://shop.example/cart/cart%2F42?ref=dec-1" {
		t.Fatalf("Location %q", loc)
	}
	if len(lr.outcomes) != 1 || lr.outcomes[0].Kind != "link.clicked" || lr.outcomes[0].ID != "o-dec-1-link.clicked" ||
		lr.outcomes[0].CustomerKey != "cust-7" || lr.outcomes[0].DecisionID != "dec-1" {
		t.Fatalf("outcomes %+v", lr.outcomes)
	}
}

func TestTamperedAndExpiredLinks(t *testing.T) {
	srv, lr := linkServer(t)
	s := actions.LinkSigner{Secret: linkSecret}
	tok := s.Token("r", "dec-1", "cust-7", "cart-42", linkNow.Add(time.Hour))
	p, sig, _ := strings.Cut(tok, ".")
	forged := actions.LinkSigner{Secret: []byte("attacker")}.Token("r", "dec-1", "cust-7", "cart-43", linkNow.Add(time.Hour))
	fp, _, _ := strings.Cut(forged, ".") // another cart with the original MAC
	for _, bad := range []string{fp + "." + sig, p + "." + sig[:len(sig)-2] + "AA", "garbage", forged} {
		resp, body := get(t, srv.URL+"/r/"+bad)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "Invalid link") {
			t.Fatalf("%q: status %d, Location %q, body %q", bad, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
	expired := s.Token("r", "dec-1", "cust-7", "cart-42", linkNow.Add(-time.Second))
	resp, body := get(t, srv.URL+"/r/"+expired)
	if resp.StatusCode != http.StatusGone || resp.Header.Get("Location") != "" || !strings.Contains(body, "expired") {
		t.Fatalf("expired: status %d, Location %q, body %q", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	// An unsubscribe token is not a resume token.
	resp, _ = get(t, srv.URL+"/r/"+s.Token("u", "dec-1", "cust-7", "cart-42", linkNow.Add(time.Hour)))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unsubscribe token as resume: %d", resp.StatusCode)
	}
	if len(lr.outcomes) != 0 {
		t.Fatalf("outcomes %+v", lr.outcomes)
	}
}

// TestResumeLinkOtherSpellingsRefused: a token has one spelling. Changing
// the bits of the MAC's last character that base64 does not use, or adding
// a line break (which base64 decoders skip), decodes to the same MAC, and
// used to redirect; each such spelling answers 400 and records nothing,
// while the token as issued still redirects.
func TestResumeLinkOtherSpellingsRefused(t *testing.T) {
	srv, lr := linkServer(t)
	tok := actions.LinkSigner{Secret: linkSecret}.Token("r", "dec-1", "cust-7", "cart-42", linkNow.Add(time.Hour))
	p, sig, _ := strings.Cut(tok, ".")
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	// 16 MAC bytes are 22 characters; the last one carries 2 bits, and its
	// low 4 bits are unused.
	variants := []string{
		p + "." + sig[:len(sig)-1] + string(alphabet[last^1]),
		p + "." + sig[:len(sig)-1] + string(alphabet[last^8]),
		p + "." + sig[:10] + "%0A" + sig[10:],
	}
	want, _ := base64.RawURLEncoding.DecodeString(sig)
	for _, v := range variants {
		_, vsig, _ := strings.Cut(v, ".")
		vsig, _ = url.PathUnescape(vsig)
		if got, err := base64.RawURLEncoding.DecodeString(vsig); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%q is not another spelling of the MAC (%v)", v, err)
		}
		resp, body := get(t, srv.URL+"/r/"+v)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "Invalid link") {
			t.Fatalf("%q: status %d, Location %q", v, resp.StatusCode, resp.Header.Get("Location"))
		}
		if !resp.Close {
			t.Fatalf("%q: the refusal keeps the connection open", v)
		}
	}
	if len(lr.outcomes) != 0 {
		t.Fatalf("a respelled token recorded %+v", lr.outcomes)
	}
	if resp, _ := get(t, srv.URL+"/r/"+tok); resp.StatusCode != http.StatusFound {
		t.Fatalf("the token as issued: %d", resp.StatusCode)
	}
}

func postOneClick(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirect().Post(url, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestOneClickUnsubscribe(t *testing.T) {
	srv, lr := linkServer(t)
	tok := actions.LinkSigner{Secret: linkSecret}.Token("u", "dec-1", "cust-7", "cart-42", linkNow.Add(time.Hour))

	resp, body := get(t, srv.URL+"/u/"+tok)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `method="post"`) || !strings.Contains(body, "/u/"+tok) {
		t.Fatalf("GET: status %d body %q", resp.StatusCode, body)
	}
	if len(lr.outcomes) != 0 || len(lr.values) != 0 {
		t.Fatal("GET must not unsubscribe")
	}

	resp, body = postOneClick(t, srv.URL+"/u/"+tok)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "unsubscribed") {
		t.Fatalf("POST: status %d body %q", resp.StatusCode, body)
	}
	if len(lr.outcomes) != 1 || lr.outcomes[0].Kind != "unsubscribed" || lr.outcomes[0].ID != "o-dec-1-unsubscribed" {
		t.Fatalf("outcomes %+v", lr.outcomes)
	}
	if len(lr.values) != 1 || lr.keys[0] != "cust-7" {
		t.Fatalf("customer updates: keys %v", lr.keys)
	}
	ev, err := events.Decode(lr.values[0], linkNow)
	if err != nil {
		t.Fatal(err)
	}
	cu := ev.CustomerUpdated
	if ev.Type != events.TypeCustomerUpdated || ev.ID != "unsub-dec-1" || cu == nil || cu.CustomerID != "cust-7" ||
		cu.MarketingConsent == nil || *cu.MarketingConsent {
		t.Fatalf("event %+v / %+v", ev, cu)
	}
}

func TestGuestUnsubscribe(t *testing.T) {
	srv, lr := linkServer(t)
	tok := actions.LinkSigner{Secret: linkSecret}.Token("u", "dec-2", "anon:abc", "cart-9", linkNow.Add(time.Hour))
	resp, _ := postOneClick(t, srv.URL+"/u/"+tok)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if len(lr.values) != 0 {
		t.Fatalf("guest emitted %d customer.updated", len(lr.values))
	}
	if len(lr.outcomes) != 1 || lr.outcomes[0].Kind != "unsubscribed" || lr.outcomes[0].CustomerKey != "anon:abc" {
		t.Fatalf("outcomes %+v", lr.outcomes)
	}
}

type captureSender struct{ emails []actions.Email }

func (c *captureSender) Send(_ context.Context, e actions.Email) error {
	c.emails = append(c.emails, e)
	return nil
}

func TestEmailUsesSignedLinks(t *testing.T) {
	cfg := testConfig(2525)
	cfg.LinkSecret = linkSecret
	cfg.LinkBaseURL = "https://links.example/"
	store, err := actions.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cs := &captureSender{}
	h, err := actions.NewHandler(cfg, cs, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := decision(t)
	if r := h.Handle(context.Background(), d); r.Kind != actions.KindEmailSent {
		t.Fatalf("result %+v", r)
	}
	if len(cs.emails) != 1 {
		t.Fatalf("%d emails", len(cs.emails))
	}
	e := cs.emails[0]
	lu := e.Headers["List-Unsubscribe"]
	if !strings.HasPrefix(lu, "<https://links.example/u/") {
		t.Fatalf("List-Unsubscribe %q", lu)
	}
	tok := strings.TrimSuffix(strings.TrimPrefix(lu, "<https://links.example/u/"), ">")
	l, err := actions.LinkSigner{Secret: linkSecret}.Parse(tok, actions.LinkUnsubscribe, time.Now())
	if err != nil || l.DecisionID != d.ID || l.CustomerKey != d.Customer.Key || time.Until(l.Expires) < 29*24*time.Hour {
		t.Fatalf("token %+v %v", l, err)
	}
	if !strings.Contains(e.Text, "https://links.example/r/") || !strings.Contains(e.Text, "https://links.example/u/"+tok) {
		t.Fatalf("text without signed links:\n%s", e.Text)
	}
}
