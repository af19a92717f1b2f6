package bridge

import (
	"context"
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

// IssuerConfig checks d, naming the flag behind each refusal, and says
// what the CA issues.
func (d DevIdentities) IssuerConfig() (devapi.IssuerConfig, error) {
	ic := devapi.IssuerConfig{TTL: d.TTL, FederatedWith: d.FederateWith}
	if d.TTL < time.Second {
		return ic, fmt.Errorf("--svid-ttl %s: must be at least 1s", d.TTL)
	}
	td, err := spiffeid.TrustDomainFromString(d.TrustDomain)
	if err != nil {
		return ic, fmt.Errorf("--trust-domain %q: %w", d.TrustDomain, err)
	}
	ic.TrustDomain = td
	id := spiffeid.RequireFromPath(td, "/dev")
	if d.SPIFFEID != "" {
		if id, err = idInDomain("--spiffe-id", d.SPIFFEID, td); err != nil {
			return ic, err
		}
	}
	ic.SPIFFEIDs = []spiffeid.ID{id}
	if d.SecondSPIFFEID != "" {
		second, err := idInDomain("--second-spiffe-id", d.SecondSPIFFEID, td)
		if err != nil {
			return ic, err
		}
		if second == id {
			return ic, fmt.Errorf("--second-spiffe-id %q: the same as the first SPIFFE ID", d.SecondSPIFFEID)
		}
		ic.SPIFFEIDs = append(ic.SPIFFEIDs, second)
		ic.Hints = map[spiffeid.ID]string{second: DevSecondHint}
	}
	for _, fed := range d.FederateWith {
		if fed == td {
			return ic, fmt.Errorf("--federate-with %q: that is the own trust domain", fed.Name())
		}
	}
	return ic, nil
}

// idInDomain parses flag's value v as a SPIFFE ID in td.
func idInDomain(flag, v string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(v)
	if err != nil {
		return id, fmt.Errorf("%s %q: %w", flag, v, err)
	}
	if id.TrustDomain() != td {
		return id, fmt.Errorf("%s %q: not in trust domain %q", flag, v, td.Name())
	}
	return id, nil
}

// DevSocketPath returns want, or a short path under the temp dir when want is
// longer than a unix socket path may be.
func DevSocketPath(want string) (string, error) {
	if len(want) <= flock.MaxSocketPath {
		return want, nil
	}
	dir, err := os.MkdirTemp("", "sds-bridge-dev")
	if err != nil {
		return "", fmt.Errorf("dev: %w", err)
	}
	return filepath.Join(dir, "workload.sock"), nil
}
