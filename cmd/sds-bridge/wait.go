package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/foldercheck"
)

func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets foldercheck.Targets
	targets.Register(fs)
	if err := parseFlags(fs, args); err != nil {
		return usageError(err)
	}
	return foldercheck.Check(targets, stdout)
}

func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets foldercheck.Targets
	targets.Register(fs)
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := parseFlags(fs, args); err != nil {
		return usageError(err)
	}
	return foldercheck.Wait(ctx, targets, *timeout, stdout)
}
