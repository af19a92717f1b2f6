package devapi

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// X509Response builds the message SPIRE's agent would send: per SVID its DER
// chain, PKCS#8 key, hint and its trust domain's roots (from bundles), and
// federated roots keyed by "spiffe://<td>". It checks only what it needs to
// (each SVID has one own bundle, each bundle is used, no trust domain twice),
// never the certificates: a bad one is encoded faithfully.
func X509Response(svids []*x509svid.SVID, bundles []*x509bundle.Bundle, federated ...*x509bundle.Bundle) (*workload.X509SVIDResponse, error) {
	own := make(map[spiffeid.TrustDomain]*x509bundle.Bundle, len(bundles))
	for _, b := range bundles {
		if b == nil {
			return nil, errors.New("x509 response: nil bundle")
		}
		if _, dup := own[b.TrustDomain()]; dup {
			return nil, fmt.Errorf("x509 response: two bundles for trust domain %q", b.TrustDomain())
		}
		own[b.TrustDomain()] = b
	}

	resp := &workload.X509SVIDResponse{}
	used := make(map[spiffeid.TrustDomain]bool, len(own))
	for i, svid := range svids {
		if svid == nil {
			return nil, fmt.Errorf("x509 response: SVID %d is nil", i)
		}
		td := svid.ID.TrustDomain()
		b, ok := own[td]
		if !ok {
			return nil, fmt.Errorf("x509 response: no bundle for trust domain %q of SVID %q", td, svid.ID)
		}
		used[td] = true
		key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("x509 response: marshal key of SVID %q: %w", svid.ID, err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    svid.ID.String(),
			X509Svid:    concatDER(svid.Certificates),
			X509SvidKey: key,
			Bundle:      concatDER(b.X509Authorities()),
			Hint:        svid.Hint,
		})
	}
	for td := range own {
		if !used[td] {
			return nil, fmt.Errorf("x509 response: bundle for trust domain %q matches no SVID (pass it as federated)", td)
		}
	}

	for _, b := range federated {
		if b == nil {
			return nil, errors.New("x509 response: nil federated bundle")
		}
		td := b.TrustDomain()
		if _, dup := own[td]; dup {
			return nil, fmt.Errorf("x509 response: trust domain %q is both own and federated", td)
		}
		if resp.FederatedBundles == nil {
			resp.FederatedBundles = make(map[string][]byte, len(federated))
		}
		if _, dup := resp.FederatedBundles[td.IDString()]; dup {
			return nil, fmt.Errorf("x509 response: two federated bundles for trust domain %q", td)
		}
		resp.FederatedBundles[td.IDString()] = concatDER(b.X509Authorities())
	}
	return resp, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
