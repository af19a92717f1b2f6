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
// It exits 0 whenever it got an answer, ready or not (the text says which);
// readiness probes use /readyz or `check`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", "", "the bridge's admin address (default: admin.listen of --config, else "+config.DefaultAdminListen+")")
	configFile := fs.String("config", "", "the bridge's YAML config, to find its admin address")
	asJSON := fs.Bool("json", false, "print the raw /status JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status: unexpected argument %q", fs.Arg(0))
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
		_, err := stdout.Write(raw)
		return err
	}
	if err != nil {
		return err
	}
	return st.WriteText(stdout, time.Now())
}
