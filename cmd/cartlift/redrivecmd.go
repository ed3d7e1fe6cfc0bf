package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cartlift/cartlift/actions"
)

// runRedrive is `cartlift actions redrive`: the decisions of the actions
// DLQ handed to their channel again, idempotent on the decision id (see
// actions.Redrive). It reads the configuration of `cartlift actions` and
// opens its store, so the role must be stopped on that data directory.
// It exits 1 when a decision failed again.
func runRedrive(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("actions redrive", flag.ContinueOnError)
	dryRun := fs.Bool("dry-run", false, "report what would be sent; send, produce and record nothing")
	since := fs.String("since", "", "start at the first DLQ record at or after this time: a duration back from now (30d, 12h, 90m), a date (2026-11-01) or an RFC 3339 time; default: the start of the DLQ")
	offset := fs.Int64("offset", 0, "start at this offset in every partition of the DLQ (0: the start)")
	hold := fs.Duration("hold", actions.DefaultRedriveHold, "how long to retry one decision's transient failure before counting it as failed again")
	fs.SetOutput(stdout)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("actions redrive: unexpected argument %q", fs.Arg(0))}
	}
	if *offset < 0 {
		return &exitError{2, fmt.Errorf("actions redrive: -offset must not be negative, got %d", *offset)}
	}
	if *hold <= 0 {
		return &exitError{2, fmt.Errorf("actions redrive: -hold must be positive, got %s", *hold)}
	}
	var from time.Time
	if *since != "" {
		t, err := parseReportTime(*since, time.Now().UTC())
		if err != nil {
			return &exitError{2, fmt.Errorf("actions redrive: -since: %w", err)}
		}
		from = t
	}
	cfg, err := loadActionsConfig(ctx, envconfig.OsLookuper())
	if err != nil {
		return &exitError{2, err}
	}
	parts, err := openActions(cfg)
	if err != nil {
		return err
	}
	defer parts.store.Close()

	mode := ""
	if *dryRun {
		mode = " (dry run: nothing is sent)"
	}
	start := "the start"
	switch {
	case !from.IsZero():
		start = from.Format(time.RFC3339)
	case *offset > 0:
		start = fmt.Sprintf("offset %d", *offset)
	}
	fmt.Fprintf(stdout, "redrive: %s from %s%s\n", cfg.TopicDLQ, start, mode)
	sum, err := actions.Redrive(ctx, actions.RedriveConfig{
		Brokers: cfg.Brokers, TopicDLQ: cfg.TopicDLQ, TopicOutcomes: cfg.TopicOutcomes, TopicSuppressions: cfg.TopicSuppressions,
		Since: from, FromOffset: *offset, DryRun: *dryRun, Hold: *hold,
		BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax, EmailsPerSecond: cfg.Rate,
		Webhook: parts.webhook, Logger: slog.Default(),
		Progress: func(it actions.RedriveItem) {
			line := fmt.Sprintf("redrive: %s/%d@%d", cfg.TopicDLQ, it.Partition, it.Offset)
			if it.DecisionID != "" {
				line += " " + it.DecisionID
			}
			line += fmt.Sprintf(" (%s): %s", it.Reason, it.Status)
			if it.Kind != "" {
				line += " (" + it.Kind + ")"
			}
			if it.Err != nil {
				line += ": " + it.Err.Error()
			}
			fmt.Fprintln(stdout, line)
		},
	}, parts.email)
	fmt.Fprintf(stdout, "redrive: %d read: %d redriven, %d already done, %d expired, %d failed again, %d skipped",
		sum.Read, sum.Redriven, sum.AlreadyDone, sum.Expired, sum.FailedAgain, sum.Skipped)
	if *dryRun {
		fmt.Fprintf(stdout, ", %d would be redriven", sum.WouldRedrive)
	}
	fmt.Fprintln(stdout)
	if err != nil {
		return fmt.Errorf("redrive stopped: %w", err)
	}
	if sum.FailedAgain > 0 {
		return &exitError{1, fmt.Errorf("actions redrive: %d decisions failed again; they stay in %s for a later redrive", sum.FailedAgain, cfg.TopicDLQ)}
	}
	return nil
}
