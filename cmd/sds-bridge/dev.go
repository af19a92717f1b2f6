package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/internal/bridge"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/unixsock"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
)

// devSecondHint is the Workload API hint of --second-spiffe-id's SVID.
const devSecondHint = "second"

// devHome is where dev puts everything unless told otherwise.
const devHome = "sds-bridge-dev"

// devFlags are dev's own flags: what the development CA issues.
type devFlags struct {
	ttl                  time.Duration
	trustDomain, id, two string
	federateWith         []spiffeid.TrustDomain
}

func (d *devFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&d.ttl, "svid-ttl", devapi.DefaultTTL, "lifetime of each development SVID; a new one is issued at half of it")
	fs.StringVar(&d.trustDomain, "trust-domain", "example.org", "trust domain of the development CA")
	fs.StringVar(&d.id, "spiffe-id", "", "SPIFFE ID to issue (default spiffe://<trust-domain>/dev)")
	fs.StringVar(&d.two, "second-spiffe-id", "", `also issue this SPIFFE ID, with Workload API hint "`+devSecondHint+`" (try workload_api.default_svid_hint, files[].svid)`)
	fs.Func("federate-with", "also send a federated bundle for trust domain TD from a second in-memory CA (repeatable)", func(v string) error {
		td, err := spiffeid.TrustDomainFromString(v)
		if err != nil {
			return err
		}
		d.federateWith = append(d.federateWith, td)
		return nil
	})
}

// runDev is run with a Workload API of its own: an in-memory CA served on
// a socket beside the bridge, which the bridge is pointed at.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var common commonFlags
	common.register(fs)
	var dev devFlags
	dev.register(fs)
	err := fs.Parse(args)
	if err != nil {
		return err
	}
	if common.program, err = programArgs(fs, args); err != nil {
		return err
	}
	issuing, err := dev.issuerConfig()
	if err != nil {
		return err
	}
	log, err := common.logger(stderr)
	if err != nil {
		return err
	}
	home, err := filepath.Abs(devHome)
	if err != nil {
		return err
	}
	wlSocket, err := devSocketPath(filepath.Join(home, "workload.sock"))
	if err != nil {
		return err
	}
	cfg, err := common.load(func(c *config.Config) { devDefaults(c, home, wlSocket, common.layout) })
	if err != nil {
		return err
	}
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: wlSocket, Logger: log})
	issuing.Logger = log
	issuer, err := devapi.NewIssuer(issuing, wl)
	if err != nil {
		return err
	}
	opts := common.options(cfg, log)
	// The bridge takes its locks before these start: a second dev on the
	// same folder or socket must not touch the first one's Workload API.
	opts.Beside = []func(context.Context) error{
		func(ctx context.Context) error {
			if err := os.MkdirAll(filepath.Dir(wlSocket), 0o755); err != nil {
				return fmt.Errorf("dev: %w", err)
			}
			return wl.Serve(ctx)
		},
		issuer.Run,
	}
	b, err := bridge.New(ctx, opts)
	if err != nil {
		return err
	}
	printDevBanner(stdout, cfg, issuing, "unix://"+wlSocket, common.once, b.AdminAddr())
	return b.Run(ctx)
}

// devDefaults points c at the development Workload API and fills in
// dev's socket, folder and first-update timeout where c has none.
func devDefaults(c *config.Config, home, wlSocket, layout string) {
	if c.SDS.Socket == "" {
		c.SDS.Socket = filepath.Join(home, "sds.sock")
	}
	if len(c.Files) == 0 {
		c.Files = []config.Folder{{Dir: filepath.Join(home, "certs"), Layout: layout}}
	}
	c.WorkloadAPI.Address = "unix://" + wlSocket
	if c.WorkloadAPI.FirstUpdateTimeout == 0 {
		c.WorkloadAPI.FirstUpdateTimeout = config.Duration(10 * time.Second)
	}
}

// issuerConfig checks dev's flags and says what the CA issues.
func (d *devFlags) issuerConfig() (devapi.IssuerConfig, error) {
	ic := devapi.IssuerConfig{TTL: d.ttl, FederatedWith: d.federateWith}
	if d.ttl < time.Second {
		return ic, fmt.Errorf("--svid-ttl %s: must be at least 1s", d.ttl)
	}
	td, err := spiffeid.TrustDomainFromString(d.trustDomain)
	if err != nil {
		return ic, fmt.Errorf("--trust-domain %q: %w", d.trustDomain, err)
	}
	ic.TrustDomain = td
	id := spiffeid.RequireFromPath(td, "/dev")
	if d.id != "" {
		if id, err = idInDomain("--spiffe-id", d.id, td); err != nil {
			return ic, err
		}
	}
	ic.SPIFFEIDs = []spiffeid.ID{id}
	if d.two != "" {
		second, err := idInDomain("--second-spiffe-id", d.two, td)
		if err != nil {
			return ic, err
		}
		if second == id {
			return ic, fmt.Errorf("--second-spiffe-id %q: the same as the first SPIFFE ID", d.two)
		}
		ic.SPIFFEIDs = append(ic.SPIFFEIDs, second)
		ic.Hints = map[spiffeid.ID]string{second: devSecondHint}
	}
	for _, fed := range d.federateWith {
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

// printDevBanner says what dev issues and where everything is.
func printDevBanner(w io.Writer, cfg *config.Config, ic devapi.IssuerConfig, workloadAPI string, once bool, adminAddr string) {
	ids := ic.SPIFFEIDs
	fmt.Fprintf(w, "sds-bridge dev — FOR DEVELOPMENT ONLY: an in-memory CA issues %s for %s every %s.\n", ids[0], ic.TTL, ic.TTL/2)
	if len(ids) > 1 {
		fmt.Fprintf(w, "  second SVID:        %s  (hint %q)\n", ids[1], devSecondHint)
	}
	for _, fed := range ic.FederatedWith {
		fmt.Fprintf(w, "  federated bundle:   spiffe://%s  (an in-memory CA of its own)\n", fed.Name())
	}
	fmt.Fprintf(w, "  Workload API (dev): %s\n", workloadAPI)
	if cfg.SDS.On() {
		names := cfg.SDS.Names().Served(ids, append([]spiffeid.TrustDomain{ic.TrustDomain}, ic.FederatedWith...))
		fmt.Fprintf(w, "  Envoy SDS socket:   %s  (names: %s)\n", cfg.SDS.Socket, strings.Join(names, ", "))
	}
	for _, f := range cfg.Files {
		fmt.Fprintf(w, "  credential folder:  %s  (layout %s)\n", f.Dir, f.Layout)
		for _, a := range f.OnRotate {
			switch {
			case a.Signal != nil:
				fmt.Fprintf(w, "    on rotate: %s to the pid in %s\n", a.Signal.Signal, a.Signal.PIDFile)
			case a.Exec != nil:
				fmt.Fprintf(w, "    on rotate: run %q\n", a.Exec.Command)
			case a.Postgres != nil:
				fmt.Fprintf(w, "    on rotate: SELECT pg_reload_conf() on %s\n", pgreload.RedactDSN(a.Postgres.DSN))
			}
		}
	}
	if sv := cfg.Supervise; sv.On() {
		fmt.Fprintf(w, "  supervised program: %q  (starts once every folder holds a set; %s after each swap; restart %s)\n", sv.Command, sv.RenewSignal, sv.Restart)
	}
	if once {
		fmt.Fprintln(w, "  --once: writes every folder once, runs its reload actions and exits; no Envoy SDS, no admin")
	}
	if adminAddr != "" {
		fmt.Fprintf(w, "  admin:              http://%s  (%s %s /metrics /status)\n", adminAddr, cfg.Admin.LivenessPath, cfg.Admin.ReadinessPath)
	}
}

// devSocketPath returns want, or a short path under the temp dir when want is
// longer than a unix socket path may be.
func devSocketPath(want string) (string, error) {
	if len(want) <= unixsock.MaxPath {
		return want, nil
	}
	dir, err := os.MkdirTemp("", "sds-bridge-dev")
	if err != nil {
		return "", fmt.Errorf("dev: %w", err)
	}
	return filepath.Join(dir, "workload.sock"), nil
}
