package envoyboot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Request is what the envoy-bootstrap command asks for, as its flags give
// it; Print turns it into Options and names the flag behind each refusal.
type Request struct {
	Mode, Transport     string
	ListenAddress       string // "": the mode's default
	ListenPort, AppPort uint
	AdminPort           uint // 0: no admin listener
	NodeID, NodeCluster string
	// Upstream is HOST:PORT (outbound).
	Upstream            string
	AllowedSPIFFEIDs    []string
	UpstreamSPIFFEID    string
	InitialFetchTimeout time.Duration // 0 waits forever
}

// Print writes to w a bootstrap that takes its certificates from a bridge
// serving names, checked as CheckFile would check it.
func Print(w io.Writer, names ServedNames, r Request) error {
	o, err := r.options(names)
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: %w", err)
	}
	out, err := Generate(o)
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: %w", asFlags(err))
	}
	// Generate builds from Envoy's protos; the validator also checks what
	// the protos cannot (served names, cluster references).
	if err := Validate(out, names); err != nil {
		return fmt.Errorf("envoy-bootstrap: the generated bootstrap does not validate (a bug, please report it): %w", err)
	}
	_, err = w.Write(out)
	return err
}

// options are the Options r asks for, or the flag error.
func (r Request) options(names ServedNames) (Options, error) {
	o := Options{
		Mode:             Mode(r.Mode),
		Transport:        Transport(r.Transport),
		SDSSocket:        names.Socket,
		Names:            names,
		AllowedSPIFFEIDs: r.AllowedSPIFFEIDs,
		UpstreamSPIFFEID: r.UpstreamSPIFFEID,
	}
	if r.ListenPort > 65535 || r.AppPort > 65535 || r.AdminPort > 65535 {
		return o, errors.New("--listen-port, --app-port and --admin-port must be at most 65535")
	}
	o.ListenPort, o.AppPort, o.AdminPort = uint32(r.ListenPort), uint32(r.AppPort), uint32(r.AdminPort)
	o.ListenAddress, o.NodeID, o.NodeCluster = r.ListenAddress, r.NodeID, r.NodeCluster
	if r.Upstream != "" {
		var err error
		if o.UpstreamAddress, o.UpstreamPort, err = SplitHostPort(r.Upstream); err != nil {
			return o, fmt.Errorf("--upstream %w", err)
		}
	}
	switch {
	case r.InitialFetchTimeout < 0:
		return o, fmt.Errorf("--initial-fetch-timeout %s must not be negative", r.InitialFetchTimeout)
	case r.InitialFetchTimeout == 0:
		o.InitialFetchTimeout = -1 // wait forever
	default:
		o.InitialFetchTimeout = r.InitialFetchTimeout
	}
	if o.Mode == ModeInbound && (r.Upstream != "" || r.UpstreamSPIFFEID != "") {
		return o, errors.New("--upstream and --upstream-spiffe-id are for --mode outbound")
	}
	if o.Mode == ModeOutbound && len(r.AllowedSPIFFEIDs) > 0 {
		return o, errors.New("--allow-spiffe-id is for --mode inbound")
	}
	return o, nil
}

// CheckFile validates the bootstrap in path for a bridge serving names on
// names.Socket, and says on stdout what it asks the bridge for. Like
// Envoy, it loads a bootstrap with deprecated fields and warns about each
// (on stderr, with its YAML line).
func CheckFile(path string, names ServedNames, stdout, stderr io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: --check: %w", err)
	}
	r, err := Lint(data, names)
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

// flagOf is the envoy-bootstrap flag that sets each Options field.
var flagOf = map[string]string{
	"Mode":             "--mode",
	"Transport":        "--transport",
	"SDSSocket":        "--sds-socket (or sds.socket)",
	"ListenAddress":    "--listen-address",
	"ListenPort":       "--listen-port",
	"AdminPort":        "--admin-port",
	"AppPort":          "--app-port",
	"AllowedSPIFFEIDs": "--allow-spiffe-id",
	"UpstreamAddress":  "--upstream",
	"UpstreamPort":     "--upstream",
	"UpstreamSPIFFEID": "--upstream-spiffe-id",
}

// asFlags rewrites option errors to name the flag to pass.
func asFlags(err error) error {
	var oe *OptionError
	if !errors.As(err, &oe) {
		return err
	}
	switch e := err.(type) {
	case *OptionError:
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
		// "…" around the option errors: the flags say it all.
		return asFlags(e.Unwrap())
	}
	return err
}
