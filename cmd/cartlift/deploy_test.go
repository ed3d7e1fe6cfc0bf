package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// envNames collects the environment variables of a config struct.
func envNames(t reflect.Type, into map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
			envNames(f.Type, into)
		}
		if env, _, _ := strings.Cut(f.Tag.Get("env"), ","); env != "" {
			into[env] = true
		}
	}
}

// Every variable the deployment examples and the README name is one
// cartlift reads: a typo there would be silently ignored.
func TestDeployFilesSetOnlyKnownVariables(t *testing.T) {
	known := map[string]bool{}
	for _, c := range []any{runConfig{}, actionsConfig{}, analyticsConfig{}} {
		envNames(reflect.TypeOf(c), known)
	}
	// Knobs of tests and benchmarks, which the README documents too.
	for _, v := range []string{"CARTLIFT_API_LOAD", "CARTLIFT_API_LOAD_CARTS", "CARTLIFT_API_LOAD_HEAPPROFILE", "CARTLIFT_TEST_OUTAGE", "CARTLIFT_TIMER_LOAD",
		"CARTLIFT_TIMER_LOAD_TIMERS", "CARTLIFT_RESTORE_CUSTOMERS"} {
		known[v] = true
	}
	files, err := filepath.Glob("../../deploy/*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../deploy/compose.yaml", "../../deploy/Dockerfile", "../../README.md")
	name := regexp.MustCompile(`\b((?:CARTLIFT|KAFKA|CLICKHOUSE|SMTP)_[A-Z0-9_]+)\b`)
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(b), -1) {
			v := m[1]
			if strings.HasPrefix(v, "KAFKA_") && v != "KAFKA_BROKERS" || strings.HasSuffix(v, "_") {
				continue // the Kafka container's own settings; a prefix (CARTLIFT_HTTP_*)
			}
			checked++
			if !known[v] {
				t.Errorf("%s names %s, which cartlift does not read", f, v)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d variables found in %v", checked, files)
	}
}
