package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

const testLinkSecret = "0123456789abcdef0123456789abcdef-test"

func linkTestEnv(brokers []string) map[string]string {
	return map[string]string{
		"KAFKA_BROKERS":          strings.Join(brokers, ","),
		"CARTLIFT_LINK_SECRET":   testLinkSecret,
		"CARTLIFT_LINK_BASE_URL": "https://shop.example/cartlift",
		"CARTLIFT_CART_URL":      "https://shop.example/cart/{cart_id}?d={decision_id}",
	}
}

// readRecords reads topic from the start until want records arrived.
func readRecords(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: got %d records, want %d", topic, len(recs), want)
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

func TestLinkServer(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(1, "cart-events", "cart-outcomes"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	cfg, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(linkTestEnv(brokers)))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := newLinkServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ls == nil {
		t.Fatal("no link server with CARTLIFT_LINK_BASE_URL set")
	}
	defer ls.close()
	srv := httptest.NewServer(ls.handler)
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	signer := actions.LinkSigner{Secret: []byte(testLinkSecret)}
	exp := time.Now().Add(time.Hour)

	// A signed resume link redirects to the cart and records link.clicked.
	tok := signer.Token(actions.LinkResume, "d-1", "c-42", "cart-7", exp)
	resp, err := client.Get(srv.URL + "/r/" + tok)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("resume: status %d, want 302", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "https://shop.example/cart/cart-7?d=d-1" {
		t.Fatalf("resume: Location %q", loc)
	}
	outs := readRecords(t, brokers, "cart-outcomes", 1)
	if string(outs[0].Key) != "c-42" {
		t.Errorf("outcome key %q, want c-42", outs[0].Key)
	}
	var env struct {
		Type string         `json:"type"`
		Data events.Outcome `json:"data"`
	}
	if err := json.Unmarshal(outs[0].Value, &env); err != nil {
		t.Fatal(err)
	}
	if env.Type != events.TypeOutcome || env.Data.Kind != actions.KindLinkClicked || env.Data.DecisionID != "d-1" || env.Data.CartID != "cart-7" {
		t.Errorf("outcome %s %+v, want a link.clicked of d-1", env.Type, env.Data)
	}

	// A tampered token is refused, without a redirect.
	resp, err = client.Get(srv.URL + "/r/" + tok[:len(tok)-2] + "xx")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Errorf("tampered: status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// A one-click unsubscribe produces customer.updated with consent
	// withdrawn, keyed by the customer, on cart-events.
	utok := signer.Token(actions.LinkUnsubscribe, "d-1", "c-42", "cart-7", exp)
	resp, err = client.PostForm(srv.URL+"/u/"+utok, url.Values{"List-Unsubscribe": {"One-Click"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("unsubscribe: status %d, want 200", resp.StatusCode)
	}
	recs := readRecords(t, brokers, "cart-events", 1)
	if string(recs[0].Key) != "c-42" {
		t.Errorf("customer.updated key %q, want c-42", recs[0].Key)
	}
	ev, err := events.Decode(recs[0].Value, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != events.TypeCustomerUpdated || ev.CustomerUpdated == nil || ev.CustomerUpdated.MarketingConsent == nil || *ev.CustomerUpdated.MarketingConsent {
		t.Fatalf("cart-events record %+v, want customer.updated with marketing consent false", ev)
	}
	outs = readRecords(t, brokers, "cart-outcomes", 2)
	if err := json.Unmarshal(outs[1].Value, &env); err != nil {
		t.Fatal(err)
	}
	if env.Data.Kind != actions.KindUnsubscribed {
		t.Errorf("second outcome %q, want unsubscribed", env.Data.Kind)
	}
}

func TestLinkConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"short secret":   {map[string]string{"CARTLIFT_LINK_SECRET": "too-short"}, "CARTLIFT_LINK_SECRET"},
		"missing secret": {map[string]string{"CARTLIFT_LINK_SECRET": ""}, "CARTLIFT_LINK_SECRET"},
		"no cart URL":    {map[string]string{"CARTLIFT_CART_URL": ""}, "CARTLIFT_CART_URL"},
		"bad base URL":   {map[string]string{"CARTLIFT_LINK_BASE_URL": "shop.example"}, "CARTLIFT_LINK_BASE_URL"},
		"bad addr":       {map[string]string{"CARTLIFT_ACTIONS_HTTP_ADDR": "nope"}, "CARTLIFT_ACTIONS_HTTP_ADDR"},
	} {
		t.Run(name, func(t *testing.T) {
			env := linkTestEnv([]string{"127.0.0.1:1"})
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
		})
	}
	// Without CARTLIFT_LINK_BASE_URL there is no link server.
	cfg, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if ls, err := newLinkServer(cfg); ls != nil || err != nil {
		t.Fatalf("newLinkServer without links: %v, %v", ls, err)
	}
	if actionsConfigured(envconfig.MapLookuper(map[string]string{})) || !actionsConfigured(envconfig.MapLookuper(map[string]string{"SMTP_HOST": "mail"})) {
		t.Error("actionsConfigured: want it on exactly with SMTP_HOST")
	}
}

func TestActionsRetryConfig(t *testing.T) {
	// An old CARTLIFT_ACTIONS_MAX_ATTEMPTS, even an odd one, does not stop the start.
	cfg, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(map[string]string{"CARTLIFT_ACTIONS_MAX_ATTEMPTS": "five"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BackoffBase != time.Second || cfg.BackoffMax != time.Minute || cfg.MaxHold != 24*time.Hour || cfg.MaxAttempts != "five" {
		t.Errorf("defaults: backoff %s..%s, max hold %s, max attempts %q", cfg.BackoffBase, cfg.BackoffMax, cfg.MaxHold, cfg.MaxAttempts)
	}
	if !strings.HasPrefix(cfg.InstanceID, "cartlift-actions-") {
		t.Errorf("derived instance id %q", cfg.InstanceID)
	}
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"zero backoff":        {map[string]string{"CARTLIFT_ACTIONS_BACKOFF": "0s"}, "CARTLIFT_ACTIONS_BACKOFF"},
		"max below base":      {map[string]string{"CARTLIFT_ACTIONS_BACKOFF": "2s", "CARTLIFT_ACTIONS_BACKOFF_MAX": "1s"}, "CARTLIFT_ACTIONS_BACKOFF_MAX"},
		"unparsable max hold": {map[string]string{"CARTLIFT_ACTIONS_MAX_HOLD": "a day"}, "CARTLIFT_ACTIONS_MAX_HOLD"},
		"zero max hold":       {map[string]string{"CARTLIFT_ACTIONS_MAX_HOLD": "0s"}, "CARTLIFT_ACTIONS_MAX_HOLD"},
		"negative rate":       {map[string]string{"CARTLIFT_ACTIONS_RATE": "-1"}, "CARTLIFT_ACTIONS_RATE"},
	} {
		if _, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(tc.env)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one naming %s", name, err, tc.want)
		}
	}
}
