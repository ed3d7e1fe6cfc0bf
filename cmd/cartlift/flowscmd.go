package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/cartlift/cartlift/projections"
)

// runFlows is `cartlift flows check FILE`: it prints every problem of the
// file and exits non-zero when there is any.
func runFlows(args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		return &exitError{2, errors.New("usage: cartlift flows check FILE")}
	}
	cfg, err := loadFlows(args[1])
	if err != nil {
		var fe projections.FlowErrors
		if errors.As(err, &fe) {
			return &exitError{1, fmt.Errorf("%s: %s:\n%w", args[1], plural(int64(len(fe)), "problem", "problems"), err)}
		}
		return &exitError{1, err}
	}
	for _, f := range cfg.Flows {
		fmt.Fprintf(stdout, "flow %s: %s", f.Name, plural(int64(len(f.Steps)), "step", "steps"))
		for _, s := range f.Steps {
			if sc := f.Schedule; sc != nil {
				tz := sc.TimeZone
				if tz == "" {
					tz = "UTC"
				}
				fmt.Fprintf(stdout, " · %s on %q (%s) for carts modified %s to %s before the run (%s)", s.Name, sc.Cron, tz, sc.ModifiedAfter, sc.ModifiedBefore, s.Action)
				continue
			}
			fmt.Fprintf(stdout, " · %s after %s (%s)", s.Name, s.After, s.Action)
			if len(s.Variants) > 0 {
				fmt.Fprintf(stdout, " with variants")
				for i, v := range s.Variants {
					sep := ","
					if i == 0 {
						sep = ""
					}
					fmt.Fprintf(stdout, "%s %s %d", sep, v.Name, v.Weight)
				}
			}
		}
		fmt.Fprintf(stdout, " · expires after %s, holdout %d%%\n", f.ExpireAfter, f.HoldoutPercent)
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[1])
	return nil
}
