package shopper

import (
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var escapeCases = []string{
	"", "plain", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnew\nline\rcr", "\b\f\x00\x01\x1f\x7f",
	"Müller – Zoë ✓", "line\u2028sep\u2029para", "bad \xff utf8 \xe2\x82", "emoji 😀",
}

// TestAppendStringMatchesEncodingJSON holds the hand-written string
// escaping to encoding/json's, byte for byte.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range escapeCases {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range escapeCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

// TestPure keeps the package free of I/O and clock reads: only the
// imports below, and no time.Now, time.Since or timers.
func TestPure(t *testing.T) {
	allowed := map[string]bool{
		"container/heap": true, "hash/fnv": true, "math": true, "math/rand/v2": true, "slices": true, "strconv": true, "strings": true,
		"time": true, "unicode/utf8": true, "github.com/cartlift/cartlift/events": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); !allowed[p] {
				t.Errorf("%s imports %s", name, p)
			}
		}
		for _, call := range []string{"time.Now(", "time.Since(", "time.Until(", "time.After", "time.NewTimer", "time.NewTicker", "time.Sleep("} {
			if bytes.Contains(src, []byte(call)) {
				t.Errorf("%s calls %s...", name, call)
			}
		}
	}
}
