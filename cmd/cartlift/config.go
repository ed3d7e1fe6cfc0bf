package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cartlift/cartlift/projections"
)

// brokerConfig configures the embedded broker (cartlift broker, and
// cartlift run without KAFKA_BROKERS).
type brokerConfig struct {
	// Addr the embedded broker listens on.
	Addr string `env:"CARTLIFT_BROKER_ADDR, default=127.0.0.1:9092"`
	// DataDir: the broker persists its log under DataDir/broker.
	DataDir string `env:"CARTLIFT_DATA_DIR, default=./data"`
	// Partitions of the topics it creates.
	Partitions int32 `env:"CARTLIFT_PARTITIONS, default=8"`
}

// runConfig configures cartlift run. Every field is documented in the
// README's configuration table.
type runConfig struct {
	Broker brokerConfig
	// Brokers of an external Kafka cluster; empty starts the embedded broker.
	Brokers []string `env:"KAFKA_BROKERS"`
	// FlowsFile is the flows YAML file.
	FlowsFile string `env:"CARTLIFT_FLOWS, default=deploy/flows/default.yaml"`
	// HTTPAddr serves the HTTP API and /healthz, /readyz and /metrics;
	// "off" disables it.
	HTTPAddr string `env:"CARTLIFT_HTTP_ADDR, default=127.0.0.1:8080"`
	// HTTPAdvertise is the host:port other instances reach this one's API
	// at (forwarding); default CARTLIFT_HTTP_ADDR's, 0.0.0.0 as 127.0.0.1.
	HTTPAdvertise string `env:"CARTLIFT_HTTP_ADVERTISE"`
	// HTTPMaxBody bounds every API request body, in bytes (413 beyond).
	HTTPMaxBody int64 `env:"CARTLIFT_HTTP_MAX_BODY, default=1048576"`
	// HTTP bounds the server: timeouts, header size, connections.
	HTTP httpConfig
	// APITokens are the API's bearer tokens with their scopes,
	// "token1:read,token2:write" (write implies read). Empty: no
	// authentication (development mode, logged as a warning).
	APITokens apiTokens `env:"CARTLIFT_API_TOKENS"`
	// APIMaxEvents bounds the events of one POST /v1/events.
	APIMaxEvents int `env:"CARTLIFT_API_MAX_EVENTS, default=10000"`
	// Group is the processor's consumer group.
	Group string `env:"CARTLIFT_GROUP, default=cartlift-processor"`
	// InstanceID for static group membership; default derived from the
	// host name and the data directory, so a restarted instance takes its
	// partitions back at once.
	InstanceID string `env:"CARTLIFT_INSTANCE_ID"`

	TopicEvents    string `env:"CARTLIFT_TOPIC_EVENTS, default=cart-events"`
	TopicDecisions string `env:"CARTLIFT_TOPIC_DECISIONS, default=cart-decisions"`
	TopicOutcomes  string `env:"CARTLIFT_TOPIC_OUTCOMES, default=cart-outcomes"`
	TopicDLQ       string `env:"CARTLIFT_TOPIC_DLQ, default=cart-events.dlq"`
	// TopicSuppressions receives the steps that came due and were not sent
	// (cart.step.suppressed) or were deferred (cart.step.deferred).
	TopicSuppressions string `env:"CARTLIFT_TOPIC_SUPPRESSIONS, default=cart-suppressions"`
	// TopicShadowDecisions receives the decisions of shadow flows
	// (shadow: true in the flows file): never actioned, read by the
	// analytics sink for cartlift report --compare-shadow.
	TopicShadowDecisions string `env:"CARTLIFT_TOPIC_SHADOW_DECISIONS, default=cart-decisions.shadow"`
	// TopicState is the changelog (compacted) the partitions' state lives in.
	// Empty: cartlift-state for the default group, <group>-state otherwise.
	TopicState string `env:"CARTLIFT_TOPIC_STATE"`
	// ReplayInput lets a partition with an empty changelog, whose input no
	// longer starts at offset 0, build its state from what the input holds.
	ReplayInput bool `env:"CARTLIFT_REPLAY_INPUT, default=false"`
	// StandbyReplicas is how many other instances keep a warm copy of each
	// partition by tailing its changelog, so that a failover resumes at once.
	StandbyReplicas int `env:"CARTLIFT_STANDBY_REPLICAS, default=0"`
	// SessionTimeout is how long the group waits for a silent instance (a
	// crashed one) before it moves its partitions to the others.
	SessionTimeout time.Duration `env:"CARTLIFT_SESSION_TIMEOUT, default=15s"`
	// CleanupDelay is how long the local copy of a partition that this
	// instance neither owns nor keeps as a standby stays on disk.
	CleanupDelay time.Duration `env:"CARTLIFT_STATE_CLEANUP_DELAY, default=10m"`
	// RestoreMemoryMiB bounds the state records a restore holds at once.
	RestoreMemoryMiB int64 `env:"CARTLIFT_RESTORE_MEMORY_MIB, default=1024"`
	// StateFormat is the state record format written (3 or 4): 3 while
	// a rolling upgrade from a build that reads no format 4 is under way.
	StateFormat int `env:"CARTLIFT_STATE_FORMAT, default=4"`
	// StateCacheMiB bounds the customer states kept in memory (encoded).
	StateCacheMiB int64 `env:"CARTLIFT_STATE_CACHE_MIB, default=256"`
	// BlockCacheMiB is Pebble's block cache.
	BlockCacheMiB int64 `env:"CARTLIFT_BLOCK_CACHE_MIB, default=256"`
	// MemTableMiB is the size of one of Pebble's memtables.
	MemTableMiB int64 `env:"CARTLIFT_MEMTABLE_MIB, default=64"`
	// FetchMaxMiB bounds one fetch of the input topic (compressed bytes;
	// the decoded records take several times this in memory).
	FetchMaxMiB int64 `env:"CARTLIFT_FETCH_MAX_MIB, default=4"`

	// SyncWrites fsyncs every state batch (survives machine crashes, not
	// only process crashes).
	SyncWrites bool `env:"CARTLIFT_SYNC_WRITES, default=false"`
	// TimerTick is how often caught-up partitions check for due timers.
	TimerTick time.Duration `env:"CARTLIFT_TIMER_TICK, default=100ms"`

	LogLevel  string `env:"CARTLIFT_LOG_LEVEL, default=info"`
	LogFormat string `env:"CARTLIFT_LOG_FORMAT, default=text"`

	// Emporix configures the Emporix webhook adapter (off without a secret).
	Emporix emporixConfig
}

// configError names the environment variable at fault.
func configError(env, format string, args ...any) error {
	return fmt.Errorf("config: %s: %s", env, fmt.Sprintf(format, args...))
}

// loadRunConfig reads and validates the configuration from the
// environment (or from lookup, in tests).
func loadRunConfig(ctx context.Context, lookup envconfig.Lookuper) (runConfig, error) {
	c, err := processEnv[runConfig](ctx, lookup)
	if err != nil {
		return c, err
	}
	return c, c.validate()
}

// envError rewrites envconfig's errors, which name the Go field
// ("SyncWrites: strconv.ParseBool: ..."), to name the environment variable.
// processEnv fills a T from the environment (l; the process's when nil);
// an error names the variable at fault.
func processEnv[T any](ctx context.Context, l envconfig.Lookuper) (T, error) {
	var cfg T
	if l == nil {
		l = envconfig.OsLookuper()
	}
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &cfg, Lookuper: l}); err != nil {
		return cfg, envError(err, reflect.TypeOf(cfg))
	}
	return cfg, nil
}

func envError(err error, typ reflect.Type) error {
	// envconfig names the field path ("ClickHouse: TLS: ..."); the user
	// knows the variable.
	var walk func(t reflect.Type, msg string) (string, bool)
	walk = func(t reflect.Type, msg string) (string, bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
				if rest, ok := strings.CutPrefix(msg, f.Name+": "); ok {
					if out, ok := walk(f.Type, rest); ok {
						return out, true
					}
				}
				if out, ok := walk(f.Type, msg); ok {
					return out, true
				}
				continue
			}
			env, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if rest, ok := strings.CutPrefix(msg, f.Name+":"); ok && env != "" {
				return env + rest, true
			}
		}
		return msg, false
	}
	msg, _ := walk(typ, err.Error())
	return fmt.Errorf("config: %s", msg)
}

func (c *brokerConfig) validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return configError("CARTLIFT_BROKER_ADDR", "%q is not host:port: %v", c.Addr, err)
	}
	if c.DataDir == "" {
		return configError("CARTLIFT_DATA_DIR", "must not be empty")
	}
	if c.Partitions < 1 || c.Partitions > 10_000 {
		return configError("CARTLIFT_PARTITIONS", "must be between 1 and 10000, got %d", c.Partitions)
	}
	return nil
}

func (c *runConfig) validate() error {
	if err := c.Broker.validate(); err != nil {
		return err
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(strings.TrimSpace(b)); err != nil {
			return configError("KAFKA_BROKERS", "%q is not host:port", b)
		}
	}
	if c.HTTPAddr != "off" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return configError("CARTLIFT_HTTP_ADDR", "%q is not host:port (or off)", c.HTTPAddr)
		}
	}
	if c.HTTPAdvertise != "" {
		host, port, err := net.SplitHostPort(c.HTTPAdvertise)
		if err != nil || host == "" || port == "" || port == "0" {
			return configError("CARTLIFT_HTTP_ADVERTISE", "%q is not host:port with a port other instances can reach", c.HTTPAdvertise)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return configError("CARTLIFT_HTTP_ADVERTISE", "%q: other instances cannot reach an unspecified address", c.HTTPAdvertise)
		}
	}
	if err := c.HTTP.validate(); err != nil {
		return err
	}
	if c.HTTPMaxBody < 1<<10 || c.HTTPMaxBody > 256<<20 {
		return configError("CARTLIFT_HTTP_MAX_BODY", "must be between 1024 and 268435456 bytes, got %d", c.HTTPMaxBody)
	}
	if c.APIMaxEvents < 1 || c.APIMaxEvents > 1_000_000 {
		return configError("CARTLIFT_API_MAX_EVENTS", "must be between 1 and 1000000, got %d", c.APIMaxEvents)
	}
	if c.Group == "" {
		return configError("CARTLIFT_GROUP", "must not be empty")
	}
	if c.TopicState == "" {
		// Two groups must never share a changelog (see processor.Topics).
		c.TopicState = "cartlift-state"
		if c.Group != "cartlift-processor" {
			c.TopicState = c.Group + "-state"
		}
	}
	topics := map[string]string{"CARTLIFT_TOPIC_EVENTS": c.TopicEvents, "CARTLIFT_TOPIC_DECISIONS": c.TopicDecisions,
		"CARTLIFT_TOPIC_OUTCOMES": c.TopicOutcomes, "CARTLIFT_TOPIC_DLQ": c.TopicDLQ, "CARTLIFT_TOPIC_STATE": c.TopicState,
		"CARTLIFT_TOPIC_SUPPRESSIONS": c.TopicSuppressions, "CARTLIFT_TOPIC_SHADOW_DECISIONS": c.TopicShadowDecisions, "CARTLIFT_EMPORIX_TOPIC": c.Emporix.Topic}
	seen := map[string]string{}
	for env, t := range topics {
		if t == "" {
			return configError(env, "must not be empty")
		}
		if other, dup := seen[t]; dup {
			return configError(env, "topic %q is also %s", t, other)
		}
		seen[t] = env
	}
	if err := c.Emporix.validate(); err != nil {
		return err
	}
	if c.StandbyReplicas < 0 || c.StandbyReplicas > 10 {
		return configError("CARTLIFT_STANDBY_REPLICAS", "must be between 0 and 10, got %d", c.StandbyReplicas)
	}
	if c.SessionTimeout < time.Second || c.SessionTimeout > 30*time.Minute {
		return configError("CARTLIFT_SESSION_TIMEOUT", "must be between 1s and 30m, got %s", c.SessionTimeout)
	}
	if c.StateCacheMiB < 1 || c.StateCacheMiB > 1<<20 {
		return configError("CARTLIFT_STATE_CACHE_MIB", "must be between 1 and 1048576, got %d", c.StateCacheMiB)
	}
	if c.BlockCacheMiB < 1 || c.BlockCacheMiB > 1<<20 {
		return configError("CARTLIFT_BLOCK_CACHE_MIB", "must be between 1 and 1048576, got %d", c.BlockCacheMiB)
	}
	if c.MemTableMiB < 1 || c.MemTableMiB > 4096 {
		return configError("CARTLIFT_MEMTABLE_MIB", "must be between 1 and 4096, got %d", c.MemTableMiB)
	}
	if c.FetchMaxMiB < 1 || c.FetchMaxMiB > 1024 {
		return configError("CARTLIFT_FETCH_MAX_MIB", "must be between 1 and 1024, got %d", c.FetchMaxMiB)
	}
	if c.RestoreMemoryMiB < 16 || c.RestoreMemoryMiB > 1<<20 {
		return configError("CARTLIFT_RESTORE_MEMORY_MIB", "must be between 16 and 1048576, got %d", c.RestoreMemoryMiB)
	}
	if c.StateFormat != 3 && c.StateFormat != 4 {
		return configError("CARTLIFT_STATE_FORMAT", "must be 3 or 4, got %d", c.StateFormat)
	}
	if c.CleanupDelay < time.Second {
		return configError("CARTLIFT_STATE_CLEANUP_DELAY", "must be at least 1s, got %s", c.CleanupDelay)
	}
	if c.TimerTick < time.Millisecond || c.TimerTick > time.Minute {
		return configError("CARTLIFT_TIMER_TICK", "must be between 1ms and 1m, got %s", c.TimerTick)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return configError("CARTLIFT_LOG_LEVEL", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return configError("CARTLIFT_LOG_FORMAT", "must be text or json, got %q", c.LogFormat)
	}
	if _, err := loadFlows(c.FlowsFile); err != nil {
		return fmt.Errorf("config: CARTLIFT_FLOWS: %w", err)
	}
	return nil
}

// instanceID is the static group member id: stable across restarts of one
// instance (same host, same data directory), distinct between instances.
func (c *runConfig) instanceID() string {
	if c.InstanceID != "" {
		return c.InstanceID
	}
	return derivedInstanceID("cartlift-", c.Broker.DataDir)
}

// derivedInstanceID is prefix and a hash of the host name and the absolute
// data directory: the same for restarts of one instance, distinct between
// instances.
func derivedInstanceID(prefix, dataDir string) string {
	host, _ := os.Hostname()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	return prefix + hex.EncodeToString(sum[:6])
}

// loadFlows reads and validates a flows file.
func loadFlows(path string) (*projections.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	flows, err := projections.ParseFlows(path, data)
	if err != nil {
		return nil, err
	}
	return projections.NewConfig(flows), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func newLogger(level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
