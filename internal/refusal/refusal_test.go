package refusal_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/internal/refusal"
)

// TestRefuseAnswersWithoutReadingTheBody: a client declares a 200,000-byte
// body and sends none of it. The server has no read timeout at all, so any
// read of the body would block for good; yet the client gets the whole
// refusal, with Connection: close, and then the end of the connection.
func TestRefuseAnswersWithoutReadingTheBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		refusal.Refuse(w, http.StatusUnauthorized, "text/plain", []byte("no token\n"))
	}))
	defer srv.Close()
	for _, method := range []string{"POST", "HEAD"} {
		t.Run(method, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, method+" / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\nab"); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 401 || !resp.Close || resp.Header.Get("WWW-Authenticate") != "Bearer" {
				t.Fatalf("status %d, close %v, header %v", resp.StatusCode, resp.Close, resp.Header)
			}
			if want := map[string]string{"POST": "no token\n", "HEAD": ""}[method]; string(body) != want {
				t.Fatalf("body %q, want %q", body, want)
			}
			// Then the end of the connection, not another answer and not a
			// wait for the body.
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the answer: %q, %v (want the end of the connection)", rest, err)
			}
		})
	}
}

// TestRefuseWithoutAConnection: on a recorder (no connection to take),
// Refuse still writes the answer.
func TestRefuseWithoutAConnection(t *testing.T) {
	rec := httptest.NewRecorder()
	refusal.Refuse(rec, http.StatusForbidden, "application/json", []byte(`{"error":"scope"}`))
	if rec.Code != 403 || rec.Header().Get("Connection") != "close" || rec.Header().Get("Content-Length") != "17" ||
		!strings.Contains(rec.Body.String(), "scope") {
		t.Fatalf("%d %v %q", rec.Code, rec.Header(), rec.Body)
	}
}
