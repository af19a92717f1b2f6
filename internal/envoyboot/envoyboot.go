// Package envoyboot writes and checks Envoy bootstraps that take their
// certificates from sds-bridge.
//
// Envoy cannot be installed where this project is built and tested, so a
// bootstrap is checked against Envoy's own API instead: Generate builds one
// from go-control-plane's protos (valid by construction), and Validate
// parses any bootstrap YAML strictly into those protos, runs the
// protoc-gen-validate rules on every message including each typed_config,
// and checks what the schema cannot: clusters that are referenced exist, the
// bridge's cluster speaks HTTP/2 over a unix socket, and every secret asked
// of the bridge is one it serves.
package envoyboot

import (
	"fmt"
	"strings"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/sds"
)

//go:generate go run ./genextensions -o extensions.go

// ExtensionPackages is how many packages of Envoy's API (extensions,
// contrib, the v3 config and type packages, the xDS types) the validator
// links: a typed_config of any of their messages is checked; another is
// a private extension, reported as a warning (see Lint).
const ExtensionPackages = extensionPackages

// BridgeCluster is the name Generate gives the static cluster that reaches
// sds-bridge's SDS socket. Validate finds the bridge by the socket its
// cluster dials (ServedNames.Socket), whatever the cluster is called: a
// bootstrap written for SPIRE Agent's SDS names it spire_agent, say. Only
// when no socket is given is the cluster of this name taken for the bridge.
const BridgeCluster = "sds-bridge"

// ServedNames are the configurable resource names the bridge serves
// (config keys sds.default_svid_name, sds.default_bundle_name and
// sds.default_all_bundles_name). Names of the form spiffe://… are always
// served as well: an SVID by its SPIFFE ID, a bundle by its trust domain.
type ServedNames struct {
	// SVID names the tls_certificate of the default SVID ("default").
	SVID string
	// Bundle names the validation_context of the own trust domain ("ROOTCA").
	Bundle string
	// AllBundles names the validation_context of every trust domain, for
	// Envoy's SPIFFE certificate validator ("ALL").
	AllBundles string
	// AllBundlesOff is set when the bridge runs with
	// sds.disable_spiffe_cert_validation: it then does not serve AllBundles,
	// as SPIRE does not, since plain trusted_ca over every trust domain would
	// let a federated CA speak for our own.
	AllBundlesOff bool
	// Socket is the bridge's unix socket (config sds.socket): every static
	// cluster with a pipe endpoint on this path is the bridge. Empty: the
	// cluster named BridgeCluster is.
	Socket string
}

// DefaultNames are the names the bridge serves with its default config.
func DefaultNames() ServedNames {
	return fromSDS(sds.Names{}.WithDefaults(), config.DefaultSDSSocket)
}

// NamesFromConfig are the names a bridge running with c serves; c must be
// defaulted (config.Load does that).
func NamesFromConfig(c *config.Config) ServedNames {
	return fromSDS(c.SDS.Names.WithDefaults(), c.SDS.SocketPath)
}

func fromSDS(n sds.Names, socket string) ServedNames {
	return ServedNames{SVID: n.DefaultSVID, Bundle: n.DefaultBundle, AllBundles: n.AllBundles,
		AllBundlesOff: n.DisableSPIFFECertValidation, Socket: socket}
}

// sds is n as the SDS server models it: sds.Names owns what is served.
func (n ServedNames) sds() sds.Names {
	return sds.Names{DefaultSVID: n.SVID, DefaultBundle: n.Bundle, AllBundles: n.AllBundles,
		DisableSPIFFECertValidation: n.AllBundlesOff}
}

func (n ServedNames) withDefaults() ServedNames {
	return fromSDS(n.sds().WithDefaults(), n.Socket)
}

// secretKind is what an SDS request expects the secret to contain: one the
// bridge serves, or kindOther.
type secretKind = sds.SecretKind

const (
	kindCertificate            = sds.TLSCertificate
	kindValidation             = sds.ValidationContext
	kindOther       secretKind = 0 // session ticket keys, generic secrets: never served by the bridge
)

// serves reports whether the bridge answers name with a secret of kind k,
// and if not, why.
func (n ServedNames) serves(name string, k secretKind) error {
	if got, ok := n.sds().Serves(name); ok && got == k {
		return nil
	}
	switch k {
	case kindCertificate:
		return fmt.Errorf("the bridge serves certificates as %q or as an SVID's SPIFFE ID (spiffe://<trust-domain>/<path>)%s", n.SVID, hint(name, n))
	case kindValidation:
		if name == n.AllBundles && n.AllBundlesOff {
			return fmt.Errorf("the bridge does not serve %q while sds.disable_spiffe_cert_validation is true (as SPIRE); use %q or spiffe://<trust-domain>", name, n.Bundle)
		}
		return fmt.Errorf("the bridge serves validation contexts as %q, %q or spiffe://<trust-domain>%s", n.Bundle, n.AllBundles, hint(name, n))
	}
	return fmt.Errorf("the bridge serves only tls_certificate and validation_context secrets")
}

// hint points at the likely mistake: a name of the other kind, or a case slip.
func hint(name string, n ServedNames) string {
	for _, s := range []string{n.SVID, n.Bundle, n.AllBundles} {
		if name == s {
			return fmt.Sprintf("; %q is served, but as the other kind of secret", name)
		}
		if strings.EqualFold(name, s) {
			return fmt.Sprintf("; did you mean %q?", s)
		}
	}
	return ""
}
