package projections

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/cartlift/cartlift/events"
)

// Actions a flow step can take.
const (
	ActionEmail   = "email"
	ActionWebhook = "webhook"
)

// Defaults applied by ParseFlows where a flow leaves a field out.
const (
	DefaultExpireAfter       = 7 * 24 * time.Hour
	DefaultAttributionWindow = 7 * 24 * time.Hour
)

// Config is everything the fold needs besides state and input. It is
// immutable once built; share one value between goroutines.
type Config struct {
	// Flows in file order. A cart may match several flows.
	Flows []Flow
	// IdleExpireAfter expires open carts that no flow matches, so that state
	// does not grow without bound. Default 30 days.
	IdleExpireAfter time.Duration
	// ClosedRetention is how long a closed cart stays in state (for late
	// checkouts and attribution). Default: the longest attribution window
	// of any flow, at least DefaultAttributionWindow.
	ClosedRetention time.Duration
}

// Flow is one abandonment flow: which carts it applies to, and what to do
// after how long without activity.
type Flow struct {
	Name              string
	Match             Match
	Steps             []Step
	ExpireAfter       time.Duration
	AttributionWindow time.Duration
	// HoldoutPercent of customers (by a deterministic hash of customer key
	// and flow name) form the control group: their decisions are emitted
	// with holdout=true and actions skip them.
	HoldoutPercent int
	// Guards checked when a step comes due: the file's defaults with the
	// flow's overrides applied.
	Guards Guards
	// AllowOverlap accepts that the flow and another email flow can both
	// match the same cart (ParseFlows refuses that otherwise).
	AllowOverlap bool
	// Schedule, when set, makes the flow a scheduled one: instead of
	// inactivity steps, each run of the schedule sweeps the open carts
	// whose last modification lies in the run's time frame, and decides
	// its one step (Steps[0], whose After is zero) for each of them (see
	// FireSchedule).
	Schedule *Schedule
	// Shadow makes the flow a shadow flow: it is evaluated on the same
	// state and guards as a live flow, but its decisions are published
	// apart (Effects.Shadow), never actioned, and change nothing a live
	// flow sees (see the fold's shadow rules).
	Shadow bool
	// ShadowOf names the live flow a shadow flow is compared with.
	ShadowOf string
}

// Schedule is when a scheduled flow runs and which carts a run sweeps.
type Schedule struct {
	// Cron is the expression as written: "@hourly", "@daily", "@weekly",
	// "@monthly" or five standard fields ("0 9 * * 1-5").
	Cron string
	// TimeZone is the IANA zone the expression is read in ("" is UTC).
	TimeZone string
	// A run at T sweeps the open carts modified in
	// [T-ModifiedAfter, T-ModifiedBefore].
	ModifiedAfter  time.Duration
	ModifiedBefore time.Duration
	sched          cron.Schedule
	// last memoizes the latest Next call: a partition asks for the run
	// after the same last run with every event it applies, and a cron
	// walk costs microseconds. Safe for concurrent use.
	last atomic.Pointer[nextRun]
}

// nextRun is one memoized Next: the first run after from.
type nextRun struct{ from, next time.Time }

// ParseSchedule parses a cron expression in the named time zone.
func ParseSchedule(spec, zone string) (*Schedule, error) {
	loc, ok := location(zone)
	if !ok {
		return nil, fmt.Errorf("%q is not an IANA time zone (like UTC or Europe/Berlin)", zone)
	}
	if strings.Contains(spec, "TZ=") {
		return nil, fmt.Errorf("%q: set the zone with time_zone, not in the expression", spec)
	}
	if strings.HasPrefix(strings.TrimSpace(spec), "@every") {
		return nil, fmt.Errorf("%q: @every is not supported; use a cron expression", spec)
	}
	sc, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("%q is not a cron expression (like @daily or \"0 9 * * 1-5\"): %v", spec, err)
	}
	if s, ok := sc.(*cron.SpecSchedule); ok {
		s.Location = loc
	}
	return &Schedule{Cron: spec, TimeZone: zone, sched: sc}, nil
}

// Next returns the first run time after t, in UTC; zero when the
// schedule does not fire within five years.
func (s *Schedule) Next(t time.Time) time.Time {
	if m := s.last.Load(); m != nil && m.from.Equal(t) {
		return m.next
	}
	n := s.sched.Next(t)
	if !n.IsZero() {
		n = n.UTC()
	}
	s.last.Store(&nextRun{from: t, next: n})
	return n
}

// maxCatchUp bounds how far back Due looks for missed runs.
const maxCatchUp = 400 * 24 * time.Hour

// Due returns the latest run time in (last, now], or zero when there is
// none. Runs missed between last and now collapse into that one: a
// schedule missed while the runtime was down runs once when it comes back.
func (s *Schedule) Due(last, now time.Time) time.Time {
	if now.Sub(last) > maxCatchUp {
		last = now.Add(-maxCatchUp)
	}
	var run time.Time
	for t := s.Next(last); !t.IsZero() && !t.After(now); t = s.Next(t) {
		run = t
	}
	return run
}

// Frame returns the bounds of the modification times a run at run
// sweeps: [from, to], both inclusive.
func (s *Schedule) Frame(run time.Time) (from, to time.Time) {
	return run.Add(-s.ModifiedAfter), run.Add(-s.ModifiedBefore)
}

// Match filters carts. Empty lists match everything; value bounds are in
// minor units of the cart's currency, 0 meaning no bound; item bounds
// count units (the cart's ItemCount), 0 meaning no bound.
type Match struct {
	CartTypes     []string
	Sites         []string
	Channels      []string
	Currencies    []string
	MinValueMinor int64
	MaxValueMinor int64
	// IncludeSKUs: the cart has a line of at least one of them.
	// ExcludeSKUs: the cart has a line of none of them. The same for
	// categories, by the lines' category.
	IncludeSKUs       []string
	ExcludeSKUs       []string
	IncludeCategories []string
	ExcludeCategories []string
	MinItems          int64
	MaxItems          int64
	// Customer attributes, from the profile (customer.updated). A locale
	// entry matches the locale itself and its regional variants: "de"
	// matches "de", "de-DE" and "de_AT". A guest has no profile and
	// matches none of these lists.
	Locales  []string
	Segments []string
	// LegalEntities are the carts' B2B legal entities.
	LegalEntities []string
	// B2B, when set, requires the cart's channel to be "b2b" (true) or
	// anything else (false).
	B2B *bool
}

// Step is one inactivity step: After this long since the cart's last
// activity, take Action.
type Step struct {
	Name     string
	After    time.Duration
	Action   string
	Template string
	Discount *events.Discount
	// Variants, when the step has any (two or more), are the arms of an
	// A/B test of the step: each customer is assigned one of them by a
	// deterministic hash of customer key, flow and step index, in
	// proportion to their weights (see Flow.VariantOf), and the variant
	// may override the step's template, discount and after.
	Variants []Variant
}

// Variant is one arm of a step's A/B test: its name (in decisions and
// reports), its weight, and what it changes about the step. Zero values
// keep the step's: Template "" is the step's template, Discount nil the
// step's discount (unless NoDiscount), After 0 the step's after.
type Variant struct {
	Name     string
	Weight   int
	Template string
	Discount *events.Discount
	// NoDiscount drops the step's discount for this variant.
	NoDiscount bool
	After      time.Duration
}

// Bounds of a step's variants.
const (
	// MaxVariants is the most variants a step may have.
	MaxVariants = 10
	// MaxVariantWeight is the largest weight of a variant.
	MaxVariantWeight = 10000
)

// VariantOf returns the index in the step's Variants of the variant the
// customer is assigned to at step j of the flow, or -1 when the step has
// no variants. It is a pure function of the flow's name, j, the weights
// and the customer key: the same customer gets the same variant of a step
// on every cart, after every restart and in every replay or backtest.
// The hash (SHA-256 of "variant", flow, step index and key) is not the
// holdout's (FNV-1a of flow and key), so the variant a customer gets is
// independent of whether the customer is in the holdout group; a holdout
// customer is assigned a variant too (its decision names it), and is sent
// nothing as ever.
func (f *Flow) VariantOf(customerKey string, j int) int {
	if j < 0 || j >= len(f.Steps) {
		return -1
	}
	vs := f.Steps[j].Variants
	if len(vs) == 0 {
		return -1
	}
	total := 0
	for i := range vs {
		total += vs[i].Weight
	}
	if total <= 0 {
		return 0
	}
	h := sha256.New()
	for _, part := range []string{"variant", f.Name, strconv.Itoa(j), customerKey} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	x := int(binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % uint64(total))
	for i := range vs {
		if x < vs[i].Weight {
			return i
		}
		x -= vs[i].Weight
	}
	return len(vs) - 1
}

// StepFor returns step j of the flow as the customer gets it: the step
// with the overrides of the customer's variant applied, and the variant's
// name ("" when the step has no variants).
func (f *Flow) StepFor(customerKey string, j int) (Step, string) {
	st := f.Steps[j]
	v := f.VariantOf(customerKey, j)
	if v < 0 {
		return st, ""
	}
	va := &st.Variants[v]
	if va.Template != "" {
		st.Template = va.Template
	}
	switch {
	case va.Discount != nil:
		st.Discount = va.Discount
	case va.NoDiscount:
		st.Discount = nil
	}
	if va.After > 0 {
		st.After = va.After
	}
	return st, va.Name
}

// afterFor is step j's after for the customer: the step's, or its
// variant's when that overrides it.
func (f *Flow) afterFor(customerKey string, j int) time.Duration {
	st := &f.Steps[j]
	if !slices.ContainsFunc(st.Variants, func(v Variant) bool { return v.After > 0 }) {
		return st.After // the common case: no hash
	}
	if v := f.VariantOf(customerKey, j); v >= 0 && st.Variants[v].After > 0 {
		return st.Variants[v].After
	}
	return st.After
}

// Matches reports whether the flow applies to the cart of a customer with
// the profile p (nil: no profile, as for a guest).
func (m *Match) Matches(p *Profile, c *Cart) bool {
	if p == nil {
		p = &Profile{}
	}
	in := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	if !(in(m.CartTypes, c.Type) && in(m.Sites, c.Site) && in(m.Channels, c.Channel) &&
		in(m.Currencies, c.Currency) && in(m.LegalEntities, c.LegalEntity) && in(m.Segments, p.Segment) &&
		(m.MinValueMinor == 0 || c.TotalMinor >= m.MinValueMinor) &&
		(m.MaxValueMinor == 0 || c.TotalMinor <= m.MaxValueMinor) &&
		(m.MinItems == 0 || c.ItemCount >= m.MinItems) &&
		(m.MaxItems == 0 || c.ItemCount <= m.MaxItems)) {
		return false
	}
	if m.B2B != nil && *m.B2B != (c.Channel == ChannelB2B) {
		return false
	}
	if len(m.Locales) > 0 && !slices.ContainsFunc(m.Locales, func(l string) bool { return localeMatches(l, p.Locale) }) {
		return false
	}
	if len(m.IncludeSKUs) > 0 && !slices.ContainsFunc(c.Items, func(it LineItem) bool { return slices.Contains(m.IncludeSKUs, it.SKU) }) {
		return false
	}
	if len(m.ExcludeSKUs) > 0 && slices.ContainsFunc(c.Items, func(it LineItem) bool { return slices.Contains(m.ExcludeSKUs, it.SKU) }) {
		return false
	}
	if len(m.IncludeCategories) > 0 && !slices.ContainsFunc(c.Items, func(it LineItem) bool { return slices.Contains(m.IncludeCategories, it.Category) }) {
		return false
	}
	if len(m.ExcludeCategories) > 0 && slices.ContainsFunc(c.Items, func(it LineItem) bool { return slices.Contains(m.ExcludeCategories, it.Category) }) {
		return false
	}
	return true
}

// ChannelB2B is the channel of B2B carts, as Match.B2B reads it.
const ChannelB2B = "b2b"

// localeMatches reports whether a locale entry of a Match matches the
// customer's locale: equal (ignoring case and - versus _), or a prefix
// ending at a - or _ ("de" matches "de-DE").
func localeMatches(entry, locale string) bool {
	if locale == "" {
		return false
	}
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) }
	e, l := norm(entry), norm(locale)
	return l == e || strings.HasPrefix(l, e+"-")
}

// InHoldout reports whether the customer is in the flow's control group. It
// is a pure function of its arguments.
func (f *Flow) InHoldout(customerKey string) bool {
	if f.HoldoutPercent <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(f.Name))
	h.Write([]byte{0})
	h.Write([]byte(customerKey))
	return int(h.Sum64()%100) < f.HoldoutPercent
}

// withDefaults fills defaulted fields of a Config.
func (c Config) withDefaults() Config {
	if c.IdleExpireAfter == 0 {
		c.IdleExpireAfter = 30 * 24 * time.Hour
	}
	if c.ClosedRetention == 0 {
		c.ClosedRetention = DefaultAttributionWindow
		for _, f := range c.Flows {
			if f.Shadow {
				continue // a shadow flow's window is measured in ClickHouse; it must not keep live state longer
			}
			c.ClosedRetention = max(c.ClosedRetention, f.AttributionWindow)
		}
		// A customer's state may go once its last cart does; the message
		// times a frequency cap needs must not go with it any earlier.
		c.ClosedRetention = max(c.ClosedRetention, c.longestCap())
	}
	return c
}

// NewConfig returns a Config for the flows with every default filled in.
func NewConfig(flows []Flow) *Config {
	c := Config{Flows: flows}.withDefaults()
	return &c
}

// FlowError is one problem in a flows file, with the line it is on.
type FlowError struct {
	File  string
	Line  int
	Flow  string // empty for file-level problems
	Field string
	Msg   string
}

// Error formats the problem as "file:line: flow \"name\": field: message".
func (e FlowError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Flow != "" {
		fmt.Fprintf(&b, "flow %q: ", e.Flow)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// FlowErrors is every problem found in a flows file, in file order.
type FlowErrors []FlowError

// Error lists every problem, one per line.
func (es FlowErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

type yamlFile struct {
	Guards yamlGuards `yaml:"guards"`
	Flows  []yamlFlow `yaml:"flows"`
}

type yamlFlow struct {
	Name              string        `yaml:"name"`
	Match             yamlMatch     `yaml:"match"`
	Steps             []yamlStep    `yaml:"steps"`
	ExpireAfter       string        `yaml:"expire_after"`
	AttributionWindow string        `yaml:"attribution_window"`
	HoldoutPercent    int           `yaml:"holdout_percent"`
	Guards            yamlGuards    `yaml:"guards"`
	AllowOverlap      bool          `yaml:"allow_overlap"`
	Schedule          *yamlSchedule `yaml:"schedule"`
	Shadow            bool          `yaml:"shadow"`
	ShadowOf          string        `yaml:"shadow_of"`
}

type yamlSchedule struct {
	Cron           string `yaml:"cron"`
	TimeZone       string `yaml:"time_zone"`
	ModifiedAfter  string `yaml:"modified_after"`
	ModifiedBefore string `yaml:"modified_before"`
}

type yamlMatch struct {
	CartTypes         []string `yaml:"cart_types"`
	Sites             []string `yaml:"sites"`
	Channels          []string `yaml:"channels"`
	Currencies        []string `yaml:"currencies"`
	MinValueMinor     int64    `yaml:"min_value_minor"`
	MaxValueMinor     int64    `yaml:"max_value_minor"`
	IncludeSKUs       []string `yaml:"include_skus"`
	ExcludeSKUs       []string `yaml:"exclude_skus"`
	IncludeCategories []string `yaml:"include_categories"`
	ExcludeCategories []string `yaml:"exclude_categories"`
	MinItems          int64    `yaml:"min_items"`
	MaxItems          int64    `yaml:"max_items"`
	Locales           []string `yaml:"locales"`
	Segments          []string `yaml:"segments"`
	LegalEntities     []string `yaml:"legal_entities"`
	B2B               *bool    `yaml:"b2b"`
}

// yamlGuards is the top-level guards section and a flow's overrides;
// pointers and "" tell an unset field from a set one.
type yamlGuards struct {
	RequiresConsent    *bool      `yaml:"requires_consent"`
	FrequencyCap       *yamlCap   `yaml:"frequency_cap"`
	QuietHours         *yamlQuiet `yaml:"quiet_hours"`
	MaxMessagesPerCart *int       `yaml:"max_messages_per_cart"`
	CombineWindow      string     `yaml:"combine_window"`
	DefaultTimeZone    string     `yaml:"default_time_zone"`
}

type yamlCap struct {
	Max int    `yaml:"max"`
	Per string `yaml:"per"`
	Off bool   `yaml:"off"`
}

type yamlQuiet struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`
	Off  bool   `yaml:"off"`
}

type yamlStep struct {
	Name     string        `yaml:"name"`
	After    string        `yaml:"after"`
	Action   string        `yaml:"action"`
	Template string        `yaml:"template"`
	Discount *yamlDiscount `yaml:"discount"`
	Variants []yamlVariant `yaml:"variants"`
	// AutoSwitch is recognised only to be refused with a reason.
	AutoSwitch any `yaml:"auto_switch"`
}

type yamlVariant struct {
	Name       string        `yaml:"name"`
	Weight     *int          `yaml:"weight"`
	Template   string        `yaml:"template"`
	Discount   *yamlDiscount `yaml:"discount"`
	NoDiscount bool          `yaml:"no_discount"`
	After      string        `yaml:"after"`
}

type yamlDiscount struct {
	Percent     int64  `yaml:"percent"`
	AmountMinor int64  `yaml:"amount_minor"`
	MaxMinor    int64  `yaml:"max_minor"`
	ValidFor    string `yaml:"valid_for"`
	Prefix      string `yaml:"prefix"`
}

// ParseFlows parses and validates a flows file. name is used in error
// messages only. On any problem it returns a FlowErrors listing every
// problem found, each with its line.
func ParseFlows(name string, data []byte) ([]Flow, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, FlowErrors{yamlError(name, err)}
	}
	var file yamlFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// io.EOF: an empty file, or only comments; it has no flows, which
	// the checks below report.
	if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var errs FlowErrors
			for _, msg := range te.Errors {
				errs = append(errs, yamlError(name, errors.New(msg)))
			}
			return nil, errs
		}
		return nil, FlowErrors{yamlError(name, err)}
	}
	p := flowParser{file: name, root: &root}
	base := p.guards("", []any{"guards"}, "guards", file.Guards, Guards{})
	flows := p.flows(file.Flows, base)
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b FlowError) int { return a.Line - b.Line })
		return nil, p.errs
	}
	return flows, nil
}

// yamlError turns "yaml: line 3: msg" / "line 3: msg" into a FlowError.
func yamlError(file string, err error) FlowError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	fe := FlowError{File: file, Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ":"); ok {
			if line, err := strconv.Atoi(n); err == nil {
				fe.Line, fe.Msg = line, strings.TrimSpace(tail)
			}
		}
	}
	if f, typ, ok := strings.Cut(fe.Msg, " not found in type "); ok {
		where := map[string]string{"yamlFile": "the file", "yamlFlow": "a flow", "yamlMatch": "match",
			"yamlStep": "a step", "yamlDiscount": "discount", "yamlGuards": "guards",
			"yamlCap": "frequency_cap", "yamlQuiet": "quiet_hours", "yamlSchedule": "schedule",
			"yamlVariant": "a variant"}[strings.TrimPrefix(typ, "projections.")]
		fe.Msg = fmt.Sprintf("unknown %s in %s", strings.Replace(f, "field ", "field ", 1), where)
	}
	return fe
}

type flowParser struct {
	file string
	root *yaml.Node
	errs FlowErrors
}

// line finds the line of a field by path, e.g. ("flows", 2, "steps", 0,
// "after"); it returns the line of the deepest node found.
func (p *flowParser) line(path ...any) int {
	n := p.root
	if n == nil || len(n.Content) == 0 {
		return 0
	}
	n = n.Content[0]
	line := n.Line
	for _, step := range path {
		switch s := step.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == s {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || s >= len(n.Content) {
				return line
			}
			n = n.Content[s]
			line = n.Line
		}
	}
	return line
}

func (p *flowParser) fail(flow string, path []any, field, format string, args ...any) {
	p.errs = append(p.errs, FlowError{File: p.file, Line: p.line(path...), Flow: flow, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *flowParser) flows(in []yamlFlow, base Guards) []Flow {
	if len(in) == 0 {
		p.fail("", []any{"flows"}, "flows", "at least one flow is required")
		return nil
	}
	seen := map[string]bool{}
	badName := map[int]bool{} // flows whose name is missing or taken: no overlap checks
	out := make([]Flow, 0, len(in))
	for i, yf := range in {
		at := func(rest ...any) []any { return append([]any{"flows", i}, rest...) }
		f := Flow{Name: yf.Name, HoldoutPercent: yf.HoldoutPercent, AllowOverlap: yf.AllowOverlap, Shadow: yf.Shadow, ShadowOf: yf.ShadowOf}
		name := yf.Name
		switch {
		case name == "":
			name = fmt.Sprintf("#%d", i+1)
			p.fail(name, at(), "name", "is required")
			badName[i] = true
		case seen[name]:
			p.fail(name, at("name"), "name", "is used by an earlier flow")
			badName[i] = true
		case strings.ContainsAny(name, " \t\n/"):
			p.fail(name, at("name"), "name", "must not contain spaces or slashes")
		}
		seen[name] = true
		f.Match = p.match(name, at, yf.Match)
		f.Guards = p.guards(name, at("guards"), "guards", yf.Guards, base)
		if yf.HoldoutPercent < 0 || yf.HoldoutPercent > 100 {
			p.fail(name, at("holdout_percent"), "holdout_percent", "must be between 0 and 100, got %d", yf.HoldoutPercent)
		}
		defExpire := DefaultExpireAfter
		if ys := yf.Schedule; ys != nil {
			f.Schedule = p.schedule(name, at, ys)
			if f.Schedule != nil && yf.ExpireAfter == "" {
				defExpire = max(defExpire, f.Schedule.ModifiedAfter)
			}
		}
		f.ExpireAfter = p.duration(name, at("expire_after"), "expire_after", yf.ExpireAfter, defExpire)
		f.AttributionWindow = p.duration(name, at("attribution_window"), "attribution_window", yf.AttributionWindow, DefaultAttributionWindow)
		if sc := f.Schedule; sc != nil && f.ExpireAfter < sc.ModifiedAfter {
			p.fail(name, at("expire_after"), "expire_after", "%s is shorter than schedule.modified_after (%s): carts would expire before a run could reach them",
				fmtDuration(f.ExpireAfter), fmtDuration(sc.ModifiedAfter))
		}
		switch {
		case len(yf.Steps) == 0:
			p.fail(name, at(), "steps", "at least one step is required")
		case yf.Schedule != nil && len(yf.Steps) > 1:
			p.fail(name, at("steps", 1), "steps", "a scheduled flow has exactly one step (each run decides it once per cart), got %d", len(yf.Steps))
		}
		stepNames := map[string]bool{}
		for j, ys := range yf.Steps {
			field := fmt.Sprintf("steps[%d]", j)
			s := Step{Name: ys.Name, Action: ys.Action, Template: ys.Template}
			if s.Name == "" {
				s.Name = fmt.Sprintf("step%d", j+1)
			} else if stepNames[s.Name] {
				p.fail(name, at("steps", j, "name"), field+".name", "%q is used by an earlier step", s.Name)
			}
			stepNames[s.Name] = true
			if yf.Schedule != nil {
				if ys.After != "" {
					p.fail(name, at("steps", j, "after"), field+".after", "a scheduled flow's step takes no after: the schedule says when it runs")
				}
			} else if ys.After == "" {
				p.fail(name, at("steps", j), field+".after", "is required")
			} else {
				s.After = p.duration(name, at("steps", j, "after"), field+".after", ys.After, 0)
			}
			if j > 0 && s.After > 0 && s.After <= f.stepAfter(j-1) {
				p.fail(name, at("steps", j, "after"), field+".after", "%s must be later than the previous step's %s", ys.After, yf.Steps[j-1].After)
			}
			if f.ExpireAfter > 0 && s.After > 0 && s.After >= f.ExpireAfter {
				p.fail(name, at("steps", j, "after"), field+".after", "%s is not before expire_after (%s): the step could never fire", ys.After, fmtDuration(f.ExpireAfter))
			}
			switch s.Action {
			case ActionEmail, ActionWebhook:
			case "":
				p.fail(name, at("steps", j), field+".action", "is required (email or webhook)")
			default:
				p.fail(name, at("steps", j, "action"), field+".action", "%q is not an action (email or webhook)", s.Action)
			}
			if d := ys.Discount; d != nil {
				s.Discount = p.discount(name, at("steps", j, "discount"), field+".discount", d)
			}
			if ys.AutoSwitch != nil {
				p.fail(name, at("steps", j, "auto_switch"), field+".auto_switch",
					"is not supported: a switch to the winning variant would need the counts of every customer, which the fold (one customer at a time) does not have; read the winner in cartlift report and change the weights")
			}
			s.Variants = p.variants(name, at, j, field, ys, &s, yf.Schedule != nil)
			if j > 0 && s.After > 0 && s.After > f.stepAfter(j-1) {
				// The step's own after is later than the previous step's;
				// every variant's must be later than every variant's of
				// the previous step too.
				_, _, prevHi, prevBy := f.Steps[j-1].span()
				lo, loBy, _, _ := s.span()
				if lo <= prevHi {
					p.fail(name, at("steps", j, "after"), field+".after", "%s%s must be later than the previous step's %s%s: every customer's steps must come in order",
						fmtDuration(lo), variantNote(loBy), fmtDuration(prevHi), variantNote(prevBy))
				}
			}
			if _, _, hi, by := s.span(); by != "" && f.ExpireAfter > 0 && hi >= f.ExpireAfter {
				p.fail(name, at("steps", j, "variants"), field+".variants", "%s of variant %q is not before expire_after (%s): the variant could never fire",
					fmtDuration(hi), by, fmtDuration(f.ExpireAfter))
			}
			f.Steps = append(f.Steps, s)
		}
		out = append(out, f)
	}
	p.shadows(in, out)
	p.overlaps(out, badName)
	return out
}

// shadows checks the shadow flows: each names, in shadow_of, a live flow
// of the file to be compared with; it is an inactivity flow without a
// holdout group (it sends nothing, so it has nothing to hold out).
func (p *flowParser) shadows(in []yamlFlow, flows []Flow) {
	for i := range flows {
		f := &flows[i]
		at := func(rest ...any) []any { return append([]any{"flows", i}, rest...) }
		if !f.Shadow {
			if f.ShadowOf != "" {
				p.fail(f.Name, at("shadow_of"), "shadow_of", "is only for a shadow flow (shadow: true)")
			}
			continue
		}
		switch {
		case f.ShadowOf == "":
			p.fail(f.Name, at("shadow"), "shadow_of", "is required for a shadow flow: name the live flow it is compared with")
		case f.ShadowOf == f.Name:
			p.fail(f.Name, at("shadow_of"), "shadow_of", "names the flow itself: name the live flow it is compared with")
		default:
			j := slices.IndexFunc(flows, func(o Flow) bool { return o.Name == f.ShadowOf })
			switch {
			case j < 0:
				p.fail(f.Name, at("shadow_of"), "shadow_of", "%q is not a flow of this file", f.ShadowOf)
			case flows[j].Shadow:
				p.fail(f.Name, at("shadow_of"), "shadow_of", "%q is a shadow flow too: name a live flow", f.ShadowOf)
			}
		}
		if in[i].Schedule != nil {
			p.fail(f.Name, at("shadow"), "shadow", "a scheduled flow cannot be a shadow flow (yet): shadow flows have inactivity steps")
		}
		if f.HoldoutPercent != 0 {
			p.fail(f.Name, at("holdout_percent"), "holdout_percent", "must be 0 in a shadow flow: it sends nothing, so it has no one to hold out (the live flow's holdout is the control group)")
		}
	}
}

// schedule converts and checks a flow's schedule section; nil when it is
// unusable (the problems are reported).
func (p *flowParser) schedule(name string, at func(...any) []any, ys *yamlSchedule) *Schedule {
	ok := true
	var sc *Schedule
	switch {
	case strings.TrimSpace(ys.Cron) == "":
		p.fail(name, at("schedule"), "schedule.cron", "is required (like @daily or \"0 9 * * 1-5\")")
		ok = false
	default:
		if _, zok := location(ys.TimeZone); !zok || ys.TimeZone == "Local" {
			p.fail(name, at("schedule", "time_zone"), "schedule.time_zone", "%q is not an IANA time zone (like UTC or Europe/Berlin)", ys.TimeZone)
			ok = false
			break
		}
		var err error
		sc, err = ParseSchedule(ys.Cron, ys.TimeZone)
		if err != nil {
			p.fail(name, at("schedule", "cron"), "schedule.cron", "%v", err)
			ok = false
			break
		}
		// A fixed reference keeps the check deterministic; cron looks
		// five years ahead, which covers the 29th of February.
		if ref := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC); sc.Next(ref).IsZero() {
			p.fail(name, at("schedule", "cron"), "schedule.cron", "%q never fires", ys.Cron)
			ok = false
		}
	}
	var after, before time.Duration
	if ys.ModifiedAfter == "" {
		p.fail(name, at("schedule"), "schedule.modified_after", "is required: how long before a run the oldest modification it sweeps lies (like 7d)")
		ok = false
	} else {
		after = p.duration(name, at("schedule", "modified_after"), "schedule.modified_after", ys.ModifiedAfter, 0)
		ok = ok && after > 0
	}
	if ys.ModifiedBefore != "" {
		if d, err := ParseDuration(ys.ModifiedBefore); err == nil && d == 0 {
			before = 0
		} else {
			before = p.duration(name, at("schedule", "modified_before"), "schedule.modified_before", ys.ModifiedBefore, -1)
			ok = ok && before >= 0
		}
	}
	if after > 0 && before >= after {
		p.fail(name, at("schedule", "modified_before"), "schedule.modified_before", "%s must be shorter than modified_after (%s): the time frame would be empty",
			ys.ModifiedBefore, ys.ModifiedAfter)
		ok = false
	}
	if !ok {
		return nil
	}
	sc.ModifiedAfter, sc.ModifiedBefore = after, before
	return sc
}

// match converts and checks a flow's match section.
func (p *flowParser) match(name string, at func(...any) []any, m yamlMatch) Match {
	out := Match{CartTypes: m.CartTypes, Sites: m.Sites, Channels: m.Channels, Currencies: m.Currencies,
		MinValueMinor: m.MinValueMinor, MaxValueMinor: m.MaxValueMinor,
		IncludeSKUs: m.IncludeSKUs, ExcludeSKUs: m.ExcludeSKUs, IncludeCategories: m.IncludeCategories,
		ExcludeCategories: m.ExcludeCategories, MinItems: m.MinItems, MaxItems: m.MaxItems,
		Locales: m.Locales, Segments: m.Segments, LegalEntities: m.LegalEntities, B2B: m.B2B}
	for _, l := range []struct {
		key  string
		list []string
	}{{"cart_types", m.CartTypes}, {"sites", m.Sites}, {"channels", m.Channels}, {"currencies", m.Currencies},
		{"include_skus", m.IncludeSKUs}, {"exclude_skus", m.ExcludeSKUs}, {"include_categories", m.IncludeCategories},
		{"exclude_categories", m.ExcludeCategories}, {"locales", m.Locales}, {"segments", m.Segments},
		{"legal_entities", m.LegalEntities}} {
		for j, v := range l.list {
			if strings.TrimSpace(v) == "" {
				p.fail(name, at("match", l.key, j), "match."+l.key, "an empty entry matches nothing")
			}
		}
	}
	for j, c := range m.Currencies {
		if c != "" && !events.KnownCurrency(c) {
			p.fail(name, at("match", "currencies", j), "match.currencies", "%q is not an ISO 4217 currency code", c)
		}
	}
	if m.MinValueMinor < 0 {
		p.fail(name, at("match", "min_value_minor"), "match.min_value_minor", "must not be negative")
	}
	if m.MaxValueMinor < 0 || (m.MaxValueMinor > 0 && m.MaxValueMinor < m.MinValueMinor) {
		p.fail(name, at("match", "max_value_minor"), "match.max_value_minor", "must be at least min_value_minor")
	}
	if m.MinItems < 0 {
		p.fail(name, at("match", "min_items"), "match.min_items", "must not be negative")
	}
	if m.MaxItems < 0 || (m.MaxItems > 0 && m.MaxItems < m.MinItems) {
		p.fail(name, at("match", "max_items"), "match.max_items", "must be at least min_items")
	}
	for _, pair := range []struct {
		inc, exc string
		in, ex   []string
	}{{"include_skus", "exclude_skus", m.IncludeSKUs, m.ExcludeSKUs},
		{"include_categories", "exclude_categories", m.IncludeCategories, m.ExcludeCategories}} {
		if len(pair.in) > 0 && subset(pair.in, pair.ex) {
			p.fail(name, at("match", pair.exc), "match."+pair.exc, "excludes every entry of %s: the flow can never match", pair.inc)
		}
	}
	if m.B2B != nil && len(m.Channels) > 0 {
		onlyB2B := !slices.ContainsFunc(m.Channels, func(c string) bool { return c != ChannelB2B })
		if (*m.B2B && !slices.Contains(m.Channels, ChannelB2B)) || (!*m.B2B && onlyB2B) {
			p.fail(name, at("match", "b2b"), "match.b2b", "b2b: %v contradicts channels %v: the flow can never match", *m.B2B, m.Channels)
		}
	}
	return out
}

// subset reports whether every entry of a is in b.
func subset(a, b []string) bool {
	for _, v := range a {
		if !slices.Contains(b, v) {
			return false
		}
	}
	return true
}

// guards resolves a guards section over base, reporting every problem.
// path and field name the section (the top-level one, or a flow's).
func (p *flowParser) guards(flow string, path []any, field string, g yamlGuards, base Guards) Guards {
	out := base
	at := func(rest ...any) []any { return append(slices.Clone(path), rest...) }
	if g.RequiresConsent != nil {
		out.Consent = ConsentNone
		if *g.RequiresConsent {
			out.Consent = ConsentAll
		}
	}
	if fc := g.FrequencyCap; fc != nil {
		out.FrequencyCap = nil
		switch {
		case fc.Off && (fc.Max != 0 || fc.Per != ""):
			p.fail(flow, at("frequency_cap", "off"), field+".frequency_cap.off", "off: true turns the cap off; it takes no max or per")
		case fc.Off:
		default:
			c := &FrequencyCap{Max: fc.Max}
			if fc.Max < 1 || fc.Max > MaxSentTimes/2 {
				p.fail(flow, at("frequency_cap", "max"), field+".frequency_cap.max", "must be between 1 and %d, got %d", MaxSentTimes/2, fc.Max)
			}
			if fc.Per == "" {
				p.fail(flow, at("frequency_cap"), field+".frequency_cap.per", "is required (like 16h or 7d)")
			} else {
				c.Per = p.duration(flow, at("frequency_cap", "per"), field+".frequency_cap.per", fc.Per, 0)
			}
			if c.Per > 0 && c.Per > maxGuardWindow {
				p.fail(flow, at("frequency_cap", "per"), field+".frequency_cap.per", "must be at most %s, got %s", fmtDuration(maxGuardWindow), fc.Per)
			}
			out.FrequencyCap = c
		}
	}
	if q := g.QuietHours; q != nil {
		out.QuietHours = nil
		switch {
		case q.Off && (q.From != "" || q.To != ""):
			p.fail(flow, at("quiet_hours", "off"), field+".quiet_hours.off", "off: true turns quiet hours off; it takes no from or to")
		case q.Off:
		default:
			from, okFrom := p.clock(flow, at("quiet_hours"), field+".quiet_hours", "from", q.From)
			to, okTo := p.clock(flow, at("quiet_hours"), field+".quiet_hours", "to", q.To)
			if okFrom && okTo && from == to {
				p.fail(flow, at("quiet_hours", "to"), field+".quiet_hours.to", "equals from: the window would be empty (or the whole day)")
			}
			out.QuietHours = &QuietHours{From: from, To: to}
		}
	}
	if n := g.MaxMessagesPerCart; n != nil {
		out.MaxMessagesPerCart = *n
		if *n < 0 || *n > MaxDecisionHistory/2 {
			p.fail(flow, at("max_messages_per_cart"), field+".max_messages_per_cart", "must be between 0 (no cap) and %d, got %d", MaxDecisionHistory/2, *n)
			out.MaxMessagesPerCart = 0
		}
	}
	if w := g.CombineWindow; w != "" {
		out.CombineWindow = 0
		if d, err := ParseDuration(w); err != nil || d != 0 {
			out.CombineWindow = p.duration(flow, at("combine_window"), field+".combine_window", w, 0)
		}
		if out.CombineWindow > maxCombineWindow {
			p.fail(flow, at("combine_window"), field+".combine_window", "must be at most %s, got %s", fmtDuration(maxCombineWindow), w)
		}
	}
	if z := g.DefaultTimeZone; z != "" {
		if _, ok := location(z); !ok {
			p.fail(flow, at("default_time_zone"), field+".default_time_zone", "%q is not an IANA time zone (like UTC or Europe/Berlin)", z)
		} else {
			out.DefaultTimeZone = z
		}
	}
	return out
}

// Bounds of guard windows.
const (
	maxGuardWindow   = 30 * 24 * time.Hour
	maxCombineWindow = 24 * time.Hour
)

// clock parses "HH:MM" into minutes after midnight.
func (p *flowParser) clock(flow string, path []any, field, key, s string) (int, bool) {
	at := append(slices.Clone(path), key)
	if s == "" {
		p.fail(flow, path, field+"."+key, "is required (HH:MM)")
		return 0, false
	}
	bad := func() (int, bool) {
		p.fail(flow, at, field+"."+key, "%q is not a time of day (HH:MM, 00:00 to 23:59)", s)
		return 0, false
	}
	if len(s) != 5 || s[2] != ':' {
		return bad()
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 || s[0] == '+' || s[3] == '+' {
		return bad()
	}
	return h*60 + m, true
}

// overlaps reports pairs of flows that can match the same cart and both
// send email, unless one of them sets allow_overlap. The check is
// conservative: two flows overlap unless some criterion provably keeps
// them apart (disjoint lists, disjoint ranges, opposite b2b, or one
// requiring what the other excludes).
func (p *flowParser) overlaps(flows []Flow, skip map[int]bool) {
	for j := range flows {
		for i := range j {
			a, b := &flows[i], &flows[j]
			if skip[i] || skip[j] || a.Shadow || b.Shadow || a.AllowOverlap || b.AllowOverlap || !a.sendsEmail() || !b.sendsEmail() || a.Match.disjoint(&b.Match) {
				continue
			}
			p.fail(b.Name, []any{"flows", j, "match"}, "match",
				"can match the same carts as flow %q, and both send email: a cart would be messaged twice (make the criteria exclusive, or set allow_overlap: true)", a.Name)
		}
	}
}

func (f *Flow) sendsEmail() bool {
	return slices.ContainsFunc(f.Steps, func(s Step) bool { return s.Action == ActionEmail })
}

// disjoint reports whether no cart and customer can match both m and o.
func (m *Match) disjoint(o *Match) bool {
	lists := func(a, b []string) bool {
		return len(a) > 0 && len(b) > 0 && !slices.ContainsFunc(a, func(v string) bool { return slices.Contains(b, v) })
	}
	ranges := func(lo1, hi1, lo2, hi2 int64) bool {
		return (hi1 > 0 && lo2 > hi1) || (hi2 > 0 && lo1 > hi2)
	}
	excluded := func(in, ex []string) bool { return len(in) > 0 && subset(in, ex) }
	b2b := func(m *Match) *bool {
		if m.B2B != nil {
			return m.B2B
		}
		if len(m.Channels) > 0 {
			has, only := slices.Contains(m.Channels, ChannelB2B), len(m.Channels) == 1
			switch {
			case has && only:
				return &[]bool{true}[0]
			case !has:
				return &[]bool{false}[0]
			}
		}
		return nil
	}
	locales := func(a, b []string) bool {
		if len(a) == 0 || len(b) == 0 {
			return false
		}
		for _, x := range a {
			for _, y := range b {
				if localeMatches(x, y) || localeMatches(y, x) {
					return false
				}
			}
		}
		return true
	}
	ba, bb := b2b(m), b2b(o)
	return lists(m.CartTypes, o.CartTypes) || lists(m.Sites, o.Sites) || lists(m.Channels, o.Channels) ||
		lists(m.Currencies, o.Currencies) || lists(m.Segments, o.Segments) || lists(m.LegalEntities, o.LegalEntities) ||
		locales(m.Locales, o.Locales) ||
		ranges(m.MinValueMinor, m.MaxValueMinor, o.MinValueMinor, o.MaxValueMinor) ||
		ranges(m.MinItems, m.MaxItems, o.MinItems, o.MaxItems) ||
		excluded(m.IncludeSKUs, o.ExcludeSKUs) || excluded(o.IncludeSKUs, m.ExcludeSKUs) ||
		excluded(m.IncludeCategories, o.ExcludeCategories) || excluded(o.IncludeCategories, m.ExcludeCategories) ||
		(ba != nil && bb != nil && *ba != *bb)
}

// span returns the earliest and the latest after of the step over its
// variants (the step's own when it has none), with the names of the
// variants that set them ("" when it is the step's own after).
func (s *Step) span() (lo time.Duration, loBy string, hi time.Duration, hiBy string) {
	lo, hi = s.After, s.After
	for i, v := range s.Variants {
		a, by := s.After, ""
		if v.After > 0 {
			a, by = v.After, v.Name
		}
		if i == 0 || a < lo {
			lo, loBy = a, by
		}
		if i == 0 || a > hi {
			hi, hiBy = a, by
		}
	}
	return lo, loBy, hi, hiBy
}

// variantNote names a variant in a message: " (variant b)", or "".
func variantNote(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (variant %q)", name)
}

// variantName is what a variant's name may be: a short word, as it goes
// into decisions, ClickHouse and the report.
var variantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// variants converts and checks step j's variants; nil when it has none.
// st is the step as parsed so far (after, template, discount).
func (p *flowParser) variants(flow string, at func(...any) []any, j int, field string, ys yamlStep, st *Step, scheduled bool) []Variant {
	if ys.Variants == nil {
		return nil
	}
	vat := func(i int, rest ...any) []any { return at(append([]any{"steps", j, "variants", i}, rest...)...) }
	switch n := len(ys.Variants); {
	case n < 2:
		p.fail(flow, at("steps", j, "variants"), field+".variants", "a test needs at least two variants, got %d", n)
	case n > MaxVariants:
		p.fail(flow, at("steps", j, "variants"), field+".variants", "at most %d variants, got %d", MaxVariants, n)
	}
	out := make([]Variant, 0, len(ys.Variants))
	names := map[string]bool{}
	for i, yv := range ys.Variants {
		vf := fmt.Sprintf("%s.variants[%d]", field, i)
		v := Variant{Name: yv.Name, Template: yv.Template, NoDiscount: yv.NoDiscount}
		switch {
		case yv.Name == "":
			p.fail(flow, vat(i), vf+".name", "is required")
		case names[yv.Name]:
			p.fail(flow, vat(i, "name"), vf+".name", "%q is used by an earlier variant of the step", yv.Name)
		case !variantName.MatchString(yv.Name):
			p.fail(flow, vat(i, "name"), vf+".name", "%q must be a letter or digit followed by letters, digits, - or _ (at most 32)", yv.Name)
		}
		names[yv.Name] = true
		switch {
		case yv.Weight == nil:
			p.fail(flow, vat(i), vf+".weight", "is required (a positive integer; the variants split the customers in proportion to their weights)")
		case *yv.Weight < 1 || *yv.Weight > MaxVariantWeight:
			p.fail(flow, vat(i, "weight"), vf+".weight", "must be between 1 and %d, got %d", MaxVariantWeight, *yv.Weight)
		default:
			v.Weight = *yv.Weight
		}
		if d := yv.Discount; d != nil {
			v.Discount = p.discount(flow, vat(i, "discount"), vf+".discount", d)
			if yv.NoDiscount {
				p.fail(flow, vat(i, "no_discount"), vf+".no_discount", "no_discount: true drops the step's discount; it takes no discount of its own")
			}
		} else if yv.NoDiscount && st.Discount == nil {
			p.fail(flow, vat(i, "no_discount"), vf+".no_discount", "the step has no discount to drop")
		}
		if yv.After != "" {
			if scheduled {
				p.fail(flow, vat(i, "after"), vf+".after", "a scheduled flow's step takes no after: the schedule says when it runs")
			} else {
				v.After = p.duration(flow, vat(i, "after"), vf+".after", yv.After, 0)
			}
		}
		out = append(out, v)
	}
	return out
}

func (f *Flow) stepAfter(j int) time.Duration {
	if j < 0 || j >= len(f.Steps) {
		return 0
	}
	return f.Steps[j].After
}

func (p *flowParser) discount(flow string, path []any, field string, d *yamlDiscount) *events.Discount {
	out := &events.Discount{Percent: d.Percent, AmountMinor: d.AmountMinor, MaxMinor: d.MaxMinor, Prefix: d.Prefix}
	if (d.Percent == 0) == (d.AmountMinor == 0) {
		p.fail(flow, path, field, "exactly one of percent and amount_minor is required")
	}
	if d.Percent < 0 || d.Percent > 100 {
		p.fail(flow, append(path, "percent"), field+".percent", "must be between 1 and 100, got %d", d.Percent)
	}
	if d.AmountMinor < 0 || d.MaxMinor < 0 {
		p.fail(flow, path, field, "amounts must not be negative")
	}
	if len(d.Prefix) > 16 {
		p.fail(flow, append(path, "prefix"), field+".prefix", "is longer than 16 characters")
	}
	if d.ValidFor != "" {
		out.ValidForSeconds = int64(p.duration(flow, append(path, "valid_for"), field+".valid_for", d.ValidFor, 0) / time.Second)
	}
	return out
}

// duration parses s, or returns def when s is empty.
func (p *flowParser) duration(flow string, path []any, field, s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := ParseDuration(s)
	if err != nil {
		p.fail(flow, path, field, "%v", err)
		return def
	}
	if d <= 0 {
		p.fail(flow, path, field, "must be positive, got %s", s)
		return def
	}
	return d
}

// ParseDuration parses a Go duration ("90s", "1h30m") that may also use
// days ("3d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	bad := func() error { return fmt.Errorf("%q is not a duration (like 90s, 1h, 3d)", s) }
	const day = 24 * time.Hour
	rest := s
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i > 0 {
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil || n > math.MaxInt64/int64(day) || n < math.MinInt64/int64(day) {
			return 0, bad()
		}
		days, rest = time.Duration(n)*day, rest[i+1:]
		if rest == "" {
			return days, nil
		}
		if rest[0] == '-' || rest[0] == '+' {
			return 0, bad() // "3d-1h": a sign belongs in front
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || (days > 0 && d > math.MaxInt64-days) {
		return 0, bad()
	}
	return days + d, nil
}

func fmtDuration(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
