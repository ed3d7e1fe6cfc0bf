package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/processor"
)

func TestAPIConfig(t *testing.T) {
	chdirRoot(t)
	cfg, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{
		"CARTLIFT_API_TOKENS":     " reader-0123456789abcdef:read , writer-0123456789abcdef:write",
		"CARTLIFT_HTTP_ADVERTISE": "10.0.0.5:8080",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := apiTokens{"reader-0123456789abcdef": processor.ScopeRead, "writer-0123456789abcdef": processor.ScopeWrite}
	if len(cfg.APITokens) != 2 || cfg.APITokens["reader-0123456789abcdef"] != want["reader-0123456789abcdef"] ||
		cfg.APITokens["writer-0123456789abcdef"] != want["writer-0123456789abcdef"] {
		t.Fatalf("tokens %v", cfg.APITokens)
	}
	if cfg.HTTPAdvertise != "10.0.0.5:8080" || cfg.HTTPMaxBody != 1<<20 || cfg.APIMaxEvents != 10_000 {
		t.Fatalf("config %+v", cfg)
	}
	def, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{}))
	if err != nil || len(def.APITokens) != 0 {
		t.Fatalf("default tokens %v (%v)", def.APITokens, err)
	}
}

// TestAPIConfigErrors: bad API settings fail at start-up naming the
// variable, and an error about a token never shows the token.
func TestAPIConfigErrors(t *testing.T) {
	chdirRoot(t)
	const secret = "s3cret-s3cret-s3cret"
	cases := []struct{ env, value string }{
		{"CARTLIFT_API_TOKENS", secret + ":admin"},
		{"CARTLIFT_API_TOKENS", secret},
		{"CARTLIFT_API_TOKENS", "short:read"},
		{"CARTLIFT_API_TOKENS", secret + ":read," + secret + ":write"},
		{"CARTLIFT_API_TOKENS", "s3cret s3cret s3cret:read"},
		{"CARTLIFT_HTTP_MAX_BODY", "10"},
		{"CARTLIFT_HTTP_MAX_BODY", "1MiB"},
		{"CARTLIFT_HTTP_ADVERTISE", ":8080"},
		{"CARTLIFT_HTTP_ADVERTISE", "0.0.0.0:8080"},
		{"CARTLIFT_HTTP_ADVERTISE", "host:0"},
		{"CARTLIFT_API_MAX_EVENTS", "0"},
	}
	for _, c := range cases {
		t.Run(c.env+"="+c.value, func(t *testing.T) {
			_, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{c.env: c.value}))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.env) {
				t.Fatalf("error %q does not name %s", err, c.env)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q shows the token", err)
			}
		})
	}
}

func TestAdvertiseAddr(t *testing.T) {
	for _, c := range []struct{ configured, listen, want string }{
		{"", "0.0.0.0:8080", "127.0.0.1:8080"},
		{"", "[::]:8080", "127.0.0.1:8080"},
		{"", "10.1.2.3:8080", "10.1.2.3:8080"},
		{"", "127.0.0.1:39000", "127.0.0.1:39000"},
		{"cartlift-0.cartlift:8080", "0.0.0.0:8080", "cartlift-0.cartlift:8080"},
	} {
		addr, err := net.ResolveTCPAddr("tcp", c.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := advertiseAddr(c.configured, addr); got != c.want {
			t.Errorf("advertiseAddr(%q, %s) = %q, want %q", c.configured, c.listen, got, c.want)
		}
	}
}

// TestRunServesAPI starts `cartlift run`'s node (embedded broker, random
// ports) and uses its API: ingest with a write token, read the carts back,
// ops endpoints without a token, metrics of the requests.
func TestRunServesAPI(t *testing.T) {
	chdirRoot(t)
	const reader, writer = "reader-0123456789abcdef", "writer-0123456789abcdef"
	n, _ := startRunNode(t, map[string]string{
		"CARTLIFT_BROKER_ADDR": "127.0.0.1:0",
		"CARTLIFT_DATA_DIR":    t.TempDir(),
		"CARTLIFT_HTTP_ADDR":   "127.0.0.1:0",
		"CARTLIFT_PARTITIONS":  "2",
		"CARTLIFT_API_TOKENS":  reader + ":read," + writer + ":write",
	})
	base := "http://" + n.httpLn.Addr().String()
	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	ev, err := events.Encode("e-1", "shop", events.TypeItemAdded, time.Now().Add(-time.Minute), "", events.ItemAdded{
		CartRef: events.CartRef{CustomerID: "c-1", CartID: "k1", Currency: "EUR"},
		Item:    events.Item{SKU: "A", Quantity: 2, UnitPriceMinor: 450}})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := do("POST", "/v1/events", reader, string(ev)); code != 403 {
		t.Fatalf("ingest with a read token: %d %s", code, body)
	}
	if code, body := do("POST", "/v1/events", writer, string(ev)); code != 202 {
		t.Fatalf("ingest: %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := do("GET", "/v1/customers/c-1/carts", reader, "")
		var cr processor.CartsResponse
		if code == 200 && json.Unmarshal([]byte(body), &cr) == nil && len(cr.Carts) == 1 {
			if cr.Carts[0].TotalMinor != 900 {
				t.Fatalf("carts: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ingested cart did not appear: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := do("GET", "/v1/customers/c-1/carts", "", ""); code != 401 || !strings.Contains(body, `"error"`) {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body := do("GET", "/nope", "", ""); code != 404 || !strings.Contains(body, `"error"`) {
		t.Fatalf("unknown route: %d %s", code, body)
	}
	code, metrics := do("GET", "/metrics", "", "")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`cartlift_http_request_duration_seconds_count{code="2xx",method="GET",route="GET /v1/customers/{id}/carts"}`,
		`cartlift_http_request_duration_seconds_count{code="4xx",method="POST",route="POST /v1/events"} 1`,
		// Not "1": the client may send an idempotent GET again on a new
		// connection when the server closed the one it used.
		`cartlift_http_request_duration_seconds_count{code="4xx",method="GET",route="unmatched"} `,
		"cartlift_store_bytes ",
		`cartlift_store_memory_bytes{kind="block_cache"} `,
		"go_memstats_heap_alloc_bytes ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The memtable in use is allocated in full: its size shows at once.
	if m := regexp.MustCompile(`(?m)^cartlift_store_memory_bytes\{kind="memtables"\} (\S+)$`).FindStringSubmatch(metrics); m == nil || m[1] == "0" {
		t.Errorf("metrics lack the memtables' memory: %v", m)
	}
	if strings.Contains(metrics, "c-1") {
		t.Error("metrics name a customer")
	}
}

// startRunNode starts `cartlift run`'s node with the configuration env
// (read as the environment), stopped when the test ends.
func startRunNode(t *testing.T, env map[string]string) (*node, runConfig) {
	t.Helper()
	cfg, err := loadRunConfig(context.Background(), envconfig.MapLookuper(env))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := startNode(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := n.wait(); err != nil {
			t.Errorf("node: %v", err)
		}
	})
	return n, cfg
}
