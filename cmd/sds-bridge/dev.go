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
	"golang.org/x/sync/errgroup"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/unixsock"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
)

// devSecondHint is the Workload API hint of --second-spiffe-id's SVID.
const devSecondHint = "second"

// devHome is where dev puts everything unless told otherwise.
const devHome = "sds-bridge-dev"

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var common commonFlags
	common.register(fs)
	ttl := fs.Duration("svid-ttl", devapi.DefaultTTL, "lifetime of each development SVID; a new one is issued at half of it")
	tdName := fs.String("trust-domain", "example.org", "trust domain of the development CA")
	idFlag := fs.String("spiffe-id", "", "SPIFFE ID to issue (default spiffe://<trust-domain>/dev)")
	secondFlag := fs.String("second-spiffe-id", "", `also issue this SPIFFE ID, with Workload API hint "`+devSecondHint+`" (try workload_api.default_svid_hint, files[].svid)`)
	var federateWith []spiffeid.TrustDomain
	fs.Func("federate-with", "also send a federated bundle for trust domain TD from a second in-memory CA (repeatable)", func(v string) error {
		td, err := spiffeid.TrustDomainFromString(v)
		if err != nil {
			return err
		}
		federateWith = append(federateWith, td)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	program, err := programArgs(fs, args)
	if err != nil {
		return err
	}
	common.program = program
	if *ttl < time.Second {
		return fmt.Errorf("--svid-ttl %s: must be at least 1s", *ttl)
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return fmt.Errorf("--trust-domain %q: %w", *tdName, err)
	}
	id := spiffeid.RequireFromPath(td, "/dev")
	if *idFlag != "" {
		if id, err = spiffeid.FromString(*idFlag); err != nil {
			return fmt.Errorf("--spiffe-id %q: %w", *idFlag, err)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("--spiffe-id %q: not in trust domain %q", *idFlag, td.Name())
		}
	}
	ids := []spiffeid.ID{id}
	var hints map[spiffeid.ID]string
	if *secondFlag != "" {
		second, err := spiffeid.FromString(*secondFlag)
		if err != nil {
			return fmt.Errorf("--second-spiffe-id %q: %w", *secondFlag, err)
		}
		if second.TrustDomain() != td {
			return fmt.Errorf("--second-spiffe-id %q: not in trust domain %q", *secondFlag, td.Name())
		}
		if second == id {
			return fmt.Errorf("--second-spiffe-id %q: the same as the first SPIFFE ID", *secondFlag)
		}
		ids = append(ids, second)
		hints = map[spiffeid.ID]string{second: devSecondHint}
	}
	for _, fed := range federateWith {
		if fed == td {
			return fmt.Errorf("--federate-with %q: that is the own trust domain", fed.Name())
		}
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
	cfg, err := common.load(func(c *config.Config) {
		if c.SDS.Socket == "" {
			c.SDS.Socket = filepath.Join(home, "sds.sock")
		}
		if len(c.Files) == 0 {
			c.Files = []config.Folder{{Dir: filepath.Join(home, "certs"), Layout: common.layout}}
		}
		c.WorkloadAPI.Address = "unix://" + wlSocket
		if c.WorkloadAPI.FirstUpdateTimeout == 0 {
			c.WorkloadAPI.FirstUpdateTimeout = config.Duration(10 * time.Second)
		}
	})
	if err != nil {
		return err
	}
	// The locks come before the development Workload API is set up: a
	// second dev on the same folder or socket must not touch the first
	// one's Workload API socket either.
	release, err := lockOwned(cfg)
	if err != nil {
		return err
	}
	defer release()
	if err := os.MkdirAll(filepath.Dir(wlSocket), 0o755); err != nil {
		return fmt.Errorf("dev: %w", err)
	}

	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: wlSocket, Logger: log})
	issuer, err := devapi.NewIssuer(devapi.IssuerConfig{
		TrustDomain:   td,
		SPIFFEIDs:     ids,
		Hints:         hints,
		FederatedWith: federateWith,
		TTL:           *ttl,
		Logger:        log,
	}, wl)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "sds-bridge dev — FOR DEVELOPMENT ONLY: an in-memory CA issues %s for %s every %s.\n", id, *ttl, *ttl/2)
	if len(ids) > 1 {
		fmt.Fprintf(stdout, "  second SVID:        %s  (hint %q)\n", ids[1], devSecondHint)
	}
	for _, fed := range federateWith {
		fmt.Fprintf(stdout, "  federated bundle:   spiffe://%s  (an in-memory CA of its own)\n", fed.Name())
	}
	fmt.Fprintf(stdout, "  Workload API (dev): %s\n", "unix://"+wlSocket)
	if cfg.SDS.On() {
		names := cfg.SDS.Names().Fixed()
		for _, i := range ids {
			names = append(names, i.String())
		}
		for _, d := range append([]spiffeid.TrustDomain{td}, federateWith...) {
			names = append(names, d.IDString())
		}
		fmt.Fprintf(stdout, "  Envoy SDS socket:   %s  (names: %s)\n", cfg.SDS.Socket, strings.Join(names, ", "))
	}
	for _, f := range cfg.Files {
		fmt.Fprintf(stdout, "  credential folder:  %s  (layout %s)\n", f.Dir, f.Layout)
		for _, a := range f.OnRotate {
			switch {
			case a.Signal != nil:
				fmt.Fprintf(stdout, "    on rotate: %s to the pid in %s\n", a.Signal.Signal, a.Signal.PIDFile)
			case a.Exec != nil:
				fmt.Fprintf(stdout, "    on rotate: run %q\n", a.Exec.Command)
			case a.Postgres != nil:
				fmt.Fprintf(stdout, "    on rotate: SELECT pg_reload_conf() on %s\n", pgreload.RedactDSN(a.Postgres.DSN))
			}
		}
	}
	// The admin line waits for the bind: --admin 127.0.0.1:0 shows the
	// port it got.
	adminBound := func(addr string) {
		fmt.Fprintf(stdout, "  admin:              http://%s  (%s %s /metrics /status)\n", addr, cfg.Admin.LivenessPath, cfg.Admin.ReadinessPath)
	}

	if sv := cfg.Supervise; sv.On() {
		fmt.Fprintf(stdout, "  supervised program: %q  (starts once every folder holds a set; %s after each swap; restart %s)\n", sv.Command, sv.RenewSignal, sv.Restart)
	}
	if common.once {
		fmt.Fprintln(stdout, "  --once: writes every folder once, runs its reload actions and exits; no Envoy SDS, no admin")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return wl.Serve(ctx) })
	g.Go(func() error { return issuer.Run(ctx) })
	g.Go(func() error {
		err := serveOwned(ctx, cfg, log, common.mode(), adminBound)
		// The development Workload API has served its purpose (--once, or
		// the supervised program exited).
		cancel()
		return err
	})
	return g.Wait()
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
