package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/internal/bridge"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/flock"
)

// devHome is where dev puts everything unless told otherwise.
const devHome = "sds-bridge-dev"

// devSocket is where dev serves its Workload API: --workload-api-socket
// and --workload-api-mode.
type devSocket struct {
	path string
	mode string
}

func registerDev(fs *flag.FlagSet, d *bridge.DevIdentities, s *devSocket) {
	fs.StringVar(&s.path, "workload-api-socket", "", "unix socket of dev's Workload API (default ./"+devHome+"/workload.sock)")
	fs.StringVar(&s.mode, "workload-api-mode", "", `mode of that socket, e.g. "0777" so that a program run as another user (a helper.conf's consumer) can reach it (default: as created, writable by dev's user only)`)
	fs.DurationVar(&d.TTL, "svid-ttl", devapi.DefaultTTL, "lifetime of each development SVID; a new one is issued at half of it")
	fs.StringVar(&d.TrustDomain, "trust-domain", "example.org", "trust domain of the development CA")
	fs.StringVar(&d.SPIFFEID, "spiffe-id", "", "SPIFFE ID to issue (default spiffe://<trust-domain>/dev)")
	fs.StringVar(&d.SecondSPIFFEID, "second-spiffe-id", "", `also issue this SPIFFE ID, with Workload API hint "`+bridge.DevSecondHint+`" (try workload_api.default_svid_hint, files[].svid)`)
	fs.Func("federate-with", "also send a federated bundle for trust domain TD from a second in-memory CA (repeatable)", func(v string) error {
		td, err := spiffeid.TrustDomainFromString(v)
		if err != nil {
			return err
		}
		d.FederateWith = append(d.FederateWith, td)
		return nil
	})
}

// runDev is run with a Workload API of its own: an in-memory CA served on
// a socket beside the bridge, which the bridge is pointed at.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge dev", flag.ContinueOnError)
	var common commonFlags
	var dev bridge.DevIdentities
	var sock devSocket
	registerDev(fs, &dev, &sock)
	log, err := common.parse(fs, args, stderr)
	if err != nil {
		return err
	}
	return common.finish(runDevBridge(ctx, &common, &dev, sock, log, stdout))
}

// runDevBridge starts dev's Workload API and the bridge against it, and runs
// them.
func runDevBridge(ctx context.Context, common *commonFlags, dev *bridge.DevIdentities, sock devSocket, log *slog.Logger, stdout io.Writer) error {
	issuing, err := dev.IssuerConfig()
	if err != nil {
		return err
	}
	home, err := filepath.Abs(devHome)
	if err != nil {
		return err
	}
	wlSocket, mode, err := sock.resolve(home)
	if err != nil {
		return err
	}
	cfg, err := common.loadUntil(ctx, log, func(c *config.Config) { bridge.DevDefaults(c, home, wlSocket, common.layout) })
	if errors.Is(err, errStoppedLoading) {
		return nil
	}
	if err != nil {
		return err
	}
	opts := common.options(cfg, log)
	if opts.BeforeRun, opts.Beside, err = bridge.DevWorkloadAPI(wlSocket, mode, issuing, log); err != nil {
		return err
	}
	b, err := bridge.New(ctx, opts)
	if err != nil {
		return err
	}
	ids := issuing.SPIFFEIDs
	fmt.Fprintf(stdout, "sds-bridge dev — FOR DEVELOPMENT ONLY: an in-memory CA issues %s for %s every %s.\n", ids[0], issuing.TTL, issuing.TTL/2)
	if len(ids) > 1 {
		fmt.Fprintf(stdout, "  second SVID:        %s  (hint %q)\n", ids[1], bridge.DevSecondHint)
	}
	for _, fed := range issuing.FederatedWith {
		fmt.Fprintf(stdout, "  federated bundle:   spiffe://%s  (an in-memory CA of its own)\n", fed.Name())
	}
	fmt.Fprintf(stdout, "  Workload API (dev): unix://%s\n", wlSocket)
	b.Describe(stdout, ids, append([]spiffeid.TrustDomain{issuing.TrustDomain}, issuing.FederatedWith...))
	return b.Run(ctx)
}

// resolve is the socket's absolute path (home/workload.sock by default,
// shortened if too long for a unix socket) and its mode, 0 to leave it as
// created.
func (s devSocket) resolve(home string) (string, os.FileMode, error) {
	var mode os.FileMode
	if s.mode != "" {
		m, err := config.ParseMode(s.mode)
		if err != nil {
			return "", 0, fmt.Errorf("--workload-api-mode: %w", err)
		}
		mode = os.FileMode(m)
	}
	if s.path == "" {
		path, err := bridge.DevSocketPath(filepath.Join(home, "workload.sock"))
		return path, mode, err
	}
	path, err := filepath.Abs(s.path)
	if err != nil {
		return "", 0, fmt.Errorf("--workload-api-socket: %w", err)
	}
	if len(path) > flock.MaxSocketPath {
		return "", 0, fmt.Errorf("--workload-api-socket %s: longer than a unix socket path may be (%d bytes)", path, flock.MaxSocketPath)
	}
	return path, mode, nil
}
