package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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
		common    commonFlags
		allowed   stringList
		upstream  string
		upstreamI string
		check     string
		o         envoyboot.Options
	)
	fs.StringVar(&common.configFile, "config", "", "the bridge's YAML config: its sds.socket and secret names go into the bootstrap")
	fs.StringVar(&common.sdsSocket, "sds-socket", "", "the bridge's SDS socket (overrides sds.socket)")
	mode := fs.String("mode", "inbound", "inbound: mTLS listener in front of a local app; outbound: local listener to an upstream over mTLS")
	transport := fs.String("transport", "sotw", "how Envoy subscribes: sotw, delta (DELTA_GRPC) or ads")
	listenPort := fs.Uint("listen-port", 0, fmt.Sprintf("Envoy's listener port (default %d inbound, %d outbound)", envoyboot.DefaultInboundListenPort, envoyboot.DefaultOutboundListenPort))
	appPort := fs.Uint("app-port", envoyboot.DefaultAppPort, "inbound: the local app's port on 127.0.0.1")
	fs.StringVar(&upstream, "upstream", "", "outbound: the upstream's HOST:PORT (required)")
	fs.Var(&allowed, "allow-spiffe-id", "inbound: a caller's SPIFFE ID, or spiffe://<trust-domain> for all of its workloads (repeatable; at least one)")
	fs.StringVar(&upstreamI, "upstream-spiffe-id", "", "outbound: the SPIFFE ID the upstream must present (required)")
	fetch := fs.Duration("initial-fetch-timeout", envoyboot.DefaultInitialFetchTimeout, "how long Envoy waits for its first secrets before it starts without them; 0 waits forever")
	fs.StringVar(&check, "check", "", "instead of printing a bootstrap, check the bootstrap in FILE against the bridge's config")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("envoy-bootstrap: unexpected argument %q", fs.Arg(0))
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
		return checkBootstrap(check, names, stdout, stderr)
	}

	o.Mode = envoyboot.Mode(*mode)
	o.Transport = envoyboot.Transport(*transport)
	o.SDSSocket = cfg.SDS.Socket
	o.Names = names
	o.AllowedSPIFFEIDs = allowed
	o.UpstreamSPIFFEID = upstreamI
	if *listenPort > 65535 || *appPort > 65535 {
		return fmt.Errorf("envoy-bootstrap: --listen-port and --app-port must be at most 65535")
	}
	o.ListenPort, o.AppPort = uint32(*listenPort), uint32(*appPort)
	if upstream != "" {
		if o.UpstreamAddress, o.UpstreamPort, err = envoyboot.SplitHostPort(upstream); err != nil {
			return fmt.Errorf("envoy-bootstrap: --upstream %w", err)
		}
	}
	switch {
	case *fetch < 0:
		return fmt.Errorf("envoy-bootstrap: --initial-fetch-timeout %s must not be negative", *fetch)
	case *fetch == 0:
		o.InitialFetchTimeout = -1 // envoyboot: wait forever
	default:
		o.InitialFetchTimeout = *fetch
	}
	if o.Mode == envoyboot.ModeInbound && (upstream != "" || upstreamI != "") {
		return errors.New("envoy-bootstrap: --upstream and --upstream-spiffe-id are for --mode outbound")
	}
	if o.Mode == envoyboot.ModeOutbound && len(allowed) > 0 {
		return errors.New("envoy-bootstrap: --allow-spiffe-id is for --mode inbound")
	}

	out, err := envoyboot.Generate(o)
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: %w", asFlags(err))
	}
	// Generate builds from Envoy's protos; the validator also checks what
	// the protos cannot (served names, cluster references).
	if err := envoyboot.Validate(out, names); err != nil {
		return fmt.Errorf("envoy-bootstrap: the generated bootstrap does not validate (a bug, please report it): %w", err)
	}
	_, err = stdout.Write(out)
	return err
}

// checkBootstrap validates the bootstrap in path for a bridge serving
// names on names.Socket. Like Envoy, it loads a bootstrap with deprecated
// fields and warns about each (on stderr, with its YAML line).
func checkBootstrap(path string, names envoyboot.ServedNames, stdout, stderr io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: --check: %w", err)
	}
	r, err := envoyboot.Lint(data, names)
	for _, w := range r.Warnings {
		fmt.Fprintf(stderr, "warning: %s: %s\n", path, w)
	}
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: %s: %w", path, err)
	}
	if len(r.Asked) == 0 {
		return fmt.Errorf("envoy-bootstrap: %s asks the bridge on %s (sds.socket) for no secret: no sds_config reaches a cluster dialling that socket", path, names.Socket)
	}
	fmt.Fprintf(stdout, "ok: %s asks the bridge on %s for %s\n", path, names.Socket, strings.Join(r.Asked, ", "))
	return nil
}

// flagOf is the flag that sets each envoyboot.Options field.
var flagOf = map[string]string{
	"Mode":             "--mode",
	"Transport":        "--transport",
	"SDSSocket":        "--sds-socket (or sds.socket)",
	"ListenPort":       "--listen-port",
	"AppPort":          "--app-port",
	"AllowedSPIFFEIDs": "--allow-spiffe-id",
	"UpstreamAddress":  "--upstream",
	"UpstreamPort":     "--upstream",
	"UpstreamSPIFFEID": "--upstream-spiffe-id",
}

// asFlags rewrites envoyboot's option errors to name the flag to pass.
func asFlags(err error) error {
	var oe *envoyboot.OptionError
	if !errors.As(err, &oe) {
		return err
	}
	switch e := err.(type) {
	case *envoyboot.OptionError:
		if f, ok := flagOf[e.Option]; ok {
			return fmt.Errorf("%s: %s", f, e.Msg)
		}
	case interface{ Unwrap() []error }:
		var out []error
		for _, inner := range e.Unwrap() {
			out = append(out, asFlags(inner))
		}
		return errors.Join(out...)
	case interface{ Unwrap() error }:
		// "envoyboot: …" around the option errors: the flags say it all.
		return asFlags(e.Unwrap())
	}
	return err
}
