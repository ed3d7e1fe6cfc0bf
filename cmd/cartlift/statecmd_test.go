package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// cartlift state needs a subcommand, and the brokers that hold the
// changelog: both mistakes are named.
func TestStateCommandUsage(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"state", "check"}, &out, &out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "verify|rebuild") {
		t.Fatalf("state check: %v", err)
	}
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("CARTLIFT_FLOWS", "../../deploy/flows/default.yaml")
	t.Setenv("CARTLIFT_DATA_DIR", t.TempDir())
	err = run(context.Background(), []string{"state", "verify"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_BROKERS") {
		t.Fatalf("state verify without brokers: %v", err)
	}
}
