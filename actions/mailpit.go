package actions

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// FindMailpit returns the path of the mailpit binary (the local SMTP
// server the tests and `make demo` use): from $PATH, else from
// $(go env GOPATH)/bin, where `make tools` installs it.
func FindMailpit() (string, error) {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "mailpit")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("mailpit not found in $PATH nor in $(go env GOPATH)/bin (GOPATH=%q)", gopath)
}

// Mailpit is a Mailpit server on local ports, its messages in a database
// file so that they survive a Stop and a Start: the tests stop it to cut
// SMTP off and start it again on the same ports.
type Mailpit struct {
	SMTPPort int
	HTTPPort int
	// API is the base URL of its HTTP API, http://127.0.0.1:<HTTPPort>.
	API string

	bin   string
	base  []string // ports, database
	extra []string // StartMailpit's or Start's args
	cmd   *exec.Cmd
}

// StartMailpit starts Mailpit (FindMailpit) with its database in dir, on
// free local ports, with the extra command-line args (e.g.
// "--smtp-allowed-recipients", `@example\.com>?$`), and waits for its API.
func StartMailpit(dir string, args ...string) (*Mailpit, error) {
	bin, err := FindMailpit()
	if err != nil {
		return nil, err
	}
	m := &Mailpit{bin: bin}
	for _, p := range []*int{&m.SMTPPort, &m.HTTPPort} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		*p = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	m.API = fmt.Sprintf("http://127.0.0.1:%d", m.HTTPPort)
	m.base = []string{
		"--smtp", fmt.Sprintf("127.0.0.1:%d", m.SMTPPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", m.HTTPPort),
		"--database", filepath.Join(dir, "mailpit.db"),
		"--smtp-disable-rdns", "--disable-version-check", "--quiet",
	}
	m.extra = args
	return m, m.Start()
}

// Start starts the stopped server again, on the same ports and database,
// with the extra args of StartMailpit replaced by args when any are given;
// it waits (up to 15 s) until the API answers.
func (m *Mailpit) Start(args ...string) error {
	if m.cmd != nil {
		return errors.New("mailpit: already running")
	}
	if len(args) > 0 {
		m.extra = args
	}
	cmd := exec.Command(m.bin, append(slices.Clip(m.base), m.extra...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mailpit: %w", err)
	}
	m.cmd = cmd
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(m.API + "/api/v1/info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			m.Stop()
			return fmt.Errorf("mailpit: the API at %s did not come up: %v", m.API, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s) and waits for
// it; nothing listens on its ports afterwards.
func (m *Mailpit) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

// MessageIDs counts the messages the server holds by Message-ID (without
// angle brackets), through its API.
func (m *Mailpit) MessageIDs() (map[string]int, error) {
	ids := map[string]int{}
	for start := 0; ; {
		var page struct {
			Total    int
			Messages []struct{ MessageID string }
		}
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/messages?start=%d&limit=500", m.API, start))
		if err != nil {
			return nil, err
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("mailpit: messages: %w", err)
		}
		for _, msg := range page.Messages {
			ids[msg.MessageID]++
		}
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return ids, nil
		}
	}
}
