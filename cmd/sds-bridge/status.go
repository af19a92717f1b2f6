package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/statusdoc"
)

// runStatus prints what a running bridge delivers, from its admin /status.
// Its exit status follows what it printed: 0 ready, exitBad not ready (the
// text says why), exitNoAnswer when no bridge answered with a status, so
// a script or a cron job can alert on it.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", "", "the bridge's admin address (default: admin.listen of --config, else "+config.DefaultAdminListen+")")
	configFile := fs.String("config", "", "the bridge's YAML config, to find its admin address")
	asJSON := fs.Bool("json", false, "print the raw /status JSON")
	if err := parseFlags(fs, args); err != nil {
		return usageError(err)
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Errorf("status: unexpected argument %q", fs.Arg(0)))
	}
	target := *addr
	if target == "" {
		target = config.DefaultAdminListen
		if *configFile != "" {
			cfg, err := config.Load(*configFile)
			if err != nil {
				return err
			}
			if target = cfg.Admin.Address(); target == "" {
				return fmt.Errorf("status: admin.listen is empty in %s: that bridge has no admin endpoint", *configFile)
			}
		}
	}
	raw, st, err := statusdoc.Fetch(ctx, target)
	if *asJSON && raw != nil {
		if _, werr := stdout.Write(raw); werr != nil {
			return werr
		}
	}
	if err != nil {
		return coded{exitNoAnswer, err}
	}
	if !*asJSON {
		if err := st.WriteText(stdout, time.Now()); err != nil {
			return err
		}
	}
	if !st.Ready {
		return exitCode(exitBad)
	}
	return nil
}
