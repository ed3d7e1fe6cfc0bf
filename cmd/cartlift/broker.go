package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cartlift/cartlift/events"
)

// startBroker starts the embedded Kafka-protocol broker (franz-go's kfake)
// listening on cfg.Addr and persisting under cfg.DataDir/broker, with the
// default topics. Close the cluster to stop it.
func startBroker(cfg brokerConfig) (*kfake.Cluster, error) {
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, cfg.Addr) }),
		kfake.DataDir(filepath.Join(cfg.DataDir, "broker")),
		kfake.DefaultNumPartitions(int(cfg.Partitions)),
		kfake.AllowAutoTopicCreation(),
		// Kafka's default minimum is 6s; the embedded broker lets a
		// development group try the short timeouts of fast failover.
		kfake.GroupMinSessionTimeout(time.Second),
		kfake.SeedTopics(cfg.Partitions, events.TopicEvents, events.TopicDecisions, events.TopicOutcomes, events.TopicDLQ, events.TopicSuppressions, events.TopicShadowDecisions),
	)
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w (is another broker running there? set CARTLIFT_BROKER_ADDR)", cfg.Addr, err)
	}
	return c, nil
}

// runBroker is `cartlift broker`: the embedded broker on its own, so that
// several processors, the generator and any Kafka client can share it.
func runBroker(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return &exitError{2, fmt.Errorf("broker takes no arguments; configure it with CARTLIFT_BROKER_ADDR, CARTLIFT_DATA_DIR, CARTLIFT_PARTITIONS")}
	}
	cfg, err := processEnv[brokerConfig](ctx, nil)
	if err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	c, err := startBroker(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	slog.Info("embedded broker running", "addr", c.ListenAddrs(), "data", filepath.Join(cfg.DataDir, "broker"))
	fmt.Fprintf(stdout, "broker listening on %v; try: kcat -b %s -L\n", c.ListenAddrs(), c.ListenAddrs()[0])
	<-ctx.Done()
	return nil
}
