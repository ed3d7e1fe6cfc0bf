package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Every input type has a schema, an example and an expected key, and every
// file in the schema directory belongs to a known type.
func TestEveryTypeHasSchemaAndExample(t *testing.T) {
	fsys := events.Schemas()
	want := map[string]bool{"envelope.schema.json": true, "common.schema.json": true}
	for _, typ := range append(slices.Clone(events.InputTypes), outputTypes...) {
		for _, name := range []string{schemaFile(typ), exampleFile(typ)} {
			want[name] = true
			if _, err := fs.Stat(fsys, name); err != nil {
				t.Errorf("%s: %v", typ, err)
			}
		}
	}
	for _, typ := range events.InputTypes {
		if _, ok := exampleKeys[typ]; !ok {
			t.Errorf("%s: no expected key in exampleKeys", typ)
		}
		if _, ok := payloadTypes[typ]; !ok {
			t.Errorf("%s: no payload type in payloadTypes", typ)
		}
	}
	// Besides the payloads: ID, Source, Type, Time, Subject, Pos.
	if n := reflect.TypeFor[events.Event]().NumField() - 6; n != len(events.InputTypes) || len(payloadFields) != n {
		t.Errorf("events.Event has %d payload fields, InputTypes %d types, payloadFields %d entries", n, len(events.InputTypes), len(payloadFields))
	}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !want[name] {
			t.Errorf("%s: not the schema or example of a known type", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every example is valid by its schema, decodes, and has the right payload
// and key.
func TestExamples(t *testing.T) {
	set := loadSchemas(t)
	for _, typ := range events.InputTypes {
		t.Run(typ, func(t *testing.T) {
			raw := example(t, typ)
			if err := set.validate(typ, raw); err != nil {
				t.Errorf("schema: %v", err)
			}
			if err := set.validate("envelope", raw); err != nil {
				t.Errorf("envelope schema: %v", err)
			}
			ev, err := events.Decode(raw, time.Time{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got, p, n := payload(ev)
			if n != 1 || got != typ {
				t.Fatalf("payload: %d set, of type %q; want 1 of %q", n, got, typ)
			}
			if pt := reflect.TypeOf(p).Elem(); pt != payloadTypes[typ] {
				t.Errorf("payload is a %v, want %v", pt, payloadTypes[typ])
			}
			if ev.Type != typ {
				t.Errorf("Type = %q", ev.Type)
			}
			if k := ev.Key(); k != exampleKeys[typ] {
				t.Errorf("Key() = %q, want %q", k, exampleKeys[typ])
			}
			if ev.Time.Location() != time.UTC || ev.Time.IsZero() {
				t.Errorf("Time = %v, want a non-zero UTC time", ev.Time)
			}
			// The example validates against no other type's schema.
			for _, other := range events.InputTypes {
				if other != typ && set.validate(other, raw) == nil {
					t.Errorf("also valid as %s", other)
				}
			}
		})
	}
	for _, typ := range outputTypes {
		t.Run(typ, func(t *testing.T) {
			raw := example(t, typ)
			if err := set.validate(typ, raw); err != nil {
				t.Errorf("schema: %v", err)
			}
			_, err := events.Decode(raw, time.Time{})
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Reason != events.ReasonNotForInput {
				t.Errorf("Decode: %v, want %s", err, events.ReasonNotForInput)
			}
			// The example's data is exactly the Go record: no unknown
			// fields, and encoding it again gives the same JSON.
			var env struct {
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(raw, &env); err != nil {
				t.Fatal(err)
			}
			rec := map[string]any{events.TypeDecision: &events.Decision{}, events.TypeOutcome: &events.Outcome{},
				events.TypeSuppressed: &events.Suppression{}, events.TypeDeferred: &events.Deferral{}}[typ]
			dec := json.NewDecoder(bytes.NewReader(env.Data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(rec); err != nil {
				t.Fatalf("data does not decode into %T: %v", rec, err)
			}
			again := marshal(t, rec)
			if !jsonEqual(t, again, env.Data) {
				t.Errorf("data changes in a round trip through %T:\n got %s\nwant %s", rec, again, env.Data)
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	x, err := parseDoc(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := parseDoc(b)
	if err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// What cartlift emits with Encode validates against the published output
// schemas, sparse records (nil items, no discount) included.
func TestEncodedOutputsValidate(t *testing.T) {
	set := loadSchemas(t)
	at := time.Date(2026, 11, 29, 10, 2, 0, 0, time.FixedZone("CET", 3600))
	full := events.Decision{
		ID: "d-1", Flow: "b2c-reminders", Step: "discount", StepIndex: 2, Action: "email", Template: "discount",
		Discount: &events.Discount{Percent: 10, AmountMinor: 0, MaxMinor: 2500, ValidForSeconds: 3600, Prefix: "BACK"},
		Variant:  "b",
		Holdout:  true,
		Cart: events.CartSnapshot{
			CartID: "cart-42", CartType: "shopping", Site: "eu", Channel: "b2b", Currency: "EUR", LegalEntity: "Acme GmbH",
			Items:      []events.Item{{SKU: "SKU-1", Name: "Trail shoe", Quantity: 2, UnitPriceMinor: 5999, Category: "footwear", ImageURL: "https://img.example/1.jpg"}},
			TotalMinor: 11998, ItemCount: 2, Version: 3, CreatedAt: at, ModifiedAt: at,
			Metadata: map[string]string{"k": "v"},
		},
		Customer: events.CustomerSnapshot{Key: "c-1", CustomerID: "c-1", Email: "a@example.com", Name: "A", Locale: "de-DE",
			TimeZone: "Europe/Berlin", MarketingConsent: true},
		DecidedAt: at, ValidUntil: at.Add(time.Hour),
	}
	sparse := events.Decision{ID: "d-2", Flow: "f", Step: "s", Action: "webhook",
		Cart:     events.CartSnapshot{CartID: "cart-1", Currency: "JPY"},
		Customer: events.CustomerSnapshot{Key: "anon:g-1"}}
	fullOutcome := events.Outcome{ID: "o-1", Kind: events.OutcomeRecovered, CustomerKey: "c-1", CartID: "cart-42",
		CartType: "shopping", Site: "eu", Channel: "b2c", Currency: "EUR", ValueMinor: 10799, OrderID: "o-5531",
		DecisionID: "d-1", Flow: "f", Step: "s", Holdout: true, Decisions: 3, At: at, SinceDecided: 60}
	sparseOutcome := events.Outcome{ID: "o-2", Kind: events.OutcomeLost, CustomerKey: "anon:g-1", CartID: "cart-1"}
	erased := events.Outcome{ID: "o-3", Kind: events.OutcomeErased, CustomerKey: "c-1", At: at}
	for i, c := range []struct {
		typ  string
		data any
	}{
		{events.TypeDecision, full}, {events.TypeDecision, sparse},
		{events.TypeOutcome, fullOutcome}, {events.TypeOutcome, sparseOutcome}, {events.TypeOutcome, erased},
		{events.TypeSuppressed, events.Suppression{ID: "s-1", DecisionID: "d-1", Reason: events.SuppressedCombined,
			Stage: events.StageProcessor, Into: "d-2", Flow: "f", Step: "s", Action: "email", Holdout: true, CustomerKey: "c-1",
			CartID: "cart-42", CartType: "shopping", Site: "eu", Channel: "b2c", Currency: "EUR", ValueMinor: 100, Due: at, At: at}},
		{events.TypeSuppressed, events.Suppression{ID: "s-2", DecisionID: "d-2", Reason: events.SuppressedNoAddress,
			Stage: events.StageActions, Flow: "f", Step: "s", CustomerKey: "anon:g-1", CartID: "cart-1"}},
		{events.TypeDeferred, events.Deferral{ID: "q-1", DecisionID: "d-1", Reason: events.DeferredQuietHours, Flow: "f",
			Step: "s", CustomerKey: "c-1", CartID: "cart-1", Due: at, At: at, Until: at.Add(time.Hour)}},
	} {
		b, err := events.Encode("id-1", events.Source, c.typ, at, "cart-42", c.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := set.validate(c.typ, b); err != nil {
			t.Errorf("%d %s: %v\n%s", i, c.typ, err, b)
		}
	}
	// Only an erased outcome names no cart.
	noCart := sparseOutcome
	noCart.CartID = ""
	erasedCart := erased
	erasedCart.CartID = "cart-1"
	for _, o := range []events.Outcome{noCart, erasedCart} {
		b, err := events.Encode("id-1", events.Source, events.TypeOutcome, at, "", o)
		if err != nil {
			t.Fatal(err)
		}
		if err := set.validate(events.TypeOutcome, b); err == nil {
			t.Errorf("%s outcome with cart_id %q passed the schema", o.Kind, o.CartID)
		}
	}
}

// The properties of every data schema are exactly the JSON fields of the
// Go type, and for output records the required ones are exactly those
// without omitempty (which Encode always writes).
func TestSchemaPropertiesMatchGoTypes(t *testing.T) {
	set := loadSchemas(t)
	check := func(what string, node map[string]any, typ reflect.Type, output bool) {
		t.Helper()
		names, omitempty := jsonFields(typ)
		props := asMap(node["properties"])
		var schemaNames []string
		for name, p := range props {
			schemaNames = append(schemaNames, name)
			if d, _ := asMap(p)["description"].(string); strings.TrimSpace(d) == "" {
				t.Errorf("%s.%s: no description", what, name)
			}
		}
		slices.Sort(names)
		slices.Sort(schemaNames)
		if !slices.Equal(names, schemaNames) {
			t.Errorf("%s: schema properties %v, Go fields of %v %v", what, schemaNames, typ, names)
		}
		if closed := node["additionalProperties"] == false; closed != (typ != reflect.TypeFor[events.Envelope]()) {
			t.Errorf("%s: additionalProperties false is %v", what, closed)
		}
		if output {
			var want []string
			for _, n := range names {
				if !omitempty[n] {
					want = append(want, n)
				}
			}
			var got []string
			for _, r := range asSlice(node["required"]) {
				got = append(got, r.(string))
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s: required %v, want the fields without omitempty %v", what, got, want)
			}
		}
	}
	for _, typ := range events.InputTypes {
		check(typ, set.node(schemaFile(typ), "/properties/data"), payloadTypes[typ], false)
	}
	check("item", set.node("common.schema.json", "/$defs/item"), reflect.TypeFor[events.Item](), true)
	dec := schemaFile(events.TypeDecision)
	check("decision", set.node(dec, "/properties/data"), reflect.TypeFor[events.Decision](), true)
	check("decision cart", set.node(dec, "/$defs/cart_snapshot"), reflect.TypeFor[events.CartSnapshot](), true)
	check("decision customer", set.node(dec, "/$defs/customer_snapshot"), reflect.TypeFor[events.CustomerSnapshot](), true)
	check("decision discount", set.node(dec, "/$defs/discount"), reflect.TypeFor[events.Discount](), true)
	check("outcome", set.node(schemaFile(events.TypeOutcome), "/properties/data"), reflect.TypeFor[events.Outcome](), true)
	check("suppression", set.node(schemaFile(events.TypeSuppressed), "/properties/data"), reflect.TypeFor[events.Suppression](), true)
	check("deferral", set.node(schemaFile(events.TypeDeferred), "/properties/data"), reflect.TypeFor[events.Deferral](), true)
	check("envelope", set.node("envelope.schema.json", ""), reflect.TypeFor[events.Envelope](), false)
}

// The currency enum of the schemas is exactly the set KnownCurrency accepts.
func TestCurrencyEnumMatchesKnownCurrency(t *testing.T) {
	set := loadSchemas(t)
	var enum []string
	for _, c := range asSlice(set.node("common.schema.json", "/$defs/currency")["enum"]) {
		enum = append(enum, c.(string))
	}
	var known []string
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			for c := 'A'; c <= 'Z'; c++ {
				if code := string([]rune{a, b, c}); events.KnownCurrency(code) {
					known = append(known, code)
				}
			}
		}
	}
	slices.Sort(enum)
	if !slices.Equal(enum, known) {
		t.Errorf("schema currencies %v\nKnownCurrency %v", enum, known)
	}
}

// The limits in the schemas are the decoder's constants.
func TestSchemaLimitsMatchConstants(t *testing.T) {
	set := loadSchemas(t)
	num := func(file, pointer, kw string) int64 {
		t.Helper()
		v, ok := set.node(file, pointer)[kw].(json.Number)
		if !ok {
			t.Fatalf("%s#%s: no %s", file, pointer, kw)
		}
		n, err := v.Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const c = "common.schema.json"
	for _, tc := range []struct {
		file, pointer, kw string
		want              int64
	}{
		{c, "/$defs/id", "maxLength", events.MaxIDLen},
		{c, "/$defs/customer_id", "maxLength", events.MaxIDLen},
		{c, "/$defs/anonymous_id", "maxLength", events.MaxIDLen},
		{c, "/$defs/items", "maxItems", events.MaxItems},
		{c, "/$defs/metadata", "maxProperties", events.MaxMetadata},
		{c, "/$defs/item/properties/quantity", "minimum", 1},
		{c, "/$defs/item/properties/quantity", "maximum", events.MaxQuantity},
		{c, "/$defs/item/properties/unit_price_minor", "maximum", events.MaxUnitPriceMinor},
		{c, "/$defs/item/properties/name", "maxLength", events.MaxTextLen},
		{c, "/$defs/item/properties/image_url", "maxLength", events.MaxURLLen},
		{"cart.item_updated.schema.json", "/properties/data/properties/quantity", "minimum", 0},
		{"cart.item_updated.schema.json", "/properties/data/properties/quantity", "maximum", events.MaxQuantity},
		{"cart.item_updated.schema.json", "/properties/data/properties/unit_price_minor", "maximum", events.MaxUnitPriceMinor},
		{"checkout.completed.schema.json", "/properties/data/properties/total_minor", "maximum", events.MaxTotalMinor},
		{"checkout.completed.schema.json", "/properties/data/properties/discount_codes", "maxItems", events.MaxDiscountCodes},
		{"envelope.schema.json", "/properties/source", "maxLength", events.MaxTextLen},
		{"envelope.schema.json", "/properties/type", "maxLength", events.MaxIDLen},
	} {
		if got := num(tc.file, tc.pointer, tc.kw); got != tc.want {
			t.Errorf("%s#%s %s = %d, want %d", tc.file, tc.pointer, tc.kw, got, tc.want)
		}
	}
}

// agree decodes doc and validates it against the schema of typ, and fails
// unless both accept or both reject.
func agree(t *testing.T, set *schemaSet, typ string, doc []byte) (accepted bool) {
	t.Helper()
	schemaErr := set.validate(typ, doc)
	_, decodeErr := events.Decode(doc, time.Time{})
	if (schemaErr == nil) != (decodeErr == nil) {
		t.Errorf("schema and decoder disagree on\n%s\nschema: %v\nDecode: %v", doc, schemaErr, decodeErr)
	}
	return schemaErr == nil && decodeErr == nil
}

// Schema and decoder agree on every example with one member removed
// (required members: both reject), with an unknown member added to each
// object of data (both reject), and with an extension attribute added to
// the envelope (both accept).
func TestSchemaAgreesWithDecoderOnMutations(t *testing.T) {
	set := loadSchemas(t)
	for _, typ := range events.InputTypes {
		t.Run(typ, func(t *testing.T) {
			doc := exampleDoc(t, typ)
			required := set.requiredPaths(typ, doc)
			if len(required) < 7 {
				t.Fatalf("only %d required paths found: %v", len(required), required)
			}
			removed := 0
			for _, p := range objectPaths(doc) {
				mutated := marshal(t, without(doc, p))
				ok := agree(t, set, typ, mutated)
				if required[p.String()] {
					removed++
					if ok {
						t.Errorf("without required %s: accepted", p)
					}
				}
			}
			if removed != len(required) {
				t.Errorf("removed %d of %d required members", removed, len(required))
			}
			// An unknown member in data and in every object below it
			// (except metadata, a free-form map).
			for _, p := range objectLocations(doc["data"], docPath{"data"}) {
				if p[len(p)-1] == "metadata" {
					continue
				}
				mutated := marshal(t, withPath(doc, append(slices.Clip(p), "bogus_field"), "x"))
				if agree(t, set, typ, mutated) {
					t.Errorf("unknown field in %s: accepted", p)
				}
			}
			// Both members of the owner missing.
			if _, ok := asMap(doc["data"])["cart_id"]; ok && typ != events.TypeCartAssigned {
				d := withPath(doc, docPath{"data", "customer_id"}, nil)
				d = withPath(d, docPath{"data", "anonymous_id"}, nil)
				if agree(t, set, typ, marshal(t, d)) {
					t.Error("without customer_id and anonymous_id: accepted")
				}
			}
			ext := withPath(doc, docPath{"traceparent"}, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			if !agree(t, set, typ, marshal(t, ext)) {
				t.Error("with an extension attribute: rejected")
			}
		})
	}
}

// objectLocations returns the paths of v and of every object inside it.
func objectLocations(v any, p docPath) []docPath {
	var out []docPath
	switch v := v.(type) {
	case map[string]any:
		out = append(out, p)
		for _, k := range slices.Sorted(maps.Keys(v)) {
			out = append(out, objectLocations(v[k], append(slices.Clip(p), k))...)
		}
	case []any:
		for i, e := range v {
			out = append(out, objectLocations(e, append(slices.Clip(p), i))...)
		}
	}
	return out
}

// withPath is with for a parsed path.
func withPath(doc map[string]any, p docPath, value any) map[string]any {
	out := deepCopy(doc).(map[string]any)
	setPath(out, p, value)
	return out
}

// The differences between schema and decoder that schema/README.md lists,
// and nothing else: each case here is accepted by one and rejected by the
// other. When one is fixed, move it to the agreeing cases.
func TestKnownSchemaGaps(t *testing.T) {
	ss := loadSchemas(t)
	added := exampleDoc(t, events.TypeItemAdded)
	updated := exampleDoc(t, events.TypeItemUpdated)
	profile := exampleDoc(t, events.TypeCustomerUpdated)
	big := marshal(t, added)
	big = append(big, bytes.Repeat([]byte(" "), events.MaxRecordBytes+1-len(big))...)
	for _, c := range []struct {
		name         string
		typ          string
		doc          []byte
		schemaAccept bool // and Decode the opposite
	}{
		{"record over 64 KiB", events.TypeItemAdded, big, true},
		{"id of 65 two-byte characters", events.TypeItemAdded, marshal(t, with(added, "data.cart_id", strings.Repeat("ä", 65))), true},
		{"quantity 1.0", events.TypeItemUpdated, marshal(t, with(updated, "data.quantity", json.Number("1.0"))), true},
		{"quantity 1e3", events.TypeItemUpdated, marshal(t, with(updated, "data.quantity", json.Number("1e3"))), true},
		{"zero time", events.TypeItemAdded, marshal(t, with(added, "time", "0001-01-01T00:00:00Z")), true},
		{"time in year 0 UTC", events.TypeItemAdded, marshal(t, with(added, "time", "0001-01-01T00:30:00+01:00")), true},
		{"unknown time zone", events.TypeCustomerUpdated, marshal(t, with(profile, "data.time_zone", "Europe/Atlantis")), true},
		{"null optional member", events.TypeCustomerUpdated, marshal(t, with(profile, "data.email", jsonNull)), false},
		{"member name in upper case", events.TypeCustomerUpdated, marshal(t, with(with(profile, "data.email", nil), "data.EMAIL", "a@example.com")), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			schemaErr := ss.validate(c.typ, c.doc)
			_, decodeErr := events.Decode(c.doc, time.Time{})
			if (schemaErr == nil) != c.schemaAccept || (decodeErr == nil) == c.schemaAccept {
				t.Errorf("schema: %v; Decode: %v; want the schema to accept: %v and Decode the opposite", schemaErr, decodeErr, c.schemaAccept)
			}
		})
	}
}

// The kcat example in schema/README.md is a valid event with the right key.
func TestReadmeExample(t *testing.T) {
	b, err := os.ReadFile("schema/README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "|{")
		if !ok || strings.ContainsAny(key, " `") {
			continue
		}
		n++
		ev, err := events.Decode([]byte("{"+value), time.Time{})
		if err != nil {
			t.Errorf("README example: %v", err)
			continue
		}
		if ev.Key() != key {
			t.Errorf("README example keyed %q, its key is %q", key, ev.Key())
		}
	}
	if n == 0 {
		t.Error("no key|value example found in schema/README.md")
	}
}
