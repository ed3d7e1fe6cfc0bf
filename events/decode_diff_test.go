package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// compareDecoders fails unless Decode and the reference decoder agree on
// value: an equal event, or errors of the same reason and field (and both
// or neither wrapping ErrUnknownType). Decode is given a copy of value that
// is overwritten afterwards, so an event whose strings alias the record
// shows up as a difference.
func compareDecoders(t testing.TB, value []byte, now time.Time) {
	t.Helper()
	want, wantErr := events.ReferenceDecode(value, now)
	buf := bytes.Clone(value)
	got, gotErr := events.Decode(buf, now)
	for i := range buf {
		buf[i] = '#'
	}
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("Decode: %v\nreference: %v\nrecord: %q", gotErr, wantErr, value)
	case gotErr != nil:
		var g, w *events.ValidationError
		if !errors.As(gotErr, &g) || !errors.As(wantErr, &w) {
			t.Fatalf("not a *ValidationError: Decode %T, reference %T", gotErr, wantErr)
		}
		if g.Reason != w.Reason || g.Field != w.Field {
			t.Fatalf("Decode: %v\nreference: %v\nrecord: %q", gotErr, wantErr, value)
		}
		// Messages are the same too, but for syntax errors, which each
		// parser words its own way.
		if g.Reason != events.ReasonMalformed && g.Msg != w.Msg {
			t.Fatalf("messages differ:\nDecode    %v\nreference %v\nrecord: %q", gotErr, wantErr, value)
		}
		if errors.Is(gotErr, events.ErrUnknownType) != errors.Is(wantErr, events.ErrUnknownType) {
			t.Fatalf("ErrUnknownType: Decode %v, reference %v", gotErr, wantErr)
		}
		if got != nil {
			t.Fatalf("Decode returned an event with the error %v", gotErr)
		}
	default:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("events differ:\nDecode    %s\nreference %s\nrecord: %q", dump(got), dump(want), value)
		}
	}
}

func dump(ev *events.Event) string {
	_, p, _ := payload(ev)
	return fmt.Sprintf("%+v %+v", *ev, p)
}

// diffSeeds returns the records the differential tests start from: the
// examples, the README's, the cases of TestDecodeCases, FuzzDecode's
// seeds, and the fuzz corpora under testdata.
func diffSeeds(t *testing.T) []decodeCase {
	var out []decodeCase
	for _, typ := range slices.Concat(events.InputTypes, outputTypes) {
		out = append(out, decodeCase{name: typ, value: example(t, typ)})
	}
	out = append(out, decodeCases(t)...)
	for _, s := range fuzzSeeds {
		out = append(out, decodeCase{name: "seed", value: []byte(s)})
	}
	for _, dir := range []string{"testdata/fuzz/FuzzDecode", "testdata/fuzz/FuzzDecodeDifferential"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			v, err := corpusValue(b)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, decodeCase{name: f, value: v})
		}
	}
	return out
}

// corpusValue returns the []byte of a one-argument fuzz corpus file.
func corpusValue(b []byte) ([]byte, error) {
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
		return nil, fmt.Errorf("not a go test fuzz v1 file of one []byte")
	}
	var v []byte
	if _, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")"), "%q", &v); err != nil {
		return nil, err
	}
	return v, nil
}

// fuzzSeeds are records that once told the decoders apart, or probe a
// corner of what they must agree on.
var fuzzSeeds = []string{
	`null`, ` {} `, `[]`, `"x"`, `1`, `{"specversion":"1.0"`, `{"a":1}x`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.updated","time":"2026-11-26T10:00:00Z","data":{"anonymous_id":"g","cart_id":"c","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price_minor":1,"name":"n"},{"sku":"b","quantity":1,"unit_price_minor":1}],"items":[{"sku":"x","quantity":2}]}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.updated","time":"2026-11-26T10:00:00Z","data":{"anonymous_id":"g","cart_id":"c","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price_minor":1}],"items":[],"items":[{"sku":"a","quantity":1,"unit_price_minor":null}]}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.updated","time":"2026-11-26T10:00:00Z","data":{"anonymous_id":"g","cart_id":"c","currency":"EUR","metadata":{"a":"1"},"METADATA":{"b":null},"items":null}}`,
	`{"data":{"anonymous_id":"g","cart_id":"c","currency":"EUR","items":[]},"specversion":"1.0","id":"e","source":"s","type":"cart.updated","time":"2026-11-26T10:00:00Z"}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.item_removed","time":"2026-11-26T10:00:00Z","data":{"anonymous_id":"g","cart_id":"c","sku":"s"},"TYPE":"cart.updated"}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.item_added","time":"2026-11-26T10:00:00Z","data":{"customer_id":"c","cart_id":1,"colour":2,"currency":"EUR"}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.assigned","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","cart_id":"c","currency":"EUR","from_key":"x","created_at":"x","cart_id":1}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.assigned","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","cart_id":"c","currency":"EUR","from_key":"x","created_at":"2026-11-26T10:00:00+01:00","decisions":[{"flow":"f","step":"s","at":"2026-11-26T10:00:00Z"}],"decisions":[{"step_index":1}],"items":[{"s\u212au":"a","quantity":1,"unit_price_minor":0}]}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"customer.updated","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","email":"a","email":null,"name":"\ud800\u00e4\ud83d\ude00","marketing_consent":true,"segment":""}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"checkout.completed","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","cart_id":"c","order_id":"o","total_minor":-9223372036854775808,"discount_codes":["a","b"],"discount_codes":[null]}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"checkout.completed","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","cart_id":"c","order_id":"o","total_minor":-0}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"checkout.completed","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","cart_id":"c","order_id":"o","total_minor":1e2}}`,
	`{"specversion":"1.0","id":"e","source":"s","type":"cart.item_updated","time":"2026-11-26T10:00:00Z","data":{"customer_id":"g","cart_id":"c","sku":"s","quantity":[1,{"colour":1}],"metadata":{"k":[]}}}`,
}

// mutationValues are put in place of members, and as new ones.
var mutationValues = []string{
	`null`, `0`, `-0`, `1`, `-1`, `1.5`, `1.0`, `1e2`, `9223372036854775808`, `-9223372036854775809`,
	`""`, `"x"`, `"EUR"`, `"anon:x"`, `"2026-11-26T10:00:00Z"`, `"2026-11-26T10:00:00+01:00"`, `"a\u0062\n"`,
	`true`, `false`, `[]`, `{}`, `[1]`, `["x"]`, `[null]`, `{"a":"b"}`, `{"sku":"s","quantity":1,"unit_price_minor":1}`,
	`[{"sku":"s","quantity":1,"unit_price_minor":1}]`, `[{"sku":"s","quantity":1}]`, `[{"flow":"f","step":"s"}]`,
}

// mutationNames are the member names of the contract, and a few that are
// none of them or are one of them only by case folding.
var mutationNames = []string{
	"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data", "traceparent",
	"customer_id", "anonymous_id", "cart_id", "cart_type", "site", "channel", "currency", "legal_entity", "metadata",
	"item", "items", "sku", "name", "quantity", "unit_price_minor", "category", "image_url", "reason", "order_id",
	"total_minor", "discount_codes", "email", "locale", "time_zone", "segment", "marketing_consent", "from_key",
	"created_at", "modified_at", "last_activity", "version", "decisions", "flow", "step", "step_index", "at", "due",
	"holdout", "skipped", "discount", "suppressed", "colour", "SKU", "Items", "\u017fku", "ITEM\u212a", `\u0069tems`,
}

var mutationTokens = []string{`{`, `}`, `[`, `]`, `,`, `:`, `"`, `\`, `\u`, `\ud800`, ` `, `0`, `-`, `.`, `e`, `null`, `tru`, "\x00", "\xff", "ä", `\"`}

// mutate returns a variant of seed: a member inserted after a '{', a
// value replaced, a token inserted, or bytes removed or repeated.
func mutate(seed []byte, rng *rand.Rand) []byte {
	b := bytes.Clone(seed)
	if len(b) == 0 {
		return []byte(mutationTokens[rng.IntN(len(mutationTokens))])
	}
	at := rng.IntN(len(b) + 1)
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	switch rng.IntN(7) {
	case 0, 1: // a member after a '{'
		opens := []int{}
		for i, c := range b {
			if c == '{' {
				opens = append(opens, i)
			}
		}
		if len(opens) > 0 {
			at = opens[rng.IntN(len(opens))] + 1
			return slices.Insert(b, at, []byte(`"`+pick(mutationNames)+`":`+pick(mutationValues)+`,`)...)
		}
	case 2: // a value replaced: after a ':' up to the next ',' or '}'
		colons := []int{}
		for i, c := range b {
			if c == ':' {
				colons = append(colons, i)
			}
		}
		if len(colons) > 0 {
			start := colons[rng.IntN(len(colons))] + 1
			end := start
			for end < len(b) && b[end] != ',' && b[end] != '}' {
				end++
			}
			return slices.Replace(b, start, end, []byte(pick(mutationValues))...)
		}
	case 3:
		return slices.Insert(b, at, []byte(pick(mutationTokens))...)
	case 4:
		end := min(len(b), at+rng.IntN(8)+1)
		return slices.Delete(b, min(at, end), end)
	case 5:
		end := min(len(b), at+rng.IntN(32)+1)
		return slices.Insert(b, end, b[min(at, end):end]...)
	}
	return b[:at]
}

// Decode and the reference decoder agree on every seed and on thousands of
// mutations of each.
func TestDecodeMatchesReference(t *testing.T) {
	seeds := diffSeeds(t)
	n := 400
	if testing.Short() {
		n = 40
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range seeds {
		compareDecoders(t, c.value, c.now)
		if len(c.value) > 8<<10 {
			continue // the large cases would dominate the time
		}
		v := c.value
		for range n {
			if rng.IntN(4) == 0 {
				v = c.value
			}
			v = mutate(v, rng)
			compareDecoders(t, v, c.now)
			compareDecoders(t, v, now)
		}
	}
}

// FuzzDecodeDifferential: Decode and the reference decoder agree on every
// input.
func FuzzDecodeDifferential(f *testing.F) {
	for _, typ := range slices.Concat(events.InputTypes, outputTypes) {
		f.Add(example(f, typ))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		compareDecoders(t, value, time.Time{})
		compareDecoders(t, value, now)
	})
}

// BenchmarkDecode decodes the example of every input type; compare with
// BenchmarkDecodeReference, the decoder it replaced, in the same run.
func BenchmarkDecode(b *testing.B) { benchDecode(b, events.Decode) }

// BenchmarkDecodeReference is BenchmarkDecode of the reference decoder.
func BenchmarkDecodeReference(b *testing.B) { benchDecode(b, events.ReferenceDecode) }

func benchDecode(b *testing.B, decode func([]byte, time.Time) (*events.Event, error)) {
	for _, typ := range []string{events.TypeItemAdded, events.TypeCartUpdated, events.TypeCustomerUpdated, events.TypeCartAssigned} {
		raw := compact(b, example(b, typ))
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := decode(raw, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// compact removes the insignificant white space of an example, as
// producers send records.
func compact(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
