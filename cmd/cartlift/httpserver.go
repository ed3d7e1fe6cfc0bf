package main

// The one way cartlift serves HTTP: every server the binary starts (the
// API with /metrics, the signed links, the analytics role's /metrics, the
// demo's webhook receiver) goes through startHTTPServer, with the same
// deadlines and limits, so that no client, however slow, holds a
// connection or a goroutine for good.

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpConfig bounds every HTTP server of the binary. It is part of the
// configuration of each role that serves HTTP (run, actions, analytics).
type httpConfig struct {
	// ReadTimeout bounds reading a whole request, headers and body: a
	// client that has not sent it all by then is disconnected. Headers
	// alone get min(ReadTimeout, 5s).
	ReadTimeout time.Duration `env:"CARTLIFT_HTTP_READ_TIMEOUT, default=10s"`
	// WriteTimeout bounds the time from the end of the request's headers
	// to the end of the answer (the handler included).
	WriteTimeout time.Duration `env:"CARTLIFT_HTTP_WRITE_TIMEOUT, default=30s"`
	// MaxHeaderBytes bounds the request line and headers (431 beyond;
	// net/http allows 4 KiB of slack on top).
	MaxHeaderBytes int `env:"CARTLIFT_HTTP_MAX_HEADER_BYTES, default=16384"`
	// MaxConns bounds the connections a server holds open at once; further
	// clients wait in the kernel's accept queue until one closes.
	MaxConns int `env:"CARTLIFT_HTTP_MAX_CONNS, default=1024"`
}

// maxHeaderTimeout caps the time for a request's headers.
const maxHeaderTimeout = 5 * time.Second

// httpIdleTimeout is how long a kept-alive connection may wait for its
// next request. It is longer than the API's forwarding transport keeps
// idle connections (90s), so the forwarder, not the server, closes them.
const httpIdleTimeout = 2 * time.Minute

func (c *httpConfig) validate() error {
	if c.ReadTimeout <= 0 {
		return configError("CARTLIFT_HTTP_READ_TIMEOUT", "must be positive, got %s", c.ReadTimeout)
	}
	if c.WriteTimeout <= 0 {
		return configError("CARTLIFT_HTTP_WRITE_TIMEOUT", "must be positive, got %s", c.WriteTimeout)
	}
	if c.MaxHeaderBytes <= 0 {
		return configError("CARTLIFT_HTTP_MAX_HEADER_BYTES", "must be positive, got %d", c.MaxHeaderBytes)
	}
	if c.MaxConns <= 0 {
		return configError("CARTLIFT_HTTP_MAX_CONNS", "must be positive, got %d", c.MaxConns)
	}
	return nil
}

// newHTTPServer is the http.Server of cfg for h.
func newHTTPServer(cfg httpConfig, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(cfg.ReadTimeout, maxHeaderTimeout),
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
	}
}

// startHTTPServer serves h on ln, bounded by cfg, until the returned
// server is shut down (Shutdown or Close); name labels its errors in log.
// The server owns ln from then on.
func startHTTPServer(cfg httpConfig, ln net.Listener, h http.Handler, name string, log *slog.Logger) *http.Server {
	srv := newHTTPServer(cfg, h)
	ln = limitListener(ln, cfg.MaxConns)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "server", name, "err", err)
		}
	}()
	return srv
}

// limitListener returns a listener that holds at most max connections open
// at once: Accept waits while max are open, so the clients beyond wait in
// the kernel's accept queue (and time out there) instead of each costing a
// goroutine. A connection counts until it is closed, also after net/http
// handed it over (refusal.Refuse).
func limitListener(ln net.Listener, max int) net.Listener {
	return &limitedListener{Listener: ln, sem: make(chan struct{}, max), done: make(chan struct{})}
}

type limitedListener struct {
	net.Listener
	sem       chan struct{} // one element per open connection
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close closes the listener and wakes an Accept waiting for a free slot.
func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitedConn frees its slot in the listener when closed, once.
type limitedConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite closes the write side of a TCP connection: net/http and
// refusal.Refuse use it to end an answer before closing.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
