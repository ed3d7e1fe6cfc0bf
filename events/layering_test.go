package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// forbidden reports whether a dependency of the contract and the pure
// projections would tie them to a transport or a store: the Kafka client,
// Pebble, ClickHouse, or the network.
func forbidden(pkg string) bool {
	for _, prefix := range []string{"github.com/twmb/franz-go", "github.com/cockroachdb/pebble", "github.com/ClickHouse"} {
		if pkg == prefix || strings.HasPrefix(pkg, prefix+"/") {
			return true
		}
	}
	return pkg == "net" || strings.HasPrefix(pkg, "net/")
}

// events and projections are pure: no Kafka, Pebble, ClickHouse or network
// among their (non-test) dependencies.
func TestLayering(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	gomod := strings.TrimSpace(run(t, goTool, "", "env", "GOMOD"))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("not in a module (GOMOD=%q)", gomod)
	}
	root := filepath.Dir(gomod)
	patterns := []string{"./events/..."}
	if st, err := os.Stat(filepath.Join(root, "projections")); err == nil && st.IsDir() {
		patterns = append(patterns, "./projections/...")
	} else {
		t.Logf("projections/ does not exist yet: checking events only")
	}
	module := strings.TrimSpace(run(t, goTool, root, "list", "-m"))

	out := run(t, goTool, root, append([]string{"list", "-e", "-deps", "-json=ImportPath,Error,Module"}, patterns...)...)
	dec := json.NewDecoder(strings.NewReader(out))
	var ours []string
	deps := 0
	for {
		var p struct {
			ImportPath string
			Error      *struct{ Err string }
			Module     *struct{ Path string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		deps++
		if p.Module != nil && p.Module.Path == module {
			ours = append(ours, p.ImportPath)
		}
		if p.Error != nil {
			t.Errorf("%s: %s (its dependencies cannot be checked)", p.ImportPath, p.Error.Err)
		}
		if forbidden(p.ImportPath) {
			t.Errorf("%s is a dependency of %v", p.ImportPath, patterns)
		}
	}
	hasEvents := false
	for _, p := range ours {
		hasEvents = hasEvents || p == module+"/events"
	}
	if !hasEvents || deps < 10 {
		t.Fatalf("go list found %d packages, of this module %v: events is missing", deps, ours)
	}
	t.Logf("checked %d packages: %s", deps, strings.Join(ours, " "))
}

func run(t *testing.T, name, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func TestForbidden(t *testing.T) {
	for pkg, want := range map[string]bool{
		"net": true, "net/http": true, "net/url": true, "netip": false, "network/x": false,
		"github.com/twmb/franz-go/pkg/kgo": true, "github.com/twmb/franz-go": true, "github.com/twmb/franz-golang": false,
		"github.com/cockroachdb/pebble": true, "github.com/cockroachdb/pebble/vfs": true, "github.com/cockroachdb/errors": false,
		"github.com/ClickHouse/clickhouse-go/v2": true, "encoding/json": false,
	} {
		if got := forbidden(pkg); got != want {
			t.Errorf("forbidden(%q) = %v, want %v", pkg, got, want)
		}
	}
}
