// Package refusal answers HTTP/1.x requests that will not be served (401,
// 403, 413, a bad link) without reading their bodies.
//
// net/http, left alone, reads up to 256 KiB of an unread request body
// before it writes the answer (so that the connection can be reused), and
// reads it again after the handler returned. A client that declares a body
// and sends it one byte a second therefore holds a connection and a
// goroutine until the server's read timeout, and gets its 401 only then.
// Refuse answers at once and reads nothing.
package refusal

import (
	"net/http"
	"strconv"
	"time"
)

// Linger is how long Refuse keeps a connection open after it sent the
// answer and closed its write side, so that the answer reaches the client
// before the close: closing a socket with unread bytes in its receive
// buffer sends a TCP reset, which can destroy an answer still in flight.
// It costs a timer, not a goroutine. net/http waits as long in the same
// case (a body over http.MaxBytesReader's limit).
const Linger = 500 * time.Millisecond

// Refuse writes code with body (of contentType; other headers, such as
// WWW-Authenticate, set before the call) as the last answer on the
// connection, and ends the connection without reading the request body:
//
//   - the answer carries Connection: close and its Content-Length, so
//     net/http writes it without reading the body first, and the client
//     knows where it ends;
//   - then Refuse takes the connection from net/http (which would
//     otherwise read the body after the handler returns), closes its write
//     side, so that the client sees the end of the answer, and closes the
//     connection Linger later.
//
// The handler must return right after Refuse, without touching w or the
// request body. When the connection cannot be taken (HTTP/2, a test
// recorder), Refuse sets a read deadline in the past instead, so that
// whatever reads the body next fails at once.
func Refuse(w http.ResponseWriter, code int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Connection", "close")
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body) // an error for HEAD requests, which have no body
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		_ = rc.SetReadDeadline(time.Now())
		return
	}
	// Flush wrote the answer through net/http's buffers into the kernel's;
	// CloseWrite queues the FIN after it.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetDeadline(time.Now())
	time.AfterFunc(Linger, func() { _ = conn.Close() })
}
