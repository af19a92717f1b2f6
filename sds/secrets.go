package sds

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// SPIFFECertValidatorName is Envoy's SPIFFE certificate validator.
const SPIFFECertValidatorName = "envoy.tls.cert_validator.spiffe"

// Default resource names: SPIRE Agent's, so its Envoy bootstraps work.
const (
	DefaultSVIDName       = "default"
	DefaultBundleName     = "ROOTCA"
	DefaultAllBundlesName = "ALL"
)

// Names are the configurable resource names of the secrets that are not
// named after a SPIFFE ID or trust domain.
type Names struct {
	// DefaultSVID names the tls_certificate of the default SVID ("default").
	DefaultSVID string `yaml:"default_svid_name"`
	// DefaultBundle names the validation_context of the own trust domain ("ROOTCA").
	DefaultBundle string `yaml:"default_bundle_name"`
	// AllBundles names the validation_context with every trust domain ("ALL").
	AllBundles string `yaml:"default_all_bundles_name"`
	// DisableSPIFFECertValidation serves plain trusted_ca instead of
	// Envoy's SPIFFE validator, and not AllBundles; each Envoy may choose
	// otherwise (see Validation), as with SPIRE Agent.
	DisableSPIFFECertValidation bool `yaml:"disable_spiffe_cert_validation"`
}

// WithDefaults fills empty names with SPIRE's defaults.
func (n Names) WithDefaults() Names {
	n.DefaultSVID = cmp.Or(n.DefaultSVID, DefaultSVIDName)
	n.DefaultBundle = cmp.Or(n.DefaultBundle, DefaultBundleName)
	n.AllBundles = cmp.Or(n.AllBundles, DefaultAllBundlesName)
	return n
}

// SecretKind is what a served secret holds.
type SecretKind int

// The two kinds of secret the bridge serves.
const (
	TLSCertificate    SecretKind = iota + 1 // an SVID's chain and key
	ValidationContext                       // one or more trust bundles
)

func (k SecretKind) String() string {
	switch k {
	case TLSCertificate:
		return "tls_certificate"
	case ValidationContext:
		return "validation_context"
	}
	return "other secret"
}

// Serves reports whether, and as which kind, the bridge serves name (with
// n defaulted). Any SPIFFE ID counts: it is served once the Workload API
// sends that identity.
func (n Names) Serves(name string) (SecretKind, bool) {
	switch name {
	case "":
		return 0, false
	case n.DefaultSVID:
		return TLSCertificate, true
	case n.DefaultBundle:
		return ValidationContext, true
	case n.AllBundles:
		return ValidationContext, !n.DisableSPIFFECertValidation
	}
	id, err := spiffeid.FromString(name)
	switch {
	case err != nil:
		return 0, false
	case id.Path() == "":
		return ValidationContext, true
	}
	return TLSCertificate, true
}

// Fixed lists the configured names served whatever the Workload API sends.
func (n Names) Fixed() []string {
	if n.DisableSPIFFECertValidation {
		return []string{n.DefaultSVID, n.DefaultBundle}
	}
	return []string{n.DefaultSVID, n.DefaultBundle, n.AllBundles}
}

// Served lists the names served for SVIDs of ids and bundles of domains.
func (n Names) Served(ids []spiffeid.ID, domains []spiffeid.TrustDomain) []string {
	names := n.Fixed()
	for _, id := range ids {
		names = append(names, id.String())
	}
	for _, td := range domains {
		names = append(names, td.IDString())
	}
	return names
}

// Validate refuses names that are empty, equal to each other or could be
// taken for a SPIFFE ID (a lower-case "spiffe://" prefix, as go-spiffe
// parses them): one *fielderr.Error per name, keyed as in the YAML.
func (n Names) Validate() error {
	fields := []struct{ key, value string }{
		{"default_svid_name", n.DefaultSVID},
		{"default_bundle_name", n.DefaultBundle},
		{"default_all_bundles_name", n.AllBundles},
	}
	var errs fielderr.List
	seen := make(map[string]string, len(fields))
	for _, f := range fields {
		switch {
		case f.value == "":
			errs.Add(f.key, "missing")
		case !utf8.ValidString(f.value) || strings.ContainsFunc(f.value, unicode.IsControl):
			// A proto string must be UTF-8, or no response could carry it.
			errs.Add(f.key, "%q must be printable UTF-8", f.value)
		case f.value == "*":
			errs.Add(f.key, "%q is the wildcard of xDS requests", f.value)
		case strings.HasPrefix(f.value, "spiffe://"):
			errs.Add(f.key, "%q would shadow a SPIFFE ID or trust domain name", f.value)
		case seen[f.value] != "":
			errs.Clash(f.key, seen[f.value], fmt.Sprintf("%q is also the value of", f.value), "")
		default:
			seen[f.value] = f.key
		}
	}
	return errs.Err()
}

// build is u's Secrets in both variants, indexed by Validation, shaped as
// SPIRE Agent's SDS handler shapes them; the first Secret of a name wins.
// AllBundles is not built for trusted_ca: the roots of several trust
// domains in one trusted_ca would let a federated CA mint SVIDs of any.
func build(u *rotation.Update, names Names) ([2]served, error) {
	var variants [2]served
	for v := range variants {
		variants[v].secrets = make(map[string]*discoveryv3.Resource, len(u.SVIDs)+len(u.Bundles)+3)
	}
	// add serves sec in vs unless its name is taken there.
	add := func(sec *tlsv3.Secret, vs ...Validation) error {
		if _, taken := variants[vs[0]].secrets[sec.GetName()]; taken {
			return nil
		}
		r, err := newResource(sec, vs[0])
		if err != nil {
			return err
		}
		for _, v := range vs {
			variants[v].secrets[sec.GetName()] = r
		}
		return nil
	}
	for i, svid := range u.SVIDs {
		chainPEM, keyPEM, err := svid.Marshal()
		if err != nil {
			return variants, fmt.Errorf("encode SVID %q: %w", svid.ID, err)
		}
		if i == 0 {
			err = add(tlsCertificate(names.DefaultSVID, chainPEM, keyPEM), ValidationSPIFFE, ValidationTrustedCA)
		}
		if err == nil {
			err = add(tlsCertificate(svid.ID.String(), chainPEM, keyPEM), ValidationSPIFFE, ValidationTrustedCA)
		}
		if err != nil {
			return variants, err
		}
	}
	bundles := slices.DeleteFunc(slices.Clone(u.Bundles), (*x509bundle.Bundle).Empty)
	type context struct {
		name    string
		bundles []*x509bundle.Bundle
	}
	contexts := []context{{names.DefaultBundle, []*x509bundle.Bundle{u.OwnBundle()}}, {names.AllBundles, bundles}}
	for _, b := range bundles {
		contexts = append(contexts, context{b.TrustDomain().IDString(), []*x509bundle.Bundle{b}})
	}
	for v := range variants {
		plain := Validation(v) == ValidationTrustedCA
		for _, c := range contexts {
			if plain && c.name == names.AllBundles {
				continue
			}
			sec, err := validationContext(c.name, c.bundles, plain)
			if err == nil {
				err = add(sec, Validation(v))
			}
			if err != nil {
				return variants, err
			}
		}
	}
	return variants, nil
}

func tlsCertificate(name string, chainPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chainPEM),
			PrivateKey:       inline(keyPEM),
		}},
	}
}

// validationContext builds SPIRE's spiffeBuilder shape or, plain, its
// rootCABuilder shape.
func validationContext(name string, bundles []*x509bundle.Bundle, plain bool) (*tlsv3.Secret, error) {
	var roots []byte
	var tds []*tlsv3.SPIFFECertValidatorConfig_TrustDomain
	for _, b := range bundles {
		pemBytes, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode bundle %q: %w", b.TrustDomain(), err)
		}
		if plain {
			roots = append(roots, pemBytes...)
		} else {
			tds = append(tds, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: b.TrustDomain().Name(), TrustBundle: inline(pemBytes)})
		}
	}
	vc := &tlsv3.CertificateValidationContext{}
	if plain {
		vc.TrustedCa = inline(roots)
	} else {
		typed, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: tds})
		if err != nil {
			return nil, fmt.Errorf("pack SPIFFE validator config for %q: %w", name, err)
		}
		vc.CustomValidatorConfig = &corev3.TypedExtensionConfig{Name: SPIFFECertValidatorName, TypedConfig: typed}
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
