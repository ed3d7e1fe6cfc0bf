package analytics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// LocalServer is a clickhouse-server process for development and tests
// (make test, make demo), configured by deploy/clickhouse/config.xml with
// its data under Dir. It listens on 127.0.0.1 only.
type LocalServer struct {
	// Addr is the native-protocol address, 127.0.0.1:<port>.
	Addr string
	// HTTPAddr is the HTTP interface's address.
	HTTPAddr string
	// Dir holds the data, the logs and the server's output.
	Dir string

	command []string
	config  string
	tcpPort int
	http    int
	proc    *exec.Cmd
	exited  chan error
}

// FindServer returns the command that starts a ClickHouse server:
// clickhouse-server (Debian's package, also in /usr/sbin) or the single
// "clickhouse server" binary of current releases.
func FindServer() ([]string, error) {
	for _, name := range []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if p, err := exec.LookPath(name); err == nil {
			return []string{p}, nil
		}
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return []string{p, "server"}, nil
	}
	return nil, errors.New("no clickhouse-server binary: run `make tools` (installs Debian's clickhouse-server where the machine allows it) or set CLICKHOUSE_ADDR to a running server")
}

// FindConfig returns deploy/clickhouse/config.xml: $CARTLIFT_CLICKHOUSE_CONFIG
// when set, else the first one found walking up from the working directory
// (the repository's, for make test and make demo).
func FindConfig() (string, error) {
	if p := os.Getenv("CARTLIFT_CLICKHOUSE_CONFIG"); p != "" {
		return filepath.Abs(p)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "deploy", "clickhouse", "config.xml")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("deploy/clickhouse/config.xml not found above the working directory; set CARTLIFT_CLICKHOUSE_CONFIG or CLICKHOUSE_ADDR")
		}
		dir = parent
	}
}

// StartLocal starts a clickhouse-server on free ports with its data under
// dir and waits until it answers (at most a minute).
func StartLocal(ctx context.Context, dir string) (*LocalServer, error) {
	command, err := FindServer()
	if err != nil {
		return nil, err
	}
	config, err := FindConfig()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	s := &LocalServer{Dir: dir, command: command, config: config}
	if s.tcpPort, err = freePort(); err != nil {
		return nil, err
	}
	if s.http, err = freePort(); err != nil {
		return nil, err
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort))
	s.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.http))
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Start (re)starts the stopped server on the same ports and data.
func (s *LocalServer) Start(ctx context.Context) error {
	if s.proc != nil {
		return errors.New("clickhouse-server already running")
	}
	for _, sub := range []string{"tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	out, err := os.OpenFile(filepath.Join(s.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append(append([]string{}, s.command[1:]...), "--config-file="+s.config, "--",
		"--path="+s.Dir+"/", "--tmp_path="+s.Dir+"/tmp/",
		"--user_files_path="+s.Dir+"/user_files/", "--format_schema_path="+s.Dir+"/format_schemas/",
		"--logger.log="+filepath.Join(s.Dir, "server.log"), "--logger.errorlog="+filepath.Join(s.Dir, "server.err.log"),
		"--tcp_port="+strconv.Itoa(s.tcpPort), "--http_port="+strconv.Itoa(s.http))
	cmd := exec.Command(s.command[0], args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start clickhouse-server: %w", err)
	}
	out.Close()
	s.proc = cmd
	s.exited = make(chan error, 1)
	go func() { s.exited <- cmd.Wait() }()

	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if err := ping(ctx, s.Addr); err == nil {
			return nil
		}
		select {
		case err := <-s.exited:
			s.proc = nil
			return fmt.Errorf("clickhouse-server exited (%v); see %s", err, s.logHint())
		case <-ctx.Done():
			_ = s.Stop()
			return fmt.Errorf("clickhouse-server did not answer on %s within a minute; see %s", s.Addr, s.logHint())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *LocalServer) logHint() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "server.err.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return filepath.Join(s.Dir, "server.err.log") + ": " + strings.Join(lines, " | ")
}

// Stop stops the server and waits: SIGTERM, then SIGKILL after 3 s (a
// server with idle client connections otherwise waits for them for 10 s;
// MergeTree parts are written atomically, so a kill loses no inserted
// rows).
func (s *LocalServer) Stop() error {
	if s.proc == nil {
		return nil
	}
	_ = syscall.Kill(-s.proc.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.proc = nil
	return nil
}

func ping(ctx context.Context, addr string) error {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: time.Second})
	if err != nil {
		return err
	}
	defer conn.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return conn.Ping(pctx)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
