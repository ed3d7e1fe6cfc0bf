package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

func TestRunConfigDefaults(t *testing.T) {
	chdirRoot(t)
	cfg, err := loadRunConfig(context.Background(), envconfig.MapLookuper(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Brokers) != 0 || cfg.Broker.Addr != "127.0.0.1:9092" || cfg.Broker.DataDir != "./data" ||
		cfg.FlowsFile != "deploy/flows/default.yaml" || cfg.TopicEvents != "cart-events" || cfg.Broker.Partitions != 8 {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if id := cfg.instanceID(); !strings.HasPrefix(id, "cartlift-") {
		t.Fatalf("instance id %q", id)
	}
	other := cfg
	other.Broker.DataDir = "./data/other"
	if cfg.instanceID() == other.instanceID() {
		t.Fatal("two data directories share a static member id")
	}
}

// TestRunConfigErrorsNameTheVariable: every bad value fails at start-up
// with the environment variable's name.
func TestRunConfigErrorsNameTheVariable(t *testing.T) {
	chdirRoot(t)
	badFlows := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badFlows, []byte("flows:\n  - name: x\n    steps:\n      - after: soon\n        action: email\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]map[string]string{
		"KAFKA_BROKERS":               {"KAFKA_BROKERS": "no-port"},
		"CARTLIFT_BROKER_ADDR":        {"CARTLIFT_BROKER_ADDR": "nonsense"},
		"CARTLIFT_HTTP_ADDR":          {"CARTLIFT_HTTP_ADDR": "8080"},
		"CARTLIFT_PARTITIONS":         {"CARTLIFT_PARTITIONS": "0"},
		"CARTLIFT_TOPIC_DECISIONS":    {"CARTLIFT_TOPIC_DECISIONS": "cart-events"},
		"CARTLIFT_TIMER_TICK":         {"CARTLIFT_TIMER_TICK": "1h"},
		"CARTLIFT_LOG_LEVEL":          {"CARTLIFT_LOG_LEVEL": "loud"},
		"CARTLIFT_LOG_FORMAT":         {"CARTLIFT_LOG_FORMAT": "xml"},
		"CARTLIFT_FLOWS":              {"CARTLIFT_FLOWS": badFlows},
		"CARTLIFT_SYNC_WRITES":        {"CARTLIFT_SYNC_WRITES": "maybe"},
		"CARTLIFT_BLOCK_CACHE_MIB":    {"CARTLIFT_BLOCK_CACHE_MIB": "0"},
		"CARTLIFT_MEMTABLE_MIB":       {"CARTLIFT_MEMTABLE_MIB": "5000"},
		"CARTLIFT_FETCH_MAX_MIB":      {"CARTLIFT_FETCH_MAX_MIB": "-1"},
		"CARTLIFT_STATE_FORMAT":       {"CARTLIFT_STATE_FORMAT": "5"},
		"CARTLIFT_RESTORE_MEMORY_MIB": {"CARTLIFT_RESTORE_MEMORY_MIB": "8"},
	}
	for want, env := range cases {
		t.Run(want, func(t *testing.T) {
			_, err := loadRunConfig(context.Background(), envconfig.MapLookuper(env))
			if err == nil {
				t.Fatalf("%v accepted", env)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %s", err, want)
			}
		})
	}
}

func TestFlowsCheckCommand(t *testing.T) {
	chdirRoot(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"flows", "check", "deploy/flows/default.yaml"}, &out, &out); err != nil {
		t.Fatalf("shipped flows rejected: %v", err)
	}
	if !strings.Contains(out.String(), "b2c-reminders") || !strings.Contains(out.String(), ": ok") {
		t.Fatalf("unexpected output %q", out.String())
	}
	for _, want := range []string{"flow b2c-reminders: 3 steps ·", "flow b2b-follow-up: 1 step ·", "(email) with variants a 50, b 50 ·"} {
		if !strings.Contains(out.String(), want) || strings.Contains(out.String(), "(s)") {
			t.Errorf("output lacks %q (or says \"(s)\"): %q", want, out.String())
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("flows:\n  - name: a\n    steps:\n      - after: 2h\n        action: email\n      - after: 1h\n        action: sms\n"), 0o644)
	err := run(context.Background(), []string{"flows", "check", bad}, &out, &out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("invalid file: err %v, want exit code 1", err)
	}
	for _, want := range []string{"2 problems:", "bad.yaml:6", "steps[1].after", "bad.yaml:7", `"sms" is not an action`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := run(context.Background(), []string{"flows"}, &out, &out); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("usage error: %v", err)
	}
	if err := run(context.Background(), []string{"bogus"}, &out, &out); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("unknown command: %v", err)
	}
}

// chdirRoot runs the test from the module root, where the default flows
// file path resolves.
func chdirRoot(t *testing.T) {
	t.Helper()
	wd, _ := os.Getwd()
	t.Chdir(filepath.Join(wd, "..", ".."))
}
