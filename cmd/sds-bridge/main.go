// Command sds-bridge watches the SPIFFE Workload API and delivers the same
// X.509 SVIDs to Envoy over SDS and to credential folders on disk.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/config"
)

// version is set with -ldflags "-X main.version=v1.2.3" (make build does).
var version string

const usage = `sds-bridge: one SPIFFE rotation source for Envoy (SDS) and files.

Usage:
  sds-bridge run     [--config FILE] [--workload-api ADDR] [--sds-socket PATH] [--dir DIR] [--layout L] [--admin ADDR] [-- PROGRAM ARGS...]
  sds-bridge dev     [--config FILE] [--dir DIR] [--sds-socket PATH] [--svid-ttl DUR] [--trust-domain TD] [--admin ADDR]
                     [--workload-api-socket PATH] [--workload-api-mode MODE] [-- PROGRAM ARGS...]
  sds-bridge wait    --dir DIR [--layout L] [--min-validity DUR] [--timeout DUR]
  sds-bridge check   --dir DIR [--layout L] [--min-validity DUR]
  sds-bridge status  [--admin ADDR | --config FILE] [--json]
  sds-bridge import-spiffe-helper [--base-dir DIR] [--owner UID:GID] [--allow-unsupported] helper.conf   (prints the
                     equivalent YAML; run and dev also take --spiffe-helper-config helper.conf [--owner UID:GID]
                     instead of --config)
` + envoyBootstrapUsage + `
  sds-bridge version

Run "sds-bridge <command> --help" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

// exitStatus prints err (if it says anything) and returns the exit
// status: 0 for success and -h/--help, the status a coded error or a
// supervised program's exit carries, 1 otherwise.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	// A bare coded's usage or verdict is printed already.
	if c, ok := err.(coded); !ok || c.err != nil {
		fmt.Fprintln(stderr, "sds-bridge:", err)
	}
	var c interface{ ExitCode() int }
	if errors.As(err, &c) {
		return c.ExitCode()
	}
	return 1
}

// The exit statuses every command shares (the README's "Exit status").
const (
	exitBad      = 1 // the state reported is bad, or the command failed
	exitUsage    = 2 // the command line is wrong; nothing was tested
	exitNoAnswer = 3 // status got no status document from a bridge
)

// coded exits with its own status, printing err; without err, the
// command has printed its usage or verdict already.
type coded struct {
	code int
	err  error
}

func (c coded) Error() string {
	if c.err == nil {
		return fmt.Sprintf("exit status %d", c.code)
	}
	return c.err.Error()
}

func (c coded) Unwrap() error { return c.err }
func (c coded) ExitCode() int { return c.code }

// usageError is err exiting with exitUsage; -h/--help stays 0.
func usageError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return coded{exitUsage, err}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return coded{code: exitUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runBridge(ctx, rest, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "wait":
		return runWait(ctx, rest, stdout, stderr)
	case "envoy-bootstrap":
		return runEnvoyBootstrap(ctx, rest, stdout, stderr)
	case "check":
		return runCheck(rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "import-spiffe-helper":
		return runImport(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "sds-bridge", admin.ReadBuildInfo(version))
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError(fmt.Errorf("unknown command %q", cmd))
	}
}

// parseFlags is fs.Parse, suggesting the nearest flag for an unknown one.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	name, unknown := strings.CutPrefix(fmt.Sprint(err), "flag provided but not defined: -")
	if !unknown {
		return err
	}
	var known []string
	fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
	if n := config.Nearest(name, known); n != "" {
		return fmt.Errorf("%w; did you mean --%s?", err, n)
	}
	return err
}
