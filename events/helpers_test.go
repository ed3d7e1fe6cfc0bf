package events_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cartlift/cartlift/events"
)

// schemaBase is the URI the schema files are registered under. They refer
// to each other relatively, so any base works.
const schemaBase = "file:///cartlift/events/schema/"

// outputTypes are the types cartlift emits, which have a schema and an
// example too.
var outputTypes = []string{events.TypeDecision, events.TypeOutcome, events.TypeSuppressed, events.TypeDeferred}

// exampleKeys is the customer key (Event.Key) of each input type's example.
// A type added to events.InputTypes without an entry here fails the tests.
var exampleKeys = map[string]string{
	events.TypeItemAdded:         "c-1001",
	events.TypeItemUpdated:       "c-1001",
	events.TypeItemRemoved:       "anon:a-7f3e9c2b",
	events.TypeCartUpdated:       "anon:a-7f3e9c2b",
	events.TypeCartDiscarded:     "c-1001",
	events.TypeCheckoutStarted:   "c-1001",
	events.TypeCheckoutCompleted: "c-1001",
	events.TypeCustomerLoggedIn:  "c-1001",
	events.TypeCustomerUpdated:   "c-1001",
	events.TypeCustomerErased:    "c-2002",
	events.TypeCartAssigned:      "c-1001",
}

type schemaSet struct {
	docs     map[string]any                // file name -> parsed schema document
	compiled map[string]*jsonschema.Schema // file name -> compiled schema
}

var (
	schemasOnce sync.Once
	schemas     *schemaSet
	schemasErr  error
)

// loadSchemas compiles every *.schema.json of events.Schemas(), with
// format assertions on (date-time is checked).
func loadSchemas(t testing.TB) *schemaSet {
	t.Helper()
	schemasOnce.Do(func() { schemas, schemasErr = compileSchemas() })
	if schemasErr != nil {
		t.Fatal(schemasErr)
	}
	return schemas
}

func compileSchemas() (*schemaSet, error) {
	fsys := events.Schemas()
	names, err := fs.Glob(fsys, "*.schema.json")
	if err != nil {
		return nil, err
	}
	set := &schemaSet{docs: map[string]any{}, compiled: map[string]*jsonschema.Schema{}}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		set.docs[name] = doc
		if err := c.AddResource(schemaBase+name, doc); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range names {
		s, err := c.Compile(schemaBase + name)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %v", name, err)
		}
		set.compiled[name] = s
	}
	return set, nil
}

func schemaFile(typ string) string  { return typ + ".schema.json" }
func exampleFile(typ string) string { return "examples/" + typ + ".json" }

// validate validates a JSON document against the schema of typ.
func (s *schemaSet) validate(typ string, doc []byte) error {
	sch, ok := s.compiled[schemaFile(typ)]
	if !ok {
		return fmt.Errorf("no schema for %q", typ)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// example returns the raw example of typ.
func example(t testing.TB, typ string) []byte {
	t.Helper()
	b, err := fs.ReadFile(events.Schemas(), exampleFile(typ))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exampleDoc returns the example of typ parsed into maps, slices and
// json.Numbers, ready to be mutated.
func exampleDoc(t testing.TB, typ string) map[string]any {
	t.Helper()
	doc, err := parseDoc(example(t, typ))
	if err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	return doc.(map[string]any)
}

func parseDoc(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deepCopy copies a document made of maps, slices and scalars.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

// docPath is a path into a document: string keys and int indices.
type docPath []any

func (p docPath) String() string {
	var sb strings.Builder
	for i, e := range p {
		switch e := e.(type) {
		case string:
			if i > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(e)
		case int:
			fmt.Fprintf(&sb, "[%d]", e)
		}
	}
	return sb.String()
}

// parsePath parses "data.items[1].sku".
func parsePath(s string) docPath {
	var p docPath
	for part := range strings.SplitSeq(s, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			p = append(p, name)
		}
		for rest != "" {
			idx, after, _ := strings.Cut(rest, "]")
			n, err := strconv.Atoi(idx)
			if err != nil {
				panic("bad path " + s)
			}
			p = append(p, n)
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return p
}

// with sets the value at path in a copy of doc, creating objects on the
// way; a nil value deletes the key (use jsonNull for an explicit null).
func with(doc map[string]any, p string, value any) map[string]any {
	out := deepCopy(doc).(map[string]any)
	setPath(out, parsePath(p), value)
	return out
}

type jsonNullT struct{}

func (jsonNullT) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// jsonNull stands for an explicit JSON null in with.
var jsonNull = jsonNullT{}

func setPath(cur any, p docPath, value any) {
	for i, e := range p {
		last := i == len(p)-1
		switch k := e.(type) {
		case string:
			m := cur.(map[string]any)
			if last {
				if value == nil {
					delete(m, k)
				} else {
					m[k] = value
				}
				return
			}
			next, ok := m[k]
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			cur = next
		case int:
			s := cur.([]any)
			if last {
				s[k] = value
				return
			}
			cur = s[k]
		}
	}
}

// payload returns the type matching the set payload pointer of ev, the
// pointer itself, and how many payload pointers are set.
func payload(ev *events.Event) (typ string, p any, n int) {
	v := reflect.ValueOf(ev).Elem()
	for name, t := range payloadFields {
		f := v.FieldByName(name)
		if !f.IsNil() {
			typ, p = t, f.Interface()
			n++
		}
	}
	return typ, p, n
}

// payloadFields maps each payload field of events.Event to its type.
var payloadFields = map[string]string{
	"ItemAdded":         events.TypeItemAdded,
	"ItemUpdated":       events.TypeItemUpdated,
	"ItemRemoved":       events.TypeItemRemoved,
	"CartUpdated":       events.TypeCartUpdated,
	"CartDiscarded":     events.TypeCartDiscarded,
	"CheckoutStarted":   events.TypeCheckoutStarted,
	"CheckoutCompleted": events.TypeCheckoutCompleted,
	"CustomerLoggedIn":  events.TypeCustomerLoggedIn,
	"CustomerUpdated":   events.TypeCustomerUpdated,
	"CustomerErased":    events.TypeCustomerErased,
	"CartAssigned":      events.TypeCartAssigned,
}

// payloadTypes maps each input type to the Go type of its payload.
var payloadTypes = map[string]reflect.Type{
	events.TypeItemAdded:         reflect.TypeFor[events.ItemAdded](),
	events.TypeItemUpdated:       reflect.TypeFor[events.ItemUpdated](),
	events.TypeItemRemoved:       reflect.TypeFor[events.ItemRemoved](),
	events.TypeCartUpdated:       reflect.TypeFor[events.CartUpdated](),
	events.TypeCartDiscarded:     reflect.TypeFor[events.CartDiscarded](),
	events.TypeCheckoutStarted:   reflect.TypeFor[events.CheckoutStarted](),
	events.TypeCheckoutCompleted: reflect.TypeFor[events.CheckoutCompleted](),
	events.TypeCustomerLoggedIn:  reflect.TypeFor[events.CustomerLoggedIn](),
	events.TypeCustomerUpdated:   reflect.TypeFor[events.CustomerUpdated](),
	events.TypeCustomerErased:    reflect.TypeFor[events.CustomerErased](),
	events.TypeCartAssigned:      reflect.TypeFor[events.CartAssigned](),
}

// reencode encodes the payload of ev again with events.Encode.
func reencode(ev *events.Event) ([]byte, error) {
	_, p, n := payload(ev)
	if n != 1 {
		return nil, fmt.Errorf("event has %d payloads", n)
	}
	return events.Encode(ev.ID, ev.Source, ev.Type, ev.Time, ev.Subject, p)
}

// normalize removes the differences an Encode/Decode round trip may
// legitimately introduce: empty maps and slices of omitempty fields come
// back nil, and times come back in UTC (Decode normalises the envelope
// time; cart.assigned's created_at and modified_at keep their offset, and
// an offset of +00:00 parses as time.Local when that is UTC).
func normalize(ev *events.Event) {
	if ref, ok := ev.Cart(); ok && len(ref.Metadata) == 0 {
		clearMetadata(ev)
	}
	if d := ev.CheckoutCompleted; d != nil && len(d.DiscountCodes) == 0 {
		d.DiscountCodes = nil
	}
	if d := ev.CartAssigned; d != nil {
		d.CreatedAt, d.ModifiedAt = utc(d.CreatedAt), utc(d.ModifiedAt)
	}
	ev.Time = utc(ev.Time)
}

func utc(t time.Time) time.Time { return t.UTC() }

func clearMetadata(ev *events.Event) {
	for _, ref := range []*events.CartRef{
		refOf(ev.ItemAdded), refOf(ev.ItemUpdated), refOf(ev.ItemRemoved), refOf(ev.CartUpdated),
		refOf(ev.CartDiscarded), refOf(ev.CheckoutStarted), refOf(ev.CheckoutCompleted), refOf(ev.CartAssigned),
	} {
		if ref != nil {
			ref.Metadata = nil
		}
	}
}

// refOf returns the embedded CartRef of a payload pointer, nil for nil.
func refOf[T any](p *T) *events.CartRef {
	if p == nil {
		return nil
	}
	return reflect.ValueOf(p).Elem().FieldByName("CartRef").Addr().Interface().(*events.CartRef)
}

// jsonFields returns the JSON names of a struct type's fields, with
// embedded structs flattened, and which of them are omitempty.
func jsonFields(t reflect.Type) (names []string, omitempty map[string]bool) {
	omitempty = map[string]bool{}
	for f := range t.Fields() {
		if f.Anonymous {
			sub, om := jsonFields(f.Type)
			names = append(names, sub...)
			maps.Copy(omitempty, om)
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		omitempty[name] = slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
	}
	return names, omitempty
}

// resolve resolves a $ref relative to file to its file and node.
func (s *schemaSet) resolve(file, ref string) (string, map[string]any) {
	target, frag, _ := strings.Cut(ref, "#")
	if target != "" {
		file = path.Clean(target)
	}
	node := s.docs[file]
	if frag != "" {
		for part := range strings.SplitSeq(strings.TrimPrefix(frag, "/"), "/") {
			node = node.(map[string]any)[part]
		}
	}
	return file, node.(map[string]any)
}

// node returns the schema node at a JSON pointer in a file.
func (s *schemaSet) node(file, pointer string) map[string]any {
	_, n := s.resolve(file, "#"+pointer)
	return n
}

// requiredPaths returns the paths of inst that the schema of typ requires
// unconditionally ("required" reached through properties, items and $ref;
// anyOf alternatives are not unconditional).
func (s *schemaSet) requiredPaths(typ string, inst any) map[string]bool {
	out := map[string]bool{}
	var walk func(file string, node map[string]any, inst any, p docPath)
	walk = func(file string, node map[string]any, inst any, p docPath) {
		if ref, ok := node["$ref"].(string); ok {
			f, n := s.resolve(file, ref)
			walk(f, n, inst, p)
		}
		switch inst := inst.(type) {
		case map[string]any:
			for _, r := range asSlice(node["required"]) {
				out[append(slices.Clip(p), r.(string)).String()] = true
			}
			for name, sub := range asMap(node["properties"]) {
				if v, ok := inst[name]; ok {
					walk(file, sub.(map[string]any), v, append(slices.Clip(p), name))
				}
			}
		case []any:
			if items := asMap(node["items"]); items != nil {
				for i, e := range inst {
					walk(file, items, e, append(slices.Clip(p), i))
				}
			}
		}
	}
	file := schemaFile(typ)
	walk(file, s.docs[file].(map[string]any), inst, nil)
	return out
}

// objectPaths returns the path of every member of every object in inst.
func objectPaths(inst any) []docPath {
	var out []docPath
	var walk func(v any, p docPath)
	walk = func(v any, p docPath) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				q := append(slices.Clip(p), k)
				out = append(out, q)
				walk(v[k], q)
			}
		case []any:
			for i, e := range v {
				walk(e, append(slices.Clip(p), i))
			}
		}
	}
	walk(inst, nil)
	return out
}

// without returns a copy of doc without the member at p.
func without(doc map[string]any, p docPath) map[string]any {
	out := deepCopy(doc).(map[string]any)
	setPath(out, p, nil)
	return out
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
