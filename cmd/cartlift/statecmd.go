package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/cartlift/cartlift/processor"
)

// runState is `cartlift state verify` and `cartlift state rebuild`, on a
// stopped instance's store (configured like `cartlift run`, from the
// environment, with KAFKA_BROKERS naming the cluster).
//
//   - verify compares every partition the store holds with the changelog
//     (offsets, lineage, each customer's state byte for byte) and exits 1
//     on any difference;
//   - rebuild replaces the store's copy of those partitions by the
//     changelog's, as a new owner would on taking them over.
func runState(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 || (args[0] != "verify" && args[0] != "rebuild") {
		return &exitError{2, errors.New("usage: cartlift state verify|rebuild (configured from the environment, like run; stop the instance first)")}
	}
	cfg, err := loadRunConfig(ctx, nil)
	if err != nil {
		return err
	}
	if len(cfg.Brokers) == 0 {
		return &exitError{2, configError("KAFKA_BROKERS", "state %s needs the brokers that hold the changelog", args[0])}
	}
	flows, err := loadFlows(cfg.FlowsFile)
	if err != nil {
		return err
	}
	p, err := processor.OpenStore(processor.Config{Brokers: cfg.Brokers, Group: cfg.Group,
		Topics: processor.Topics{Events: cfg.TopicEvents, Decisions: cfg.TopicDecisions,
			Outcomes: cfg.TopicOutcomes, DLQ: cfg.TopicDLQ, State: cfg.TopicState,
			Suppressions: cfg.TopicSuppressions, ShadowDecisions: cfg.TopicShadowDecisions},
		DataDir: filepath.Join(cfg.Broker.DataDir, "state"), Flows: flows, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("opening the store (is the instance still running?): %w", err)
	}
	defer p.Close()
	if args[0] == "rebuild" {
		parts, err := p.Rebuild(ctx, func(part int32, read, end int64) {
			fmt.Fprintf(stdout, "partition %d: %d%%\n", part, read*100/max(end, 1))
		})
		for _, part := range parts {
			fmt.Fprintf(stdout, "partition %d: rebuilt from %s\n", part, cfg.TopicState)
		}
		return err
	}
	checks, err := p.Verify(ctx)
	if err != nil {
		return err
	}
	bad := 0
	for _, c := range checks {
		state := "ok"
		if !c.OK() {
			state = "DIFFERS"
			bad++
		}
		fmt.Fprintf(stdout, "partition %d: %s · offset local %d, changelog %d · same lineage %v · outbox pending %d · customers %d: only local %d, only in the changelog %d, different %d\n",
			c.Partition, state, c.LocalOffset, c.ChangelogOffset, c.SameLineage, c.PendingOutbox, c.Customers, c.OnlyLocal, c.OnlyChangelog, c.Differ)
	}
	fmt.Fprintf(stdout, "%d partition(s) checked against %s, %d differ\n", len(checks), cfg.TopicState, bad)
	if bad > 0 {
		return &exitError{1, fmt.Errorf("%d partition(s) differ from the changelog", bad)}
	}
	return nil
}
