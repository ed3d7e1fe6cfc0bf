package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// emptyBackend answers every lookup as an owned, caught-up partition with
// no customer in it: the API without Kafka.
type emptyBackend struct{}

func (emptyBackend) Lookup(string) (*projections.CustomerState, processor.Freshness, bool, error) {
	return nil, processor.Freshness{CaughtUp: true}, true, nil
}

func (emptyBackend) Owners(context.Context) (map[int32]string, error) { return map[int32]string{}, nil }

const (
	testReader = "reader-0123456789abcdef"
	testWriter = "writer-0123456789abcdef"
)

// defaultHTTPConfig is the configuration of an empty environment.
func defaultHTTPConfig(t *testing.T) httpConfig {
	t.Helper()
	c, err := processEnv[httpConfig](context.Background(), envconfig.MapLookuper(nil))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveTestAPI serves the real API (with tokens, over the empty backend)
// through startHTTPServer on a loopback port, and returns its address.
func serveTestAPI(t *testing.T, cfg httpConfig) string {
	t.Helper()
	api, err := processor.NewAPI(processor.APIConfig{
		Backend: emptyBackend{},
		Tokens:  map[string]processor.Scope{testReader: processor.ScopeRead, testWriter: processor.ScopeWrite},
		MaxBody: 1 << 20,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	api.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := startHTTPServer(cfg, ln, api, "test api", slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// slowResult is what a slow client saw: the status line and headers of
// the answer, whether the connection ended after it, and when.
type slowResult struct {
	status int
	close  bool
	ended  bool // the server closed the connection after the answer
	took   time.Duration
	err    error
}

// slowBodyClient sends head (a request line and headers, without the
// blank line) declaring a body of declared bytes, then the body one byte
// per interval, until the server has answered and closed the connection,
// or wait has passed.
func slowBodyClient(addr, head string, declared int, interval, wait time.Duration) slowResult {
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return slowResult{err: err}
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\r\nContent-Length: %d\r\n\r\n", head, declared); err != nil {
		return slowResult{err: err}
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for range declared {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if _, err := c.Write([]byte{'x'}); err != nil {
				return // the server closed the connection
			}
		}
	}()
	_ = c.SetReadDeadline(start.Add(wait))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return slowResult{err: err, took: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r := slowResult{status: resp.StatusCode, close: resp.Close}
	// After the answer: the end of the connection (EOF, or a reset once
	// the server dropped it), not a wait until wait.
	_, err = br.ReadByte()
	var ne net.Error
	r.ended = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	r.took = time.Since(start)
	return r
}

// TestSlowBodyClientsWithoutTokenGet401Fast is the attack of issue #10:
// 50 clients without a token each declare a 200,000-byte body and send it
// one byte a second, for 3 seconds (one that is answered comes back, once a
// second). The server's read timeout is a minute, so reading any of those
// bodies would take far longer than the test allows; every attempt gets
// its 401, with Connection: close, and the end of the connection within a
// few seconds. Meanwhile a normal client with a token keeps reading carts,
// with a p99 under 50 ms.
func TestSlowBodyClientsWithoutTokenGet401Fast(t *testing.T) {
	cfg := defaultHTTPConfig(t)
	cfg.ReadTimeout = time.Minute
	addr := serveTestAPI(t, cfg)

	const (
		slowClients = 50
		attack      = 3 * time.Second
		within      = 5 * time.Second
	)
	results := make([][]slowResult, slowClients)
	var wg sync.WaitGroup
	until := time.Now().Add(attack)
	for i := range slowClients {
		wg.Go(func() {
			for time.Now().Before(until) {
				next := time.Now().Add(time.Second)
				r := slowBodyClient(addr, "POST /v1/events HTTP/1.1\r\nHost: cartlift\r\nContent-Type: application/json",
					200_000, time.Second, within)
				results[i] = append(results[i], r)
				if r.err != nil {
					return
				}
				time.Sleep(time.Until(next)) // pacing: one attempt a second
			}
		})
	}
	slowDone := make(chan struct{})
	go func() { wg.Wait(); close(slowDone) }()

	// The normal client: a GET every 5 ms on one kept-alive connection,
	// until the slow clients are done.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var lat []time.Duration
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-slowDone:
			done = true
		case <-tick.C:
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/customers/c-1/carts", nil)
		req.Header.Set("Authorization", "Bearer "+testReader)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"carts"`) {
			t.Fatalf("normal client: %d %s", resp.StatusCode, body)
		}
	}
	attempts := 0
	for i, rs := range results {
		for j, r := range rs {
			attempts++
			if r.err != nil || r.status != http.StatusUnauthorized || !r.close || !r.ended || r.took > within {
				t.Errorf("slow client %d, attempt %d: status %d, Connection: close %v, connection ended %v, after %s, err %v",
					i, j, r.status, r.close, r.ended, r.took.Round(time.Millisecond), r.err)
			}
		}
	}
	if attempts < slowClients {
		t.Fatalf("%d attempts", attempts)
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	t.Logf("%d slow-body attempts; normal client: %d requests, p50 %s, p99 %s, max %s",
		attempts, len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	if p99 > 50*time.Millisecond {
		t.Errorf("normal client's p99 is %s, want under 50ms", p99)
	}
}

// TestRefusalsDoNotReadTheBody: 401 (bad token), 403 (read token on a
// write route) and 413 (declared body over CARTLIFT_HTTP_MAX_BODY) answer
// a client that sends its body one byte a second at once, and end the
// connection; a write route with a write token, which does read the body,
// is what the read timeout is for (below).
func TestRefusalsDoNotReadTheBody(t *testing.T) {
	cfg := defaultHTTPConfig(t)
	cfg.ReadTimeout = time.Minute
	addr := serveTestAPI(t, cfg)
	for _, c := range []struct {
		name, head string
		declared   int
		want       int
	}{
		{"invalid token", "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-token-0123456789", 1000, 401},
		{"read scope", "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testReader, 1000, 403},
		{"declared too large", "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testWriter, 2 << 20, 413},
		{"unknown route", "POST /v1/nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testWriter, 1000, 404},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := slowBodyClient(addr, c.head, c.declared, time.Second, 5*time.Second)
			if r.err != nil || r.status != c.want || !r.close || !r.ended {
				t.Fatalf("status %d (want %d), Connection: close %v, connection ended %v, after %s, err %v",
					r.status, c.want, r.close, r.ended, r.took.Round(time.Millisecond), r.err)
			}
		})
	}
}

// TestReadTimeoutCutsOffSlowClients: with CARTLIFT_HTTP_READ_TIMEOUT=1s,
// a client that sends its headers a byte at a time, and one with a valid
// token that sends its body a byte at a time, are both disconnected
// within a few seconds, not after the minutes they would take.
func TestReadTimeoutCutsOffSlowClients(t *testing.T) {
	cfg := defaultHTTPConfig(t)
	cfg.ReadTimeout = time.Second
	addr := serveTestAPI(t, cfg)
	const within = 8 * time.Second

	t.Run("slow headers", func(t *testing.T) {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		closed := make(chan error, 1)
		go func() {
			_ = c.SetReadDeadline(start.Add(within))
			_, err := c.Read(make([]byte, 1))
			closed <- err
		}()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case err := <-closed:
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
					t.Fatalf("after %s, %d header bytes: %v; want the server to hang up", time.Since(start), i, err)
				}
				return
			case <-tick.C:
				if _, err := c.Write([]byte{'a'}); err != nil {
					return // the server hung up
				}
			}
		}
	})

	t.Run("slow body with a token", func(t *testing.T) {
		r := slowBodyClient(addr, "POST /v1/customers/c-1/carts/k-1/discard HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testWriter,
			1000, 100*time.Millisecond, within)
		// The handler's read fails at the deadline: 400 and the end of the
		// connection (or the end of the connection alone).
		if r.took > within || (r.err == nil && (r.status != http.StatusBadRequest || !r.ended)) {
			t.Fatalf("status %d, connection ended %v, after %s, err %v", r.status, r.ended, r.took.Round(time.Millisecond), r.err)
		}
		var ne net.Error
		if r.err != nil && errors.As(r.err, &ne) && ne.Timeout() {
			t.Fatalf("the server held the connection for %s: %v", r.took, r.err)
		}
	})
}

// TestOversizedHeadersGet431: headers over CARTLIFT_HTTP_MAX_HEADER_BYTES
// (and net/http's 4 KiB of slack) get 431; a request just under the limit
// is served.
func TestOversizedHeadersGet431(t *testing.T) {
	addr := serveTestAPI(t, defaultHTTPConfig(t))
	get := func(extra int) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/healthz", nil)
		req.Header.Set("X-Padding", strings.Repeat("p", extra))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(12 << 10); code != http.StatusOK {
		t.Fatalf("12 KiB of headers: %d", code)
	}
	if code := get(64 << 10); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %d, want 431", code)
	}
}

// TestConnectionsBeyondTheBoundWait: with CARTLIFT_HTTP_MAX_CONNS=2, two
// kept-alive connections take both slots; a third connection is accepted
// by the kernel but not served (no goroutine reads it) until one of the
// two closes, and then it is.
func TestConnectionsBeyondTheBoundWait(t *testing.T) {
	cfg := defaultHTTPConfig(t)
	cfg.MaxConns = 2
	addr := serveTestAPI(t, cfg)
	const req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	served := func(c net.Conn, br *bufio.Reader, wait time.Duration) (bool, error) {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, nil
			}
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, req)
		if ok, err := served(c, bufio.NewReader(c), 5*time.Second); !ok || err != nil {
			t.Fatalf("held connection not served: %v", err)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_, _ = io.WriteString(third, req)
	br := bufio.NewReader(third)
	if ok, err := served(third, br, 300*time.Millisecond); ok || err != nil {
		t.Fatalf("a third connection was served beyond the bound of 2 (%v)", err)
	}
	held[0].Close()
	if ok, err := served(third, br, 5*time.Second); !ok || err != nil {
		t.Fatalf("the third connection was not served once a slot was free: %v", err)
	}
}

// TestHTTPConfigErrorsNameTheVariable: the HTTP limits are validated at
// start-up by every role that serves HTTP, naming the variable.
func TestHTTPConfigErrorsNameTheVariable(t *testing.T) {
	chdirRoot(t)
	def := defaultHTTPConfig(t)
	if def != (httpConfig{ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16384, MaxConns: 1024}) {
		t.Fatalf("defaults %+v", def)
	}
	loaders := map[string]func(map[string]string) error{
		"run": func(env map[string]string) error {
			_, err := loadRunConfig(context.Background(), envconfig.MapLookuper(env))
			return err
		},
		"actions": func(env map[string]string) error {
			_, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(env))
			return err
		},
		"analytics": func(env map[string]string) error {
			env["CLICKHOUSE_ADDR"] = "127.0.0.1:9000"
			_, err := loadAnalyticsConfig(context.Background(), envconfig.MapLookuper(env))
			return err
		},
	}
	cases := []struct{ env, value string }{
		{"CARTLIFT_HTTP_READ_TIMEOUT", "0s"},
		{"CARTLIFT_HTTP_READ_TIMEOUT", "-1s"},
		{"CARTLIFT_HTTP_READ_TIMEOUT", "soon"},
		{"CARTLIFT_HTTP_WRITE_TIMEOUT", "0"},
		{"CARTLIFT_HTTP_MAX_HEADER_BYTES", "0"},
		{"CARTLIFT_HTTP_MAX_HEADER_BYTES", "16k"},
		{"CARTLIFT_HTTP_MAX_CONNS", "-5"},
	}
	for role, load := range loaders {
		if err := load(map[string]string{}); err != nil {
			t.Fatalf("%s: defaults refused: %v", role, err)
		}
		for _, c := range cases {
			t.Run(role+"/"+c.env+"="+c.value, func(t *testing.T) {
				err := load(map[string]string{c.env: c.value})
				if err == nil || !strings.Contains(err.Error(), c.env) {
					t.Fatalf("error %v does not name %s", err, c.env)
				}
			})
		}
	}
	cfg, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{
		"CARTLIFT_HTTP_READ_TIMEOUT": "3s", "CARTLIFT_HTTP_WRITE_TIMEOUT": "7s",
		"CARTLIFT_HTTP_MAX_HEADER_BYTES": "4096", "CARTLIFT_HTTP_MAX_CONNS": "8",
	}))
	if err != nil || cfg.HTTP != (httpConfig{ReadTimeout: 3 * time.Second, WriteTimeout: 7 * time.Second, MaxHeaderBytes: 4096, MaxConns: 8}) {
		t.Fatalf("%+v %v", cfg.HTTP, err)
	}
	srv := newHTTPServer(cfg.HTTP, http.NotFoundHandler())
	if srv.ReadTimeout != 3*time.Second || srv.ReadHeaderTimeout != 3*time.Second || srv.WriteTimeout != 7*time.Second ||
		srv.MaxHeaderBytes != 4096 || srv.IdleTimeout <= 0 {
		t.Fatalf("server %+v", srv)
	}
}

// TestLinkServerRefusesSlowClients: the signed-link server, served as
// `cartlift actions` serves it, answers a bad token or an unknown path at
// once, with Connection: close, to a client that sends its body one byte a
// second, and a respelled token is refused there too.
func TestLinkServerRefusesSlowClients(t *testing.T) {
	cfg, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(linkTestEnv([]string{"127.0.0.1:9"})))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.ReadTimeout = time.Minute
	ls, err := newLinkServer(cfg) // its producer connects on first use; none here
	if err != nil {
		t.Fatal(err)
	}
	defer ls.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := startHTTPServer(cfg.HTTP, ln, ls.handler, "test links", slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer srv.Close()
	addr := ln.Addr().String()

	tok := actions.LinkSigner{Secret: []byte(testLinkSecret)}.Token(actions.LinkUnsubscribe, "d-1", "c-42", "cart-7", time.Now().Add(time.Hour))
	for _, c := range []struct {
		path string
		want int
	}{
		{"/u/" + tok[:len(tok)-3] + "abc", http.StatusBadRequest},
		{"/u/not-a-token", http.StatusBadRequest},
		{"/r/" + tok, http.StatusMethodNotAllowed}, // POST on a resume link
		{"/x/" + tok, http.StatusNotFound},
	} {
		r := slowBodyClient(addr, "POST "+c.path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded",
			100_000, time.Second, 5*time.Second)
		if r.err != nil || r.status != c.want || !r.close || !r.ended {
			t.Errorf("POST %s: status %d (want %d), Connection: close %v, connection ended %v, after %s, err %v",
				c.path, r.status, c.want, r.close, r.ended, r.took.Round(time.Millisecond), r.err)
		}
	}
}

// TestDemoWebhooksServeThroughTheLimits: the demo's webhook receiver
// refuses a bad signature with Connection: close, and a client that sends
// its body slowly is cut off at the read timeout.
func TestDemoWebhooksServeThroughTheLimits(t *testing.T) {
	cfg := defaultHTTPConfig(t)
	cfg.ReadTimeout = time.Second
	h, err := startDemoWebhooks(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	resp, err := http.Post(h.url, "application/json", strings.NewReader(`{"unsigned":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close || h.received() != 0 {
		t.Fatalf("unsigned webhook: %d, Connection: close %v, received %d", resp.StatusCode, resp.Close, h.received())
	}
	u, _ := url.Parse(h.url)
	r := slowBodyClient(u.Host, "POST "+u.Path+" HTTP/1.1\r\nHost: x", 1000, 100*time.Millisecond, 8*time.Second)
	var ne net.Error
	if r.err != nil && errors.As(r.err, &ne) && ne.Timeout() {
		t.Fatalf("a slow webhook body held the connection for %s", r.took)
	}
	if r.err == nil && (r.status != http.StatusUnauthorized || !r.ended) {
		t.Fatalf("slow webhook body: %d, ended %v", r.status, r.ended)
	}
}
