package projections

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// wantErr is one expected FlowError: its line, flow and field, and a piece
// of its message.
type wantErr struct {
	line  int
	flow  string
	field string
	msg   string
}

func TestParseFlowsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []wantErr
	}{
		{"unknown field in a flow", `
flows:
  - name: a
    stepz: []
    steps: [{after: 1h, action: email}]
`, []wantErr{{4, "", "", "unknown field stepz in a flow"}}},
		{"unknown fields everywhere, all reported", `
flows:
  - name: a
    match:
      channel: [b2c]
    steps:
      - after: 1h
        action: email
        retries: 3
        discount: {percent: 5, code: X}
flowz: 1
`, []wantErr{
			{5, "", "", "unknown field channel in match"},
			{9, "", "", "unknown field retries in a step"},
			{10, "", "", "unknown field code in discount"},
			{11, "", "", "unknown field flowz in the file"},
		}},
		{"wrong type", `
flows:
  - name: a
    holdout_percent: ten
    steps: [{after: 1h, action: email}]
`, []wantErr{{4, "", "", "cannot unmarshal !!str `ten` into int"}}},
		{"yaml syntax", `
flows:
  - name: a
   steps: x
`, []wantErr{{2, "", "", "did not find expected '-' indicator"}}},
		{"bad duration", `
flows:
  - name: a
    steps:
      - after: 3x
        action: email
`, []wantErr{{5, "a", "steps[0].after", `"3x" is not a duration`}}},
		{"bad durations of the flow and the discount", `
flows:
  - name: a
    expire_after: 1w
    attribution_window: -2h
    steps:
      - after: 1h
        action: email
        discount: {percent: 5, valid_for: soon}
`, []wantErr{
			{4, "a", "expire_after", `"1w" is not a duration`},
			{5, "a", "attribution_window", "must be positive, got -2h"},
			{9, "a", "steps[0].discount.valid_for", `"soon" is not a duration`},
		}},
		{"steps out of order", `
flows:
  - name: a
    steps:
      - {after: 2h, action: email}
      - {after: 2h, action: email}
      - {after: 1h, action: email}
`, []wantErr{
			{6, "a", "steps[1].after", "2h must be later than the previous step's 2h"},
			{7, "a", "steps[2].after", "1h must be later than the previous step's 2h"},
		}},
		{"step at or after expire_after", `
flows:
  - name: a
    expire_after: 2d
    steps:
      - {after: 1d, action: email}
      - {after: 48h, action: email}
`, []wantErr{{7, "a", "steps[1].after", "48h is not before expire_after (2d): the step could never fire"}}},
		{"step after the default expire_after", `
flows:
  - name: a
    steps:
      - {after: 8d, action: email}
`, []wantErr{{5, "a", "steps[0].after", "8d is not before expire_after (7d)"}}},
		{"missing after", `
flows:
  - name: a
    steps:
      - action: email
`, []wantErr{{5, "a", "steps[0].after", "is required"}}},
		{"bad action", `
flows:
  - name: a
    steps:
      - after: 1h
        action: sms
`, []wantErr{{6, "a", "steps[0].action", `"sms" is not an action (email or webhook)`}}},
		{"missing action", `
flows:
  - name: a
    steps:
      - after: 1h
`, []wantErr{{5, "a", "steps[0].action", "is required (email or webhook)"}}},
		{"bad currency", `
flows:
  - name: a
    match:
      currencies:
        - EUR
        - EURO
    steps: [{after: 1h, action: email}]
`, []wantErr{{7, "a", "match.currencies", `"EURO" is not an ISO 4217 currency code`}}},
		{"value bounds", `
flows:
  - name: a
    match: {min_value_minor: -1}
    steps: [{after: 1h, action: email}]
  - name: b
    match:
      min_value_minor: 500
      max_value_minor: 100
    steps: [{after: 1h, action: email}]
`, []wantErr{
			{4, "a", "match.min_value_minor", "must not be negative"},
			{7, "b", "match", `can match the same carts as flow "a", and both send email`},
			{9, "b", "match.max_value_minor", "must be at least min_value_minor"},
		}},
		{"duplicate flow name", `
flows:
  - name: a
    steps: [{after: 1h, action: email}]
  - name: b
    steps: [{after: 1h, action: email}]
  - name: a
    steps: [{after: 1h, action: email}]
`, []wantErr{
			{5, "b", "match", `can match the same carts as flow "a"`},
			{7, "a", "name", "is used by an earlier flow"},
		}},
		{"missing and bad flow names", `
flows:
  - steps: [{after: 1h, action: email}]
  - name: has space
    steps: [{after: 1h, action: email}]
`, []wantErr{
			{3, "#1", "name", "is required"},
			{4, "has space", "name", "must not contain spaces or slashes"},
		}},
		{"duplicate step name", `
flows:
  - name: a
    steps:
      - {name: r, after: 1h, action: email}
      - {name: r, after: 2h, action: email}
`, []wantErr{{6, "a", "steps[1].name", `"r" is used by an earlier step`}}},
		{"discount with both percent and amount", `
flows:
  - name: a
    steps:
      - after: 1h
        action: email
        discount:
          percent: 10
          amount_minor: 500
`, []wantErr{{7, "a", "steps[0].discount", "exactly one of percent and amount_minor is required"}}},
		{"discount with neither, bad percent, long prefix", `
flows:
  - name: a
    steps:
      - after: 1h
        action: email
        discount: {max_minor: 100}
      - after: 2h
        action: email
        discount:
          percent: 120
          prefix: ABCDEFGHIJKLMNOPQ
`, []wantErr{
			{7, "a", "steps[0].discount", "exactly one of percent and amount_minor is required"},
			{11, "a", "steps[1].discount.percent", "must be between 1 and 100, got 120"},
			{12, "a", "steps[1].discount.prefix", "is longer than 16 characters"},
		}},
		{"holdout out of range", `
flows:
  - name: a
    holdout_percent: 101
    steps: [{after: 1h, action: email}]
  - name: b
    holdout_percent: -1
    steps: [{after: 1h, action: email}]
`, []wantErr{
			{4, "a", "holdout_percent", "must be between 0 and 100, got 101"},
			{6, "b", "match", `can match the same carts as flow "a"`},
			{7, "b", "holdout_percent", "must be between 0 and 100, got -1"},
		}},
		{"no steps", `
flows:
  - name: a
    expire_after: 1d
`, []wantErr{{3, "a", "steps", "at least one step is required"}}},
		{"no flows", `
flows: []
`, []wantErr{{2, "", "flows", "at least one flow is required"}}},
		{"empty file", ``, []wantErr{{0, "", "flows", "at least one flow is required"}}},
		{"only comments", "# nothing yet\n", []wantErr{{0, "", "flows", "at least one flow is required"}}},
		{"several errors at once, in file order", `
flows:
  - name: a
    holdout_percent: 200
    steps:
      - {after: 1x, action: email}
      - {after: 2h, action: fax}
  - name: a
    match: {currencies: [XXY]}
    expire_after: 1h
    steps:
      - {after: 2h, action: webhook, discount: {percent: 1, amount_minor: 1}}
`, []wantErr{
			{4, "a", "holdout_percent", "got 200"},
			{6, "a", "steps[0].after", `"1x" is not a duration`},
			{7, "a", "steps[1].action", `"fax" is not an action`},
			{8, "a", "name", "is used by an earlier flow"},
			{9, "a", "match.currencies", `"XXY"`},
			{12, "a", "steps[0].after", "2h is not before expire_after (1h0m0s)"},
			{12, "a", "steps[0].discount", "exactly one of percent and amount_minor"},
		}},
		{"bad guards, top-level and per flow", `
guards:
  quiet_hours: {from: "9pm", to: "24:00"}
  frequency_cap: {max: 0, per: 16x}
  max_messages_per_cart: -1
  combine_window: 2d
  default_time_zone: Mars/Olympus
flows:
  - name: a
    steps: [{after: 1h, action: email}]
    guards:
      quiet_hours: {from: "08:00", to: "08:00"}
      frequency_cap: {max: 17}
      default_time_zone: Local
  - name: b
    match: {channels: [b2b]}
    steps: [{after: 1h, action: webhook}]
    guards:
      quiet_hours: {off: true, from: "21:00"}
      frequency_cap: {max: 1, per: 31d}
      max_messages_per_cart: 17
      combine_window: -5m
`, []wantErr{
			{3, "", "guards.quiet_hours.from", `"9pm" is not a time of day (HH:MM, 00:00 to 23:59)`},
			{3, "", "guards.quiet_hours.to", `"24:00" is not a time of day`},
			{4, "", "guards.frequency_cap.max", "must be between 1 and 16, got 0"},
			{4, "", "guards.frequency_cap.per", `"16x" is not a duration`},
			{5, "", "guards.max_messages_per_cart", "must be between 0 (no cap) and 16, got -1"},
			{6, "", "guards.combine_window", "must be at most 1d, got 2d"},
			{7, "", "guards.default_time_zone", `"Mars/Olympus" is not an IANA time zone`},
			{12, "a", "guards.quiet_hours.to", "equals from: the window would be empty"},
			{13, "a", "guards.frequency_cap.max", "got 17"},
			{13, "a", "guards.frequency_cap.per", "is required"},
			{14, "a", "guards.default_time_zone", `"Local" is not an IANA time zone`},
			{19, "b", "guards.quiet_hours.off", "off: true turns quiet hours off; it takes no from or to"},
			{20, "b", "guards.frequency_cap.per", "must be at most 30d, got 31d"},
			{21, "b", "guards.max_messages_per_cart", "got 17"},
			{22, "b", "guards.combine_window", "must be positive, got -5m"},
		}},
		{"unknown field in guards", `
guards:
  quiet: {from: "21:00", to: "08:00"}
flows:
  - name: a
    steps: [{after: 1h, action: email}]
    guards:
      frequency_cap: {max: 1, every: 16h}
`, []wantErr{
			{3, "", "", "unknown field quiet in guards"},
			{8, "", "", "unknown field every in frequency_cap"},
		}},
		{"quiet hours without to", `
flows:
  - name: a
    steps: [{after: 1h, action: email}]
    guards:
      quiet_hours: {from: "21:00"}
`, []wantErr{{6, "a", "guards.quiet_hours.to", "is required (HH:MM)"}}},
		{"bad criteria", `
flows:
  - name: a
    match:
      sites: [eu, ""]
      min_items: -1
      include_skus: [A, B]
      exclude_skus: [B, A, C]
      include_categories: [shoes]
      exclude_categories: [socks]
    steps: [{after: 1h, action: email}]
  - name: b
    match:
      min_items: 5
      max_items: 2
      channels: [b2c]
      b2b: true
    steps: [{after: 1h, action: webhook}]
  - name: c
    match: {channels: [b2b], b2b: false}
    steps: [{after: 1h, action: webhook}]
`, []wantErr{
			{5, "a", "match.sites", "an empty entry matches nothing"},
			{6, "a", "match.min_items", "must not be negative"},
			{8, "a", "match.exclude_skus", "excludes every entry of include_skus: the flow can never match"},
			{15, "b", "match.max_items", "must be at least min_items"},
			{17, "b", "match.b2b", "b2b: true contradicts channels [b2c]"},
			{20, "c", "match.b2b", "b2b: false contradicts channels [b2b]"},
		}},
		{"overlapping email flows", `
flows:
  - name: all
    steps: [{after: 1h, action: email}]
  - name: eu
    match: {sites: [eu]}
    steps: [{after: 2h, action: email}]
  - name: us-or-eu
    match:
      sites: [us, eu]
      locales: [de]
    steps: [{after: 2h, action: webhook}, {after: 3h, action: email}]
  - name: us
    match: {sites: [us]}
    steps: [{after: 2h, action: email}]
    allow_overlap: true
  - name: b2b
    match: {b2b: true, sites: [eu]}
    steps: [{after: 2h, action: webhook}]
`, []wantErr{
			{6, "eu", "match", `can match the same carts as flow "all", and both send email: a cart would be messaged twice`},
			{9, "us-or-eu", "match", `can match the same carts as flow "all"`},
			{9, "us-or-eu", "match", `can match the same carts as flow "eu"`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows, err := ParseFlows("flows.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; flows %+v", flows)
			}
			if flows != nil {
				t.Errorf("flows returned with an error: %+v", flows)
			}
			var fes FlowErrors
			if !errors.As(err, &fes) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			for i := 0; i < max(len(fes), len(tc.want)); i++ {
				if i >= len(fes) {
					t.Errorf("missing error %d: %+v", i, tc.want[i])
					continue
				}
				got := fes[i]
				if i >= len(tc.want) {
					t.Errorf("unexpected error %d: %+v", i, got)
					continue
				}
				w := tc.want[i]
				if got.Line != w.line || got.Flow != w.flow || got.Field != w.field || !strings.Contains(got.Msg, w.msg) || got.File != "flows.yaml" {
					t.Errorf("error %d:\n got  line %d flow %q field %q msg %q\n want line %d flow %q field %q msg containing %q",
						i, got.Line, got.Flow, got.Field, got.Msg, w.line, w.flow, w.field, w.msg)
				}
			}
			if !strings.Contains(err.Error(), "flows.yaml:") {
				t.Errorf("message does not name the file: %s", err)
			}
		})
	}
}

func TestFlowErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		e    FlowError
		want string
	}{
		{FlowError{File: "f.yaml", Line: 7, Flow: "b2c", Field: "steps[1].after", Msg: "is required"}, `f.yaml:7: flow "b2c": steps[1].after: is required`},
		{FlowError{File: "f.yaml", Line: 2, Field: "flows", Msg: "at least one flow is required"}, `f.yaml:2: flows: at least one flow is required`},
		{FlowError{Line: 3, Msg: "unknown field x in a flow"}, `3: unknown field x in a flow`},
		{FlowError{Msg: "EOF"}, `EOF`},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, got, tc.want)
		}
	}
	errs := FlowErrors{{Line: 1, Msg: "a"}, {Line: 2, Msg: "b"}}
	if got := errs.Error(); got != "1: a\n2: b" {
		t.Errorf("FlowErrors: %q", got)
	}
}

func TestParseFlowsValues(t *testing.T) {
	flows, err := ParseFlows("f.yaml", []byte(`
flows:
  - name: a
    match:
      cart_types: [shopping]
      sites: [eu]
      channels: [b2c]
      currencies: [EUR, JPY]
      min_value_minor: 1000
      max_value_minor: 50000
    steps:
      - after: 90m
        action: email
      - name: offer
        after: 1d12h
        action: webhook
        template: offer
        discount: {amount_minor: 500, valid_for: 2d, prefix: BACK}
    expire_after: 3d
    attribution_window: 36h
    holdout_percent: 15
  - name: b
    match:
      include_skus: [A]
      exclude_skus: [B]
      include_categories: [shoes]
      exclude_categories: [gifts]
      min_items: 2
      max_items: 9
      locales: [de]
      segments: [vip]
      legal_entities: [acme-gmbh]
      b2b: true
    steps: [{after: 1h, action: email}]
    allow_overlap: true
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := flows[0], flows[1]
	if a.AllowOverlap || !b.AllowOverlap {
		t.Errorf("allow_overlap: a %v, b %v", a.AllowOverlap, b.AllowOverlap)
	}
	if a.Name != "a" || a.ExpireAfter != 72*time.Hour || a.AttributionWindow != 36*time.Hour || a.HoldoutPercent != 15 {
		t.Errorf("flow a: %+v", a)
	}
	m := a.Match
	if strings.Join(m.CartTypes, ",") != "shopping" || strings.Join(m.Sites, ",") != "eu" || strings.Join(m.Channels, ",") != "b2c" ||
		strings.Join(m.Currencies, ",") != "EUR,JPY" || m.MinValueMinor != 1000 || m.MaxValueMinor != 50000 {
		t.Errorf("match: %+v", m)
	}
	if s := a.Steps[0]; s.Name != "step1" || s.After != 90*time.Minute || s.Action != ActionEmail || s.Discount != nil {
		t.Errorf("step 0: %+v", s)
	}
	s := a.Steps[1]
	if s.Name != "offer" || s.After != 36*time.Hour || s.Action != ActionWebhook || s.Template != "offer" || s.Discount == nil ||
		s.Discount.AmountMinor != 500 || s.Discount.ValidForSeconds != 2*86400 || s.Discount.Prefix != "BACK" {
		t.Errorf("step 1: %+v %+v", s, s.Discount)
	}
	if bm := b.Match; strings.Join(bm.IncludeSKUs, ",") != "A" || strings.Join(bm.ExcludeSKUs, ",") != "B" ||
		strings.Join(bm.IncludeCategories, ",") != "shoes" || strings.Join(bm.ExcludeCategories, ",") != "gifts" ||
		bm.MinItems != 2 || bm.MaxItems != 9 || strings.Join(bm.Locales, ",") != "de" || strings.Join(bm.Segments, ",") != "vip" ||
		strings.Join(bm.LegalEntities, ",") != "acme-gmbh" || bm.B2B == nil || !*bm.B2B {
		t.Errorf("flow b match: %+v", bm)
	}
	if b.ExpireAfter != DefaultExpireAfter || b.AttributionWindow != DefaultAttributionWindow || b.HoldoutPercent != 0 {
		t.Errorf("flow b defaults: %+v", b)
	}
	cfg := NewConfig(flows)
	if cfg.IdleExpireAfter != 30*24*time.Hour || cfg.ClosedRetention != DefaultAttributionWindow {
		t.Errorf("config defaults: %+v", cfg)
	}
	long := NewConfig([]Flow{{Name: "x", AttributionWindow: 10 * 24 * time.Hour}})
	if long.ClosedRetention != 10*24*time.Hour {
		t.Errorf("closed retention %s, want the longest attribution window", long.ClosedRetention)
	}
}

// The flows files shipped in deploy/ must parse.
func TestShippedFlows(t *testing.T) {
	for _, name := range []string{"default.yaml", "demo.yaml"} {
		t.Run(name, func(t *testing.T) {
			path := "../deploy/flows/" + name
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			flows, err := ParseFlows(path, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(flows) < 2 {
				t.Fatalf("%d flows", len(flows))
			}
			for _, f := range flows {
				if len(f.Steps) == 0 {
					t.Errorf("flow %s has no steps", f.Name)
				}
			}
		})
	}
}

// default.yaml documents every option of the flows file: each field of
// the file's schema appears in it (most as a comment).
func TestShippedFlowsDocumentEveryOption(t *testing.T) {
	data, err := os.ReadFile("../deploy/flows/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[yamlFile](), reflect.TypeFor[yamlFlow](), reflect.TypeFor[yamlMatch](),
		reflect.TypeFor[yamlStep](), reflect.TypeFor[yamlDiscount](), reflect.TypeFor[yamlGuards](),
		reflect.TypeFor[yamlCap](), reflect.TypeFor[yamlQuiet](), reflect.TypeFor[yamlSchedule](), reflect.TypeFor[yamlVariant]()} {
		for f := range typ.Fields() {
			key := f.Tag.Get("yaml")
			if !regexp.MustCompile(`(?m)[\s{,]` + key + `:`).Match(data) {
				t.Errorf("default.yaml does not document %s (%s.%s)", key, typ.Name(), f.Name)
			}
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"3d", 72 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"90s", 90 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"0d", 0},
		{"2d30m15s", 48*time.Hour + 30*time.Minute + 15*time.Second},
		{"-1d", -24 * time.Hour}, // parsed; ParseFlows rejects it as not positive
		{"106751d", 106751 * 24 * time.Hour},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", "d", "3", "1.5d", "3x", "1w", "1h2d", "1d1d", "d1h", "1d-", "0x10d",
		"3d-1h",   // a sign after the days
		"106752d", // overflows time.Duration
		"213504d", // used to wrap around to 25m26s
		"9223372036854775807d",
		"106751d23h59m59s", // days plus the rest overflow
	} {
		got, err := ParseDuration(in)
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
			continue
		}
		if want := `"` + in + `" is not a duration`; !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q): %q does not quote the input", in, err)
		}
	}
}

func TestParseFlowsGuards(t *testing.T) {
	flows, err := ParseFlows("f.yaml", []byte(`
guards:
  quiet_hours: {from: "21:00", to: "08:30"}
  frequency_cap: {max: 1, per: 16h}
  max_messages_per_cart: 3
  combine_window: 10m
  default_time_zone: Europe/Berlin
flows:
  - name: defaults
    match: {channels: [b2c]}
    steps: [{after: 1h, action: email}]
  - name: overrides
    match: {channels: [b2b]}
    steps: [{after: 1h, action: webhook}]
    guards:
      requires_consent: true
      quiet_hours: {off: true}
      frequency_cap: {max: 3, per: 1d}
      max_messages_per_cart: 0
      combine_window: "0"
  - name: upstream
    match: {channels: [app]}
    steps: [{after: 1h, action: email}]
    guards:
      requires_consent: false
      frequency_cap: {off: true}
      quiet_hours: {from: "22:00", to: "07:00"}
      default_time_zone: America/New_York
`))
	if err != nil {
		t.Fatal(err)
	}
	d, o, u := flows[0].Guards, flows[1].Guards, flows[2].Guards
	if d.Consent != "" || *d.QuietHours != (QuietHours{21 * 60, 8*60 + 30}) || *d.FrequencyCap != (FrequencyCap{1, 16 * time.Hour}) ||
		d.MaxMessagesPerCart != 3 || d.CombineWindow != 10*time.Minute || d.DefaultTimeZone != "Europe/Berlin" {
		t.Errorf("defaults: %+v", d)
	}
	if !d.needsConsent(ActionEmail) || d.needsConsent(ActionWebhook) {
		t.Error("by default email needs consent and webhooks do not")
	}
	if o.Consent != ConsentAll || o.QuietHours != nil || *o.FrequencyCap != (FrequencyCap{3, 24 * time.Hour}) ||
		o.MaxMessagesPerCart != 0 || o.CombineWindow != 0 || o.DefaultTimeZone != "Europe/Berlin" {
		t.Errorf("overrides: %+v", o)
	}
	if u.Consent != ConsentNone || u.needsConsent(ActionEmail) || u.FrequencyCap != nil ||
		*u.QuietHours != (QuietHours{22 * 60, 7 * 60}) || u.DefaultTimeZone != "America/New_York" || u.MaxMessagesPerCart != 3 {
		t.Errorf("upstream: %+v", u)
	}
	// The cap's window keeps closed carts (and the state) long enough.
	cfg := NewConfig([]Flow{{Name: "x", Guards: Guards{FrequencyCap: &FrequencyCap{Max: 1, Per: 20 * 24 * time.Hour}}}})
	if cfg.ClosedRetention != 20*24*time.Hour {
		t.Errorf("closed retention %s, want the cap window", cfg.ClosedRetention)
	}
}
