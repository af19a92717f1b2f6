package sds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// The expected Secrets below are encoded independently of the code under
// test (encoding/pem, x509.MarshalPKCS8PrivateKey) in the shapes of SPIRE
// Agent's pkg/agent/endpoints/sdsv3/handler.go.

func pemCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func pemKey(t testing.TB, s *x509svid.SVID) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func data(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func wantTLS(t testing.TB, name string, s *x509svid.SVID) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: data(pemCerts(s.Certificates...)),
		PrivateKey:       data(pemKey(t, s)),
	}}}
}

func wantSPIFFE(t testing.TB, name string, bundles ...*x509bundle.Bundle) *tlsv3.Secret {
	var tds []*tlsv3.SPIFFECertValidatorConfig_TrustDomain
	for _, b := range bundles {
		tds = append(tds, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name:        b.TrustDomain().Name(),
			TrustBundle: data(pemCerts(b.X509Authorities()...)),
		})
	}
	typed, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: tds})
	if err != nil {
		t.Fatal(err)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: "envoy.tls.cert_validator.spiffe", TypedConfig: typed},
	}}}
}

func wantCA(name string, bundles ...*x509bundle.Bundle) *tlsv3.Secret {
	var roots []byte
	for _, b := range bundles {
		roots = append(roots, pemCerts(b.X509Authorities()...)...)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: data(roots),
	}}}
}

// chainedSVID issues an SVID through an intermediate CA, so the chain has
// two certificates; the ca package signs leaves with its root directly.
func chainedSVID(t testing.TB, id spiffeid.ID) (*x509svid.SVID, *x509bundle.Bundle) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	create := func(tmpl, parent *x509.Certificate, pub any, signer *ecdsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	caTmpl := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			URIs: []*url.URL{id.TrustDomain().ID().URL()},
		}
	}
	rootKey, interKey, leafKey := newKey(), newKey(), newKey()
	root := create(caTmpl(1, "root"), caTmpl(1, "root"), rootKey.Public(), rootKey)
	inter := create(caTmpl(2, "intermediate"), root, interKey.Public(), rootKey)
	leaf := create(&x509.Certificate{
		SerialNumber: big.NewInt(3), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		URIs:        []*url.URL{id.URL()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, inter, leafKey.Public(), interKey)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: leafKey},
		x509bundle.FromX509Authorities(id.TrustDomain(), []*x509.Certificate{root})
}

func TestBuildSecrets(t *testing.T) {
	exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
	web, backend := issue(t, exampleCA, webID), issue(t, exampleCA, backendID)
	webAgain := issue(t, exampleCA, webID)
	own, fed := exampleCA.Bundle(), otherCA.Bundle()
	chained, chainedBundle := chainedSVID(t, webID)

	tests := []struct {
		name          string
		update        *rotation.Update
		names         Names
		expectSecrets map[string]*tlsv3.Secret
	}{
		{
			name:   "one SVID, own bundle",
			update: newUpdate(1, []*x509svid.SVID{web}, own),
			expectSecrets: map[string]*tlsv3.Secret{
				"default":                  wantTLS(t, "default", web),
				"spiffe://example.org/web": wantTLS(t, "spiffe://example.org/web", web),
				"ROOTCA":                   wantSPIFFE(t, "ROOTCA", own),
				"spiffe://example.org":     wantSPIFFE(t, "spiffe://example.org", own),
				"ALL":                      wantSPIFFE(t, "ALL", own),
			},
		},
		{
			name:   "chain with intermediate: leaf then intermediate",
			update: newUpdate(1, []*x509svid.SVID{chained}, chainedBundle),
			expectSecrets: map[string]*tlsv3.Secret{
				"default":                  wantTLS(t, "default", chained),
				"spiffe://example.org/web": wantTLS(t, "spiffe://example.org/web", chained),
				"ROOTCA":                   wantSPIFFE(t, "ROOTCA", chainedBundle),
				"spiffe://example.org":     wantSPIFFE(t, "spiffe://example.org", chainedBundle),
				"ALL":                      wantSPIFFE(t, "ALL", chainedBundle),
			},
		},
		{
			name:   "federated bundle: one secret per trust domain, ALL has both sorted, ROOTCA only the own",
			update: newUpdate(1, []*x509svid.SVID{web}, fed, own),
			expectSecrets: map[string]*tlsv3.Secret{
				"default":                  wantTLS(t, "default", web),
				"spiffe://example.org/web": wantTLS(t, "spiffe://example.org/web", web),
				"ROOTCA":                   wantSPIFFE(t, "ROOTCA", own),
				"spiffe://example.org":     wantSPIFFE(t, "spiffe://example.org", own),
				"spiffe://other.org":       wantSPIFFE(t, "spiffe://other.org", fed),
				"ALL":                      wantSPIFFE(t, "ALL", own, fed),
			},
		},
		{
			name:   "multiple SVIDs: default is the first, each under its ID, first wins a duplicate ID",
			update: newUpdate(1, []*x509svid.SVID{backend, web, webAgain}, own),
			expectSecrets: map[string]*tlsv3.Secret{
				"default":                      wantTLS(t, "default", backend),
				"spiffe://example.org/backend": wantTLS(t, "spiffe://example.org/backend", backend),
				"spiffe://example.org/web":     wantTLS(t, "spiffe://example.org/web", web),
				"ROOTCA":                       wantSPIFFE(t, "ROOTCA", own),
				"spiffe://example.org":         wantSPIFFE(t, "spiffe://example.org", own),
				"ALL":                          wantSPIFFE(t, "ALL", own),
			},
		},
		{
			// As SPIRE: one trusted_ca with the roots of several trust
			// domains would let other.org's CA mint example.org IDs.
			name:   "SPIFFE validation disabled: trusted_ca per trust domain, no ALL",
			update: newUpdate(1, []*x509svid.SVID{web}, own, fed),
			names:  Names{DisableSPIFFECertValidation: true},
			expectSecrets: map[string]*tlsv3.Secret{
				"default":                  wantTLS(t, "default", web),
				"spiffe://example.org/web": wantTLS(t, "spiffe://example.org/web", web),
				"ROOTCA":                   wantCA("ROOTCA", own),
				"spiffe://example.org":     wantCA("spiffe://example.org", own),
				"spiffe://other.org":       wantCA("spiffe://other.org", fed),
			},
		},
		{
			name:   "custom names",
			update: newUpdate(1, []*x509svid.SVID{web}, own),
			names:  Names{DefaultSVID: "svid", DefaultBundle: "bundle", AllBundles: "everything"},
			expectSecrets: map[string]*tlsv3.Secret{
				"svid":                     wantTLS(t, "svid", web),
				"spiffe://example.org/web": wantTLS(t, "spiffe://example.org/web", web),
				"bundle":                   wantSPIFFE(t, "bundle", own),
				"spiffe://example.org":     wantSPIFFE(t, "spiffe://example.org", own),
				"everything":               wantSPIFFE(t, "everything", own),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundlesBefore := slices.Clone(tt.update.Bundles)
			got, err := BuildSecrets(tt.update, tt.names)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffSecrets(tt.expectSecrets, got); d != "" {
				t.Errorf("secrets (-want +got):\n%s", d)
			}
			for name, s := range got {
				if s.GetName() != name {
					t.Errorf("secret keyed %q is named %q", name, s.GetName())
				}
				if err := s.ValidateAll(); err != nil {
					t.Errorf("secret %q: ValidateAll: %v", name, err)
				}
				if cv := s.GetValidationContext().GetCustomValidatorConfig(); cv != nil {
					cfg := &tlsv3.SPIFFECertValidatorConfig{}
					if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
						t.Fatalf("secret %q: typed config: %v", name, err)
					}
					if err := cfg.ValidateAll(); err != nil {
						t.Errorf("secret %q: SPIFFE validator config: ValidateAll: %v", name, err)
					}
				}
			}
			again, err := BuildSecrets(tt.update, tt.names)
			if err != nil {
				t.Fatal(err)
			}
			for name := range got {
				if !proto.Equal(got[name], again[name]) {
					t.Errorf("secret %q differs between two builds of the same Update", name)
				}
			}
			if !slices.Equal(bundlesBefore, tt.update.Bundles) {
				t.Error("BuildSecrets modified the Update's bundles")
			}
		})
	}
}

func TestBuildSecretsErrors(t *testing.T) {
	exampleCA := newCA(t, exampleTD)
	web := issue(t, exampleCA, webID)
	tests := []struct {
		name      string
		update    *rotation.Update
		names     Names
		expectErr string
	}{
		{"nil update", nil, Names{}, "update has no SVIDs"},
		{"name like a SPIFFE ID", newUpdate(1, []*x509svid.SVID{web}, exampleCA.Bundle()), Names{DefaultSVID: "spiffe://example.org/x"}, `default_svid_name: "spiffe://example.org/x" would shadow a SPIFFE ID`},
		{"duplicate names", newUpdate(1, []*x509svid.SVID{web}, exampleCA.Bundle()), Names{DefaultBundle: "ALL"}, `default_all_bundles_name: "ALL" is also the value of default_bundle_name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BuildSecrets(tt.update, tt.names)
			if err == nil || !strings.Contains(err.Error(), tt.expectErr) {
				t.Fatalf("BuildSecrets = %d secrets, %v; want error containing %q", len(got), err, tt.expectErr)
			}
		})
	}
}

// Serves answers for every name BuildSecrets builds, with the kind it
// builds: checked against BuildSecrets itself for both validation modes,
// so Serves and what is served cannot drift apart.
func TestServesAgreesWithBuildSecrets(t *testing.T) {
	exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
	u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID), issue(t, exampleCA, backendID)}, exampleCA.Bundle(), otherCA.Bundle())
	for _, disable := range []bool{false, true} {
		names := Names{DefaultSVID: "svid", DefaultBundle: "bundle", AllBundles: "every", DisableSPIFFECertValidation: disable}
		secrets, err := BuildSecrets(u, names)
		if err != nil {
			t.Fatal(err)
		}
		for name, sec := range secrets {
			want := ValidationContext
			if sec.GetTlsCertificate() != nil {
				want = TLSCertificate
			}
			if got, ok := names.Serves(name); !ok || got != want {
				t.Errorf("disable=%t: Serves(%q) = %s, %t; built as %s", disable, name, got, ok, want)
			}
		}
		for _, name := range names.Fixed() {
			if _, ok := secrets[name]; !ok {
				t.Errorf("disable=%t: Fixed lists %q, which is not built", disable, name)
			}
		}
		if _, ok := names.Serves("every"); ok == disable {
			t.Errorf("disable=%t: Serves(AllBundles) = %t", disable, ok)
		}
		for _, name := range []string{"", "default", "ROOTCA", "Svid", "spiffe://Example.org", "*"} {
			if kind, ok := names.Serves(name); ok {
				t.Errorf("Serves(%q) = %s, want not served", name, kind)
			}
		}
	}
}
