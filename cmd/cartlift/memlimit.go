package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// containerMemoryLimit returns the memory limit of the cgroup mounted at
// root (cgroup v2's memory.max, else v1's memory/memory.limit_in_bytes),
// and false when there is none: no file, "max", or v1's "unlimited", a
// number near the largest int64.
func containerMemoryLimit(root string) (int64, bool) {
	for _, name := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// goMemoryLimit is the soft limit of the Go heap in a container of limit
// bytes: the limit less what lives outside the Go heap (Pebble's block
// cache and up to four memtables) and a tenth of it for the rest of the
// process (stacks, the runtime, the binary). False when that leaves less
// than 128 MiB: the caches do not fit the container, and a limit the
// heap cannot stay under would only make the collector run without end.
func goMemoryLimit(limit, blockCache, memTable int64) (int64, bool) {
	heap := limit - blockCache - 4*memTable - limit/10
	if heap < 128<<20 {
		return 0, false
	}
	return heap, true
}

// setGoMemoryLimit gives the Go heap a soft limit from the container's
// memory limit, unless GOMEMLIMIT sets one: the collector then works
// harder as the heap nears it, instead of the container being killed.
func setGoMemoryLimit(log *slog.Logger, cfg runConfig, cgroupRoot string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, ok := containerMemoryLimit(cgroupRoot)
	if !ok {
		return
	}
	blockCache, memTable := cfg.BlockCacheMiB<<20, cfg.MemTableMiB<<20
	heap, ok := goMemoryLimit(limit, blockCache, memTable)
	if !ok {
		log.Warn("the container's memory limit leaves less than 128 MiB for the Go heap after Pebble's caches: lower CARTLIFT_BLOCK_CACHE_MIB or CARTLIFT_MEMTABLE_MIB",
			"container_mib", limit>>20, "block_cache_mib", cfg.BlockCacheMiB, "memtable_mib", cfg.MemTableMiB)
		return
	}
	debug.SetMemoryLimit(heap)
	log.Info("Go heap soft limit set from the container's memory limit (GOMEMLIMIT overrides it)",
		"container_mib", limit>>20, "go_heap_limit_mib", heap>>20)
}
