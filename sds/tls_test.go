package sds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// peerVerifier checks a peer chain as Envoy does with a validation_context
// from SDS plus a SAN match on the expected SPIFFE ID.
type peerVerifier func(rawCerts [][]byte) (spiffeid.ID, error)

// verifierFromSecret builds the check from the Secret alone: the SPIFFE
// validator picks the bundle of the peer's trust domain; a plain
// trusted_ca verifies against all its roots.
func verifierFromSecret(t testing.TB, s *tlsv3.Secret) peerVerifier {
	t.Helper()
	vc := s.GetValidationContext()
	if vc == nil {
		t.Fatalf("secret %q has no validation_context", s.GetName())
	}
	if cv := vc.GetCustomValidatorConfig(); cv != nil {
		if cv.GetName() != SPIFFECertValidatorName {
			t.Fatalf("secret %q: validator %q", s.GetName(), cv.GetName())
		}
		cfg := &tlsv3.SPIFFECertValidatorConfig{}
		if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			t.Fatal(err)
		}
		set := x509bundle.NewSet()
		for _, td := range cfg.GetTrustDomains() {
			b, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString(td.GetName()), td.GetTrustBundle().GetInlineBytes())
			if err != nil {
				t.Fatalf("secret %q: trust domain %q: %v", s.GetName(), td.GetName(), err)
			}
			set.Add(b)
		}
		return func(raw [][]byte) (spiffeid.ID, error) {
			id, _, err := x509svid.ParseAndVerify(raw, set)
			return id, err
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(vc.GetTrustedCa().GetInlineBytes()) {
		t.Fatalf("secret %q: no certificates in trusted_ca", s.GetName())
	}
	return func(raw [][]byte) (spiffeid.ID, error) {
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return spiffeid.ID{}, err
			}
			certs = append(certs, c)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return spiffeid.ID{}, err
		}
		return x509svid.IDFromCert(certs[0])
	}
}

func certFromSecret(t testing.TB, s *tlsv3.Secret) tls.Certificate {
	t.Helper()
	tc := s.GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: %v", s.GetName(), err)
	}
	return cert
}

func certFromSVID(t testing.TB, s *x509svid.SVID) tls.Certificate {
	t.Helper()
	chain, key, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// mtlsConfig is an Envoy-like mutual TLS config: its certificate and its
// peer check, with the peer's SPIFFE ID matched like match_typed_subject_alt_names.
func mtlsConfig(cert tls.Certificate, verify peerVerifier, peer spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// SVIDs carry no DNS names: the peer check below replaces the
		// hostname verification.
		InsecureSkipVerify: true,
		ClientAuth:         tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := verify(raw)
			if err != nil {
				return err
			}
			if id != peer {
				return fmt.Errorf("peer is %s, want %s", id, peer)
			}
			return nil
		},
	}
}

// handshake runs a TLS handshake over loopback TCP and exchanges a byte, so
// a rejection on either side surfaces on both.
func handshake(t testing.TB, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		tc := tls.Server(conn, server)
		defer tc.Close()
		if err := tc.HandshakeContext(ctx); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte{1})
		done <- err
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, client)
	clientErr = tc.HandshakeContext(ctx)
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	tc.Close()
	return <-done, clientErr
}

func TestTLSHandshakeWithSDSSecretsOnly(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableSPIFFECertValidation=%t", disable), func(t *testing.T) {
			s := startServer(t, Config{Names: Names{DisableSPIFFECertValidation: disable}})
			exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
			u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, backendID), issue(t, exampleCA, webID)},
				exampleCA.Bundle(), otherCA.Bundle())
			if err := s.Apply(t.Context(), u); err != nil {
				t.Fatal(err)
			}
			conn := dial(t, s.cfg.SocketPath)
			// Without the SPIFFE validator ALL is not served (as in SPIRE);
			// the backend then trusts its own trust domain only.
			peers := "ALL"
			if disable {
				peers = exampleTD.IDString()
			}
			// Two Envoys: the backend's listener and the web's upstream cluster.
			backendEnvoy := newEnvoyClient(t, conn, []string{"default", peers}, "")
			webEnvoy := newEnvoyClient(t, conn, []string{webID.String(), "ROOTCA"}, "")
			backendSecrets := unpack(t, backendEnvoy.recv().GetResources())
			webSecrets := unpack(t, webEnvoy.recv().GetResources())

			serverTLS := mtlsConfig(certFromSecret(t, backendSecrets["default"]),
				verifierFromSecret(t, backendSecrets[peers]), webID)
			clientTLS := mtlsConfig(certFromSecret(t, webSecrets[webID.String()]),
				verifierFromSecret(t, webSecrets["ROOTCA"]), backendID)

			if serr, cerr := handshake(t, serverTLS, clientTLS); serr != nil || cerr != nil {
				t.Fatalf("handshake: server %v, client %v", serr, cerr)
			}

			// The checks bite: a client with the right ID from a CA the
			// bundle does not hold, and a server with the wrong ID, fail.
			rogue := issue(t, newCA(t, exampleTD), webID)
			rogueTLS := mtlsConfig(certFromSVID(t, rogue), verifierFromSecret(t, webSecrets["ROOTCA"]), backendID)
			if serr, _ := handshake(t, serverTLS, rogueTLS); serr == nil {
				t.Error("server accepted a client from an untrusted CA")
			}
			// other.org is in ALL: a federated SVID for web is verified, and
			// rejected only by the SPIFFE ID match. Without ALL its chain
			// does not verify against example.org's roots.
			federated := issue(t, otherCA, spiffeid.RequireFromString("spiffe://other.org/web"))
			fedTLS := mtlsConfig(certFromSVID(t, federated), verifierFromSecret(t, webSecrets["ROOTCA"]), backendID)
			serr, _ := handshake(t, serverTLS, fedTLS)
			want := "peer is spiffe://other.org/web, want spiffe://example.org/web"
			if disable {
				want = "certificate signed by unknown authority"
			}
			if serr == nil || !strings.Contains(serr.Error(), want) {
				t.Errorf("server error %v, want %q", serr, want)
			}
			// other.org's CA minting an example.org ID: the SPIFFE validator
			// ties each root to its trust domain and refuses it; without it,
			// no secret mixes the roots of two trust domains (no ALL), so
			// it is refused too.
			impostor := issue(t, otherCA, webID)
			impTLS := mtlsConfig(certFromSVID(t, impostor), verifierFromSecret(t, webSecrets["ROOTCA"]), backendID)
			if serr, _ := handshake(t, serverTLS, impTLS); serr == nil {
				t.Error("cross-trust-domain impostor accepted")
			}
			wrongPeer := mtlsConfig(certFromSecret(t, webSecrets[webID.String()]),
				verifierFromSecret(t, webSecrets["ROOTCA"]), spiffeid.RequireFromString("spiffe://example.org/db"))
			if _, cerr := handshake(t, serverTLS, wrongPeer); cerr == nil {
				t.Error("client accepted a server with another SPIFFE ID")
			}
		})
	}
}
