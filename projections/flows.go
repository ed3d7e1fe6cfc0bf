package projections

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

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
}

// Match filters carts. Empty lists match everything; value bounds are in
// minor units of the cart's currency, 0 meaning no bound.
type Match struct {
	CartTypes     []string
	Sites         []string
	Channels      []string
	Currencies    []string
	MinValueMinor int64
	MaxValueMinor int64
}

// Step is one inactivity step: After this long since the cart's last
// activity, take Action.
type Step struct {
	Name     string
	After    time.Duration
	Action   string
	Template string
	Discount *events.Discount
}

// Matches reports whether the flow applies to the cart.
func (m *Match) Matches(c *Cart) bool {
	in := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	return in(m.CartTypes, c.Type) && in(m.Sites, c.Site) && in(m.Channels, c.Channel) &&
		in(m.Currencies, c.Currency) &&
		(m.MinValueMinor == 0 || c.TotalMinor >= m.MinValueMinor) &&
		(m.MaxValueMinor == 0 || c.TotalMinor <= m.MaxValueMinor)
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
			c.ClosedRetention = max(c.ClosedRetention, f.AttributionWindow)
		}
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
	Flows []yamlFlow `yaml:"flows"`
}

type yamlFlow struct {
	Name              string     `yaml:"name"`
	Match             yamlMatch  `yaml:"match"`
	Steps             []yamlStep `yaml:"steps"`
	ExpireAfter       string     `yaml:"expire_after"`
	AttributionWindow string     `yaml:"attribution_window"`
	HoldoutPercent    int        `yaml:"holdout_percent"`
}

type yamlMatch struct {
	CartTypes     []string `yaml:"cart_types"`
	Sites         []string `yaml:"sites"`
	Channels      []string `yaml:"channels"`
	Currencies    []string `yaml:"currencies"`
	MinValueMinor int64    `yaml:"min_value_minor"`
	MaxValueMinor int64    `yaml:"max_value_minor"`
}

type yamlStep struct {
	Name     string        `yaml:"name"`
	After    string        `yaml:"after"`
	Action   string        `yaml:"action"`
	Template string        `yaml:"template"`
	Discount *yamlDiscount `yaml:"discount"`
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
	flows := p.flows(file.Flows)
	if len(p.errs) > 0 {
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
			"yamlStep": "a step", "yamlDiscount": "discount"}[strings.TrimPrefix(typ, "projections.")]
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

func (p *flowParser) flows(in []yamlFlow) []Flow {
	if len(in) == 0 {
		p.fail("", []any{"flows"}, "flows", "at least one flow is required")
		return nil
	}
	seen := map[string]bool{}
	out := make([]Flow, 0, len(in))
	for i, yf := range in {
		at := func(rest ...any) []any { return append([]any{"flows", i}, rest...) }
		f := Flow{Name: yf.Name, HoldoutPercent: yf.HoldoutPercent}
		name := yf.Name
		switch {
		case name == "":
			name = fmt.Sprintf("#%d", i+1)
			p.fail(name, at(), "name", "is required")
		case seen[name]:
			p.fail(name, at("name"), "name", "is used by an earlier flow")
		case strings.ContainsAny(name, " \t\n/"):
			p.fail(name, at("name"), "name", "must not contain spaces or slashes")
		}
		seen[name] = true
		m := yf.Match
		f.Match = Match{CartTypes: m.CartTypes, Sites: m.Sites, Channels: m.Channels, Currencies: m.Currencies,
			MinValueMinor: m.MinValueMinor, MaxValueMinor: m.MaxValueMinor}
		for j, c := range m.Currencies {
			if !events.KnownCurrency(c) {
				p.fail(name, at("match", "currencies", j), "match.currencies", "%q is not an ISO 4217 currency code", c)
			}
		}
		if m.MinValueMinor < 0 {
			p.fail(name, at("match", "min_value_minor"), "match.min_value_minor", "must not be negative")
		}
		if m.MaxValueMinor < 0 || (m.MaxValueMinor > 0 && m.MaxValueMinor < m.MinValueMinor) {
			p.fail(name, at("match", "max_value_minor"), "match.max_value_minor", "must be at least min_value_minor")
		}
		if yf.HoldoutPercent < 0 || yf.HoldoutPercent > 100 {
			p.fail(name, at("holdout_percent"), "holdout_percent", "must be between 0 and 100, got %d", yf.HoldoutPercent)
		}
		f.ExpireAfter = p.duration(name, at("expire_after"), "expire_after", yf.ExpireAfter, DefaultExpireAfter)
		f.AttributionWindow = p.duration(name, at("attribution_window"), "attribution_window", yf.AttributionWindow, DefaultAttributionWindow)
		if len(yf.Steps) == 0 {
			p.fail(name, at(), "steps", "at least one step is required")
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
			if ys.After == "" {
				p.fail(name, at("steps", j), field+".after", "is required")
			} else {
				s.After = p.duration(name, at("steps", j, "after"), field+".after", ys.After, 0)
			}
			if j > 0 && s.After > 0 && s.After <= f.stepAfter(j-1) {
				p.fail(name, at("steps", j, "after"), field+".after", "%s must be later than the previous step's %s", ys.After, yf.Steps[j-1].After)
			}
			if f.ExpireAfter > 0 && s.After >= f.ExpireAfter {
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
			f.Steps = append(f.Steps, s)
		}
		out = append(out, f)
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
