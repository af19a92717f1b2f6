package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/bridge"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/flock"
)

const (
	devHome       = "sds-bridge-dev" // where dev puts everything unless told otherwise
	devSecondHint = "second"         // the Workload API hint of --second-spiffe-id
)

// devFlags are dev's own flags: its Workload API socket and what it issues.
type devFlags struct {
	socket, mode                          string
	ttl                                   time.Duration
	trustDomain, spiffeID, secondSPIFFEID string
	federateWith                          []spiffeid.TrustDomain
}

func (d *devFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.socket, "workload-api-socket", "", "unix socket of dev's Workload API (default ./"+devHome+"/workload.sock)")
	fs.StringVar(&d.mode, "workload-api-mode", "", `mode of that socket, e.g. "0777" so that a program run as another user (a helper.conf's consumer) can reach it (default: as created, writable by dev's user only)`)
	fs.DurationVar(&d.ttl, "svid-ttl", devapi.DefaultTTL, "lifetime of each development SVID; a new one is issued at half of it")
	fs.StringVar(&d.trustDomain, "trust-domain", devapi.DefaultTrustDomain.Name(), "trust domain of the development CA")
	fs.StringVar(&d.spiffeID, "spiffe-id", "", "SPIFFE ID to issue (default spiffe://<trust-domain>/dev)")
	fs.StringVar(&d.secondSPIFFEID, "second-spiffe-id", "", `also issue this SPIFFE ID, with Workload API hint "`+devSecondHint+`" (try workload_api.default_svid_hint, files[].svid)`)
	fs.Func("federate-with", "also send a federated bundle for trust domain TD from a second in-memory CA (repeatable)", func(v string) error {
		td, err := spiffeid.TrustDomainFromString(v)
		if err != nil {
			return err
		}
		d.federateWith = append(d.federateWith, td)
		return nil
	})
}

// runDev is run with a Workload API of its own beside the bridge.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge dev", flag.ContinueOnError)
	var common commonFlags
	var dev devFlags
	dev.register(fs)
	return common.run(fs, args, stderr, func(log *slog.Logger) error { return runDevBridge(ctx, &common, &dev, log, stdout) })
}

func runDevBridge(ctx context.Context, common *commonFlags, dev *devFlags, log *slog.Logger, stdout io.Writer) error {
	issuing, err := dev.issuerConfig()
	if err != nil {
		return err
	}
	home, err := filepath.Abs(devHome)
	if err != nil {
		return err
	}
	wlSocket, mode, err := dev.resolveSocket(home)
	if err != nil {
		return err
	}
	cfg, err := common.loadUntil(ctx, log, func(c *config.Config) { devDefaults(c, home, wlSocket, common.layout) })
	if err != nil {
		return err
	}
	opts := common.options(cfg, log)
	if opts.BeforeRun, opts.Beside, err = devWorkloadAPI(wlSocket, mode, issuing, log); err != nil {
		return err
	}
	b, err := bridge.New(ctx, opts)
	if err != nil {
		return err
	}
	ids := issuing.SPIFFEIDs
	fmt.Fprintf(stdout, "sds-bridge dev — FOR DEVELOPMENT ONLY: an in-memory CA issues %s for %s every %s.\n", ids[0], issuing.TTL, issuing.TTL/2)
	if len(ids) > 1 {
		fmt.Fprintf(stdout, "  second SVID:        %s  (hint %q)\n", ids[1], devSecondHint)
	}
	for _, fed := range issuing.FederatedWith {
		fmt.Fprintf(stdout, "  federated bundle:   spiffe://%s  (an in-memory CA of its own)\n", fed.Name())
	}
	fmt.Fprintf(stdout, "  Workload API (dev): unix://%s\n", wlSocket)
	b.Describe(stdout, ids, append([]spiffeid.TrustDomain{issuing.TrustDomain}, issuing.FederatedWith...))
	return b.Run(ctx)
}

// devWorkloadAPI is the in-memory CA issuing as ic says, served on socket
// (chmod to mode unless 0). Nothing touches the disk before start, which
// runs after New took the locks: a second dev must not touch the first's.
func devWorkloadAPI(socket string, mode os.FileMode, ic devapi.IssuerConfig, log *slog.Logger) (start func() error, beside []func(context.Context) error, err error) {
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: socket, Logger: log})
	ic.Logger = log
	issuer, err := devapi.NewIssuer(ic, wl)
	if err != nil {
		return nil, nil, err
	}
	start = func() (err error) {
		if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if err := wl.Start(); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		defer func() {
			if err != nil {
				wl.Stop()
			}
		}()
		if mode != 0 {
			if err := os.Chmod(socket, mode); err != nil {
				return fmt.Errorf("dev: --workload-api-mode: %w", err)
			}
		}
		return issuer.IssueFirst()
	}
	return start, []func(context.Context) error{wl.Wait, issuer.Run}, nil
}

// devDefaults points c at dev's Workload API and fills in dev's socket,
// folder and first-update timeout where c has none.
func devDefaults(c *config.Config, home, wlSocket, layout string) {
	if c.SDS.SocketPath == "" {
		c.SDS.SocketPath = filepath.Join(home, "sds.sock")
	}
	if len(c.Files) == 0 {
		c.Files = []config.Folder{{Config: filesink.Config{Dir: filepath.Join(home, "certs"), Layout: filesink.Layout(layout)}}}
	}
	c.WorkloadAPI.Address = "unix://" + wlSocket
	if c.WorkloadAPI.FirstUpdateTimeout == 0 {
		c.WorkloadAPI.FirstUpdateTimeout = 10 * time.Second
	}
}

// issuerConfig is what the CA issues, defaults applied and checked by
// devapi, with the flag behind each refusal named.
func (d *devFlags) issuerConfig() (devapi.IssuerConfig, error) {
	ic := devapi.IssuerConfig{TTL: d.ttl, FederatedWith: d.federateWith}
	var err error
	if ic.TrustDomain, err = spiffeid.TrustDomainFromString(d.trustDomain); err != nil {
		return ic, fmt.Errorf("--trust-domain %q: %w", d.trustDomain, err)
	}
	if d.spiffeID != "" {
		id, err := spiffeid.FromString(d.spiffeID)
		if err != nil {
			return ic, fmt.Errorf("--spiffe-id %q: %w", d.spiffeID, err)
		}
		ic.SPIFFEIDs = []spiffeid.ID{id}
	}
	ic = ic.WithDefaults()
	// The flag has its default already: 0 is the user's, and refused.
	ic.TTL = d.ttl
	if d.secondSPIFFEID != "" {
		second, err := spiffeid.FromString(d.secondSPIFFEID)
		if err != nil {
			return ic, fmt.Errorf("--second-spiffe-id %q: %w", d.secondSPIFFEID, err)
		}
		ic.SPIFFEIDs = append(ic.SPIFFEIDs, second)
		ic.Hints = map[spiffeid.ID]string{second: devSecondHint}
	}
	err = ic.Validate()
	var refused *devapi.ConfigError
	if errors.As(err, &refused) {
		err = fmt.Errorf("%s %q: %s", devFlag(refused), refused.Value, refused.Reason)
	}
	return ic, err
}

// devFlag is the flag that set the value devapi refused.
func devFlag(refused *devapi.ConfigError) string {
	switch {
	case refused.Field == "TTL":
		return "--svid-ttl"
	case refused.Field == "federated trust domain":
		return "--federate-with"
	case refused.Index == 0:
		return "--spiffe-id"
	default:
		return "--second-spiffe-id"
	}
}

// resolveSocket is dev's Workload API socket path and mode (0: as
// created); the default moves under the temp dir when home is too long.
func (d *devFlags) resolveSocket(home string) (string, os.FileMode, error) {
	var mode os.FileMode
	if d.mode != "" {
		m, err := config.ParseMode(d.mode)
		if err != nil {
			return "", 0, fmt.Errorf("--workload-api-mode: %w", err)
		}
		mode = os.FileMode(m)
	}
	path, err := filepath.Abs(cmp.Or(d.socket, filepath.Join(home, "workload.sock")))
	switch {
	case err != nil:
		return "", 0, fmt.Errorf("--workload-api-socket: %w", err)
	case len(path) <= flock.MaxSocketPath:
		return path, mode, nil
	case d.socket != "":
		return "", 0, fmt.Errorf("--workload-api-socket %s: longer than a unix socket path may be (%d bytes)", path, flock.MaxSocketPath)
	}
	dir, err := os.MkdirTemp("", "sds-bridge-dev")
	if err != nil {
		return "", 0, fmt.Errorf("dev: %w", err)
	}
	return filepath.Join(dir, "workload.sock"), mode, nil
}
