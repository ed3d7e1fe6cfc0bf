// Command cartlift is the one binary of cartlift: the stream processor, the
// embedded broker, the synthetic shopper generator and the tools around
// them. main is the composition root: it reads configuration, builds the
// parts and runs them; it holds no business logic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `cartlift recovers abandoned shopping carts.

Usage:
  cartlift run                 run the processor (configured from the environment)
  cartlift actions             run the actions role (emails) on its own, configured from the environment
  cartlift actions redrive     re-send what cart-actions.dlq holds, once per decision (-dry-run, -since 2h, -offset N)
  cartlift analytics           run the analytics sink (decisions and outcomes into ClickHouse) on its own
  cartlift report [flags]      recovery report from ClickHouse (--since 30d --flow NAME --format table|json|html --out FILE)
  cartlift broker              run the embedded Kafka-protocol broker on its own
  cartlift gen [flags]         produce synthetic shopper traffic
  cartlift demo [flags]        broker + processor + generator with live progress
  cartlift load [flags]        measure end-to-end throughput through the Kafka protocol
  cartlift flows check FILE    validate a flows file
  cartlift backtest [flags]    replay a history through flows files (--flows, --compare) and report per step
  cartlift state verify|rebuild  check a stopped instance's store against the changelog, or rebuild it from there
  cartlift adapt emporix FILE  translate a file of Emporix webhook deliveries into cartlift events (JSON lines)

Run 'cartlift <command> -h' for the flags of a command.
`

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cartlift:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// signalContext returns a context cancelled by the first SIGINT or SIGTERM;
// a second signal exits at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		slog.Info("shutting down; send the signal again to exit at once")
		cancel()
		<-ch
		os.Exit(130)
	}()
	return ctx, cancel
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{2, errors.New("no command")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runProcessor(ctx, rest, stdout)
	case "actions":
		return runActions(ctx, rest, stdout)
	case "analytics":
		return runAnalytics(ctx, rest, stdout)
	case "report":
		return runReport(ctx, rest, stdout)
	case "broker":
		return runBroker(ctx, rest, stdout)
	case "gen":
		return runGen(ctx, rest, stdout)
	case "demo":
		return runDemo(ctx, rest, stdout)
	case "load":
		return runLoad(ctx, rest, stdout)
	case "flows":
		return runFlows(rest, stdout)
	case "backtest":
		return runBacktest(ctx, rest, stdout)
	case "state":
		return runState(ctx, rest, stdout)
	case "adapt":
		return runAdapt(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return &exitError{2, fmt.Errorf("unknown command %q", cmd)}
}
