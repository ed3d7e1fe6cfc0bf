package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The container's limit is read from cgroup v2 and v1 files; "max", v1's
// unlimited value, garbage and no file at all mean no limit.
func TestContainerMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		file, content string
		want          int64
		ok            bool
	}{
		{"memory.max", "2147483648\n", 2 << 30, true},
		{"memory.max", "max\n", 0, false},
		{"memory/memory.limit_in_bytes", "1073741824\n", 1 << 30, true},
		{"memory/memory.limit_in_bytes", "9223372036854771712\n", 0, false},
		{"memory.max", "lots", 0, false},
		{"elsewhere", "1073741824", 0, false},
	} {
		root := t.TempDir()
		path := filepath.Join(root, c.file)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, ok := containerMemoryLimit(root); got != c.want || ok != c.ok {
			t.Errorf("%s %q: got %d %v, want %d %v", c.file, c.content, got, ok, c.want, c.ok)
		}
	}
}

// The heap's share is the limit less Pebble's caches and a tenth; a
// container too small for the caches gets no limit.
func TestGoMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	if got, ok := goMemoryLimit(2048*mib, 256*mib, 64*mib); !ok || got != 2048*mib-256*mib-256*mib-2048*mib/10 {
		t.Errorf("2 GiB container: %d MiB %v", got/mib, ok)
	}
	if _, ok := goMemoryLimit(600*mib, 256*mib, 64*mib); ok {
		t.Error("a 600 MiB container with 512 MiB of caches got a heap limit")
	}
}

// setGoMemoryLimit sets the soft limit from the cgroup and logs it, and
// leaves it alone when GOMEMLIMIT is set.
func TestSetGoMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("2147483648"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := runConfig{BlockCacheMiB: 256, MemTableMiB: 64}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	t.Setenv("GOMEMLIMIT", "") // unset for setGoMemoryLimit, restored after the test
	setGoMemoryLimit(log, cfg, root)
	want, _ := goMemoryLimit(2<<30, 256<<20, 64<<20)
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Fatalf("limit %d, want %d", got, want)
	}
	if !strings.Contains(logs.String(), "go_heap_limit_mib=1331") {
		t.Errorf("the log does not say the limit: %s", logs.String())
	}
	debug.SetMemoryLimit(old)
	t.Setenv("GOMEMLIMIT", "900MiB")
	setGoMemoryLimit(log, cfg, root)
	if got := debug.SetMemoryLimit(-1); got != old {
		t.Fatalf("GOMEMLIMIT set, but the limit moved to %d", got)
	}
}
