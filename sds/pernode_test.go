package sds

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	adsclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// envoyNode is a node as Envoy sends it: metadata (nil for none) and, when
// minor is not 0, a user-agent build version 1.<minor>.
func envoyNode(t testing.TB, id string, metadata map[string]any, minor uint32) *corev3.Node {
	t.Helper()
	n := &corev3.Node{Id: id, Cluster: "test", UserAgentName: "envoy"}
	if metadata != nil {
		md, err := structpb.NewStruct(metadata)
		if err != nil {
			t.Fatal(err)
		}
		n.Metadata = md
	}
	if minor != 0 {
		n.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: minor, Patch: 3},
		}}
	}
	return n
}

// validationKind reads which validation a validation_context Secret uses
// from its shape, independently of BuildSecrets: SPIRE's spiffeBuilder
// sets only custom_validator_config (the SPIFFE validator), its
// rootCABuilder only trusted_ca.
func validationKind(t testing.TB, s *tlsv3.Secret) Validation {
	t.Helper()
	vc := s.GetValidationContext()
	switch {
	case vc == nil:
		t.Fatalf("secret %q is not a validation_context", s.GetName())
	case vc.GetCustomValidatorConfig().GetName() == SPIFFECertValidatorName && vc.GetTrustedCa() == nil:
		return ValidationSPIFFE
	case vc.GetTrustedCa() != nil && vc.GetCustomValidatorConfig() == nil:
		return ValidationTrustedCA
	}
	t.Fatalf("secret %q has neither of SPIRE's shapes: %v", s.GetName(), vc)
	return 0
}

// perNodeCase is one Envoy on a shared server and what SPIRE Agent's SDS
// would give it.
type perNodeCase struct {
	name     string
	metadata map[string]any
	minor    uint32 // Envoy 1.<minor>; 0: no user-agent build version
	want     Validation
	why      string
}

// TestEachEnvoyGetsTheValidationSPIREWouldGiveIt runs several Envoys on
// one server: each gets, over SotW, the validation contexts SPIRE Agent's
// SDS would give it (node metadata disable_spiffe_cert_validation as a bool
// or a parseable string overrides the config either way; Envoy older than
// 1.18 gets trusted_ca whatever it says), identical tls_certificates, the
// same version for the same generation, and follows rotation in its own
// variant. Clients() shows each one's validation and why.
func TestEachEnvoyGetsTheValidationSPIREWouldGiveIt(t *testing.T) {
	for _, tc := range []struct {
		disabled bool
		clients  []perNodeCase
	}{
		{disabled: false, clients: []perNodeCase{
			{name: "plain", want: ValidationSPIFFE, why: "config sds.disable_spiffe_cert_validation: false"},
			{name: "metadata-bool-true", metadata: map[string]any{"disable_spiffe_cert_validation": true},
				want: ValidationTrustedCA, why: "node metadata disable_spiffe_cert_validation: true"},
			{name: "metadata-string-true", metadata: map[string]any{"disable_spiffe_cert_validation": "true"},
				want: ValidationTrustedCA, why: "node metadata disable_spiffe_cert_validation: true"},
			{name: "metadata-string-1", metadata: map[string]any{"disable_spiffe_cert_validation": "1"},
				want: ValidationTrustedCA, why: "node metadata disable_spiffe_cert_validation: true"},
			// SPIRE ignores a value that is not a bool: the config decides.
			{name: "metadata-unparseable", metadata: map[string]any{"disable_spiffe_cert_validation": "yes please"},
				want: ValidationSPIFFE, why: "config sds.disable_spiffe_cert_validation: false"},
			{name: "metadata-number", metadata: map[string]any{"disable_spiffe_cert_validation": 1},
				want: ValidationSPIFFE, why: "config sds.disable_spiffe_cert_validation: false"},
			{name: "envoy-1.17", minor: 17, want: ValidationTrustedCA, why: "envoy 1.17 lacks the SPIFFE validator (1.18+)"},
			{name: "envoy-1.18", minor: 18, want: ValidationSPIFFE, why: "config sds.disable_spiffe_cert_validation: false"},
		}},
		{disabled: true, clients: []perNodeCase{
			{name: "plain", want: ValidationTrustedCA, why: "config sds.disable_spiffe_cert_validation: true"},
			{name: "metadata-bool-false", metadata: map[string]any{"disable_spiffe_cert_validation": false},
				want: ValidationSPIFFE, why: "node metadata disable_spiffe_cert_validation: false"},
			{name: "metadata-string-false", metadata: map[string]any{"disable_spiffe_cert_validation": "false"},
				want: ValidationSPIFFE, why: "node metadata disable_spiffe_cert_validation: false"},
			{name: "envoy-1.17-metadata-false", minor: 17, metadata: map[string]any{"disable_spiffe_cert_validation": false},
				want: ValidationTrustedCA, why: "envoy 1.17 lacks the SPIFFE validator (1.18+)"},
			{name: "envoy-1.30-metadata-false", minor: 30, metadata: map[string]any{"disable_spiffe_cert_validation": false},
				want: ValidationSPIFFE, why: "node metadata disable_spiffe_cert_validation: false"},
		}},
	} {
		t.Run(map[bool]string{false: "config-spiffe", true: "config-disabled"}[tc.disabled], func(t *testing.T) {
			s := startServer(t, Config{Names: Names{DisableSPIFFECertValidation: tc.disabled}})
			exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
			next := func(gen uint64) *rotation.Update {
				return newUpdate(gen, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle(), otherCA.Bundle())
			}
			names := []string{"default", "ROOTCA", exampleTD.IDString(), otherTD.IDString()}
			conn := dial(t, s.cfg.SocketPath)
			envoys := make([]*envoyClient, len(tc.clients))
			for i, c := range tc.clients {
				envoys[i] = newEnvoyClientAs(t, conn, envoyNode(t, c.name, c.metadata, c.minor), names, "")
			}
			waitPending(t, s, "default", len(envoys))

			for gen := uint64(1); gen <= 2; gen++ {
				u := next(gen)
				if err := s.Apply(t.Context(), u); err != nil {
					t.Fatal(err)
				}
				for i, c := range tc.clients {
					resp := envoys[i].recv()
					if got, want := resp.GetVersionInfo(), versionOf(s, gen); got != want {
						t.Errorf("%s: version %q, want %q", c.name, got, want)
					}
					got := unpack(t, resp.GetResources())
					for _, name := range names[1:] {
						if got[name] == nil {
							t.Fatalf("%s: no secret %q in %v", c.name, name, got)
						}
						if v := validationKind(t, got[name]); v != c.want {
							t.Errorf("%s generation %d: %q uses %s, want %s", c.name, gen, name, v, c.want)
						}
					}
					want := built(t, u, Names{DisableSPIFFECertValidation: c.want == ValidationTrustedCA}, names...)
					if d := diffSecrets(want, got); d != "" {
						t.Errorf("%s generation %d secrets (-want +got):\n%s", c.name, gen, d)
					}
					envoys[i].ack(resp)
				}
			}

			testkit.Eventually(t, "every client's ACK of generation 2", func() bool {
				for _, c := range s.Clients() {
					if c.AckedGeneration != 2 {
						return false
					}
				}
				return len(s.Clients()) == len(tc.clients)
			})
			byNode := make(map[string]Client)
			for _, c := range s.Clients() {
				byNode[c.Node] = c
			}
			for _, c := range tc.clients {
				got := byNode[c.name] // the node id is the case's name
				if got.Validation != c.want || got.ValidationReason != c.why {
					t.Errorf("Clients() for %s: validation %s (%q), want %s (%q)", c.name, got.Validation, got.ValidationReason, c.want, c.why)
				}
			}
		})
	}
}

// TestALLIsServedOnlyWithTheSPIFFEValidator: as in SPIRE, the AllBundles
// secret exists only as a SPIFFE validator (plain trusted_ca roots of
// several trust domains would let any of their CAs vouch for any trust
// domain). On one server an Envoy that gets the SPIFFE validator receives
// ALL with every trust domain, while one that disabled it by metadata, or
// an Envoy 1.17, is not served ALL (its other names are served; ALL stays
// pending and is reported), over SotW, Delta and FetchSecrets.
func TestALLIsServedOnlyWithTheSPIFFEValidator(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
	u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle(), otherCA.Bundle())
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	names := []string{"default", "ALL"}
	conn := dial(t, s.cfg.SocketPath)
	disabledMD := map[string]any{"disable_spiffe_cert_validation": "true"}

	spiffe := newEnvoyClientAs(t, conn, envoyNode(t, "spiffe", nil, 30), names, "")
	got := unpack(t, spiffe.recv().GetResources())
	if d := diffSecrets(built(t, u, Names{}, names...), got); d != "" {
		t.Errorf("SPIFFE client (-want +got):\n%s", d)
	}
	if all := got["ALL"]; all == nil || validationKind(t, all) != ValidationSPIFFE {
		t.Errorf("SPIFFE client: ALL = %v, want the SPIFFE validator", all)
	}

	for _, node := range []*corev3.Node{envoyNode(t, "by-metadata", disabledMD, 0), envoyNode(t, "envoy-1.17", nil, 17)} {
		c := newEnvoyClientAs(t, conn, node, names, "")
		got := unpack(t, c.recv().GetResources())
		if d := diffSecrets(built(t, u, Names{DisableSPIFFECertValidation: true}, "default"), got); d != "" {
			t.Errorf("%s (-want +got):\n%s", node.GetId(), d)
		}
		want := `msg="Envoy SDS: requested secrets are not served; they stay pending" stream=`
		wantTail := `node=` + node.GetId() + ` unknown=[ALL] served="[ROOTCA default spiffe://example.org spiffe://example.org/web spiffe://other.org]" validation=trusted_ca`
		testkit.Eventually(t, "the warning for "+node.GetId(), func() bool {
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, want) && strings.Contains(l, wantTail) {
					return true
				}
			}
			return false
		})
	}

	// Delta, with the node only on the first request.
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	delta, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: envoyNode(t, "delta", disabledMD, 0), TypeUrl: resource.SecretType,
		ResourceNamesSubscribe: []string{"ROOTCA", "ALL"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var anys []*anypb.Any
	for _, r := range resp.GetResources() {
		anys = append(anys, r.GetResource())
	}
	if d := diffSecrets(built(t, u, Names{DisableSPIFFECertValidation: true}, "ROOTCA"), unpack(t, anys)); d != "" {
		t.Errorf("delta (-want +got):\n%s", d)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	// The next Update reaches the delta client in its own variant, though
	// its later requests carry no node.
	u2 := newUpdate(2, []*x509svid.SVID{issue(t, exampleCA, webID)}, newCA(t, exampleTD).Bundle(), otherCA.Bundle())
	if err := s.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	if resp, err = delta.Recv(); err != nil {
		t.Fatal(err)
	}
	anys = anys[:0]
	for _, r := range resp.GetResources() {
		anys = append(anys, r.GetResource())
	}
	if d := diffSecrets(built(t, u2, Names{DisableSPIFFECertValidation: true}, "ROOTCA"), unpack(t, anys)); d != "" {
		t.Errorf("delta after rotation (-want +got):\n%s", d)
	}

	// FetchSecrets chooses per request too.
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	fr, err := client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: envoyNode(t, "f1", nil, 0), ResourceNames: []string{"ALL", "ROOTCA"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffSecrets(built(t, u2, Names{}, "ALL", "ROOTCA"), unpack(t, fr.GetResources())); d != "" {
		t.Errorf("fetch, SPIFFE (-want +got):\n%s", d)
	}
	fr, err = client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: envoyNode(t, "f2", disabledMD, 0), ResourceNames: []string{"ALL", "ROOTCA"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffSecrets(built(t, u2, Names{DisableSPIFFECertValidation: true}, "ROOTCA"), unpack(t, fr.GetResources())); d != "" {
		t.Errorf("fetch, trusted_ca (-want +got):\n%s", d)
	}
	_, err = client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: envoyNode(t, "f3", nil, 17), ResourceNames: []string{"ALL"}})
	wantMsg := `none of the requested secrets ["ALL"] is served; served: ["ROOTCA" "default" "spiffe://example.org" "spiffe://example.org/web" "spiffe://other.org"]`
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != wantMsg {
		t.Errorf("fetch ALL as Envoy 1.17: %v, want NotFound %q", err, wantMsg)
	}
}

// TestValidationFor pins the choice against SPIRE's handler, including
// the corner cases a fleet can hit.
func TestValidationFor(t *testing.T) {
	bv := func(major, minor uint32) *corev3.Node {
		return &corev3.Node{UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor}}}}
	}
	for _, tt := range []struct {
		name     string
		node     *corev3.Node
		disabled bool
		want     Validation
	}{
		{"nil node", nil, false, ValidationSPIFFE},
		{"nil node, disabled", nil, true, ValidationTrustedCA},
		{"1.17", bv(1, 17), false, ValidationTrustedCA},
		{"1.18", bv(1, 18), false, ValidationSPIFFE},
		{"2.0", bv(2, 0), false, ValidationSPIFFE},
		{"0.99", bv(0, 99), false, ValidationTrustedCA},
		{"1.18, disabled", bv(1, 18), true, ValidationTrustedCA},
		{"build version without a version", &corev3.Node{UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{}}}, false, ValidationSPIFFE},
		{"text user-agent version only", &corev3.Node{UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "1.10.0"}}, false, ValidationSPIFFE},
	} {
		if got, _ := validationFor(tt.node, tt.disabled); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestADSClientGetsItsOwnValidation: an ADS stream is routed by its node
// too; a wildcard subscription from an Envoy that disabled the SPIFFE
// validator gets every secret of the trusted_ca variant (no ALL).
func TestADSClientGetsItsOwnValidation(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	t.Cleanup(cancel)
	node := envoyNode(t, "ads", map[string]any{"disable_spiffe_cert_validation": true}, 0)
	client := adsclient.NewADSClient(ctx, node, resource.SecretType)
	if err := client.InitConnect(dial(t, s.cfg.SocketPath)); err != nil {
		t.Fatal(err)
	}
	u := r.next()
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Fetch()
	if err != nil {
		t.Fatal(err)
	}
	got := unpack(t, resp.Resources)
	if d := diffSecrets(built(t, u, Names{DisableSPIFFECertValidation: true}), got); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	if _, ok := got["ALL"]; ok {
		t.Error("ALL served to an Envoy that disabled the SPIFFE validator")
	}
	if err := client.Ack(); err != nil {
		t.Fatal(err)
	}
}
