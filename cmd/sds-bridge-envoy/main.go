// Command sds-bridge-envoy writes and checks Envoy bootstraps that take
// their certificates from sds-bridge; `sds-bridge envoy-bootstrap ARGS`
// runs it with ARGS.
//
// It is a binary of its own so that the daemon links none of what it
// needs: Envoy's bootstrap, listener and route types and every extension
// go-control-plane ships, whose package initialisation every process that
// links them pays for (docs/architecture.md).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/envoyboot"
)

// version is empty unless set at build time with
// -ldflags "-X main.version=v1.2.3" (make build does).
var version string

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	// The flag package has printed its own error and the usage.
	if errors.Is(err, errUsage) {
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "sds-bridge-envoy:", err)
	os.Exit(1)
}

// errUsage is a flag error the flag package has already printed.
var errUsage = errors.New("usage")

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// flags are the command line: the bridge's config and what is asked.
type flags struct {
	configFile, sdsSocket, check string
	allowed                      stringList
	showVersion                  bool
	r                            envoyboot.Request
}

func (f *flags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configFile, "config", "", "the bridge's YAML config: its sds.socket and secret names go into the bootstrap")
	fs.StringVar(&f.sdsSocket, "sds-socket", "", "the bridge's SDS socket (overrides sds.socket)")
	fs.StringVar(&f.r.Mode, "mode", "inbound", "inbound: mTLS listener in front of a local app; outbound: local listener to an upstream over mTLS")
	fs.StringVar(&f.r.Transport, "transport", "sotw", "how Envoy subscribes: sotw, delta (DELTA_GRPC) or ads")
	fs.StringVar(&f.r.ListenAddress, "listen-address", "", "the IP address Envoy's listener binds (default 0.0.0.0 inbound, 127.0.0.1 outbound)")
	fs.UintVar(&f.r.ListenPort, "listen-port", 0, fmt.Sprintf("Envoy's listener port (default %d inbound, %d outbound)", envoyboot.DefaultInboundListenPort, envoyboot.DefaultOutboundListenPort))
	fs.UintVar(&f.r.AppPort, "app-port", envoyboot.DefaultAppPort, "inbound: the local app's port on 127.0.0.1")
	fs.StringVar(&f.r.Upstream, "upstream", "", "outbound: the upstream's HOST:PORT (required)")
	fs.Var(&f.allowed, "allow-spiffe-id", "inbound: a caller's SPIFFE ID, or spiffe://<trust-domain> for all of its workloads (repeatable; at least one)")
	fs.StringVar(&f.r.UpstreamSPIFFEID, "upstream-spiffe-id", "", "outbound: the SPIFFE ID the upstream must present (required)")
	fs.DurationVar(&f.r.InitialFetchTimeout, "initial-fetch-timeout", envoyboot.DefaultInitialFetchTimeout, "how long Envoy waits for its first secrets before it starts without them; 0 waits forever")
	fs.StringVar(&f.r.NodeID, "node-id", "", "Envoy's node.id, which the bridge logs per stream (default sidecar-<mode>)")
	fs.StringVar(&f.r.NodeCluster, "cluster", "", "Envoy's node.cluster (default "+envoyboot.DefaultNodeCluster+")")
	fs.UintVar(&f.r.AdminPort, "admin-port", 0, "Envoy's admin interface on 127.0.0.1:PORT, never another address (default off)")
	fs.StringVar(&f.check, "check", "", "instead of printing a bootstrap, check the bootstrap in FILE against the bridge's config")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and how many Envoy API packages --check knows, then exit")
}

// run prints an Envoy bootstrap that takes its certificates from a bridge
// running with the same config (socket path, secret names), or with --check
// says whether an existing bootstrap fits that bridge.
func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge-envoy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sds-bridge-envoy [flags]   (also: sds-bridge envoy-bootstrap [flags])\n\nPrints an Envoy bootstrap for a bridge with the given config, or with --check checks one.")
		fs.PrintDefaults()
	}
	var f flags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if f.showVersion {
		fmt.Fprintf(stdout, "sds-bridge-envoy %s (knows %d Envoy API packages)\n", admin.ReadBuildInfo(version).String(), envoyboot.ExtensionPackages)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("envoy-bootstrap: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	if !cfg.SDS.On() {
		return errors.New("envoy-bootstrap: sds.enabled is false in the config: the bridge serves no SDS socket for Envoy")
	}
	names := envoyboot.NamesFromConfig(cfg)
	if f.check != "" {
		return envoyboot.CheckFile(f.check, names, stdout, stderr)
	}
	f.r.AllowedSPIFFEIDs = f.allowed
	return envoyboot.Print(stdout, names, f.r)
}

// load reads the bridge's config (if any) with --sds-socket over it, as
// `sds-bridge run` would read it.
func (f *flags) load() (*config.Config, error) {
	cfg := &config.Config{}
	if f.configFile != "" {
		var err error
		if cfg, err = config.Read(f.configFile); err != nil {
			return nil, err
		}
	}
	if err := (config.Overrides{SDSSocket: f.sdsSocket}).Apply(cfg); err != nil {
		return nil, err
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		if f.configFile != "" {
			return nil, fmt.Errorf("config %s: %w", f.configFile, err)
		}
		return nil, fmt.Errorf("flags: %w", err)
	}
	return cfg, nil
}
