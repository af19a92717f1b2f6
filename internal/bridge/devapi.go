package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/flock"
)

// DevWorkloadAPI is a development Workload API for Options.BeforeRun and
// Options.Beside: an in-memory CA issuing as ic says, served on the unix
// socket at socket (chmod to mode unless 0, so that a program run as
// another user can reach it). Nothing touches the disk until it runs,
// after New took the bridge's locks: a second dev on the same folder or
// socket must not touch the first one's Workload API. start listens and
// issues the first SVIDs before the bridge's own Workload API clients
// (the JWT files' included) make their first call.
func DevWorkloadAPI(socket string, mode os.FileMode, ic devapi.IssuerConfig, log *slog.Logger) (start func() error, beside []func(context.Context) error, err error) {
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: socket, Logger: log})
	ic.Logger = log
	issuer, err := devapi.NewIssuer(ic, wl)
	if err != nil {
		return nil, nil, err
	}
	start = func() error {
		if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if err := wl.Start(); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if mode != 0 {
			if err := os.Chmod(socket, mode); err != nil {
				wl.Stop()
				return fmt.Errorf("dev: --workload-api-mode: %w", err)
			}
		}
		if err := issuer.IssueFirst(); err != nil {
			wl.Stop()
			return err
		}
		return nil
	}
	return start, []func(context.Context) error{wl.Wait, issuer.Run}, nil
}

// DevDefaults points c at the development Workload API and fills in
// dev's socket, folder and first-update timeout where c has none.
func DevDefaults(c *config.Config, home, wlSocket, layout string) {
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

// DevIdentities are what dev's flags ask the development CA to issue.
type DevIdentities struct {
	TTL time.Duration
	// TrustDomain, SPIFFEID and SecondSPIFFEID are as given (the ID
	// defaults to spiffe://<trust-domain>/dev); SecondSPIFFEID gets the
	// Workload API hint DevSecondHint.
	TrustDomain, SPIFFEID, SecondSPIFFEID string
	FederateWith                          []spiffeid.TrustDomain
}

// DevSecondHint is the Workload API hint of the second SPIFFE ID.
const DevSecondHint = "second"

// IssuerConfig is what the CA issues for d, defaults applied and
// checked by devapi, with the flag behind each refusal named.
func (d DevIdentities) IssuerConfig() (devapi.IssuerConfig, error) {
	ic := devapi.IssuerConfig{TTL: d.TTL, FederatedWith: d.FederateWith}
	var err error
	if ic.TrustDomain, err = spiffeid.TrustDomainFromString(d.TrustDomain); err != nil {
		return ic, fmt.Errorf("--trust-domain %q: %w", d.TrustDomain, err)
	}
	if d.SPIFFEID != "" {
		id, err := parseFlagID("--spiffe-id", d.SPIFFEID)
		if err != nil {
			return ic, err
		}
		ic.SPIFFEIDs = []spiffeid.ID{id}
	}
	ic = ic.WithDefaults()
	// The flag has its default already: 0 is the user's, and refused.
	ic.TTL = d.TTL
	if d.SecondSPIFFEID != "" {
		second, err := parseFlagID("--second-spiffe-id", d.SecondSPIFFEID)
		if err != nil {
			return ic, err
		}
		ic.SPIFFEIDs = append(ic.SPIFFEIDs, second)
		ic.Hints = map[spiffeid.ID]string{second: DevSecondHint}
	}
	err = ic.Validate()
	var refused *devapi.ConfigError
	if errors.As(err, &refused) {
		err = fmt.Errorf("%s %q: %s", devFlag(refused), refused.Value, refused.Reason)
	}
	return ic, err
}

// parseFlagID parses flag's value v as a SPIFFE ID.
func parseFlagID(flag, v string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(v)
	if err != nil {
		return id, fmt.Errorf("%s %q: %w", flag, v, err)
	}
	return id, nil
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

// DevSocketPath is the absolute path of dev's Workload API socket: the
// --workload-api-socket flag's value, else home/workload.sock, moved to
// a short path under the temp dir when home makes it longer than a unix
// socket path may be.
func DevSocketPath(flagValue, home string) (string, error) {
	path, err := filepath.Abs(cmp.Or(flagValue, filepath.Join(home, "workload.sock")))
	switch {
	case err != nil:
		return "", fmt.Errorf("--workload-api-socket: %w", err)
	case len(path) <= flock.MaxSocketPath:
		return path, nil
	case flagValue != "":
		return "", fmt.Errorf("--workload-api-socket %s: longer than a unix socket path may be (%d bytes)", path, flock.MaxSocketPath)
	}
	dir, err := os.MkdirTemp("", "sds-bridge-dev")
	if err != nil {
		return "", fmt.Errorf("dev: %w", err)
	}
	return filepath.Join(dir, "workload.sock"), nil
}
