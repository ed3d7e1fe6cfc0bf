package actions_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/actions"
)

// mailpit is the Mailpit server the tests send to, started by TestMain.
var mailpit struct {
	smtpPort int
	api      string // http://127.0.0.1:<port>
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func TestMain(m *testing.M) {
	os.Exit(runWithMailpit(m))
}

func runWithMailpit(m *testing.M) int {
	bin, err := actions.FindMailpit()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the actions tests need a real SMTP server, Mailpit: %v.\n"+
			"Run `make test` (it installs Mailpit with `make tools`), or: go install github.com/axllent/mailpit@v1.33.1\n", err)
		return 1
	}
	smtpPort, err1 := freePort()
	httpPort, err2 := freePort()
	if err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "FAIL: no free port: %v %v\n", err1, err2)
		return 1
	}
	// Without --database, Mailpit keeps its messages in a temporary
	// database that it deletes when it stops. Recipients at
	// rejected.test are refused with a permanent (5xx) error.
	cmd := exec.Command(bin,
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--smtp-allowed-recipients", `@example\.(com|org)>?$`,
		"--smtp-disable-rdns",
		"--disable-version-check",
		"--quiet")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting %s: %v\n", bin, err)
		return 1
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	mailpit.smtpPort = smtpPort
	mailpit.api = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(mailpit.api + "/api/v1/info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "FAIL: Mailpit's HTTP API at %s did not come up: %v\n", mailpit.api, err)
			return 1
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m.Run()
}

// mpMessage is a message summary of Mailpit's GET /api/v1/messages.
type mpMessage struct {
	ID        string
	MessageID string
	Subject   string
	To        []struct{ Name, Address string }
}

func getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(mailpit.api + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// messagesTo lists the messages Mailpit holds for one recipient address.
func messagesTo(t *testing.T, addr string) []mpMessage {
	t.Helper()
	var list struct {
		Total    int
		Messages []mpMessage
	}
	getJSON(t, "/api/v1/messages?limit=1000", &list)
	var out []mpMessage
	for _, m := range list.Messages {
		for _, to := range m.To {
			if strings.EqualFold(to.Address, addr) {
				out = append(out, m)
			}
		}
	}
	return out
}

// mpDetail is Mailpit's GET /api/v1/message/{ID}.
type mpDetail struct {
	Subject string
	Text    string
	HTML    string
}

func message(t *testing.T, id string) mpDetail {
	t.Helper()
	var d mpDetail
	getJSON(t, "/api/v1/message/"+url.PathEscape(id), &d)
	return d
}

func headers(t *testing.T, id string) map[string][]string {
	t.Helper()
	var h map[string][]string
	getJSON(t, "/api/v1/message/"+url.PathEscape(id)+"/headers", &h)
	return h
}
