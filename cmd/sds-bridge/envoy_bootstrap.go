package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sds-bridge/sds-bridge/internal/envoyboot"
)

// envoyBootstrapUsage is the line for the top-level usage text.
const envoyBootstrapUsage = `  sds-bridge envoy-bootstrap [--config FILE] [--mode inbound|outbound] [--transport sotw|delta|ads] [--listen-port N] [--app-port N]
                             [--upstream HOST:PORT] [--allow-spiffe-id ID ...] [--upstream-spiffe-id ID] [--check FILE]`

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// runEnvoyBootstrap prints an Envoy bootstrap that takes its certificates
// from a bridge running with the same config (socket path, secret names),
// or with --check says whether an existing bootstrap fits that bridge.
func runEnvoyBootstrap(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge envoy-bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		common  commonFlags
		allowed stringList
		check   string
		r       envoyboot.Request
	)
	fs.StringVar(&common.configFile, "config", "", "the bridge's YAML config: its sds.socket and secret names go into the bootstrap")
	fs.StringVar(&common.sdsSocket, "sds-socket", "", "the bridge's SDS socket (overrides sds.socket)")
	fs.StringVar(&r.Mode, "mode", "inbound", "inbound: mTLS listener in front of a local app; outbound: local listener to an upstream over mTLS")
	fs.StringVar(&r.Transport, "transport", "sotw", "how Envoy subscribes: sotw, delta (DELTA_GRPC) or ads")
	fs.UintVar(&r.ListenPort, "listen-port", 0, fmt.Sprintf("Envoy's listener port (default %d inbound, %d outbound)", envoyboot.DefaultInboundListenPort, envoyboot.DefaultOutboundListenPort))
	fs.UintVar(&r.AppPort, "app-port", envoyboot.DefaultAppPort, "inbound: the local app's port on 127.0.0.1")
	fs.StringVar(&r.Upstream, "upstream", "", "outbound: the upstream's HOST:PORT (required)")
	fs.Var(&allowed, "allow-spiffe-id", "inbound: a caller's SPIFFE ID, or spiffe://<trust-domain> for all of its workloads (repeatable; at least one)")
	fs.StringVar(&r.UpstreamSPIFFEID, "upstream-spiffe-id", "", "outbound: the SPIFFE ID the upstream must present (required)")
	fs.DurationVar(&r.InitialFetchTimeout, "initial-fetch-timeout", envoyboot.DefaultInitialFetchTimeout, "how long Envoy waits for its first secrets before it starts without them; 0 waits forever")
	fs.StringVar(&check, "check", "", "instead of printing a bootstrap, check the bootstrap in FILE against the bridge's config")
	if err := fs.Parse(args); err != nil {
		return usageError(err)
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Errorf("envoy-bootstrap: unexpected argument %q", fs.Arg(0)))
	}
	cfg, err := common.load(nil)
	if err != nil {
		return err
	}
	if !cfg.SDS.On() {
		return errors.New("envoy-bootstrap: sds.enabled is false in the config: the bridge serves no SDS socket for Envoy")
	}
	names := envoyboot.NamesFromConfig(cfg)
	if check != "" {
		return envoyboot.CheckFile(check, names, stdout, stderr)
	}
	r.AllowedSPIFFEIDs = allowed
	return envoyboot.Print(stdout, names, r)
}
