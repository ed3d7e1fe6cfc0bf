package processor_test

// Forwarding and failure paths of the API with a fake backend: no Kafka,
// real HTTP servers standing in for the other instances.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// fakeBackend owns no partition; its owners map is set by the test.
type fakeBackend struct {
	mu        sync.Mutex
	owners    map[int32]string
	lookupErr error
	describes atomic.Int64
}

func (f *fakeBackend) Lookup(string) (*projections.CustomerState, processor.Freshness, bool, error) {
	return nil, processor.Freshness{Partition: 3}, false, f.lookupErr
}

func (f *fakeBackend) Owners(context.Context) (map[int32]string, error) {
	f.describes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owners, nil
}

func (f *fakeBackend) setOwner(part int32, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owners = map[int32]string{part: addr}
}

// seen is what a fake owner received.
type seen struct {
	method, uri, auth, fwd, body string
}

func fakeOwner(t *testing.T, code int, notOwner bool, got chan<- seen) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Header.Get("Authorization"), r.Header.Get(processor.HeaderForwarded), string(b)}
		if notOwner {
			w.Header().Set(processor.HeaderNotOwner, "1")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"from":%q}`, r.Host)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestAPIForwarding(t *testing.T) {
	const tok = "write-token-0123456789"
	fb := &fakeBackend{}
	var logs bytes.Buffer
	newServe := func(ttl time.Duration) func(method, target, body string, hdr ...string) *httptest.ResponseRecorder {
		api, err := processor.NewAPI(processor.APIConfig{Backend: fb, SelfAddr: "127.0.0.1:1", OwnersTTL: ttl,
			Tokens: map[string]processor.Scope{tok: processor.ScopeWrite},
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err != nil {
			t.Fatal(err)
		}
		return func(method, target, body string, hdr ...string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, target, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			w := httptest.NewRecorder()
			api.ServeHTTP(w, req)
			return w
		}
	}
	serve := newServe(20 * time.Millisecond)
	unavailable := func(t *testing.T, w *httptest.ResponseRecorder) {
		t.Helper()
		if w.Code != 503 || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), `"error"`) {
			t.Fatalf("%d %v %s, want 503 with Retry-After", w.Code, w.Header(), w.Body)
		}
	}

	t.Run("owner unknown", func(t *testing.T) {
		unavailable(t, serve("GET", "/v1/customers/c-1/carts", ""))
	})
	t.Run("owner is this instance", func(t *testing.T) {
		fb.setOwner(3, "127.0.0.1:1")
		waitRefresh()
		unavailable(t, serve("GET", "/v1/customers/c-1/carts", ""))
	})
	t.Run("forwarded as sent", func(t *testing.T) {
		got := make(chan seen, 4)
		fb.setOwner(3, fakeOwner(t, 202, false, got))
		waitRefresh()
		w := serve("POST", "/v1/customers/anon%3Ag%2F1/carts/k%201/discard?x=1", `{"reason":"r"}`)
		if w.Code != 202 || !strings.Contains(w.Body.String(), `"from"`) || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		s := <-got
		want := seen{"POST", "/v1/customers/anon%3Ag%2F1/carts/k%201/discard?x=1", "Bearer " + tok, "1", `{"reason":"r"}`}
		if s != want {
			t.Fatalf("owner saw %+v, want %+v", s, want)
		}
	})
	t.Run("explain forwarded as sent", func(t *testing.T) {
		got := make(chan seen, 4)
		fb.setOwner(3, fakeOwner(t, 200, false, got))
		waitRefresh()
		w := serve("GET", "/v1/customers/anon%3Ag%2F1/carts/k%201/explain", "")
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"from"`) {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		if s, want := <-got, (seen{"GET", "/v1/customers/anon%3Ag%2F1/carts/k%201/explain", "Bearer " + tok, "1", ""}); s != want {
			t.Fatalf("owner saw %+v, want %+v", s, want)
		}
	})
	t.Run("not forwarded twice", func(t *testing.T) {
		w := serve("GET", "/v1/customers/c-1/carts", "", processor.HeaderForwarded, "1")
		unavailable(t, w)
		if w.Header().Get(processor.HeaderNotOwner) == "" {
			t.Fatal("no not-owner header")
		}
	})
	t.Run("stale owner", func(t *testing.T) {
		// The cached owner (fresh for a minute) says it is not the owner
		// any more: the map is refreshed at once and the request goes to
		// the new owner.
		serve := newServe(time.Minute)
		gotOld, gotNew := make(chan seen, 4), make(chan seen, 4)
		fb.setOwner(3, fakeOwner(t, 503, true, gotOld))
		if w := serve("GET", "/v1/customers/c-1", ""); w.Code != 503 || w.Header().Get(processor.HeaderNotOwner) != "" {
			t.Fatalf("%d %v", w.Code, w.Header())
		}
		<-gotOld
		fb.setOwner(3, fakeOwner(t, 200, false, gotNew))
		waitRefresh()
		before := fb.describes.Load()
		w := serve("GET", "/v1/customers/c-1", "")
		if w.Code != 200 || len(gotOld) != 1 || len(gotNew) != 1 || fb.describes.Load() != before+1 {
			t.Fatalf("%d %s; old owner %d, new owner %d requests, %d describes", w.Code, w.Body, len(gotOld), len(gotNew), fb.describes.Load()-before)
		}
		// Cached again: no new description.
		if w := serve("GET", "/v1/customers/c-1", ""); w.Code != 200 || fb.describes.Load() != before+1 {
			t.Fatalf("%d; %d describes", w.Code, fb.describes.Load()-before)
		}
	})
	t.Run("owner unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		fb.setOwner(3, dead)
		waitRefresh()
		unavailable(t, serve("GET", "/v1/customers/c-1/carts", ""))
	})
	t.Run("partitions unknown", func(t *testing.T) {
		fb.lookupErr = processor.ErrPartitionsUnknown
		defer func() { fb.lookupErr = nil }()
		unavailable(t, serve("GET", "/v1/customers/c-1/carts", ""))
	})
	t.Run("store error", func(t *testing.T) {
		fb.lookupErr = fmt.Errorf("state of %q in partition 3: %w", "secret-customer", errors.New("corrupt state record"))
		defer func() { fb.lookupErr = nil }()
		w := serve("GET", "/v1/customers/secret-customer/carts", "")
		if w.Code != 500 || !strings.Contains(w.Body.String(), `"error"`) || strings.Contains(w.Body.String(), "secret") {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	})
	t.Run("writes without a producer", func(t *testing.T) {
		unavailable(t, serve("POST", "/v1/events", "[]"))
	})
	// Nothing in the logs names a customer or a path.
	for _, pii := range []string{"secret-customer", "c-1", "anon%3A", "g%2F1", "k%201"} {
		if strings.Contains(logs.String(), pii) {
			t.Errorf("the log contains %q:\n%s", pii, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `route="GET /v1/customers/{id}/carts"`) {
		t.Errorf("the log lacks the route:\n%s", logs.String())
	}
}

// waitRefresh lets the minimum interval between two descriptions of the
// group (100ms) pass, and the 20ms cache expire.
func waitRefresh() { time.Sleep(110 * time.Millisecond) }

// fakeTxn records the calls of a transaction; failProduce and failCommit
// make them fail.
type fakeTxn struct {
	failProduce, failCommit bool
	calls                   []string
}

func (f *fakeTxn) BeginTransaction() error { f.calls = append(f.calls, "begin"); return nil }
func (f *fakeTxn) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	f.calls = append(f.calls, fmt.Sprintf("produce %d", len(rs)))
	var res kgo.ProduceResults
	for _, r := range rs {
		var err error
		if f.failProduce {
			err = errors.New("broker gone")
		}
		res = append(res, kgo.ProduceResult{Record: r, Err: err})
	}
	return res
}
func (f *fakeTxn) AbortBufferedRecords(context.Context) error {
	f.calls = append(f.calls, "abort buffered")
	return nil
}
func (f *fakeTxn) EndTransaction(_ context.Context, try kgo.TransactionEndTry) error {
	if try == kgo.TryCommit {
		f.calls = append(f.calls, "commit")
		if f.failCommit {
			return errors.New("commit failed")
		}
		return nil
	}
	f.calls = append(f.calls, "abort")
	return nil
}

// TestAPIIngestTransaction: a batch is one transaction; when producing or
// committing fails, it is aborted and the client is told to retry.
func TestAPIIngestTransaction(t *testing.T) {
	at := time.Now().Add(-time.Minute).UTC()
	body := "[" + string(itemJSON(t, "i1", "c-1", "k1", at, 1, 1)) + "," + string(itemJSON(t, "i2", "c-2", "k1", at, 1, 1)) + "]"
	for _, c := range []struct {
		name  string
		txn   fakeTxn
		code  int
		calls string
	}{
		{"ok", fakeTxn{}, 202, "begin,produce 2,commit"},
		{"produce fails", fakeTxn{failProduce: true}, 503, "begin,produce 2,abort buffered,abort"},
		{"commit fails", fakeTxn{failCommit: true}, 503, "begin,produce 2,commit,abort"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			api, err := processor.NewAPI(processor.APIConfig{Backend: &fakeBackend{}, Producer: &c.txn,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			w := httptest.NewRecorder()
			api.ServeHTTP(w, httptest.NewRequest("POST", "/v1/events", strings.NewReader(body)))
			if w.Code != c.code || strings.Join(c.txn.calls, ",") != c.calls {
				t.Fatalf("%d %s, calls %v; want %d, %s", w.Code, w.Body, c.txn.calls, c.code, c.calls)
			}
			if c.code == 503 && w.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}
